// BF16 products: matmul and the linear layer with BF16 operands, FP32 sums, and F32 or BF16
// outputs, against a double reference of the BF16 values, on every CPU path and on CUDA.
#include <tuple>

#include "test_util.hpp"

namespace nnops::test {
namespace {

class Bf16GemmTest : public GemmPathFixture {
 protected:
  void check_products();
  // The FP32 sum of k exact products (a product of two BF16 values fits a float): the usual
  // gamma_k bound. Tensor cores may truncate inside their adds, so CUDA gets twice the unit.
  double gamma(int64_t k) const {
    const double u = is_cuda_path(path()) ? 2 * kEps32 : kEps32;
    return k * u / (1 - k * u);
  }
};

constexpr double kBf16Unit = 1.0 / 256;  // 2^-8: round to nearest of 8 significant bits

// Random values already representable in BF16, so the reference sees what the kernel sees.
std::vector<float> bf16_values(int64_t n, uint32_t seed) {
  std::vector<float> v = random_floats(n, seed);
  for (float& x : v) x = bf16(x).to_float();
  return v;
}

Tensor as_dtype(const std::vector<float>& v, const Shape& shape, DType dtype, Device device) {
  if (dtype == DType::F32) return Tensor::from_vector(v, shape, device);
  std::vector<bf16> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = bf16(v[i]);
  return Tensor::from_vector(h, shape, device);
}

// A tensor of this dtype full of NaN (an output a kernel must overwrite everywhere).
Tensor poisoned_as(const Shape& shape, DType dtype, Device device) {
  return as_dtype(std::vector<float>(numel_of(shape), NAN), shape, dtype, device);
}

// out within `bound_fp32` of ref, plus the BF16 rounding (half an ulp) when out is BF16.
void expect_within(const Tensor& out, const std::vector<double>& ref,
                   const std::vector<double>& bound_fp32, const char* what) {
  const auto got = as_floats(out);
  ASSERT_EQ(got.size(), ref.size()) << what;
  const double round = out.dtype() == DType::BF16 ? kBf16Unit : 0.0;
  int failures = 0;
  for (size_t i = 0; i < got.size() && failures < 5; ++i) {
    const double bound = bound_fp32[i] * (1 + round) + round * std::fabs(ref[i]);
    if (!(std::fabs(got[i] - ref[i]) <= bound)) {
      ADD_FAILURE() << what << "[" << i << "] = " << got[i] << " expected " << ref[i] << " (bound "
                    << bound << ")";
      ++failures;
    }
  }
}

TEST_P(Bf16GemmTest, ProductsAgainstDoubleReference) {
  check_products();
  // On AVX512_BF16 the kernel is chosen by measurement: run both the VDPBF16PS pair kernel and
  // the widened FP32 one whichever was chosen.
  if (path() == GemmPath::CpuAvx512 && detail::cpu_supports_avx512bf16()) {
    for (bool pairs : {true, false}) {
      SCOPED_TRACE(pairs ? "VDPBF16PS pair kernel" : "widened into the FP32 kernel");
      detail::set_cpu_bf16_pairs(pairs);
      check_products();
    }
    detail::set_cpu_bf16_pairs(std::nullopt);
  }
}

void Bf16GemmTest::check_products() {
  const std::vector<std::tuple<int64_t, int64_t, int64_t>> sizes = {
      {1, 1, 1},      {7, 33, 7},      {33, 7, 257},  {97, 33, 300},
      {127, 129, 31}, {129, 127, 100}, {13, 1023, 3}, {64, 200, 1000}, {70, 150, 2100},
      // Tensor-core tile edges (16 x 8 fragments, 128 x 128 blocks, 32-deep slices), with every
      // contiguous extent a multiple of 8 (the cp.async path) or not (staged through registers).
      {16, 16, 16},   {17, 15, 129},   {128, 128, 128}, {129, 136, 48},
      {4097, 16, 24}, {15, 4097, 8},   {136, 72, 520}};
  uint32_t seed = 300;
  for (auto [m, n, k] : sizes) {
    for (DType out_dtype : {DType::F32, DType::BF16}) {
      for (float beta : {0.0f, 0.5f}) {
        SCOPED_TRACE("m=" + std::to_string(m) + " n=" + std::to_string(n) +
                     " k=" + std::to_string(k) + " out " + to_string(out_dtype) +
                     " beta=" + std::to_string(beta));
        const auto a = bf16_values(m * k, seed++), b = bf16_values(k * n, seed++);
        const auto c0 = bf16_values(m * n, seed++);
        Tensor at = as_dtype(a, ta() ? Shape{k, m} : Shape{m, k}, DType::BF16, device());
        Tensor bt = as_dtype(b, tb() ? Shape{n, k} : Shape{k, n}, DType::BF16, device());
        Tensor c = beta == 0.0f ? poisoned_as({m, n}, out_dtype, device())
                                : as_dtype(c0, {m, n}, out_dtype, device());
        const float alpha = 1.5f;
        matmul(at, bt, c, GemmOptions{ta(), tb(), alpha, beta});
        std::vector<double> ref(m * n), bound(m * n);
        for (int64_t i = 0; i < m; ++i) {
          for (int64_t j = 0; j < n; ++j) {
            double s = 0, mag = 0;
            for (int64_t p = 0; p < k; ++p) {
              const double x = ta() ? a[p * m + i] : a[i * k + p];
              const double y = tb() ? b[j * k + p] : b[p * n + j];
              s += x * y;
              mag += std::fabs(x * y);
            }
            const double old = beta * double(c0[i * n + j]);
            ref[i * n + j] = alpha * s + old;
            bound[i * n + j] = (gamma(k) + 2 * kEps32) * alpha * mag +
                               3 * kEps32 * std::fabs(ref[i * n + j]) + 2 * kEps32 * std::fabs(old);
          }
        }
        expect_within(c, ref, bound, "c");
      }
    }
  }
}

// Many blocks and 64 slices of 64 deep, so every shared-memory ring wraps around many times,
// and a product as large with ragged edges in m, n and k (the sm_90a TMA kernel takes 128 x 256
// blocks at these sizes): against a random vector (BLIS's check, as GemmPathTest's 4096^3
// probe), F32 out.
TEST_P(Bf16GemmTest, Cuda4096CubedAgainstVectorProbe) {
  if (!is_cuda_path(path())) GTEST_SKIP() << "GPU-sized; the CPU paths are checked above";
  uint32_t seed = 91;
  for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{4096, 4096, 4096},
                         std::tuple<int64_t, int64_t, int64_t>{4100, 4104, 1000}}) {
    SCOPED_TRACE("m=" + std::to_string(m) + " n=" + std::to_string(n) + " k=" + std::to_string(k));
    const auto a = bf16_values(m * k, seed++), b = bf16_values(k * n, seed++);
    Tensor c = poisoned_as({m, n}, DType::F32, device());
    matmul(as_dtype(a, ta() ? Shape{k, m} : Shape{m, k}, DType::BF16, device()),
           as_dtype(b, tb() ? Shape{n, k} : Shape{k, n}, DType::BF16, device()), c,
           GemmOptions{ta(), tb()});
    // Each element's error is a random walk of k roundings at the tensor cores' unit (2 u):
    // 10x sqrt(k) of it; a wrong 128 x 128 tile moves the ratio by ~3e-2.
    EXPECT_LE(vector_probe_error(a, b, c.to_vector<float>(), m, n, k, ta(), tb(), seed++),
              20 * std::sqrt(double(k)) * kEps32);
  }
}

