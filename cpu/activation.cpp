// CPU activations and softmax / log_softmax: the per-element formulas come from
// include/nnops/detail/activation_math.hpp, shared with the CUDA backend.
#include <cmath>

#include "cpu_backend.hpp"
#include "nnops/detail/activation_math.hpp"

namespace nnops::detail {

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

}  // namespace

void CpuBackend::activation_forward(float* y, const float* x, int64_t n, Activation activation,
                                    float s) {
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

void CpuBackend::activation_backward(float* dx, const float* x, const float* dy, int64_t n,
                                     Activation activation, float s) {
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

void row_logsumexp(const float* x, int64_t cols, float scale, float& max_out, float& log_sum_out) {
  float mx = -INFINITY;
  for (int64_t c = 0; c < cols; ++c) mx = std::fmax(mx, x[c] * scale);
  double sum = 0.0;
  for (int64_t c = 0; c < cols; ++c) sum += std::exp(static_cast<double>(x[c] * scale - mx));
  max_out = mx;
  log_sum_out = static_cast<float>(std::log(sum));
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
      for (int64_t c = 0; c < cols; ++c) yr[c] = std::exp(xr[c] - mx) * inv_sum;
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
