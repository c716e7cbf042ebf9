// Compressed pruned weights: compress/decompress round trips (NM24 and CSR, F32 and BF16, groups
// keeping fewer than 2), the sparse linear layer against the dense one on the decompressed
// weight at every CPU level, thread independence, and hostile arguments.
#include <omp.h>

#include "test_util.hpp"

namespace nnops::test {
namespace {

struct Pruned {
  Tensor w, mask;
};

// A weight and a mask: 2:4 by magnitude (NM24) or unstructured at `amount` (CSR).
Pruned pruned(int64_t out, int64_t in, SparseFormat format, double amount, uint32_t seed) {
  Pruned p{on(Device::CPU, random_floats(out * in, seed), {out, in}),
           Tensor::from_vector(std::vector<uint8_t>(out * in, 1), {out, in})};
  if (format == SparseFormat::NM24) {
    nm_structured(p.w, 2, 4, p.mask);
  } else {
    l1_unstructured(p.w, PruneAmount::fraction(amount), p.mask);
  }
  return p;
}

std::vector<float> masked(const Pruned& p) {
  auto w = p.w.to_vector<float>();
  const auto m = p.mask.to_vector<uint8_t>();
  for (size_t i = 0; i < w.size(); ++i) w[i] = m[i] ? w[i] : 0.0f;
  return w;
}

TEST(Sparse, CompressDecompressRoundTripsExactly) {
  for (SparseFormat f : {SparseFormat::NM24, SparseFormat::CSR}) {
    for (auto [out, in] :
         std::vector<std::pair<int64_t, int64_t>>{{1, 4}, {7, 8}, {33, 100}, {5, 12}}) {
      SCOPED_TRACE((f == SparseFormat::NM24 ? "NM24 " : "CSR ") + std::to_string(out) + "x" +
                   std::to_string(in));
      Pruned p = pruned(out, in, f, 0.7, 10 + in);
      if (f == SparseFormat::NM24 && out > 1) {
        // A group keeping 1 and one keeping none, as iterative pruning leaves them.
        uint8_t* m = p.mask.data<uint8_t>();
        m[0] = m[1] = m[2] = 0, m[3] = 1;
        m[in + 0] = m[in + 1] = m[in + 2] = m[in + 3] = 0;
      }
      SparseMatrix s = compress(p.w, p.mask, f);
      EXPECT_EQ(s.nnz(), count_nonzero(p.mask));
      const size_t bytes = f == SparseFormat::NM24
                               ? size_t(out * in / 2 * 4 + out * ((in / 4 + 1) / 2))
                               : size_t((out + 1) * 8 + s.nnz() * 8);
      EXPECT_EQ(s.bytes(), bytes);
      Tensor back = poisoned({out, in}, Device::CPU);
      decompress(s, back);
      EXPECT_EQ(back.to_vector<float>(), masked(p));
      // BF16 weights: the values stay BF16, the round trip exact.
      Tensor w16 = Tensor::empty({out, in}, DType::BF16);
      cast(w16, p.w);
      SparseMatrix s16 = compress(w16, p.mask, f);
      EXPECT_EQ(s16.dtype(), DType::BF16);
      Tensor back16 = Tensor::empty({out, in}, DType::BF16),
             want16 = Tensor::empty({out, in}, DType::BF16);
      decompress(s16, back16);
      cast(want16, on(Device::CPU, masked(p), {out, in}));
      EXPECT_EQ(bf16_bits(back16), bf16_bits(want16));
    }
  }
}

TEST(Sparse, CompressWorksOnEveryDevice) {
  if (!cuda_available()) GTEST_SKIP() << "no usable CUDA device";
  Pruned p = pruned(9, 16, SparseFormat::NM24, 0.5, 3);
  SparseMatrix s = compress(p.w.to(Device::CUDA), p.mask.to(Device::CUDA), SparseFormat::NM24);
  EXPECT_EQ(s.device(), Device::CUDA);
  Tensor back = Tensor::empty({9, 16}, DType::F32, Device::CUDA);
  decompress(s, back);
  EXPECT_EQ(back.to_vector<float>(), masked(p));
}

// The kept products in the stored order against the dense product of the decompressed weight:
// both within gamma_k * sum |x||w| of the exact value.
TEST(Sparse, LinearForwardMatchesDenseOnTheDecompressedWeight) {
  for_each_cpu_isa(Device::CPU, [&] {
    for (SparseFormat f : {SparseFormat::NM24, SparseFormat::CSR}) {
      for (int64_t n : {1, 7, 64, 65, 130}) {
        const int64_t out = 33, in = 100;
        SCOPED_TRACE((f == SparseFormat::NM24 ? "NM24 n=" : "CSR n=") + std::to_string(n));
        Pruned p = pruned(out, in, f, 0.9, 20 + n);
        SparseMatrix s = compress(p.w, p.mask, f);
        const auto xv = random_floats(n * in, 30 + n), bv = random_floats(out, 31);
        Tensor x = on(Device::CPU, xv, {n, in}), b = on(Device::CPU, bv, {out});
        Tensor y = poisoned({n, out}, Device::CPU);
        sparse_linear_forward(x, s, &b, y);
        const auto wv = masked(p);
        std::vector<double> ref(n * out), bound(n * out);
        for (int64_t r = 0; r < n; ++r)
          for (int64_t o = 0; o < out; ++o) {
            double acc = bv[o], mag = std::fabs(bv[o]);
            for (int64_t c = 0; c < in; ++c) {
              acc += double(xv[r * in + c]) * wv[o * in + c];
              mag += std::fabs(double(xv[r * in + c]) * wv[o * in + c]);
            }
            ref[r * out + o] = acc;
            bound[r * out + o] = (in + 1) * kEps32 * mag;
          }
        EXPECT_TRUE(all_within(y, ref, bound));
      }
    }
  });
}

TEST(Sparse, BitsDoNotDependOnThreadCount) {
  Pruned p = pruned(300, 400, SparseFormat::NM24, 0.5, 40);
  SparseMatrix s = compress(p.w, p.mask, SparseFormat::NM24);
  Tensor x = on(Device::CPU, random_floats(96 * 400, 41), {96, 400});
  Tensor a = Tensor::empty({96, 300}), b = Tensor::empty({96, 300});
  const int threads = omp_get_max_threads();
  sparse_linear_forward(x, s, nullptr, a);
  omp_set_num_threads(1);
  sparse_linear_forward(x, s, nullptr, b);
  omp_set_num_threads(threads);
  EXPECT_EQ(a.to_vector<float>(), b.to_vector<float>());
}

TEST(Sparse, HostileArguments) {
  Pruned p = pruned(3, 8, SparseFormat::CSR, 0.25, 50);  // 6 of 8 kept per row: not 2:4
  EXPECT_TRUE(throws_error([&] { compress(p.w, p.mask, SparseFormat::NM24); }, "nnops::compress",
                           "row 0, group 0"));
  Pruned odd = pruned(3, 6, SparseFormat::CSR, 0.5, 51);
  EXPECT_TRUE(throws_error([&] { compress(odd.w, odd.mask, SparseFormat::NM24); },
                           "nnops::compress", "multiple of 4"));
  Tensor mask5 = Tensor::zeros({3, 5}, DType::U8);
  EXPECT_TRUE(
      throws_error([&] { compress(p.w, mask5, SparseFormat::CSR); }, "nnops::compress", "mask"));
  SparseMatrix s = compress(p.w, p.mask, SparseFormat::CSR);
  Tensor x = on(Device::CPU, random_floats(16, 52), {2, 8}), y = poisoned({2, 3}, Device::CPU);
  Tensor x7 = on(Device::CPU, random_floats(14, 53), {2, 7}),
         b4 = on(Device::CPU, random_floats(4, 54), {4});
  EXPECT_TRUE(throws_error([&] { sparse_linear_forward(x7, s, nullptr, y); },
                           "nnops::sparse_linear_forward", "x must be [N, 8]"));
  EXPECT_TRUE(throws_error([&] { sparse_linear_forward(x, s, &b4, y); },
                           "nnops::sparse_linear_forward", "bias"));
  Tensor y_wrong = poisoned({2, 4}, Device::CPU);
  EXPECT_TRUE(throws_error([&] { sparse_linear_forward(x, s, nullptr, y_wrong); },
                           "nnops::sparse_linear_forward", "y"));
  SparseMatrix empty;
  EXPECT_TRUE(throws_error([&] { sparse_linear_forward(x, empty, nullptr, y); },
                           "nnops::sparse_linear_forward", "empty"));
  Tensor back = poisoned({3, 7}, Device::CPU);
  EXPECT_TRUE(throws_error([&] { decompress(s, back); }, "nnops::decompress", "w"));
  for (float v : y.to_vector<float>()) ASSERT_TRUE(std::isnan(v));
  for (float v : back.to_vector<float>()) ASSERT_TRUE(std::isnan(v));
}

}  // namespace
}  // namespace nnops::test
