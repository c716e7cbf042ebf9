// The AVX-512 GEMM micro-kernel: 12 x 32 tiles, whose 24 accumulators of 16 floats fill 24 of
// the 32 zmm registers (two B vectors and one broadcast A value take three more). Written once
// with GCC vector types over the tile shape and compiled twice: for AVX-512F (the production
// kernel) and for AVX2+FMA, where each 16-float vector becomes two ymm halves. The second copy
// runs the same code, tiles and packing on machines without AVX-512, so the tests cover them
// there too (CpuIsa::AVX2WideTiles); it spills and is not meant to be fast.
#include <cstdint>
#include <cstring>

#include "kernels.hpp"

// 64-byte vectors cross inlined helpers only, never an ABI boundary.
#pragma GCC diagnostic ignored "-Wpsabi"

namespace nnops::detail {

#if defined(__x86_64__) && defined(__GNUC__)
namespace {

typedef float F16 __attribute__((vector_size(64)));
constexpr int kVec = 16;
constexpr int kVectors = kWideNR / kVec;
static_assert(kWideNR % kVec == 0, "whole vectors per B row");
constexpr int64_t kPrefetchDepth = 8;         // rows of a B read in place
constexpr int64_t kPackedPrefetchDepth = 32;  // rows of a packed B panel

// x in every lane, as one broadcast (F16{} + x would add 0, an extra instruction that also
// turns -0 into +0).
__attribute__((always_inline)) inline F16 splat(float x) {
  const F16 v{x};  // lane 0 to every lane: vbroadcastss
  return __builtin_shufflevector(v, v, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);
}

// The c tile's lines (three per 128-byte row, which may straddle them) toward L1 for writing,
// while the depth loop runs: a shallow product (the weight gradient over a batch of 64, k = 64)
// is a stream of c stores, each of which otherwise waits for its line from memory.
// 2000 x 1000 x 64 TN ran 144 GFLOP/s without, 173 with (AMD EPYC); deep products unchanged.
template <int ROWS>
__attribute__((always_inline)) inline void prefetch_c_tile(const float* c, int64_t ldc) {
#pragma GCC unroll 12
  for (int i = 0; i < ROWS; ++i) {
    __builtin_prefetch(c + i * ldc, 1, 3);
    __builtin_prefetch(c + i * ldc + kWideNR / 2, 1, 3);
    __builtin_prefetch(c + i * ldc + kWideNR - 1, 1, 3);
  }
}

// One depth of a tile: acc[i][v] += a_col[i] * b_row[v * 16 ..] for ROWS rows and VECS vectors.
template <int ROWS, int VECS>
__attribute__((always_inline)) inline void depth_step(F16 (&acc)[ROWS][VECS], const float* a_col,
                                                      const float* b_row) {
  F16 bv[VECS];
#pragma GCC unroll 4
  for (int v = 0; v < VECS; ++v) std::memcpy(&bv[v], b_row + v * kVec, 64);
#pragma GCC unroll 12
  for (int i = 0; i < ROWS; ++i) {
    const F16 ai = splat(a_col[i]);
#pragma GCC unroll 4
    for (int v = 0; v < VECS; ++v) acc[i][v] += ai * bv[v];  // contracted to an FMA
  }
}

// One row of a full tile: c[0, VECS * 16) = alpha * sums + beta * c, c unread at beta 0.
template <int VECS>
__attribute__((always_inline)) inline void store_row(float* c, const F16 (&sums)[VECS], float alpha,
                                                     float beta) {
#pragma GCC unroll 4
  for (int v = 0; v < VECS; ++v) {
    float* cv = c + v * kVec;
    F16 r = alpha * sums[v];
    if (beta != 0.0f) {
      F16 old;
      std::memcpy(&old, cv, 64);
      r = beta * old + r;
    }
    std::memcpy(cv, &r, 64);
  }
}

// c[mr, nr] (row stride ldc) = alpha * (a_panel * b_panel) + beta * c, as the other kernels:
// per element the sum runs over p in order with one fused multiply-add each. ROWS <= 12 of the
// panel's rows are computed (mr <= ROWS): a short last tile (m = 64 is five tiles of 12 and one
// of 4) then costs its own rows, not twelve; the bits are the same for any ROWS.
template <int ROWS>
__attribute__((always_inline)) inline void wide_body(int64_t kc, const float* __restrict a,
                                                     const float* __restrict b, int64_t ldb,
                                                     float* c, int64_t ldc, float alpha, float beta,
                                                     int mr, int nr) {
  F16 acc[ROWS][kVectors];
#pragma GCC unroll 12
  for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < kVectors; ++v) acc[i][v] = F16{};
  // A B panel read in place (ldb is b's row stride) may still be in L3 or memory: its rows are
  // prefetched a few depths ahead, all three cache lines a 128-byte row spans when b's rows are
  // not 64-byte aligned (n = 1000: every other row). With the first and last only, the middle
  // line came from L3 on demand: 64 x 1000 x 2000 ran 145 GFLOP/s, 180 with it (AMD EPYC).
  const bool in_place = ldb != kWideNR;
  prefetch_c_tile<ROWS>(c, ldc);
  for (int64_t p = 0; p < kc; ++p) {
    if (in_place) {
      __builtin_prefetch(b + (p + kPrefetchDepth) * ldb);
      __builtin_prefetch(b + (p + kPrefetchDepth) * ldb + kWideNR / 2);
      __builtin_prefetch(b + (p + kPrefetchDepth) * ldb + kWideNR - 1);
      // The next panel's row p (the columns to the right) toward L2, spread over the
      // depth loop: fetched in one burst before the panel, its rows queued on the fill
      // buffers and stalled the kernel behind them (11% of 64 x 2000 x 1000, perf). Every
      // tile of the panel repeats these; after the first they hit L2. 64 x 2000 x 1000 NN:
      // 235-265 -> 254-290 GFLOP/s (Intel Xeon, two threads). Prefetches never fault, so the
      // last panel's reach past b is harmless.
      __builtin_prefetch(b + p * ldb + kWideNR, 0, 2);
      __builtin_prefetch(b + p * ldb + kWideNR + kWideNR / 2, 0, 2);
      __builtin_prefetch(b + p * ldb + 2 * kWideNR - 1, 0, 2);
    }
    if (!in_place) {
      // A packed panel toward L1 32 depths (4 KiB) ahead. It is deeper than L1 (kc = 1024:
      // 128 KiB) and comes from L2, or L3 on its first tile; the hardware's prefetch alone
      // left the kernel at 80-85% of the FMA peak on large products. 4096^3 302 -> 333,
      // 2048^3 319 -> 332 GFLOP/s (Intel Xeon, two threads); prefetching A as well added
      // nothing, and the batch-64 products ran level.
      __builtin_prefetch(b + (p + kPackedPrefetchDepth) * kWideNR);
      __builtin_prefetch(b + (p + kPackedPrefetchDepth) * kWideNR + kWideNR / 2);
    }
    depth_step<ROWS, kVectors>(acc, a + p * kWideMR, b + p * ldb);
  }
  if (mr == ROWS && nr == kWideNR) {
#pragma GCC unroll 12
    for (int i = 0; i < ROWS; ++i) store_row<kVectors>(c + i * ldc, acc[i], alpha, beta);
    return;
  }
  // An edge tile: only the valid corner is written. The sums go through a plain array first:
  // indexing acc by run-time values would keep all the accumulators in memory for every tile.
  alignas(64) float tile[ROWS][kWideNR];
#pragma GCC unroll 12
  for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < kVectors; ++v) std::memcpy(&tile[i][v * kVec], &acc[i][v], 64);
  for (int i = 0; i < mr; ++i) {
    float* ci = c + i * ldc;
    for (int j = 0; j < nr; ++j) {
      const float r = alpha * tile[i][j];
      ci[j] = beta == 0.0f ? r : __builtin_fmaf(beta, ci[j], r);
    }
  }
}

