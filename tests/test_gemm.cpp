// matmul and the linear layer against double-precision references, on every CPU micro-kernel
// the machine supports and on CUDA when usable.
#include <tuple>

#include "../cpu/cpu_backend.hpp"
#include "test_util.hpp"

namespace nnops::test {
namespace {

class GemmPathTest : public GemmPathFixture {
 protected:
};

// Double-precision op(a)*op(b) and, per element, sum |a||b| for the error bound.
struct Reference {
  std::vector<double> value, magnitude;
};

Reference reference_gemm(const std::vector<float>& a, const std::vector<float>& b, int64_t m,
                         int64_t n, int64_t k, bool ta, bool tb) {
  Reference r{std::vector<double>(m * n), std::vector<double>(m * n)};
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      double s = 0, mag = 0;
      for (int64_t p = 0; p < k; ++p) {
        const double x = ta ? a[p * m + i] : a[i * k + p];
        const double y = tb ? b[j * k + p] : b[p * n + j];
        s += x * y;
        mag += std::fabs(x * y);
      }
      r.value[i * n + j] = s;
      r.magnitude[i * n + j] = mag;
    }
  }
  return r;
}

// Checks c = alpha*op(a)*op(b) + beta*c0 elementwise against the bound of a k-term float dot
// product, |err| <= gamma_k * sum|a||b| with gamma_k = k*u/(1-k*u), scaled by alpha, plus the
// roundings of the alpha/beta products.
void check_gemm(Device device, int64_t m, int64_t n, int64_t k, bool ta, bool tb, float alpha,
                float beta, uint32_t seed) {
  SCOPED_TRACE("m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k) +
               " alpha=" + std::to_string(alpha) + " beta=" + std::to_string(beta));
  const auto a = random_floats(m * k, seed);
  const auto b = random_floats(k * n, seed + 1);
  const auto c0 = random_floats(m * n, seed + 2);
  Tensor ta_t = on(device, a, ta ? Shape{k, m} : Shape{m, k});
  Tensor tb_t = on(device, b, tb ? Shape{n, k} : Shape{k, n});
  // beta == 0 must not read c: start from NaN then.
  Tensor c = beta == 0.0f ? poisoned({m, n}, device) : on(device, c0, {m, n});
  matmul(ta_t, tb_t, c, GemmOptions{ta, tb, alpha, beta});
  const Reference r = reference_gemm(a, b, m, n, k, ta, tb);
  const double gamma = k * kEps32 / (1 - k * kEps32);
  const auto out = c.to_vector<float>();
  int failures = 0;
  for (int64_t i = 0; i < m * n && failures < 5; ++i) {
    const double expected = alpha * r.value[i] + (beta == 0.0f ? 0.0 : beta * double(c0[i]));
    const double bound = (gamma + 2 * kEps32) * std::fabs(alpha) * r.magnitude[i] +
                         3 * kEps32 * std::fabs(expected) + 2 * kEps32 * std::fabs(beta * c0[i]);
    if (!(std::fabs(out[i] - expected) <= bound)) {
      ADD_FAILURE() << "c[" << i / n << ", " << i % n << "] = " << out[i] << " expected "
                    << expected << " (bound " << bound << ")";
      ++failures;
    }
  }
}

TEST_P(GemmPathTest, OddSizesAgainstDoubleReference) {
  const std::vector<std::tuple<int64_t, int64_t, int64_t>> sizes = {
      {1, 1, 1},    {1, 7, 1},     {7, 1, 33},   {7, 33, 7},    {33, 7, 257},
      {6, 16, 256}, {97, 33, 300}, {257, 19, 5}, {13, 1023, 3}, {100, 2100, 17}};
  uint32_t seed = 10;
  for (auto [m, n, k] : sizes) check_gemm(device(), m, n, k, ta(), tb(), 1.0f, 0.0f, seed++);
}

// Sizes on both sides of the tile edges of every kernel (CPU 6 x 16 and 96/256/2048 blocks,
// CUDA 128 x 128 x 8 and 16). 70 rows: one row block a little past the CPU's mc (60 with a
// 1 MiB L2), over two depth blocks.
TEST_P(GemmPathTest, TileEdgeSizes) {
  const std::vector<std::tuple<int64_t, int64_t, int64_t>> sizes = {
      {31, 33, 127},   {127, 129, 31}, {129, 127, 1000}, {1000, 33, 129},
      {33, 1023, 129}, {2048, 7, 33},  {31, 2048, 129},  {1, 1023, 2048},
      {70, 150, 1100}};
  uint32_t seed = 40;
  for (auto [m, n, k] : sizes) check_gemm(device(), m, n, k, ta(), tb(), 1.0f, 0.0f, seed++);
}

