// BF16 products on AVX512_BF16: VDPBF16PS multiplies pairs of BF16 values and adds both
// products to FP32 accumulators, twice the multiply-adds of an FP32 FMA per instruction. The
// operands are packed in pairs along the depth (cpu/gemm/pack.hpp), and a 12 x 32 tile of FP32
// accumulators runs over them. The kernel body (bf16_pairs.inc) is compiled twice: with the
// instruction for CPUs that have it, and for AVX2 with the pair products emulated by two FMAs
// (the same order and rounding, except that VDPBF16PS treats subnormal inputs as zero and
// flushes subnormal sums), so that the packing and the kernel run in the tests of any machine.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstring>

#include "kernels.hpp"

// 64-byte vectors cross inlined helpers only, never an ABI boundary.
#pragma GCC diagnostic ignored "-Wpsabi"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

namespace nnops::detail {

// 16 floats and 16 words of BF16 pairs, for both compilations below.
typedef float F16 __attribute__((vector_size(64)));
typedef uint32_t U16 __attribute__((vector_size(64)));

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f,avx512bw,avx512bf16"))), \
                             apply_to = function)
#else
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512bf16")
#endif
namespace native_pairs {
inline F16 dot_pairs(const F16& acc, const U16& a, const U16& b) {
  return (F16)_mm512_dpbf16_ps((__m512)acc, (__m512bh)a, (__m512bh)b);
}
#include "bf16_pairs.inc"
double time_chains(bool dot, int64_t rounds);
}  // namespace native_pairs

// Pair panels are always packed (ldb = kWideNR).
void micro_kernel_avx512_bf16(int64_t kc, const float* a, const float* b, int64_t, float* c,
                              int64_t ldc, float alpha, float beta, int mr, int nr) {
  native_pairs::pairs_body(kc, a, b, c, ldc, alpha, beta, mr, nr);
}

// The time of `rounds` x 12 independent VDPBF16PS (dot) or VFMADD231PS (fma) on 16 lanes: 12
// chains hide either instruction's latency, so the time is their throughput.
double native_pairs::time_chains(bool dot, int64_t rounds) {
  F16 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = F16{} + static_cast<float>(i);
  const U16 x = U16{} + 0x3F803F80u;  // the pair (1, 1)
  const F16 xf = F16{} + 1e-7f;
  const auto t0 = std::chrono::steady_clock::now();
  for (int64_t r = 0; r < rounds; ++r) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) {
      acc[i] = dot ? native_pairs::dot_pairs(acc[i], x, x)
                   : (F16)_mm512_fmadd_ps((__m512)acc[i], (__m512)xf, (__m512)xf);
    }
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  F16 sum = F16{};
  for (int i = 0; i < 12; ++i) sum += acc[i];
  volatile float sink = sum[0];  // the chains' results are used
  (void)sink;
  return seconds;
}

double dpbf16_time_per_fma_time() {
  constexpr int64_t kRounds = 20000;  // ~0.1 ms each at two instructions a cycle
  double dot = 1e30, fma = 1e30;
  for (int rep = 0; rep < 3; ++rep) {  // the fastest of three: another thread may interrupt one
    dot = std::min(dot, native_pairs::time_chains(true, kRounds));
    fma = std::min(fma, native_pairs::time_chains(false, kRounds));
  }
  return dot / fma;
}
#if defined(__clang__)
#pragma clang attribute pop
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#endif
namespace emulated_pairs {
// Each BF16 value is the high half of the float it stands for.
inline F16 dot_pairs(const F16& acc, const U16& a, const U16& b) {
  const U16 high = U16{} + 0xFFFF0000u;
  F16 sum = acc + (F16)(a & high) * (F16)(b & high);  // FMAs: products of BF16 are exact
  sum += (F16)(a << 16) * (F16)(b << 16);
  return sum;
}
#include "bf16_pairs.inc"
}  // namespace emulated_pairs

void micro_kernel_bf16_pairs_on_avx2(int64_t kc, const float* a, const float* b, int64_t, float* c,
                                     int64_t ldc, float alpha, float beta, int mr, int nr) {
  emulated_pairs::pairs_body(kc, a, b, c, ldc, alpha, beta, mr, nr);
}
#if defined(__clang__)
#pragma clang attribute pop
#else
#pragma GCC pop_options
#endif

}  // namespace nnops::detail
#endif