// The body for the tile's rows: 4, 8 or all 12.
__attribute__((always_inline)) inline void wide_rows(int64_t kc, const float* a, const float* b,
                                                     int64_t ldb, float* c, int64_t ldc,
                                                     float alpha, float beta, int mr, int nr) {
  if (mr <= 4) return wide_body<4>(kc, a, b, ldb, c, ldc, alpha, beta, mr, nr);
  if (mr <= 8) return wide_body<8>(kc, a, b, ldb, c, ldc, alpha, beta, mr, nr);
  wide_body<kWideMR>(kc, a, b, ldb, c, ldc, alpha, beta, mr, nr);
}

// The last 1-4 rows of a short product (m = 64: five tiles of 12 and one of 4) across two
// adjacent full panels of a B read in place, 64 columns: 4 x 4 accumulators. A 4-row tile per
// 32-column panel streamed the panel's rows once more for 8 multiply-adds a row and took 3.2 us
// per panel where its FLOPs need 1.4 (Intel Xeon, 1000-deep panels from L2); here one pass over
// the two panels' rows feeds 16. Each element sums as wide_body's: the same bits.
template <int ROWS>
__attribute__((always_inline)) inline void tail64_body(int64_t kc, const float* __restrict a,
                                                       const float* __restrict b, int64_t ldb,
                                                       float* c, int64_t ldc, float alpha,
                                                       float beta, int mr) {
  constexpr int kTailVectors = 2 * kVectors;
  F16 acc[ROWS][kTailVectors];
#pragma GCC unroll 4
  for (int i = 0; i < ROWS; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < kTailVectors; ++v) acc[i][v] = F16{};
  for (int64_t p = 0; p < kc; ++p) {
#pragma GCC unroll 4
    for (int v = 0; v < kTailVectors; ++v)
      __builtin_prefetch(b + (p + kPrefetchDepth) * ldb + v * kVec);
    __builtin_prefetch(b + (p + kPrefetchDepth) * ldb + 2 * kWideNR - 1);
    depth_step<ROWS, kTailVectors>(acc, a + p * kWideMR, b + p * ldb);
  }
#pragma GCC unroll 4
  for (int i = 0; i < ROWS; ++i) {
    if (i >= mr) break;
    store_row<kTailVectors>(c + i * ldc, acc[i], alpha, beta);
  }
}