TEST_P(GemmPathTest, AlphaZeroReadsNeitherInput) {
  // BLAS: with alpha == 0, a and b are not referenced, so their NaNs do not reach c.
  Tensor a = poisoned({5, 5}, device()), b = poisoned({5, 5}, device());
  Tensor c = on(device(), random_floats(25, 3), {5, 5});
  const auto c0 = c.to_vector<float>();
  matmul(a, b, c, GemmOptions{ta(), tb(), 0.0f, 2.0f});
  std::vector<double> expected(c0.begin(), c0.end());
  for (auto& v : expected) v *= 2.0;
  EXPECT_TRUE(all_close(c, expected, 0, 0));
}

TEST_P(GemmPathTest, Tf32IsWithinItsDocumentedBound) {
  // GemmOptions::allow_tf32: |err| <= (2^-10 + k u) * sum |a||b| (inputs rounded to 10 bits
  // each, so a product errs by up to 2 * 2^-11 relative; FP32 sums). The CPU stays exact, which
  // the bound also admits.
  for (auto [m, n, k] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {1, 1, 1}, {33, 129, 65}, {128, 128, 16}, {257, 31, 1000}, {16, 16, 8},
           {17, 15, 129}, {129, 136, 40}, {4097, 8, 24}, {136, 72, 260}}) {
    SCOPED_TRACE("m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k));
    const auto a = random_floats(m * k, 70), b = random_floats(k * n, 71);
    Tensor c = poisoned({m, n}, device());
    GemmOptions o{ta(), tb()};
    o.allow_tf32 = true;
    matmul(on(device(), a, ta() ? Shape{k, m} : Shape{m, k}),
           on(device(), b, tb() ? Shape{n, k} : Shape{k, n}), c, o);
    const Reference r = reference_gemm(a, b, m, n, k, ta(), tb());
    std::vector<double> bound(r.magnitude.size());
    for (size_t i = 0; i < bound.size(); ++i)
      bound[i] = (std::ldexp(1.0, -10) + (k + 2) * kEps32) * r.magnitude[i] + 1e-30;
    EXPECT_TRUE(all_within(c, r.value, bound));
  }
}

TEST_P(GemmPathTest, Cuda4096CubedAgainstVectorProbe) {
  if (!is_cuda_path(path())) GTEST_SKIP() << "GPU-sized; the CPU paths are probed at 1023^3";
  const int64_t m = 4096, n = 4096, k = 4096;
  Tensor a = Tensor::empty(ta() ? Shape{k, m} : Shape{m, k}, DType::F32, device());
  Tensor b = Tensor::empty(tb() ? Shape{n, k} : Shape{k, n}, DType::F32, device());
  fill_uniform(a, -1.0f, 1.0f, 81);
  fill_uniform(b, -1.0f, 1.0f, 82);
  Tensor c = poisoned({m, n}, device());
  matmul(a, b, c, GemmOptions{ta(), tb()});
  const double err = vector_probe_error(a.to_vector<float>(), b.to_vector<float>(),
                                        c.to_vector<float>(), m, n, k, ta(), tb(), 83);
  EXPECT_LE(err, 10 * std::sqrt(double(k)) * kEps32);
}

// A short a against a long b (a layer's forward x w^T over a batch: b's rows read in place by
// the AVX-512 tiles' short path, cpu/gemm/short_nt.cpp): batches that are not whole 32-row
// panels, a last block of fewer than 12 rows of b, depths past one 1024-deep block, beta.
TEST_P(GemmPathTest, ShortTimesLongAgainstDoubleReference) {
  uint32_t seed = 400;
  for (auto [m, n, k] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {64, 300, 1800}, {7, 517, 2049}, {40, 37, 14200}, {33, 1024, 515}, {1, 600, 1000},
           {129, 275, 1910}}) {
    check_gemm(device(), m, n, k, ta(), tb(), 1.0f, 0.0f, seed++);
  }
  check_gemm(device(), 100, 480, 1100, ta(), tb(), -1.5f, 0.5f, seed++);
}

TEST_P(GemmPathTest, AlphaAndBeta) {
  check_gemm(device(), 33, 17, 65, ta(), tb(), 0.5f, 0.0f, 100);
  check_gemm(device(), 33, 17, 65, ta(), tb(), -2.0f, 1.0f, 101);
  check_gemm(device(), 7, 40, 300, ta(), tb(), 1.0f, 0.25f, 102);
  check_gemm(device(), 9, 9, 0, ta(), tb(), 1.0f, 0.5f, 103);  // k = 0: c = beta*c
  check_gemm(device(), 9, 9, 0, ta(), tb(), 1.0f, 0.0f, 104);  // k = 0, beta = 0: c = 0
}

