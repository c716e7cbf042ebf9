// CPU activations and softmax / log_softmax: the per-element formulas come from
// include/nnops/detail/activation_math.hpp, shared with the CUDA backend (the portable path);
// with AVX2 the transcendental ones run through cpu/activation_avx2.cpp's polynomials.
#include <algorithm>
#include <cmath>

#include "activation_fast.hpp"
#include "cpu_backend.hpp"
#include "nnops/detail/activation_math.hpp"
#include "nnops/detail/transformer_math.hpp"
#include "widen.hpp"

namespace nnops::detail {

// The vector kernels of the active CPU level, or null on the portable path.
const VecKernels* vector_kernels() {
  switch (active_cpu_isa()) {
    case CpuIsa::AVX2:
      return &vec_kernels_avx2();
    case CpuIsa::AVX512:
      return &vec_kernels_avx512();
    case CpuIsa::AVX2WideTiles:
      return &vec_kernels_wide_on_avx2();
    default:
      return nullptr;
  }
}

namespace {

// One loop per activation so the switch stays out of the inner loop.
template <class F>
void map_unary(float* y, const float* x, int64_t n, F f) {
#pragma omp parallel for simd if (n >= kParallelThreshold)
  for (int64_t i = 0; i < n; ++i) y[i] = f(x[i]);
}

template <class F>
void map_binary(float* out, const float* x, const float* dy, int64_t n, F f) {
#pragma omp parallel for simd if (n >= kParallelThreshold)
  for (int64_t i = 0; i < n; ++i) out[i] = f(x[i], dy[i]);
}

// The activations whose libm calls keep the portable loop scalar, as the AVX2 file names them.
bool transcendental(Activation a) {
  return a != Activation::ReLU && a != Activation::LeakyReLU;
}
FastActivation fast(Activation a) {
  switch (a) {
    case Activation::GELU:
      return FastActivation::GELU;
    case Activation::GELUTanh:
      return FastActivation::GELUTanh;
    case Activation::SiLU:
      return FastActivation::SiLU;
    case Activation::Sigmoid:
      return FastActivation::Sigmoid;
    default:
      return FastActivation::Tanh;
  }
}

}  // namespace

namespace {

void forward_f32(float* y, const float* x, int64_t n, Activation activation, float s) {
  const VecKernels* vk = vector_kernels();
  if (transcendental(activation) && vk) {
    return for_chunks(n, [&](int64_t b, int64_t e) {
      vk->activation_forward(y + b, x + b, e - b, fast(activation));
    });
  }
  switch (activation) {
    case Activation::ReLU:
      return map_unary(y, x, n, [](float v) { return relu(v); });
    case Activation::LeakyReLU:
      return map_unary(y, x, n, [s](float v) { return leaky_relu(v, s); });
    case Activation::GELU:
      return map_unary(y, x, n, [](float v) { return gelu(v); });
    case Activation::GELUTanh:
      return map_unary(y, x, n, [](float v) { return gelu_tanh(v); });
    case Activation::SiLU:
      return map_unary(y, x, n, [](float v) { return silu(v); });
    case Activation::Sigmoid:
      return map_unary(y, x, n, [](float v) { return sigmoid(v); });
    case Activation::Tanh:
      return map_unary(y, x, n, [](float v) { return tanhf(v); });
  }
}

void backward_f32(float* dx, const float* x, const float* dy, int64_t n, Activation activation,
                  float s) {
  const VecKernels* vk = vector_kernels();
  if (transcendental(activation) && vk) {
    return for_chunks(n, [&](int64_t b, int64_t e) {
      vk->activation_backward(dx + b, x + b, dy + b, e - b, fast(activation));
    });
  }
  switch (activation) {
    case Activation::ReLU:
      return map_binary(dx, x, dy, n, [](float v, float g) { return relu_grad(v, g); });
    case Activation::LeakyReLU:
      return map_binary(dx, x, dy, n, [s](float v, float g) { return leaky_relu_grad(v, g, s); });
    case Activation::GELU:
      return map_binary(dx, x, dy, n, [](float v, float g) { return gelu_grad(v, g); });
    case Activation::GELUTanh:
      return map_binary(dx, x, dy, n, [](float v, float g) { return gelu_tanh_grad(v, g); });
    case Activation::SiLU:
      return map_binary(dx, x, dy, n, [](float v, float g) { return silu_grad(v, g); });
    case Activation::Sigmoid:
      return map_binary(dx, x, dy, n, [](float v, float g) { return sigmoid_grad(v, g); });
    case Activation::Tanh:
      return map_binary(dx, x, dy, n, [](float v, float g) { return tanh_grad(v, g); });
  }
}

}  // namespace

void CpuBackend::activation_forward(View y, ConstView x, int64_t n, Activation activation,
                                    float s) {
  if (y.dtype == DType::F32 && x.dtype == DType::F32) {
    return forward_f32(static_cast<float*>(y.data), static_cast<const float*>(x.data), n,
                       activation, s);
  }
  over_f32_chunks(y, x, ConstView{nullptr, DType::F32}, n,
                  [&](float* out, const float* a, const float*, int64_t count) {
                    forward_f32(out, a, count, activation, s);
                  });
}

void CpuBackend::activation_backward(View dx, ConstView x, ConstView dy, int64_t n,
                                     Activation activation, float s) {
  if (dx.dtype == DType::F32 && x.dtype == DType::F32 && dy.dtype == DType::F32) {
    return backward_f32(static_cast<float*>(dx.data), static_cast<const float*>(x.data),
                        static_cast<const float*>(dy.data), n, activation, s);
  }
  over_f32_chunks(dx, x, dy, n, [&](float* out, const float* a, const float* b, int64_t count) {
    backward_f32(out, a, b, count, activation, s);
  });
}

void row_logsumexp(const float* x, int64_t cols, float scale, float& max_out, float& log_sum_out) {
  float mx = -INFINITY;
  double sum = 0.0;
  if (const VecKernels* vk = vector_kernels()) {
    mx = vk->row_max(x, cols, scale);
    vk->row_exp_sum(x, cols, scale, mx, sum);  // float exp (<= 1.5 ulp), double sums
  } else {
    for (int64_t c = 0; c < cols; ++c) mx = std::fmax(mx, x[c] * scale);
    for (int64_t c = 0; c < cols; ++c) sum += std::exp(static_cast<double>(x[c] * scale - mx));
  }
  max_out = mx;
  log_sum_out = static_cast<float>(std::log(sum));
}

void row_softmax(float* y, const float* x, int64_t cols, float mx, float inv_sum) {
  if (const VecKernels* vk = vector_kernels()) {
    vk->softmax_row(y, x, cols, mx, inv_sum);
    return;
  }
  for (int64_t c = 0; c < cols; ++c) y[c] = std::exp(x[c] - mx) * inv_sum;
}

void CpuBackend::softmax_forward(float* y, const float* x, int64_t rows, int64_t cols, bool log) {
#pragma omp parallel for if (rows * cols >= kParallelThreshold)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    float mx, log_sum;
    row_logsumexp(xr, cols, 1.0f, mx, log_sum);
    // Subtract the max first: x - max is exact-ish at any magnitude, max + log_sum is not.
    if (log) {
      for (int64_t c = 0; c < cols; ++c) yr[c] = (xr[c] - mx) - log_sum;
    } else {
      const float inv_sum = std::exp(-log_sum);
      row_softmax(yr, xr, cols, mx, inv_sum);
    }
  }
}

