// CPU optimizer steps; the per-element updates come from include/nnops/detail/optim_math.hpp.
#include "cpu_backend.hpp"

namespace nnops::detail {

void CpuBackend::adam_step(const AdamTensor* tensors, int64_t count) {
  for (int64_t t = 0; t < count; ++t) {
    const AdamTensor& a = tensors[t];
    const AdamScalars s = a.scalars;
#pragma omp parallel for if (a.n >= kParallelThreshold)
    for (int64_t i = 0; i < a.n; ++i) {
      if (a.mask && a.mask[i] == 0) {
        a.param[i] = 0.0f;  // pruned: stays exactly 0, moments untouched
        continue;
      }
      adam_update(a.param[i], a.grad[i], a.exp_avg[i], a.exp_avg_sq[i],
                  a.max_exp_avg_sq ? a.max_exp_avg_sq + i : nullptr, s);
    }
  }
}

void CpuBackend::sgd_step(float* param, const float* grad, float* buf, const uint8_t* mask,
                          int64_t n, const SgdScalars& s) {
#pragma omp parallel for if (n >= kParallelThreshold)
  for (int64_t i = 0; i < n; ++i) {
    if (mask && mask[i] == 0) {
      param[i] = 0.0f;
      continue;
    }
    sgd_update(param[i], grad[i], buf ? buf + i : nullptr, s);
  }
}

double CpuBackend::sum_squares(const float* x, int64_t n) {
  double sum = 0.0;
#pragma omp parallel for reduction(+ : sum) if (n >= kParallelThreshold)
  for (int64_t i = 0; i < n; ++i) sum += static_cast<double>(x[i]) * x[i];
  return sum;
}

void CpuBackend::scale(float* x, int64_t n, float factor) {
#pragma omp parallel for simd if (n >= kParallelThreshold)
  for (int64_t i = 0; i < n; ++i) x[i] *= factor;
}

}  // namespace nnops::detail
