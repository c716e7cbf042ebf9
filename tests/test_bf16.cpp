// BF16 storage and casts: conversions against bit patterns PyTorch 2.15 produced
// (`torch.tensor(bits).view(torch.float32).to(torch.bfloat16)`), against an independent
// round-to-nearest-even reference over a sweep of the float range, and cast on every device.
#include <cfloat>
#include <cstring>

#include "test_util.hpp"

namespace nnops::test {
namespace {

float from_bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// float bits -> the bf16 bits torch.bfloat16 gave for them: signed zeros, normals, ties to even
// (0x3F808000 rounds down, 0x3F818000 up), overflow to inf (0x7F7FFFFF), subnormals and their
// ties, infinities, and NaNs of either sign and payload (all 0xFFFF on PyTorch's CPU).
const std::vector<std::pair<uint32_t, uint16_t>> kTorch = {
    {0x00000000u, 0x0000u}, {0x80000000u, 0x8000u}, {0x3F800000u, 0x3F80u}, {0xBF800000u, 0xBF80u},
    {0x3F808000u, 0x3F80u}, {0x3F80C000u, 0x3F81u}, {0x3F810000u, 0x3F81u}, {0x3F818000u, 0x3F82u},
    {0x40490FDBu, 0x4049u}, {0xC02DF84Du, 0xC02Eu}, {0x477FE000u, 0x4780u}, {0x7F7F0000u, 0x7F7Fu},
    {0x7F7FFFFFu, 0x7F80u}, {0x7F800000u, 0x7F80u}, {0xFF800000u, 0xFF80u}, {0x7FC00000u, 0xFFFFu},
    {0x006CE3EEu, 0x006Du}, {0x00800000u, 0x0080u}, {0x00000001u, 0x0000u}, {0x00010000u, 0x0001u},
    {0x800116C2u, 0x8001u}, {0x3DCCCCCDu, 0x3DCDu}, {0x3E4CCCCDu, 0x3E4Du}, {0x3E99999Au, 0x3E9Au},
    {0x501502F9u, 0x5015u}, {0xAEDBE6FFu, 0xAEDCu}, {0x47F12065u, 0x47F1u}, {0x004C3927u, 0x004Cu},
    {0x0000000Bu, 0x0000u}, {0x437F8000u, 0x4380u}, {0x43804000u, 0x4380u}, {0x4380C000u, 0x4381u},
    {0x40498000u, 0x404Au}, {0x7F7F8000u, 0x7F80u}, {0x00008000u, 0x0000u}, {0x00018000u, 0x0002u},
    {0x807F8000u, 0x8080u}, {0x7FC00001u, 0xFFFFu}, {0xFF800001u, 0xFFFFu}, {0x7F800001u, 0xFFFFu},
    {0x807FFFFFu, 0x8080u}};

// Round to nearest even written another way: the two bf16 neighbours of f, compared in double.
uint16_t reference_bits(float f) {
  if (std::isnan(f)) return 0xFFFF;
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t down = static_cast<uint16_t>(u >> 16);  // toward zero
  if ((u & 0xFFFFu) == 0) return down;
  const uint16_t up = static_cast<uint16_t>(down + 1);  // away from zero (may reach inf)
  const double lo = std::fabs(double(from_bits(uint32_t(down) << 16)));
  const double hi_mag = (up & 0x7FFF) == 0x7F80 ? std::ldexp(1.0, 128)  // the overflow point
                                                : std::fabs(double(from_bits(uint32_t(up) << 16)));
  const double a = std::fabs(double(f));
  if (a - lo < hi_mag - a) return down;
  if (a - lo > hi_mag - a) return up;
  return (down & 1) ? up : down;
}

TEST(Bf16, ConversionMatchesPyTorchBits) {
  for (auto [in, want] : kTorch) {
    EXPECT_EQ(bf16(from_bits(in)).bits, want) << std::hex << "float bits 0x" << in;
    EXPECT_EQ(reference_bits(from_bits(in)), want) << std::hex << "reference, 0x" << in;
  }
}

TEST(Bf16, SweepAgainstAnIndependentReference) {
  for (uint64_t b = 0; b <= 0xFFFFFFFFull; b += 257) {  // 16.7 million floats
    const float f = from_bits(static_cast<uint32_t>(b));
    ASSERT_EQ(bf16(f).bits, reference_bits(f)) << std::hex << "float bits 0x" << b;
  }
}

TEST(Bf16, EveryBf16SurvivesTheRoundTrip) {
  for (uint32_t b = 0; b <= 0xFFFF; ++b) {
    const bf16 v = bf16::from_bits(static_cast<uint16_t>(b));
    const float f = v.to_float();
    if (std::isnan(f)) {
      EXPECT_EQ(bf16(f).bits, 0xFFFF);
    } else {
      ASSERT_EQ(bf16(f).bits, b) << std::hex << b;
    }
  }
}

class Bf16Test : public DeviceTest {};

TEST_P(Bf16Test, CastBothWaysOnEveryDevice) {
  for (int64_t n : {1, 7, 33, 1023, 100003}) {
    auto x = random_floats(n, 50 + n, -1e4f, 1e4f);
    x[0] = NAN;
    if (n > 2) x[1] = INFINITY, x[2] = 1e-40f;
    Tensor src = on(device(), x, {n});
    Tensor half = Tensor::from_vector(std::vector<bf16>(n, bf16::from_bits(0x1234)), {n}, device());
    cast(half, src);
    const auto hb = half.to_vector<bf16>();
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hb[i].bits, reference_bits(x[i])) << i;
    // Back to float: exact (every bf16 is a float), NaN stays NaN.
    Tensor back = poisoned({n}, device());
    cast(back, half);
    const auto bv = back.to_vector<float>();
    for (int64_t i = 0; i < n; ++i) {
      const float want = hb[i].to_float();
      ASSERT_TRUE(std::isnan(want) ? std::isnan(bv[i]) : bv[i] == want) << i;
    }
    // Across devices (a no-op pair on a CPU-only machine).
    Tensor host = Tensor::zeros({n}, DType::BF16);
    cast(host, src);
    EXPECT_EQ(std::memcmp(host.to_vector<bf16>().data(), hb.data(), n * 2), 0);
  }
}

TEST_P(Bf16Test, BadCastsAreErrors) {
  Tensor f = Tensor::zeros({4}, DType::F32, device()),
         h = Tensor::zeros({4}, DType::BF16, device());
  Tensor i = Tensor::zeros({4}, DType::I32, device()),
         h5 = Tensor::zeros({5}, DType::BF16, device());
  EXPECT_TRUE(throws_error([&] { cast(i, f); }, "nnops::cast", "dst is I32"));
  EXPECT_TRUE(throws_error([&] { cast(h5, f); }, "nnops::cast", "shapes must match"));
  EXPECT_TRUE(throws_error([&] { matmul(h, h, h); }, "nnops::matmul", "BF16"));
  EXPECT_EQ(h.nbytes(), 8u);
  EXPECT_STREQ(to_string(DType::BF16), "BF16");
}

NNOPS_INSTANTIATE_DEVICES(Bf16Test);

}  // namespace
}  // namespace nnops::test