void CpuBackend::softmax_backward(float* dx, const float* y, const float* dy, int64_t rows,
                                  int64_t cols, bool log) {
#pragma omp parallel for if (rows * cols >= kParallelThreshold)
  for (int64_t r = 0; r < rows; ++r) {
    const float* yr = y + r * cols;
    const float* dyr = dy + r * cols;
    float* dxr = dx + r * cols;
    double sum = 0.0;  // sum(dy * y) for softmax, sum(dy) for log_softmax
    for (int64_t c = 0; c < cols; ++c) sum += log ? dyr[c] : static_cast<double>(dyr[c]) * yr[c];
    const float s = static_cast<float>(sum);
    if (log) {
      for (int64_t c = 0; c < cols; ++c) dxr[c] = dyr[c] - std::exp(yr[c]) * s;
    } else {
      for (int64_t c = 0; c < cols; ++c) dxr[c] = yr[c] * (dyr[c] - s);
    }
  }
}

}  // namespace nnops::detail

namespace nnops::detail {

// Gated activations: rows split across threads. The transcendental ones (SiLU for SwiGLU,
// GELU for GeGLU) go through the CPU level's vector activation kernels a piece of a row at a
// time (the per-element formulas called one by one left expf scalar: a sixth of a Llama
// training step); the others, and the portable path, through the shared per-element formulas.
namespace {
constexpr int64_t kGatedPiece = 1024;  // floats per piece: the scratch stays in L1
}  // namespace

void CpuBackend::gated_activation_forward(float* y, const float* x, int64_t rows, int64_t h,
                                          Activation activation) {
  const VecKernels* vk = transcendental(activation) ? vector_kernels() : nullptr;
#pragma omp parallel for schedule(static) if (rows * h >= kParallelThreshold / 4)
  for (int64_t r = 0; r < rows; ++r) {
    const float* a = x + r * 2 * h;
    const float* b = a + h;
    float* yr = y + r * h;
    if (!vk) {
      for (int64_t j = 0; j < h; ++j) yr[j] = gated_apply(activation, a[j], b[j]);
      continue;
    }
    for (int64_t j0 = 0; j0 < h; j0 += kGatedPiece) {
      const int64_t count = std::min(kGatedPiece, h - j0);
      vk->activation_forward(yr + j0, a + j0, count, fast(activation));  // act(a)
#pragma omp simd
      for (int64_t j = j0; j < j0 + count; ++j) yr[j] *= b[j];
    }
  }
}

void CpuBackend::gated_activation_backward(float* dx, const float* x, const float* dy, int64_t rows,
                                           int64_t h, Activation activation) {
  const VecKernels* vk = transcendental(activation) ? vector_kernels() : nullptr;
#pragma omp parallel for schedule(static) if (rows * h >= kParallelThreshold / 4)
  for (int64_t r = 0; r < rows; ++r) {
    const float* a = x + r * 2 * h;
    const float* b = a + h;
    const float* g = dy + r * h;
    float* da = dx + r * 2 * h;
    float* db = da + h;
    if (!vk) {
      for (int64_t j = 0; j < h; ++j) gated_grad(activation, a[j], b[j], g[j], da[j], db[j]);
      continue;
    }
    float gb[kGatedPiece];  // dy * b, the gradient reaching act(a)
    for (int64_t j0 = 0; j0 < h; j0 += kGatedPiece) {
      const int64_t count = std::min(kGatedPiece, h - j0);
      vk->activation_forward(db + j0, a + j0, count, fast(activation));  // act(a)
#pragma omp simd
      for (int64_t j = 0; j < count; ++j) {
        db[j0 + j] *= g[j0 + j];
        gb[j] = g[j0 + j] * b[j0 + j];
      }
      vk->activation_backward(da + j0, a + j0, gb, count, fast(activation));
    }
  }
}

}  // namespace nnops::detail