INSTANTIATE_TEST_SUITE_P(Paths, Bf16GemmTest,
                         ::testing::Combine(all_gemm_paths(), ::testing::Bool(), ::testing::Bool()),
                         gemm_case_name);

class Bf16LinearTest : public DeviceTest {};

// The linear layer in mixed precision: BF16 x, w and dy; every output F32 or BF16 on its own.
TEST_P(Bf16LinearTest, ForwardAndBackwardInEveryOutputDtype) {
  for_each_cpu_isa(device(), [&] {
    const int64_t rows = 33, in = 70, out = 19;
    const auto x = bf16_values(rows * in, 1), w = bf16_values(out * in, 2);
    const auto bias = bf16_values(out, 3), dy = bf16_values(rows * out, 4);
    Tensor xt = as_dtype(x, {rows, in}, DType::BF16, device());
    Tensor wt = as_dtype(w, {out, in}, DType::BF16, device());
    Tensor dyt = as_dtype(dy, {rows, out}, DType::BF16, device());
    const double g_in = in * 2 * kEps32, g_rows = rows * 2 * kEps32, g_out = out * 2 * kEps32;
    for (DType o : {DType::F32, DType::BF16}) {
      SCOPED_TRACE(std::string("outputs ") + to_string(o));
      Tensor bt = as_dtype(bias, {out}, o, device());  // the bias dtype follows y's here
      Tensor y = poisoned_as({rows, out}, o, device());
      linear_forward(xt, wt, &bt, y);
      std::vector<double> ref(rows * out), bound(rows * out);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t j = 0; j < out; ++j) {
          double s = bias[j], mag = std::fabs(bias[j]);
          for (int64_t p = 0; p < in; ++p) {
            s += double(x[r * in + p]) * w[j * in + p];
            mag += std::fabs(double(x[r * in + p]) * w[j * in + p]);
          }
          ref[r * out + j] = s;
          bound[r * out + j] = (g_in + 2 * kEps32) * mag;
        }
      }
      expect_within(y, ref, bound, "y");

      Tensor dx = poisoned_as({rows, in}, o, device()), dw = poisoned_as({out, in}, o, device());
      Tensor db = poisoned_as({out}, o, device());
      linear_backward(xt, wt, dyt, &dx, dw, &db);
      std::vector<double> rdx(rows * in), bdx(rows * in), rdw(out * in), bdw(out * in);
      std::vector<double> rdb(out), bdb(out);
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t p = 0; p < in; ++p) {
          double s = 0, mag = 0;
          for (int64_t j = 0; j < out; ++j) {
            s += double(dy[r * out + j]) * w[j * in + p];
            mag += std::fabs(double(dy[r * out + j]) * w[j * in + p]);
          }
          rdx[r * in + p] = s;
          bdx[r * in + p] = (g_out + 2 * kEps32) * mag;
        }
      }
      for (int64_t j = 0; j < out; ++j) {
        double sb = 0, mb = 0;
        for (int64_t r = 0; r < rows; ++r) sb += dy[r * out + j], mb += std::fabs(dy[r * out + j]);
        rdb[j] = sb;
        bdb[j] = 2 * kEps32 * mb;
        for (int64_t p = 0; p < in; ++p) {
          double s = 0, mag = 0;
          for (int64_t r = 0; r < rows; ++r) {
            s += double(dy[r * out + j]) * x[r * in + p];
            mag += std::fabs(double(dy[r * out + j]) * x[r * in + p]);
          }
          rdw[j * in + p] = s;
          bdw[j * in + p] = (g_rows + 2 * kEps32) * mag;
        }
      }
      expect_within(dx, rdx, bdx, "dx");
      expect_within(dw, rdw, bdw, "dw");
      expect_within(db, rdb, bdb, "db");
    }
  });
}

