// Philox-4x32-10 against the Random123 known-answer vectors, and the uniform / normal fills:
// determinism, layout by counter, and moments within bounds from the central limit theorem.
#include <cstring>

#include "nnops/detail/philox.hpp"
#include "test_util.hpp"

namespace nnops::test {
namespace {

TEST(Philox, KnownAnswerVectors) {
  using detail::Philox4;
  struct Kat {
    Philox4 ctr;
    uint32_t k0, k1;
    Philox4 out;
  };
  const Kat kats[] = {
      {{{0, 0, 0, 0}}, 0, 0, {{0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8}}},
      {{{0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff}},
       0xffffffff,
       0xffffffff,
       {{0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd}}},
      {{{0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344}},
       0xa4093822,
       0x299f31d0,
       {{0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1}}},
  };
  for (const Kat& k : kats) {
    const Philox4 r = detail::philox4x32_10(k.ctr, k.k0, k.k1);
    for (int i = 0; i < 4; ++i) EXPECT_EQ(r.v[i], k.out.v[i]) << "word " << i;
  }
}

TEST(Philox, PortableTranscendentalsAreAccurate) {
  for (double x : {1e-300, 1e-7, 0.1, 0.5, 0.70710678, 0.9999999, 1.0}) {
    EXPECT_NEAR(detail::portable_log(x), std::log(x), 4e-16 * std::max(1.0, std::fabs(std::log(x))))
        << x;
  }
  for (int i = 0; i < 1000; ++i) {
    const double u = i / 1000.0;
    double s, c;
    detail::portable_sincos_2pi(u, s, c);
    EXPECT_NEAR(s, std::sin(2 * M_PI * u), 1e-15);
    EXPECT_NEAR(c, std::cos(2 * M_PI * u), 1e-15);
  }
}

class RandomTest : public DeviceTest {};

TEST_P(RandomTest, UniformIsDeterministicAndLaidOutByCounter) {
  for (int64_t n : {1, 7, 33, 1023}) {
    Tensor a = Tensor::empty({n}, DType::F32, device()),
           b = Tensor::empty({n}, DType::F32, device());
    fill_uniform(a, -1.0f, 1.0f, 42);
    fill_uniform(b, -1.0f, 1.0f, 42);
    EXPECT_EQ(a.to_vector<float>(), b.to_vector<float>());
    // Element i depends only on (seed, i): a shorter tensor is a prefix of a longer one.
    Tensor big = Tensor::empty({n + 5}, DType::F32, device());
    fill_uniform(big, -1.0f, 1.0f, 42);
    const auto bv = big.to_vector<float>(), av = a.to_vector<float>();
    EXPECT_TRUE(std::equal(av.begin(), av.end(), bv.begin()));
    // And it equals the Philox bits mapped by (bits >> 8) * 2^-24.
    for (int64_t i = 0; i < n; ++i) {
      const auto blk = detail::philox_block(42, i / 4);
      const float u = (blk.v[i % 4] >> 8) * (1.0f / 16777216.0f);
      ASSERT_EQ(av[i], -1.0f + u * 2.0f) << i;
    }
    fill_uniform(b, -1.0f, 1.0f, 43);
    if (n > 1) EXPECT_NE(a.to_vector<float>(), b.to_vector<float>());
  }
}

TEST_P(RandomTest, UniformMoments) {
  const int64_t n = 1 << 20;
  Tensor t = Tensor::empty({n}, DType::F32, device());
  fill_uniform(t, 2.0f, 5.0f, 7);
  const auto v = t.to_vector<float>();
  double sum = 0, sq = 0;
  for (float x : v) {
    ASSERT_GE(x, 2.0f);
    ASSERT_LT(x, 5.0f);
    sum += x;
    sq += double(x) * x;
  }
  const double mean = sum / n, var = sq / n - mean * mean;
  // U(2,5): mean 3.5, variance 0.75; 6 standard errors of the estimates.
  EXPECT_NEAR(mean, 3.5, 6 * std::sqrt(0.75 / n));
  EXPECT_NEAR(var, 0.75, 6 * std::sqrt((9.0 * 9 / 80 - 0.75 * 0.75) / n));
}

TEST_P(RandomTest, NormalMoments) {
  const int64_t n = (1 << 20) + 3;  // not a multiple of 4
  Tensor t = Tensor::empty({n}, DType::F32, device());
  fill_normal(t, 1.0f, 2.0f, 9);
  const auto v = t.to_vector<float>();
  double sum = 0, sq = 0, fourth = 0;
  int64_t beyond3 = 0;
  for (float x : v) {
    ASSERT_TRUE(std::isfinite(x));
    const double z = (x - 1.0) / 2.0;
    sum += z;
    sq += z * z;
    fourth += z * z * z * z;
    beyond3 += std::fabs(z) > 3;
  }
  EXPECT_NEAR(sum / n, 0.0, 6 / std::sqrt(double(n)));
  EXPECT_NEAR(sq / n, 1.0, 6 * std::sqrt(2.0 / n));
  EXPECT_NEAR(fourth / n, 3.0, 6 * std::sqrt(96.0 / n));
  // P(|z| > 3) = 0.0027.
  EXPECT_NEAR(double(beyond3) / n, 0.0027, 6 * std::sqrt(0.0027 / n));
  // Same seed, same values.
  Tensor u = Tensor::empty({n}, DType::F32, device());
  fill_normal(u, 1.0f, 2.0f, 9);
  EXPECT_EQ(u.to_vector<float>(), v);
}

TEST_P(RandomTest, NormalEqualsHostPhiloxBitForBit) {
  // This file is compiled without multiply-add contraction, like the library's random kernels.
  for (int64_t n : {1, 2, 7, 33, 1023}) {
    Tensor t = Tensor::empty({n}, DType::F32, device());
    fill_normal(t, 0.5f, 3.0f, 77);
    const auto v = t.to_vector<float>();
    for (int64_t i = 0; i < n; ++i) {
      const auto blk = detail::philox_block(77, i / 4);
      float z[2];
      const int pair = static_cast<int>(i % 4) / 2;
      detail::box_muller(detail::bits_to_unit(blk.v[2 * pair]),
                         detail::bits_to_unit(blk.v[2 * pair + 1]), z[0], z[1]);
      const float expected = 0.5f + 3.0f * z[i % 2];
      uint32_t got_bits, want_bits;
      std::memcpy(&got_bits, &v[i], 4);
      std::memcpy(&want_bits, &expected, 4);
      ASSERT_EQ(got_bits, want_bits) << "n=" << n << " element " << i;
    }
  }
}

NNOPS_INSTANTIATE_DEVICES(RandomTest);

}  // namespace
}  // namespace nnops::test
