// CPU optimizer steps; the per-element updates come from include/nnops/detail/optim_math.hpp.
// Mixed precision works chunk by chunk: a BF16 gradient chunk is widened into a thread's buffer,
// the FP32 update runs, and the updated chunk is rounded into the BF16 working copy while it is
// still in cache (one pass over memory).
#include <algorithm>

#include "cpu_backend.hpp"
#include "nnops/detail/bf16_math.hpp"
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
// compiled three times: for baseline x86-64 (4 lanes), for AVX2+FMA (8 lanes, fused
// multiply-adds) and for AVX-512F (16 lanes).
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

// The same body for AVX-512F: 16 lanes, mask registers for the selects.
template <bool kMasked, bool kAmsgrad>
__attribute__((target("avx512f"))) void adam_range_avx512(float* param, const float* grad,
                                                          float* exp_avg, float* exp_avg_sq,
                                                          float* max_exp_avg_sq,
                                                          const uint8_t* mask, int64_t begin,
                                                          int64_t end, const AdamScalars s) {
  adam_range_body<kMasked, kAmsgrad>(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, mask, begin,
                                     end, s);
}
#endif

constexpr int64_t kOptimChunk = 16384;

// The chunk [begin, begin + count) of a gradient as floats: the F32 data itself, or the BF16
// values widened into `buffer` (kOptimChunk floats).
const float* grad_chunk(const void* grad, DType dtype, int64_t begin, int64_t count,
                        float* buffer) {
  if (dtype == DType::F32) return static_cast<const float*>(grad) + begin;
  const uint16_t* g = static_cast<const uint16_t*>(grad) + begin;
  for (int64_t i = 0; i < count; ++i) buffer[i] = bf16_bits_to_float(g[i]);
  return buffer;
}

void round_into(uint16_t* working, const float* param, int64_t count) {
  for (int64_t i = 0; i < count; ++i) working[i] = float_to_bf16_bits(param[i]);
}

template <bool kMasked, bool kAmsgrad>
void adam_loop(const AdamTensor& a) {
  const int64_t chunks = (a.n + kOptimChunk - 1) / kOptimChunk;
  auto range = adam_range<kMasked, kAmsgrad>;
#if defined(__x86_64__) && defined(__GNUC__)
  if (cpu_isa_has_avx2()) range = adam_range_avx2<kMasked, kAmsgrad>;
  if (active_cpu_isa() == CpuIsa::AVX512) range = adam_range_avx512<kMasked, kAmsgrad>;
#endif
#pragma omp parallel for schedule(static) if (a.n >= kParallelThreshold)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t b = c * kOptimChunk, count = std::min(kOptimChunk, a.n - b);
    thread_local float widened[kOptimChunk];
    const float* g = grad_chunk(a.grad, a.grad_dtype, b, count, widened);
    range(a.param + b, g, a.exp_avg + b, a.exp_avg_sq + b,
          a.max_exp_avg_sq ? a.max_exp_avg_sq + b : nullptr, a.mask ? a.mask + b : nullptr, 0,
          count, a.scalars);
    if (a.working) round_into(a.working + b, a.param + b, count);
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

void CpuBackend::sgd_step(float* param, ConstView grad, float* buf, const uint8_t* mask,
                          uint16_t* working, int64_t n, const SgdScalars& s) {
  const int64_t chunks = (n + kOptimChunk - 1) / kOptimChunk;
#pragma omp parallel for schedule(static) if (n >= kParallelThreshold)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t b = c * kOptimChunk, count = std::min(kOptimChunk, n - b);
    thread_local float widened[kOptimChunk];
    const float* g = grad_chunk(grad.data, grad.dtype, b, count, widened);
    for (int64_t i = 0; i < count; ++i) {
      if (mask && mask[b + i] == 0) {
        param[b + i] = 0.0f;
        continue;
      }
      sgd_update(param[b + i], g[i], buf ? buf + b + i : nullptr, s);
    }
    if (working) round_into(working + b, param + b, count);
  }
}

double CpuBackend::sum_squares(ConstView x, int64_t n) {
  if (x.dtype == DType::BF16) {
    const uint16_t* h = static_cast<const uint16_t*>(x.data);
    return deterministic_sum(n, 1, [h](int64_t i) {
      const double v = bf16_bits_to_float(h[i]);
      return v * v;
    });
  }
  const float* f = static_cast<const float*>(x.data);
  return deterministic_sum(n, 1, [f](int64_t i) { return static_cast<double>(f[i]) * f[i]; });
}

void CpuBackend::scale(View x, int64_t n, float factor) {
  if (x.dtype == DType::BF16) {
    uint16_t* h = static_cast<uint16_t*>(x.data);
#pragma omp parallel for simd if (n >= kParallelThreshold)
    for (int64_t i = 0; i < n; ++i) h[i] = float_to_bf16_bits(bf16_bits_to_float(h[i]) * factor);
    return;
  }
  float* f = static_cast<float*>(x.data);
#pragma omp parallel for simd if (n >= kParallelThreshold)
  for (int64_t i = 0; i < n; ++i) f[i] *= factor;
}

}  // namespace nnops::detail