// c[mr, 32] = alpha * (a rows * b_panel) + beta * c, c unread at beta 0, with the 12 rows of a
// read where they lie (row stride lda; rows past mr read row 0 and are not stored) and a packed
// 32-wide B panel: the kernel of gemm_short_nt (cpu/gemm/short_nt.cpp). Each element sums over p
// in order with one fused multiply-add each, as wide_body: the same bits.
__attribute__((always_inline)) inline void rows_body(int64_t kc, const float* __restrict a,
                                                     int64_t lda, const float* __restrict b,
                                                     float* c, int64_t ldc, float alpha, float beta,
                                                     int mr) {
  F16 acc[kWideMR][kVectors];
#pragma GCC unroll 12
  for (int i = 0; i < kWideMR; ++i)
#pragma GCC unroll 2
    for (int v = 0; v < kVectors; ++v) acc[i][v] = F16{};
  const float* row[kWideMR];
#pragma GCC unroll 12
  for (int i = 0; i < kWideMR; ++i) row[i] = a + (i < mr ? i : 0) * lda;
  for (int64_t p = 0; p < kc; ++p) {
    __builtin_prefetch(b + (p + kPackedPrefetchDepth) * kWideNR);
    __builtin_prefetch(b + (p + kPackedPrefetchDepth) * kWideNR + kWideNR / 2);
    F16 bv[kVectors];
#pragma GCC unroll 2
    for (int v = 0; v < kVectors; ++v) std::memcpy(&bv[v], b + p * kWideNR + v * kVec, 64);
#pragma GCC unroll 12
    for (int i = 0; i < kWideMR; ++i) {
      const F16 ai = splat(row[i][p]);
#pragma GCC unroll 2
      for (int v = 0; v < kVectors; ++v) acc[i][v] += ai * bv[v];
    }
  }
#pragma GCC unroll 12
  for (int i = 0; i < kWideMR; ++i) {
    if (i >= mr) break;
    store_row<kVectors>(c + i * ldc, acc[i], alpha, beta);
  }
}

}  // namespace

__attribute__((target("avx512f"))) void micro_kernel_avx512_rows(int64_t kc, const float* a,
                                                                 int64_t lda, const float* b,
                                                                 float* c, int64_t ldc,
                                                                 float alpha, float beta, int mr) {
  rows_body(kc, a, lda, b, c, ldc, alpha, beta, mr);
}

__attribute__((target("avx2,fma"))) void micro_kernel_wide_on_avx2_rows(int64_t kc, const float* a,
                                                                        int64_t lda, const float* b,
                                                                        float* c, int64_t ldc,
                                                                        float alpha, float beta,
                                                                        int mr) {
  rows_body(kc, a, lda, b, c, ldc, alpha, beta, mr);
}

__attribute__((target("avx512f"))) void micro_kernel_avx512_tail64(int64_t kc, const float* a,
                                                                   const float* b, int64_t ldb,
                                                                   float* c, int64_t ldc,
                                                                   float alpha, float beta,
                                                                   int mr) {
  tail64_body<4>(kc, a, b, ldb, c, ldc, alpha, beta, mr);
}

__attribute__((target("avx2,fma"))) void micro_kernel_wide_on_avx2_tail64(
    int64_t kc, const float* a, const float* b, int64_t ldb, float* c, int64_t ldc, float alpha,
    float beta, int mr) {
  tail64_body<4>(kc, a, b, ldb, c, ldc, alpha, beta, mr);
}

__attribute__((target("avx512f"))) void micro_kernel_avx512(int64_t kc, const float* a,
                                                            const float* b, int64_t ldb, float* c,
                                                            int64_t ldc, float alpha, float beta,
                                                            int mr, int nr) {
  wide_rows(kc, a, b, ldb, c, ldc, alpha, beta, mr, nr);
}

__attribute__((target("avx2,fma"))) void micro_kernel_wide_on_avx2(int64_t kc, const float* a,
                                                                   const float* b, int64_t ldb,
                                                                   float* c, int64_t ldc,
                                                                   float alpha, float beta, int mr,
                                                                   int nr) {
  wide_rows(kc, a, b, ldb, c, ldc, alpha, beta, mr, nr);
}
#endif

}  // namespace nnops::detail
