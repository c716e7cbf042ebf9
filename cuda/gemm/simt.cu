// CUDA FP32 GEMM on the SIMT cores (cuBLAS is only a baseline in the benchmarks): 128 x 128
// output tiles per block of 256 threads, 8-deep slices of op(a) and op(b) staged in shared
// memory, and an 8 x 8 register block of accumulators per thread (the classic SIMT SGEMM of
// CUTLASS and siboehm's SGEMM_CUDA). Every transpose case is a template instance; loads are
// bounds-checked, so any m, n, k works. Each element sums over k in order: the same bits on
// every run.
#include "../elementwise.cuh"
#include "kernels.hpp"

namespace nnops::detail::gemm {

namespace {

constexpr int kBM = kTileM, kBN = kTileN, kBK = 8, kTM = 8, kTN = 8, kThreads = 256;
static_assert((kBM / kTM) * (kBN / kTN) == kThreads, "one thread per 8 x 8 register block");
static_assert(kBM * kBK == 4 * kThreads && kBN * kBK == 4 * kThreads, "4 loads per thread");
// Shared rows padded by 4 floats: a warp storing a row-major slice writes 4 rows x 8 depths,
// which land in 32 distinct banks (row + 4 * depth) rather than 8 to a bank without the pad.
// 132 floats keep every row start 16-byte aligned for the float4 reads.
constexpr int kPad = kBM + 4;

// op(a) is [m, k]: a is [m, k] row-major, or [k, m] when trans_a.
template <bool kTransA, bool kTransB, class TOut>
__global__ void __launch_bounds__(kThreads)
    sgemm_kernel(TOut* __restrict__ d_c, const float* __restrict__ d_a,
                 const float* __restrict__ d_b, const float* __restrict__ d_bias, int64_t m,
                 int64_t n, int64_t k, float alpha, float beta) {
  // Two shared buffers: while the block multiplies one k-slice, the next slice's values are
  // already in flight from global memory into registers (one barrier per slice).
  __shared__ __align__(16) float as[2][kBK][kPad];  // op(a) slice, k-major: rows read as float4s
  __shared__ __align__(16) float bs[2][kBK][kPad];
  const int tid = threadIdx.x;
  const int64_t row0 = int64_t(blockIdx.x) * kBM, col0 = int64_t(blockIdx.y) * kBN;
  const int ty = tid / (kBN / kTN), tx = tid % (kBN / kTN);
  float acc[kTM][kTN] = {};

  // This thread's 4 + 4 elements of a slice; consecutive threads walk the contiguous dimension
  // of each matrix, so the global loads coalesce.
  // (Indices are recomputed from tid rather than kept: registers are the scarce resource.)
  auto a_row = [&](int l) {
    const int idx = tid + l * kThreads;
    return kTransA ? idx % kBM : idx / kBK;
  };
  auto a_dep = [&](int l) {
    const int idx = tid + l * kThreads;
    return kTransA ? idx / kBM : idx % kBK;
  };
  auto b_col = [&](int l) {
    const int idx = tid + l * kThreads;
    return kTransB ? idx / kBK : idx % kBN;
  };
  auto b_dep = [&](int l) {
    const int idx = tid + l * kThreads;
    return kTransB ? idx % kBK : idx / kBN;
  };
  float a_next[4], b_next[4];
  auto fetch = [&](int64_t k0) {
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      const int64_t gi = row0 + a_row(l), gp = k0 + a_dep(l);
      a_next[l] = (gi < m && gp < k) ? (kTransA ? d_a[gp * m + gi] : d_a[gi * k + gp]) : 0.0f;
      const int64_t gj = col0 + b_col(l), gq = k0 + b_dep(l);
      b_next[l] = (gj < n && gq < k) ? (kTransB ? d_b[gj * k + gq] : d_b[gq * n + gj]) : 0.0f;
    }
  };
  auto stage = [&](int buf) {
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      as[buf][a_dep(l)][a_row(l)] = a_next[l];
      bs[buf][b_dep(l)][b_col(l)] = b_next[l];
    }
  };
  // The thread's 8 columns are two runs of 4, at tx * 4 and 64 + tx * 4: the 8 threads of a
  // 16-byte shared-load phase then read 8 distinct 4-bank groups (one run of 8 per thread at
  // tx * 8 would put tx and tx + 4 in the same banks).
  auto col_of = [&](int j) { return (j < 4 ? 0 : kBN / 2) + tx * 4 + (j & 3); };

  fetch(0);
  stage(0);
  __syncthreads();
  int buf = 0;
  for (int64_t k0 = 0; k0 < k; k0 += kBK) {
    const bool more = k0 + kBK < k;
    if (more) fetch(k0 + kBK);
#pragma unroll
    for (int p = 0; p < kBK; ++p) {
      // 16-byte shared loads: half the instructions; a's are broadcast (one ty per phase).
      float ar[kTM], br[kTN];
      *reinterpret_cast<float4*>(ar) = *reinterpret_cast<const float4*>(&as[buf][p][ty * kTM]);
      *reinterpret_cast<float4*>(ar + 4) =
          *reinterpret_cast<const float4*>(&as[buf][p][ty * kTM + 4]);
      *reinterpret_cast<float4*>(br) = *reinterpret_cast<const float4*>(&bs[buf][p][col_of(0)]);
      *reinterpret_cast<float4*>(br + 4) = *reinterpret_cast<const float4*>(&bs[buf][p][col_of(4)]);
#pragma unroll
      for (int i = 0; i < kTM; ++i)
#pragma unroll
        for (int j = 0; j < kTN; ++j) acc[i][j] = fmaf(ar[i], br[j], acc[i][j]);
    }
    if (more) stage(buf ^ 1);  // the other buffer was last read before the previous barrier
    __syncthreads();
    buf ^= 1;
  }
#pragma unroll
  for (int i = 0; i < kTM; ++i) {
    const int64_t gi = row0 + ty * kTM + i;
    if (gi >= m) continue;
#pragma unroll
    for (int j = 0; j < kTN; ++j) {
      const int64_t gj = col0 + col_of(j);
      if (gj >= n) continue;
      float v = alpha * acc[i][j];
      if (beta != 0.0f) v = fmaf(beta, load_elem(d_c, gi * n + gj), v);  // beta == 0: not read
      if (d_bias) v += d_bias[gj];
      store_elem(d_c, gi * n + gj, v);
    }
  }
}

}  // namespace

template <class TOut>
void launch_simt(bool trans_a, bool trans_b, TOut* c, const float* a, const float* b,
                 const float* bias, int64_t m, int64_t n, int64_t k, float alpha, float beta) {
  by_transpose(trans_a, trans_b, [&](auto ta, auto tb) {
    sgemm_kernel<decltype(ta)::value, decltype(tb)::value, TOut>
        <<<output_grid(m, n), kThreads, 0, t_stream>>>(c, a, b, bias, m, n, k, alpha, beta);
  });
  check_launch("sgemm_kernel");
}

template void launch_simt<float>(bool, bool, float*, const float*, const float*, const float*,
                                 int64_t, int64_t, int64_t, float, float);
template void launch_simt<uint16_t>(bool, bool, uint16_t*, const float*, const float*, const float*,
                                    int64_t, int64_t, int64_t, float, float);

}  // namespace nnops::detail::gemm