// The CUDA kernels against the CPU's on the shapes of a training step: both sum FP32 products
// of the same BF16 values, so they agree within two FP32 dot-product bounds.
TEST_P(Bf16LinearTest, DeviceAgreesWithCpuOnATrainingStep) {
  if (device() == Device::CPU) GTEST_SKIP() << "compares a GPU with the CPU";
  const int64_t rows = 64, in = 1000, out = 2000;
  const auto x = bf16_values(rows * in, 11), w = bf16_values(out * in, 12);
  Tensor y_cpu = Tensor::empty({rows, out}),
         y_gpu = Tensor::empty({rows, out}, DType::F32, Device::CUDA);
  linear_forward(as_dtype(x, {rows, in}, DType::BF16, Device::CPU),
                 as_dtype(w, {out, in}, DType::BF16, Device::CPU), nullptr, y_cpu);
  linear_forward(as_dtype(x, {rows, in}, DType::BF16, Device::CUDA),
                 as_dtype(w, {out, in}, DType::BF16, Device::CUDA), nullptr, y_gpu);
  const auto a = y_cpu.to_vector<float>(), b = y_gpu.to_vector<float>();
  // |x|, |w| <= 1: each sum of |products| is at most `in`.
  const double tol = 3 * in * 2 * kEps32 * in;
  for (size_t i = 0; i < a.size(); ++i) ASSERT_NEAR(a[i], b[i], tol) << i;
}

TEST_P(Bf16LinearTest, OperandsOfOneProductShareADtype) {
  Tensor f = Tensor::zeros({4, 4}, DType::F32, device());
  Tensor h = Tensor::zeros({4, 4}, DType::BF16, device());
  Tensor c = Tensor::zeros({4, 4}, DType::F32, device());
  EXPECT_TRUE(throws_error([&] { matmul(f, h, c); }, "nnops::matmul", "share a dtype"));
  EXPECT_TRUE(throws_error([&] { linear_forward(h, f, nullptr, c); }, "nnops::linear_forward",
                           "share a dtype"));
  Tensor dw = Tensor::zeros({4, 4}, DType::F32, device());
  EXPECT_TRUE(throws_error([&] { linear_backward(h, h, f, nullptr, dw, nullptr); },
                           "nnops::linear_backward", "share a dtype"));
  Tensor i32 = Tensor::zeros({4, 4}, DType::I32, device());
  EXPECT_TRUE(throws_error([&] { matmul(h, h, i32); }, "nnops::matmul", "c has dtype I32"));
}

NNOPS_INSTANTIATE_DEVICES(Bf16LinearTest);

}  // namespace
}  // namespace nnops::test
