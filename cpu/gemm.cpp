// CPU GEMM after BLIS / Goto: op(b) is packed into NR-wide panels and op(a) into MR-tall panels
// (edges zero-padded), and an MR x NR register-blocked micro-kernel runs over them, with block
// sizes derived from the cache sizes the OS reports. Micro-kernels, picked at run time: a
// portable 6 x 16 loop nest the compiler vectorizes for baseline x86-64, an AVX2+FMA 6 x 16 one
// in intrinsics whose accumulators stay in registers, and an AVX-512 12 x 32 one
// (cpu/gemm_wide.cpp). Each thread
// owns a block of c (columns, or rows when c is narrow) and packs what it needs itself, so
// threads never wait on each other inside a product. With beta == 0, c is never read.
#include <omp.h>
#include <unistd.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <type_traits>
#include <utility>
#include <vector>

#include "cpu_backend.hpp"
#include "gemm_kernels.hpp"
#include "nnops/detail/bf16_math.hpp"

namespace nnops::detail {

namespace {

constexpr int kMR = kNarrowMR;  // 6 x 16 accumulators = 12 AVX2 registers
constexpr int kNR = kNarrowNR;
// For a short A, B panels are packed this many at a time (256 contiguous bytes of each row of
// a non-transposed b for 16-wide panels) into a buffer that stays in L2.
constexpr int64_t kPanelsAtOnce = 4;
constexpr int64_t kPrefetchRows = 32;
// Products with at most this many rows read a non-transposed F32 b in place (no packing).
constexpr int64_t kInPlaceRows = 256;

// Block sizes from the caches the machine reports (Goto/BLIS): a kc x NR panel of B fills an
// eighth of L2, an mc x kc block of A a quarter of L2, and a kc x nc block of B a quarter of L3.
// Defaults where the OS reports nothing. A deep kc halves and quarters the passes over c and
// the micro-kernel's calls; the B panel streams from L2 at 128 bytes per 24 FMAs, which the L2
// sustains. Sizing the panel to half of L1 instead (kc = 128 for 12 x 32 tiles on a 32 KiB L1)
// ran 84 GFLOP/s on one AMD EPYC core at 2048^3 against 105 at kc = 1024 (oneDNN: 108). For
// 12 x 32 tiles on a 32 KiB L1 / 1 MiB L2 / 32 MiB L3 core: kc = 1024, mc = 60, nc = 2048.
struct Blocking {
  int64_t kc, mc, nc;
};

int64_t cache_bytes(int name, int64_t fallback) {
  const long v = sysconf(name);
  return v > 0 ? v : fallback;
}

template <int MR, int NR>
Blocking blocking_for_caches() {
  static const Blocking b = [] {
    const int64_t l2 = cache_bytes(_SC_LEVEL2_CACHE_SIZE, 512 << 10);
    const int64_t l3 = cache_bytes(_SC_LEVEL3_CACHE_SIZE, 8 << 20);
    Blocking r{};
    r.kc = std::clamp<int64_t>(l2 / 8 / (NR * 4) / 8 * 8, 64, 1024);
    r.mc = std::clamp<int64_t>(l2 / 4 / (r.kc * 4) / MR * MR, MR, 64 * MR);
    r.nc = std::clamp<int64_t>(l3 / 4 / (r.kc * 4) / NR * NR, 16 * NR, 512 * NR);
    return r;
  }();
  return b;
}

// c[mr, nr] (row stride ldc) = alpha * (a_panel * b_panel) + beta * c; only the valid mr x nr
// corner is written. beta == 0 writes without reading c. The portable reference kernel.
void micro_kernel_generic(int64_t kc, const float* __restrict a, const float* __restrict b,
                          int64_t ldb, float* c, int64_t ldc, float alpha, float beta, int mr,
                          int nr) {
  float acc[kMR][kNR] = {};
  for (int64_t p = 0; p < kc; ++p) {
    const float* ap = a + p * kMR;
    const float* bp = b + p * ldb;
#pragma GCC unroll 6
    for (int i = 0; i < kMR; ++i) {
      const float ai = ap[i];
#pragma GCC unroll 16
      for (int j = 0; j < kNR; ++j) acc[i][j] += ai * bp[j];
    }
  }
  for (int i = 0; i < mr; ++i) {
    float* ci = c + i * ldc;
    if (beta == 0.0f) {
      for (int j = 0; j < nr; ++j) ci[j] = alpha * acc[i][j];
    } else {
      for (int j = 0; j < nr; ++j) ci[j] = alpha * acc[i][j] + beta * ci[j];
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// The same computation with AVX2 intrinsics: the 6 x 16 accumulators live in 12 ymm
// registers, each step broadcasts one A value per row and issues two FMAs per row against two
// B vectors. Per element the sum still runs over p in order, with one fused multiply-add each
// (the portable kernel, built without FMA, rounds the product and the sum separately).
__attribute__((target("avx2,fma"))) void micro_kernel_avx2(int64_t kc, const float* a,
                                                           const float* b, int64_t ldb, float* c,
                                                           int64_t ldc, float alpha, float beta,
                                                           int mr, int nr) {
  static_assert(kMR == 6 && kNR == 16, "the AVX2 kernel is written for 6 x 16 tiles");
  // Twelve named accumulators: GCC keeps named __m256 locals in registers, an array it spills.
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t p = 0; p < kc; ++p) {
    const __m256 b0 = _mm256_loadu_ps(b + p * ldb);
    const __m256 b1 = _mm256_loadu_ps(b + p * ldb + 8);
    const float* ap = a + p * kMR;
    __m256 ai = _mm256_broadcast_ss(ap + 0);
    c00 = _mm256_fmadd_ps(ai, b0, c00);
    c01 = _mm256_fmadd_ps(ai, b1, c01);
    ai = _mm256_broadcast_ss(ap + 1);
    c10 = _mm256_fmadd_ps(ai, b0, c10);
    c11 = _mm256_fmadd_ps(ai, b1, c11);
    ai = _mm256_broadcast_ss(ap + 2);
    c20 = _mm256_fmadd_ps(ai, b0, c20);
    c21 = _mm256_fmadd_ps(ai, b1, c21);
    ai = _mm256_broadcast_ss(ap + 3);
    c30 = _mm256_fmadd_ps(ai, b0, c30);
    c31 = _mm256_fmadd_ps(ai, b1, c31);
    ai = _mm256_broadcast_ss(ap + 4);
    c40 = _mm256_fmadd_ps(ai, b0, c40);
    c41 = _mm256_fmadd_ps(ai, b1, c41);
    ai = _mm256_broadcast_ss(ap + 5);
    c50 = _mm256_fmadd_ps(ai, b0, c50);
    c51 = _mm256_fmadd_ps(ai, b1, c51);
  }
  const __m256 acc[kMR][2] = {{c00, c01}, {c10, c11}, {c20, c21},
                              {c30, c31}, {c40, c41}, {c50, c51}};
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  if (mr == kMR && nr == kNR) {
    for (int i = 0; i < kMR; ++i) {
      float* ci = c + i * ldc;
      for (int h = 0; h < 2; ++h) {
        __m256 r = _mm256_mul_ps(va, acc[i][h]);
        // alpha*acc + beta*c, rounded like the portable kernel's `alpha * acc + beta * c`.
        if (beta != 0.0f) r = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci + 8 * h), r);
        _mm256_storeu_ps(ci + 8 * h, r);
      }
    }
    return;
  }
  alignas(32) float tile[kMR][kNR];  // edge tile: write only the valid corner
  for (int i = 0; i < kMR; ++i) {
    _mm256_store_ps(tile[i], acc[i][0]);
    _mm256_store_ps(tile[i] + 8, acc[i][1]);
  }
  for (int i = 0; i < mr; ++i) {
    float* ci = c + i * ldc;
    for (int j = 0; j < nr; ++j) {
      ci[j] = beta == 0.0f ? alpha * tile[i][j] : std::fma(beta, ci[j], alpha * tile[i][j]);
    }
  }
}
#endif

CpuIsa isa_from_env() {
  const char* env = std::getenv("NNOPS_CPU_ISA");
  if (env && std::strcmp(env, "generic") == 0) return CpuIsa::Generic;
  if (env && std::strcmp(env, "avx2") == 0) return CpuIsa::AVX2;
  if (env && std::strcmp(env, "avx512") == 0) return CpuIsa::AVX512;
  return CpuIsa::Auto;
}

// BF16 products on AVX512_BF16: the VDPBF16PS pair kernel where the instruction runs near the
// FP32 FMA's rate, else BF16 operands widened into the FP32 kernel. Measured, not assumed: on an
// AMD EPYC (2 cores, 2026-12-02) VDPBF16PS ran at the FMA's instruction rate (bench_ops
// dpbf16_peak 462 against fma_peak 230 GFLOP/s) and the pair kernel was 1.6-2.0x the widened
// one; on an Intel Xeon it ran at a quarter (165 against 340) and widening was 1.8-2.1x faster.
// NNOPS_CPU_BF16=pairs|widen (or set_cpu_bf16_pairs) overrides the measurement.
enum class Bf16Kernel { Measure, Pairs, Widen };

std::atomic<Bf16Kernel>& bf16_kernel_requested() {
  static std::atomic<Bf16Kernel> kernel{[] {
    const char* env = std::getenv("NNOPS_CPU_BF16");
    if (env && std::strcmp(env, "pairs") == 0) return Bf16Kernel::Pairs;
    if (env && std::strcmp(env, "widen") == 0) return Bf16Kernel::Widen;
    return Bf16Kernel::Measure;
  }()};
  return kernel;
}

bool bf16_pairs_chosen() {
  switch (bf16_kernel_requested().load()) {
    case Bf16Kernel::Pairs:
      return true;
    case Bf16Kernel::Widen:
      return false;
    case Bf16Kernel::Measure:
      break;
  }
#if defined(__x86_64__) && defined(__GNUC__)
  // The pair kernel wins where a pair's two multiply-adds cost at most 1.5 FMAs' time.
  static const bool pairs_fast = dpbf16_time_per_fma_time() <= 1.5;
  return pairs_fast;
#else
  return false;
#endif
}

std::atomic<CpuIsa>& requested_isa() {
  static std::atomic<CpuIsa> isa{isa_from_env()};
  return isa;
}

using PackA = void (*)(float*, const void*, bool, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int64_t);
using PackTransposed = void (*)(float*, const void*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                int64_t);
using PackRow = void (*)(float*, const void*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t);

// Inputs are F32 (float) or BF16 (its bits, uint16_t); packing widens BF16 to float, so one
// F32 micro-kernel serves both and the products of BF16 values are exact in FP32.
inline float to_f32(float v) {
  return v;
}
inline float to_f32(uint16_t v) {
  return bf16_bits_to_float(v);
}

// op(a)[i, p] for rows [i0, i0+mc) and depth [p0, p0+kc) into MR-tall panels, zero-padded.
template <class T, int MR>
void pack_a(float* dst, const void* a_data, bool trans, int64_t m, int64_t k, int64_t i0,
            int64_t mc, int64_t p0, int64_t kc, int64_t panel) {
  const T* a = static_cast<const T*>(a_data);
  float* out = dst + panel * MR * kc;
  const int64_t row0 = i0 + panel * MR;
  const int64_t rows = std::min<int64_t>(MR, i0 + mc - row0);
  for (int64_t p = 0; p < kc; ++p) {
    for (int64_t i = 0; i < MR; ++i) {
      float v = 0.0f;
      if (i < rows) v = to_f32(trans ? a[(p0 + p) * m + row0 + i] : a[(row0 + i) * k + p0 + p]);
      out[p * MR + i] = v;
    }
  }
}

// Panel `panel` of a transposed b block (op(b)[p, j] = b[j, p]): each of its 16 columns is a
// contiguous run of one row of b. Zero-padded past column nc.
template <class T, int NR>
void pack_b_transposed(float* dst, const void* b_data, int64_t k, int64_t p0, int64_t kc,
                       int64_t j0, int64_t nc, int64_t panel) {
  const T* b = static_cast<const T*>(b_data);
  float* out = dst + panel * NR * kc;
  const int64_t col0 = j0 + panel * NR;
  const int64_t cols = std::min<int64_t>(NR, j0 + nc - col0);
  // Column by column: each is one contiguous run of a row of b (one stream for the prefetcher).
  for (int64_t j = 0; j < NR; ++j) {
    const T* src = b + (col0 + j) * k + p0;
    if (j < cols) {
      for (int64_t p = 0; p < kc; ++p) out[p * NR + j] = to_f32(src[p]);
    } else {
      for (int64_t p = 0; p < kc; ++p) out[p * NR + j] = 0.0f;
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// Eight rows of 8 floats (src, src + stride, ...) written transposed: column j of the block to
// out + j * out_stride. The standard 8 x 8 transpose: interleave pairs, then quads, then swap
// 128-bit halves.
__attribute__((target("avx2,fma"))) inline void transpose_8x8(const float* src, int64_t stride,
                                                              float* out, int64_t out_stride) {
  const __m256 r0 = _mm256_loadu_ps(src + 0 * stride), r1 = _mm256_loadu_ps(src + 1 * stride);
  const __m256 r2 = _mm256_loadu_ps(src + 2 * stride), r3 = _mm256_loadu_ps(src + 3 * stride);
  const __m256 r4 = _mm256_loadu_ps(src + 4 * stride), r5 = _mm256_loadu_ps(src + 5 * stride);
  const __m256 r6 = _mm256_loadu_ps(src + 6 * stride), r7 = _mm256_loadu_ps(src + 7 * stride);
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(out + 0 * out_stride, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(out + 1 * out_stride, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(out + 2 * out_stride, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(out + 3 * out_stride, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(out + 4 * out_stride, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(out + 5 * out_stride, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(out + 6 * out_stride, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(out + 7 * out_stride, _mm256_permute2f128_ps(u3, u7, 0x31));
}

// The same panel through 8 x 8 register transposes: eight rows of b are read 8 floats at a
// time and written as eight 8-float pieces of packed rows. Scalar stores of the loop above
// took a third of a batch-64 x * w^T product.
template <int NR>
__attribute__((target("avx2,fma"))) void pack_b_transposed_avx2(float* dst, const void* b_data,
                                                                int64_t k, int64_t p0, int64_t kc,
                                                                int64_t j0, int64_t nc,
                                                                int64_t panel) {
  static_assert(NR % 8 == 0, "whole groups of 8 columns");
  constexpr int kNR = NR;  // the loop below is written for any multiple of 8
  const float* b = static_cast<const float*>(b_data);
  const int64_t col0 = j0 + panel * kNR;
  if (j0 + nc - col0 < kNR) {  // an edge panel: the plain loop zero-pads it
    pack_b_transposed<float, NR>(dst, b, k, p0, kc, j0, nc, panel);
    return;
  }
  float* out = dst + panel * kNR * kc;
  const int64_t kc8 = kc / 8 * 8;
  for (int half = 0; half < kNR / 8; ++half) {
    const float* src = b + (col0 + 8 * half) * k + p0;
    for (int64_t p = 0; p < kc8; p += 8) transpose_8x8(src + p, k, out + p * kNR + 8 * half, kNR);
    for (int64_t p = kc8; p < kc; ++p) {
      for (int j = 0; j < 8; ++j) out[p * kNR + 8 * half + j] = src[j * k + p];
    }
  }
}
#endif

#if defined(__x86_64__) && defined(__GNUC__)
// Panel `panel` of a non-transposed F32 a block (rows of a are the panel's MR columns) through
// the same register transposes: 8 rows at a time, then 4. The scalar pack_a above took a tenth
// of a transformer step (products of 2048 tokens by 256 to 1024 columns).
template <int MR>
__attribute__((target("avx2,fma"))) void pack_a_avx2(float* dst, const void* a_data, bool trans,
                                                     int64_t m, int64_t k, int64_t i0, int64_t mc,
                                                     int64_t p0, int64_t kc, int64_t panel) {
  static_assert(MR % 4 == 0, "whole groups of 4 rows");
  const int64_t row0 = i0 + panel * MR;
  if (i0 + mc - row0 < MR) {  // an edge panel to zero-pad
    pack_a<float, MR>(dst, a_data, trans, m, k, i0, mc, p0, kc, panel);
    return;
  }
  if (trans) {  // each depth's MR values are contiguous already: one copy per depth
    const float* a = static_cast<const float*>(a_data) + p0 * m + row0;
    float* out = dst + panel * MR * kc;
    for (int64_t p = 0; p < kc; ++p) std::memcpy(out + p * MR, a + p * m, sizeof(float) * MR);
    return;
  }
  const float* a = static_cast<const float*>(a_data) + row0 * k + p0;
  float* out = dst + panel * MR * kc;
  const int64_t kc8 = kc / 8 * 8;
  int group = 0;
  for (; group + 8 <= MR; group += 8) {
    const float* src = a + group * k;
    for (int64_t p = 0; p < kc8; p += 8) transpose_8x8(src + p, k, out + p * MR + group, MR);
  }
  for (; group < MR; group += 4) {
    const float* src = a + group * k;
    for (int64_t p = 0; p < kc8; p += 8) {
      const __m256 r0 = _mm256_loadu_ps(src + 0 * k + p), r1 = _mm256_loadu_ps(src + 1 * k + p);
      const __m256 r2 = _mm256_loadu_ps(src + 2 * k + p), r3 = _mm256_loadu_ps(src + 3 * k + p);
      const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
      const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
      // u_j holds column j (low half) and column j + 4 (high half) of the 4 rows.
      const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
      const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
      float* o = out + p * MR + group;
      _mm_storeu_ps(o + 0 * MR, _mm256_castps256_ps128(u0));
      _mm_storeu_ps(o + 1 * MR, _mm256_castps256_ps128(u1));
      _mm_storeu_ps(o + 2 * MR, _mm256_castps256_ps128(u2));
      _mm_storeu_ps(o + 3 * MR, _mm256_castps256_ps128(u3));
      _mm_storeu_ps(o + 4 * MR, _mm256_extractf128_ps(u0, 1));
      _mm_storeu_ps(o + 5 * MR, _mm256_extractf128_ps(u1, 1));
      _mm_storeu_ps(o + 6 * MR, _mm256_extractf128_ps(u2, 1));
      _mm_storeu_ps(o + 7 * MR, _mm256_extractf128_ps(u3, 1));
    }
  }
  for (int64_t p = kc8; p < kc; ++p) {
    for (int i = 0; i < MR; ++i) out[p * MR + i] = a[i * k + p];
  }
}
#endif

// Row p of a non-transposed b block into every panel: the row is read once, contiguously,
// and scattered in 16-float pieces. Packing panel by panel instead reads 64 bytes from each of
// kc rows per panel, and took ~40% of a batch-64 GEMM.
template <class T, int NR>
void pack_b_row(float* dst, const void* b_data, int64_t n, int64_t p0, int64_t kc, int64_t j0,
                int64_t nc, int64_t p) {
  constexpr int kNR = NR;
  const T* src = static_cast<const T*>(b_data) + (p0 + p) * n + j0;
  // Rows of b lie n elements apart; the hardware prefetcher follows them poorly: fetch ahead.
  // Narrower elements mean less work per row, so BF16 fetches further ahead.
  constexpr int64_t ahead_rows = kPrefetchRows * static_cast<int64_t>(4 / sizeof(T));
  if (p + ahead_rows < kc) {
    const T* ahead = src + ahead_rows * n;
    const int64_t line = 64 / sizeof(T);
    for (int64_t j = 0; j < std::min<int64_t>(nc, kPanelsAtOnce * kNR); j += line) {
      __builtin_prefetch(ahead + j);
    }
  }
  const int64_t full = nc / kNR;
  for (int64_t jp = 0; jp < full; ++jp) {
    float* o = dst + jp * kNR * kc + p * kNR;
    if constexpr (std::is_same_v<T, float>) {
      std::memcpy(o, src + jp * kNR, sizeof(float) * kNR);
    } else {
      for (int64_t j = 0; j < kNR; ++j) o[j] = to_f32(src[jp * kNR + j]);
    }
  }
  const int64_t rest = nc - full * kNR;
  if (rest > 0) {
    float* o = dst + full * kNR * kc + p * kNR;
    for (int64_t j = 0; j < kNR; ++j) o[j] = j < rest ? to_f32(src[full * kNR + j]) : 0.0f;
  }
}

// Packing buffers of the calling thread, kept between calls: a fresh 2 MiB allocation per
// GEMM is an mmap plus page faults every time, in a training loop's hottest call.
struct PackingBuffer {
  struct Free {
    void operator()(float* p) const { host_free(p); }
  };
  std::unique_ptr<float, Free> data;
  int64_t capacity = 0;
  float* get(int64_t count) {
    if (count > capacity) {
      const size_t bytes = static_cast<size_t>(count) * sizeof(float);
      data.reset(static_cast<float*>(host_alloc(bytes)));
      capacity = data ? count : 0;
      if (!data) throw OutOfMemory("host", bytes);
    }
    return data.get();
  }
};

}  // namespace

bool cpu_supports_avx2() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return supported;
#else
  return false;
#endif
}

void set_cpu_isa(CpuIsa isa) {
  requested_isa().store(isa);
}

bool cpu_supports_avx512() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool supported = __builtin_cpu_supports("avx512f") && cpu_supports_avx2();
  return supported;
#else
  return false;
#endif
}

CpuIsa active_cpu_isa() {
  const CpuIsa isa = requested_isa().load();
  if (isa == CpuIsa::Generic || !cpu_supports_avx2()) return CpuIsa::Generic;
  if (isa == CpuIsa::AVX2 || isa == CpuIsa::AVX2WideTiles) return isa;
  // Auto or AVX512: the best level the CPU has.
  return cpu_supports_avx512() ? CpuIsa::AVX512 : CpuIsa::AVX2;
}

bool cpu_supports_avx512bf16() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool supported = __builtin_cpu_supports("avx512bf16") &&
                                __builtin_cpu_supports("avx512bw") && cpu_supports_avx512();
  return supported;
#else
  return false;
#endif
}

bool cpu_isa_has_avx2() {
  return active_cpu_isa() != CpuIsa::Generic;
}

namespace {

struct SgemmProblem {
  bool trans_a, trans_b;
  int64_t m, n, k;
  float alpha;
  const void* a;  // F32 or BF16, as the packers below read it
  const void* b;
  float beta;
  float* c;
  MicroKernel kernel;
  PackA pack_a;
  PackTransposed pack_transposed;
  PackRow pack_row;
  Blocking blocking;
  bool pairs;                 // BF16 operands packed in depth pairs for the AVX512_BF16 kernels
  bool reserve_only = false;  // grow the packing buffers this product needs, compute nothing
  bool b_in_place = false;    // full panels of a non-transposed F32 b read where they lie
};

// BF16 operands for the pair kernels: the values at depths 2q and 2q + 1 of one row of op(a)
// (or one column of op(b)) in one 32-bit word, the even depth in the low half; zeros past the
// edges and past an odd depth. A panel keeps the float layout's offsets (it uses half of them).
inline uint32_t bf16_pair(uint16_t even, uint16_t odd) {
  return even | (static_cast<uint32_t>(odd) << 16);
}

// Depths 2q and 2q + 1 from two rows of the stored matrix (a transposed a, a non-transposed
// b): `width` valid values of each row interleaved into words, zeros up to `full`. The whole-
// width loop is what the compiler vectorizes.
template <int64_t full>
inline void interleave_rows(uint32_t* out, const uint16_t* even, const uint16_t* odd,
                            int64_t width) {
  if (width == full && odd) {
    for (int64_t j = 0; j < full; ++j) out[j] = bf16_pair(even[j], odd[j]);
    return;
  }
  for (int64_t j = 0; j < full; ++j)
    out[j] = j < width ? bf16_pair(even[j], odd ? odd[j] : uint16_t(0)) : 0u;
}

// With an even depth the pair of depths 2q, 2q + 1 of a row of a non-transposed a (or of a
// transposed b) is one 32-bit word of the stored row, and every depth block starts and ends on
// a pair: the F32 packers' 8 x 8 register transposes move those words unchanged. They are
// called on the word view (half the depth) and placed at the pair layout's panel offsets.
template <int MR>
void pack_a_pairs(float* dst, const void* a_data, bool trans, int64_t m, int64_t k, int64_t i0,
                  int64_t mc, int64_t p0, int64_t kc, int64_t panel) {
  const uint16_t* a = static_cast<const uint16_t*>(a_data);
  uint32_t* out = reinterpret_cast<uint32_t*>(dst + panel * MR * kc);
  const int64_t row0 = i0 + panel * MR;
  const int64_t rows = std::min<int64_t>(MR, i0 + mc - row0);
  if constexpr (MR % 4 == 0) {
    if (!trans && k % 2 == 0) {
      float* const base = dst + panel * MR * (kc - kc / 2);  // + panel * MR * kc / 2 inside
      pack_a_avx2<MR>(base, a_data, false, m, k / 2, i0, mc, p0 / 2, kc / 2, panel);
      return;
    }
  }
  if (trans) {  // the pair's two values lie in consecutive rows of the stored a
    for (int64_t q = 0; q < (kc + 1) / 2; ++q) {
      const uint16_t* even = a + (p0 + 2 * q) * m + row0;
      interleave_rows<MR>(out + q * MR, even, 2 * q + 1 < kc ? even + m : nullptr, rows);
    }
    return;
  }
  auto at = [&](int64_t i, int64_t p) -> uint16_t {
    if (i >= rows || p >= kc) return 0;
    return trans ? a[(p0 + p) * m + row0 + i] : a[(row0 + i) * k + p0 + p];
  };
  for (int64_t q = 0; q < (kc + 1) / 2; ++q) {
    for (int64_t i = 0; i < MR; ++i) out[q * MR + i] = bf16_pair(at(i, 2 * q), at(i, 2 * q + 1));
  }
}

template <int NR>
void pack_b_pairs(float* dst, const SgemmProblem& g, int64_t p0, int64_t kc, int64_t j0, int64_t nc,
                  int64_t panel) {
  const uint16_t* b = static_cast<const uint16_t*>(g.b);
  uint32_t* out = reinterpret_cast<uint32_t*>(dst + panel * NR * kc);
  const int64_t col0 = j0 + panel * NR, cols = std::min<int64_t>(NR, j0 + nc - col0);
  if (g.trans_b && g.k % 2 == 0) {
    float* const base = dst + panel * NR * (kc - kc / 2);
    pack_b_transposed_avx2<NR>(base, g.b, g.k / 2, p0 / 2, kc / 2, j0, nc, panel);
    return;
  }
  if (!g.trans_b) {  // the pair's two values lie in consecutive rows of b
    for (int64_t q = 0; q < (kc + 1) / 2; ++q) {
      const uint16_t* even = b + (p0 + 2 * q) * g.n + col0;
      interleave_rows<NR>(out + q * NR, even, 2 * q + 1 < kc ? even + g.n : nullptr, cols);
    }
    return;
  }
  auto at = [&](int64_t p, int64_t j) -> uint16_t {
    if (j >= cols || p >= kc) return 0;
    return g.trans_b ? b[(col0 + j) * g.k + p0 + p] : b[(p0 + p) * g.n + col0 + j];
  };
  for (int64_t q = 0; q < (kc + 1) / 2; ++q) {
    for (int64_t j = 0; j < NR; ++j) out[q * NR + j] = bf16_pair(at(2 * q, j), at(2 * q + 1, j));
  }
}

// The packed panels of op(b) for columns [j0, j0 + nc) and depth [pc, pc + kc).
template <int NR>
void pack_b_block(float* dst, const SgemmProblem& g, int64_t pc, int64_t kc, int64_t j0,
                  int64_t nc) {
  if (g.pairs) {
    for (int64_t jp = 0; jp < (nc + NR - 1) / NR; ++jp)
      pack_b_pairs<NR>(dst, g, pc, kc, j0, nc, jp);
  } else if (g.trans_b) {
    for (int64_t jp = 0; jp < (nc + NR - 1) / NR; ++jp) {
      g.pack_transposed(dst, g.b, g.k, pc, kc, j0, nc, jp);
    }
  } else {
    for (int64_t p = 0; p < kc; ++p) g.pack_row(dst, g.b, g.n, pc, kc, j0, nc, p);
  }
}

// One thread's share: c[i0:i1, j0:j1], serially, in MR x NR tiles. Every element's sum runs over
// the same depth blocks in the same order whatever the share, so the bits do not depend on the
// thread count.
// The packing buffers of one thread's share, sized by pack_sizes.
struct PackingBuffers {
  PackingBuffer a, b;
};

// Floats of packed A and packed B that a share of at most `rows` rows and `cols` columns needs.
// A short block of rows (the batch of a training step) is packed once per depth block and B is
// packed a few panels at a time just before their use, into a buffer that stays in L2: the
// packed B never travels to L3 and back. Taller blocks pack a whole B block for reuse.
template <int MR, int NR>
std::pair<int64_t, int64_t> pack_sizes(const SgemmProblem& g, int64_t rows, int64_t cols) {
  const Blocking& blk = g.blocking;
  const int64_t kc_max = std::min(blk.kc, g.k);
  const int64_t nc_cap = rows <= blk.mc ? kPanelsAtOnce * NR : blk.nc;
  return {std::min(blk.mc, (rows + MR - 1) / MR * MR) * kc_max,
          std::min(nc_cap, (cols + NR - 1) / NR * NR) * kc_max};
}

template <int MR, int NR>
void sgemm_block(const SgemmProblem& g, int64_t i0, int64_t i1, int64_t j0, int64_t j1,
                 PackingBuffers& buffers) {
  const Blocking& blk = g.blocking;
  const int64_t rows = i1 - i0;
  const bool b_per_panel = rows <= blk.mc;
  // Allocated already (run_tiles sized them for any share), so nothing here can throw.
  const auto [a_floats, b_floats] = pack_sizes<MR, NR>(g, rows, j1 - j0);
  float* const a_pack = buffers.a.get(a_floats);
  float* const b_pack = buffers.b.get(b_floats);
  for (int64_t jc = j0; jc < j1; jc += blk.nc) {
    const int64_t nc = std::min(blk.nc, j1 - jc);
    const int64_t b_panels = (nc + NR - 1) / NR;
    for (int64_t pc = 0; pc < g.k; pc += blk.kc) {
      const int64_t kc = std::min(blk.kc, g.k - pc);
      const float beta_here = pc == 0 ? g.beta : 1.0f;  // later depth blocks accumulate
      if (!b_per_panel && !g.b_in_place) pack_b_block<NR>(b_pack, g, pc, kc, jc, nc);
      for (int64_t ic = i0; ic < i1; ic += blk.mc) {
        const int64_t mc = std::min(blk.mc, i1 - ic);
        const int64_t a_panels = (mc + MR - 1) / MR;
        for (int64_t ip = 0; ip < a_panels; ++ip) {
          g.pack_a(a_pack, g.a, g.trans_a, g.m, g.k, ic, mc, pc, kc, ip);
        }
        for (int64_t jp = 0; jp < b_panels; ++jp) {
          const int64_t col = jc + jp * NR;
          const int nr = static_cast<int>(std::min<int64_t>(NR, jc + nc - col));
          const float* panel = b_pack + jp * NR * kc;
          int64_t ldb = NR;
          if (g.b_in_place) {
            const float* rows = static_cast<const float*>(g.b) + pc * g.n + col;
            // The next panel's rows into L2 while this one computes: read where they lie, its
            // first tile would otherwise wait on L3 for every row.
            if (col + NR < jc + nc) {
              for (int64_t p = 0; p < kc; ++p) {
                __builtin_prefetch(rows + NR + p * g.n, 0, 2);
                __builtin_prefetch(rows + 2 * NR - 1 + p * g.n, 0, 2);
              }
            }
            if (nr == NR) {
              panel = rows, ldb = g.n;
            } else {  // the edge panel, zero-padded
              for (int64_t p = 0; p < kc; ++p)
                for (int j = 0; j < NR; ++j) b_pack[p * NR + j] = j < nr ? rows[p * g.n + j] : 0.0f;
              panel = b_pack;
            }
          } else if (b_per_panel) {
            const int64_t group = jp % kPanelsAtOnce;
            if (group == 0) {
              pack_b_block<NR>(b_pack, g, pc, kc, col, std::min(kPanelsAtOnce * NR, jc + nc - col));
            }
            panel = b_pack + group * NR * kc;
          }
          for (int64_t ip = 0; ip < a_panels; ++ip) {
            const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ip * MR));
            g.kernel(kc, a_pack + ip * MR * kc, panel, ldb, g.c + (ic + ip * MR) * g.n + col, g.n,
                     g.alpha, beta_here, mr, nr);
          }
        }
      }
    }
  }
}

// [begin, end) of part `index` of `parts` near-equal shares of `units` units of `unit` each,
// clipped to `limit`.
std::pair<int64_t, int64_t> share(int64_t units, int64_t unit, int64_t limit, int index,
                                  int parts) {
  const int64_t lo = units * index / parts, hi = units * (index + 1) / parts;
  return {std::min(limit, lo * unit), std::min(limit, hi * unit)};
}

// Runs the product in MR x NR tiles with `kernel`: threads own disjoint blocks of c and never
// wait for each other. Columns are split while every thread gets a few panels; a narrow c (n of
// a few panels) is split by rows instead.
template <int MR, int NR>
void run_tiles(SgemmProblem g, MicroKernel kernel) {
  g.kernel = kernel;
  g.blocking = blocking_for_caches<MR, NR>();
  // Pair-packed BF16 panels hold two depths per float slot: the same bytes cover twice the depth
  // (half as many passes over c).
  if (g.pairs) g.blocking.kc = std::min<int64_t>(2 * g.blocking.kc, 1024);
  // b read in place streams from memory once per block of rows: one block holds all of them.
  if (g.b_in_place) g.blocking.mc = std::max(g.blocking.mc, (g.m + MR - 1) / MR * MR);
  // Inside another op's parallel region (attention's blocks) a product runs on its thread alone.
  const int threads =
      g.m * g.n * g.k >= kParallelThreshold && !omp_in_parallel() ? omp_get_max_threads() : 1;
  // The calling thread's buffers, one pair per worker, kept between calls (a fresh 2 MiB
  // allocation per GEMM is an mmap plus page faults, in a training loop's hottest call). They
  // are grown here, before the parallel region: an exception cannot leave an OpenMP region, and
  // running out of memory must leave c untouched. Every share fits the sizes of the whole c.
  thread_local std::vector<PackingBuffers> buffers;
  if (buffers.size() < static_cast<size_t>(threads)) buffers.resize(static_cast<size_t>(threads));
  const auto [a_floats, b_floats] = pack_sizes<MR, NR>(g, g.m, g.n);
  const int64_t b_short = pack_sizes<MR, NR>(g, std::min(g.m, g.blocking.mc), g.n).second;
  for (int t = 0; t < threads; ++t) {
    buffers[t].a.get(a_floats);
    buffers[t].b.get(std::max(b_floats, b_short));  // a row share may pack B per panel
  }
  if (g.reserve_only) return;
  PackingBuffers* const shares = buffers.data();  // the region's workers see the caller's
  if (threads <= 1) {
    sgemm_block<MR, NR>(g, 0, g.m, 0, g.n, shares[0]);
    return;
  }
  // Each thread packs its share of one operand and the whole of the other: splitting rows packs
  // m*k/threads + n*k floats per thread, splitting columns m*k + n*k/threads, so the longer
  // side is split (a 2048-token step's products have m = 2048 against n = 256: splitting their
  // columns packed all of A on every thread, a third of the product's time).
  const int64_t col_panels = (g.n + NR - 1) / NR, row_panels = (g.m + MR - 1) / MR;
  const bool split_rows = g.m > g.n && row_panels >= threads;
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), parts = omp_get_num_threads();
    if (split_rows) {
      const auto [i0, i1] = share(row_panels, MR, g.m, t, parts);
      if (i0 < i1) sgemm_block<MR, NR>(g, i0, i1, 0, g.n, shares[t]);
    } else {
      const auto [j0, j1] = share(col_panels, NR, g.n, t, parts);
      if (j0 < j1) sgemm_block<MR, NR>(g, 0, g.m, j0, j1, shares[t]);
    }
  }
}

// The packers of one tile shape for F32 or BF16 operands.
template <int MR, int NR>
void set_packers(SgemmProblem& g, bool bf16, bool avx2) {
  g.pack_a = bf16 ? pack_a<uint16_t, MR> : pack_a<float, MR>;
  g.pack_row = bf16 ? pack_b_row<uint16_t, NR> : pack_b_row<float, NR>;
  g.pack_transposed = bf16 ? pack_b_transposed<uint16_t, NR> : pack_b_transposed<float, NR>;
#if defined(__x86_64__) && defined(__GNUC__)
  if (!bf16 && avx2) g.pack_transposed = pack_b_transposed_avx2<NR>;
  if constexpr (MR % 4 == 0) {
    if (!bf16 && avx2) g.pack_a = pack_a_avx2<MR>;
  }
#else
  (void)avx2;
#endif
}

// c (F32) = alpha * op(a) * op(b) + beta * c, with a and b both F32 or both BF16. With
// reserve_only, only the calling thread's packing buffers are grown for this product, so an op
// that writes its outputs in several steps can allocate everything before the first write.
void gemm_f32_out(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const void* a, const void* b, DType in_dtype, float beta, float* c,
                  bool reserve_only = false) {
  if (m == 0 || n == 0) return;
  if (k == 0 || alpha == 0.0f) {
    if (reserve_only) return;
    // Nothing to multiply: c = beta * c, and beta == 0 must not read c.
    for (int64_t i = 0; i < m * n; ++i) c[i] = beta == 0.0f ? 0.0f : beta * c[i];
    return;
  }
  const bool bf16 = in_dtype == DType::BF16;
  SgemmProblem g{trans_a, trans_b, m,       n,       k,       alpha,      a,     b,           beta,
                 c,       nullptr, nullptr, nullptr, nullptr, Blocking{}, false, reserve_only};
  // A short op(a) (the batch of a training step) uses each B panel for a few tiles only: packing
  // a non-transposed b then costs more than it saves, and its rows are read where they lie.
  g.b_in_place = !bf16 && !trans_b && m <= kInPlaceRows;
  const CpuIsa isa = active_cpu_isa();
#if defined(__x86_64__) && defined(__GNUC__)
  // BF16 operands on AVX512_BF16 when asked (or the pair kernel's emulation under test).
  const bool native_pairs =
      bf16 && isa == CpuIsa::AVX512 && cpu_supports_avx512bf16() && bf16_pairs_chosen();
  if (bf16 && (native_pairs || isa == CpuIsa::AVX2WideTiles)) {
    g.pack_a = pack_a_pairs<kWideMR>;
    g.pairs = true;
    return run_tiles<kWideMR, kWideNR>(
        g, native_pairs ? micro_kernel_avx512_bf16 : micro_kernel_bf16_pairs_on_avx2);
  }
  if (isa == CpuIsa::AVX512 || isa == CpuIsa::AVX2WideTiles) {
    set_packers<kWideMR, kWideNR>(g, bf16, true);
    return run_tiles<kWideMR, kWideNR>(
        g, isa == CpuIsa::AVX512 ? micro_kernel_avx512 : micro_kernel_wide_on_avx2);
  }
  if (isa == CpuIsa::AVX2) {
    set_packers<kMR, kNR>(g, bf16, true);
    return run_tiles<kMR, kNR>(g, micro_kernel_avx2);
  }
#endif
  set_packers<kMR, kNR>(g, bf16, false);
  run_tiles<kMR, kNR>(g, micro_kernel_generic);
}

// The calling thread's F32 staging for BF16 outputs, kept between calls (a training step stages
// every BF16 product); one staging at a time.
PackingBuffer& staging_scratch() {
  thread_local PackingBuffer scratch;
  return scratch;
}

// Grows the staging scratch for a BF16 output of `count` elements (F32 outputs need none).
void reserve_staging(View out, int64_t count) {
  if (out.data && out.dtype != DType::F32) staging_scratch().get(count);
}

// An F32 scratch matrix for a BF16 output: the product is summed into it in FP32 and rounded
// once at the end, like every other op that writes BF16.
class F32Staging {
 public:
  F32Staging(View out, int64_t count, bool read_old) : out_(out), count_(count) {
    if (out.dtype == DType::F32) {
      data_ = static_cast<float*>(out.data);
      return;
    }
    staged_ = true;
    data_ = staging_scratch().get(count);
    if (read_old) cpu_backend().cast(data_, DType::F32, out.data, out.dtype, count);
  }
  float* data() const { return data_; }
  // Writes the staged values to the output (rounding to BF16 where it is BF16).
  void finish() const {
    if (staged_) cpu_backend().cast(out_.data, out_.dtype, data_, DType::F32, count_);
  }

 private:
  View out_;
  int64_t count_;
  bool staged_ = false;
  float* data_ = nullptr;
};

}  // namespace

void set_cpu_bf16_pairs(std::optional<bool> pairs) {
  bf16_kernel_requested().store(!pairs   ? Bf16Kernel::Measure
                                : *pairs ? Bf16Kernel::Pairs
                                         : Bf16Kernel::Widen);
}

void cpu_sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
               const float* a, const float* b, float beta, float* c) {
  gemm_f32_out(trans_a, trans_b, m, n, k, alpha, a, b, DType::F32, beta, c);
}

void reserve_thread_gemm_buffers(int threads, int64_t m, int64_t n, int64_t k) {
  bool failed = false;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    try {
      gemm_f32_out(false, false, m, n, k, 1.0f, nullptr, nullptr, DType::F32, 0.0f, nullptr, true);
    } catch (...) {
#pragma omp atomic write
      failed = true;
    }
  }
  if (failed) throw OutOfMemory("host", static_cast<size_t>((m + n) * k) * sizeof(float));
}

void CpuBackend::gemm(View c, ConstView a, ConstView b, int64_t m, int64_t n, int64_t k,
                      const GemmOptions& options) {
  const F32Staging out(c, m * n, options.beta != 0.0f);
  gemm_f32_out(options.trans_a, options.trans_b, m, n, k, options.alpha, a.data, b.data, a.dtype,
               options.beta, out.data());
  out.finish();
}

void CpuBackend::linear_forward(View y, ConstView x, ConstView w, ConstView bias, int64_t rows,
                                int64_t in, int64_t out) {
  const F32Staging staged(y, rows * out, false);
  float* const y32 = staged.data();
  // Every allocation before the first write of y.
  gemm_f32_out(false, true, rows, out, in, 1.0f, x.data, w.data, x.dtype, 1.0f, y32, true);
  // Broadcast the bias into y, then accumulate x * w^T on top of it (beta = 1).
  if (bias.data) {
    const bool bf16 = bias.dtype == DType::BF16;
#pragma omp parallel for if (rows * out >= kParallelThreshold)
    for (int64_t r = 0; r < rows; ++r) {
      float* yr = y32 + r * out;
      if (!bf16) {
        std::memcpy(yr, bias.data, sizeof(float) * out);
      } else {
        const uint16_t* b16 = static_cast<const uint16_t*>(bias.data);
        for (int64_t j = 0; j < out; ++j) yr[j] = bf16_bits_to_float(b16[j]);
      }
    }
  }
  gemm_f32_out(false, true, rows, out, in, 1.0f, x.data, w.data, x.dtype, bias.data ? 1.0f : 0.0f,
               y32);
  staged.finish();
}

void CpuBackend::linear_backward(View dx, View dw, View db, ConstView x, ConstView w, ConstView dy,
                                 int64_t rows, int64_t in, int64_t out) {
  // Every allocation (packing and staging buffers of both products) before the first write.
  if (dx.data) {
    reserve_staging(dx, rows * in);
    gemm_f32_out(false, false, rows, in, out, 1.0f, dy.data, w.data, dy.dtype, 0.0f, nullptr, true);
  }
  reserve_staging(dw, out * in);
  gemm_f32_out(true, false, out, in, rows, 1.0f, dy.data, x.data, dy.dtype, 0.0f, nullptr, true);
  if (dx.data) {  // dx[rows, in] = dy[rows, out] * w[out, in]
    const F32Staging staged(dx, rows * in, false);
    gemm_f32_out(false, false, rows, in, out, 1.0f, dy.data, w.data, dy.dtype, 0.0f, staged.data());
    staged.finish();
  }
  {  // dw[out, in] = dy^T[out, rows] * x[rows, in]
    const F32Staging staged(dw, out * in, false);
    gemm_f32_out(true, false, out, in, rows, 1.0f, dy.data, x.data, dy.dtype, 0.0f, staged.data());
    staged.finish();
  }
  if (db.data) {
    // Column sums of dy, accumulated in double so long batches lose nothing, then rounded to
    // float (and from there to BF16 where db is BF16). Rows are walked in order inside each
    // thread's block of columns: reads stay sequential, and every column sums its rows in the
    // same order whatever the thread count (the same bits).
    const bool dy_bf16 = dy.dtype == DType::BF16, db_bf16 = db.dtype == DType::BF16;
    const float* dy32 = static_cast<const float*>(dy.data);
    const uint16_t* dy16 = static_cast<const uint16_t*>(dy.data);
    constexpr int64_t kColumns = 256;  // a block's double sums stay in L1
    const int64_t blocks = (out + kColumns - 1) / kColumns;
#pragma omp parallel for if (rows * out >= kParallelThreshold)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t o0 = blk * kColumns, width = std::min(kColumns, out - o0);
      double sum[kColumns] = {};
      for (int64_t r = 0; r < rows; ++r) {
        if (dy_bf16) {
          const uint16_t* row = dy16 + r * out + o0;
          for (int64_t o = 0; o < width; ++o) sum[o] += to_f32(row[o]);
        } else {
          const float* row = dy32 + r * out + o0;
#pragma omp simd
          for (int64_t o = 0; o < width; ++o) sum[o] += row[o];
        }
      }
      for (int64_t o = 0; o < width; ++o) {
        const float total = static_cast<float>(sum[o]);
        if (db_bf16) {
          static_cast<uint16_t*>(db.data)[o0 + o] = float_to_bf16_bits(total);
        } else {
          static_cast<float*>(db.data)[o0 + o] = total;
        }
      }
    }
  }
}

}  // namespace nnops::detail