TEST_P(GemmPathTest, LargeProductAgainstVectorProbe) {
  const int64_t m = 1023, n = 1023, k = 1023;
  const auto a = random_floats(m * k, 7), b = random_floats(k * n, 8);
  Tensor c = poisoned({m, n}, device());
  matmul(on(device(), a, {m, k}), on(device(), b, {k, n}), c, GemmOptions{ta(), tb()});
  // Each c element carries a random-walk error ~ sqrt(k)*u*|c|; summing n of them against t
  // keeps that relative size. 10x sqrt(k)*u leaves room without hiding a wrong element
  // (one wrong element out of a million moves the ratio by ~1e-3).
  EXPECT_LE(vector_probe_error(a, b, c.to_vector<float>(), m, n, k, ta(), tb(), 9),
            10 * std::sqrt(double(k)) * kEps32);
}

INSTANTIATE_TEST_SUITE_P(Paths, GemmPathTest,
                         ::testing::Combine(all_gemm_paths(), ::testing::Bool(),
                                            ::testing::Bool()),
                         gemm_case_name);

class LinearTest : public DeviceTest {};

TEST_P(LinearTest, ForwardAndBackwardAgainstDoubleReference) {
  for (auto [rows, in, out] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
           {1, 1, 1}, {7, 33, 5}, {33, 257, 65}, {64, 100, 200}}) {
    SCOPED_TRACE("rows=" + std::to_string(rows) + " in=" + std::to_string(in) +
                 " out=" + std::to_string(out));
    const auto x = random_floats(rows * in, 1), w = random_floats(out * in, 2),
               bias = random_floats(out, 3), dy = random_floats(rows * out, 4);
    Tensor y = poisoned({rows, out}, device());
    Tensor bias_t = on(device(), bias, {out});
    linear_forward(on(device(), x, {rows, in}), on(device(), w, {out, in}), &bias_t, y);
    // Double references and, per element, sum |terms| for the bound of a k-term float sum:
    // |err| <= gamma_k * sum |terms| with gamma_k = k*u/(1 - k*u), plus the final rounding.
    std::vector<double> y_ref(rows * out), dx_ref(rows * in, 0), dw_ref(out * in, 0),
        db_ref(out, 0), y_mag(rows * out), dx_mag(rows * in, 0), dw_mag(out * in, 0),
        db_mag(out, 0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t o = 0; o < out; ++o) {
        double s = bias[o], mag = std::fabs(bias[o]);
        for (int64_t i = 0; i < in; ++i) {
          s += double(x[r * in + i]) * w[o * in + i];
          mag += std::fabs(double(x[r * in + i]) * w[o * in + i]);
        }
        y_ref[r * out + o] = s;
        y_mag[r * out + o] = mag;
        db_ref[o] += dy[r * out + o];
        db_mag[o] += std::fabs(dy[r * out + o]);
        for (int64_t i = 0; i < in; ++i) {
          dx_ref[r * in + i] += double(dy[r * out + o]) * w[o * in + i];
          dx_mag[r * in + i] += std::fabs(double(dy[r * out + o]) * w[o * in + i]);
          dw_ref[o * in + i] += double(dy[r * out + o]) * x[r * in + i];
          dw_mag[o * in + i] += std::fabs(double(dy[r * out + o]) * x[r * in + i]);
        }
      }
    auto bound = [](const std::vector<double>& mag, int64_t k) {
      const double gamma = k * kEps32 / (1 - k * kEps32) + kEps32;
      std::vector<double> b(mag.size());
      for (size_t i = 0; i < mag.size(); ++i) b[i] = gamma * mag[i] + 1e-30;
      return b;
    };
    EXPECT_TRUE(all_within(y, y_ref, bound(y_mag, in + 1)));
    Tensor dx = poisoned({rows, in}, device()), dw = poisoned({out, in}, device()),
           db = poisoned({out}, device());
    linear_backward(on(device(), x, {rows, in}), on(device(), w, {out, in}),
                    on(device(), dy, {rows, out}), &dx, dw, &db);
    EXPECT_TRUE(all_within(dx, dx_ref, bound(dx_mag, out)));
    EXPECT_TRUE(all_within(dw, dw_ref, bound(dw_mag, rows)));
    EXPECT_TRUE(all_within(db, db_ref, bound(db_mag, rows)));
    // Without bias and without the optional outputs.
    Tensor y2 = poisoned({rows, out}, device());
    linear_forward(on(device(), x, {rows, in}), on(device(), w, {out, in}), nullptr, y2);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t o = 0; o < out; ++o) {
        y_ref[r * out + o] -= bias[o];
        y_mag[r * out + o] -= std::fabs(bias[o]);
      }
    EXPECT_TRUE(all_within(y2, y_ref, bound(y_mag, in)));
    Tensor dw2 = poisoned({out, in}, device());
    linear_backward(on(device(), x, {rows, in}), on(device(), w, {out, in}),
                    on(device(), dy, {rows, out}), nullptr, dw2, nullptr);
    EXPECT_TRUE(all_within(dw2, dw_ref, bound(dw_mag, rows)));
  }
}

NNOPS_INSTANTIATE_DEVICES(LinearTest);

}  // namespace
}  // namespace nnops::test
