// CPU element-wise helpers.
#include "cpu_backend.hpp"

namespace nnops::detail {

void CpuBackend::add_scaled(float* y, const float* x, int64_t n, float alpha, float beta) {
  if (beta == 0.0f) {
#pragma omp parallel for simd if (n >= kParallelThreshold)
    for (int64_t i = 0; i < n; ++i) y[i] = alpha * x[i];
  } else {
#pragma omp parallel for simd if (n >= kParallelThreshold)
    for (int64_t i = 0; i < n; ++i) y[i] = beta * y[i] + alpha * x[i];
  }
}

void CpuBackend::fill(float* t, int64_t n, float value) {
#pragma omp parallel for simd if (n >= kParallelThreshold)
  for (int64_t i = 0; i < n; ++i) t[i] = value;
}

}  // namespace nnops::detail
