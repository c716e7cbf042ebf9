// CPU optimizer steps; the per-element updates come from include/nnops/detail/optim_math.hpp.
#include "cpu_backend.hpp"
#include "reduce.hpp"

namespace nnops::detail {

namespace {

#if defined(__GNUC__)
#define NNOPS_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define NNOPS_ALWAYS_INLINE inline
#endif

// One loop per (mask, amsgrad) pair over plain restrict pointers, with the update applied to
// locals and kept or dropped by a select: no branches, so the loop vectorizes. Written once and
// compiled twice, for baseline x86-64 (4 lanes) and for AVX2+FMA (8 lanes, fused multiply-adds).
template <bool kMasked, bool kAmsgrad>
NNOPS_ALWAYS_INLINE void adam_range_body(float* __restrict param, const float* __restrict grad,
                                         float* __restrict exp_avg, float* __restrict exp_avg_sq,
                                         float* __restrict max_exp_avg_sq,
                                         const uint8_t* __restrict mask, int64_t begin, int64_t end,
                                         const AdamScalars& s) {
  for (int64_t i = begin; i < end; ++i) {
    const float m0 = exp_avg[i], v0 = exp_avg_sq[i];
    const float vmax0 = kAmsgrad ? max_exp_avg_sq[i] : 0.0f;
    float p = param[i], m = m0, v = v0, vmax = vmax0;
    adam_update(p, grad[i], m, v, vmax, s);
    // Pruned entries: the weight stays exactly 0 and the moments keep their old values.
    const bool keep = !kMasked || mask[i] != 0;
    param[i] = keep ? p : 0.0f;
    exp_avg[i] = keep ? m : m0;
    exp_avg_sq[i] = keep ? v : v0;
    if (kAmsgrad) max_exp_avg_sq[i] = keep ? vmax : vmax0;
  }
}

template <bool kMasked, bool kAmsgrad>
void adam_range(float* param, const float* grad, float* exp_avg, float* exp_avg_sq,
                float* max_exp_avg_sq, const uint8_t* mask, int64_t begin, int64_t end,
                const AdamScalars s) {
  adam_range_body<kMasked, kAmsgrad>(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, mask, begin,
                                     end, s);
}

#if defined(__x86_64__) && defined(__GNUC__)
template <bool kMasked, bool kAmsgrad>
__attribute__((target("avx2,fma"))) void adam_range_avx2(float* param, const float* grad,
                                                         float* exp_avg, float* exp_avg_sq,
                                                         float* max_exp_avg_sq, const uint8_t* mask,
                                                         int64_t begin, int64_t end,
                                                         const AdamScalars s) {
  adam_range_body<kMasked, kAmsgrad>(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, mask, begin,
                                     end, s);
}
#endif

template <bool kMasked, bool kAmsgrad>
void adam_loop(const AdamTensor& a) {
  constexpr int64_t kChunk = 16384;
  const int64_t chunks = (a.n + kChunk - 1) / kChunk;
  auto range = adam_range<kMasked, kAmsgrad>;
#if defined(__x86_64__) && defined(__GNUC__)
  if (active_cpu_isa() == CpuIsa::AVX2) range = adam_range_avx2<kMasked, kAmsgrad>;
#endif
#pragma omp parallel for schedule(static) if (a.n >= kParallelThreshold)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t end = (c + 1) * kChunk < a.n ? (c + 1) * kChunk : a.n;
    range(a.param, a.grad, a.exp_avg, a.exp_avg_sq, a.max_exp_avg_sq, a.mask, c * kChunk, end,
          a.scalars);
  }
}

}  // namespace

void CpuBackend::adam_step(const AdamTensor* tensors, int64_t count) {
  for (int64_t t = 0; t < count; ++t) {
    const AdamTensor& a = tensors[t];
    if (a.mask) {
      a.max_exp_avg_sq ? adam_loop<true, true>(a) : adam_loop<true, false>(a);
    } else {
      a.max_exp_avg_sq ? adam_loop<false, true>(a) : adam_loop<false, false>(a);
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
  return deterministic_sum(n, 1, [x](int64_t i) { return static_cast<double>(x[i]) * x[i]; });
}

void CpuBackend::scale(float* x, int64_t n, float factor) {
#pragma omp parallel for simd if (n >= kParallelThreshold)
  for (int64_t i = 0; i < n; ++i) x[i] *= factor;
}

}  // namespace nnops::detail
