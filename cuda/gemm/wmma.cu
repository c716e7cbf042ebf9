// The WMMA tensor-core GEMMs (TF32 on F32 operands, opt-in with GemmOptions::allow_tf32; BF16),
// the portable tensor-core path: each k-slice staged through registers with element loads and a
// barrier, WMMA fragments loaded from padded shared tiles, FP32 sums. The multistage mma.sync
// kernels (mma.cu) are the faster design; these stay beside them until a GPU has compared both.
#include <cuda_bf16.h>
#include <mma.h>

#include "../elementwise.cuh"
#include "kernels.hpp"

namespace nnops::detail::gemm {

namespace {

// The tensor-core kernels' tiling: 128 x 128 outputs per block of 8 warps, each warp 32 x 64
// (2 x 4 WMMA fragments).
constexpr int kTcBM = kTileM, kTcBN = kTileN;
constexpr int kTcWarps = 8, kTcThreads = kTcWarps * 32;

// The tensor-core epilogue: a warp's 2 x 4 accumulator fragments (32 x 64 outputs from
// (r0, c0)) through a 16 x 16 staging tile, so edges, alpha, beta, bias and the output dtype
// are handled element by element.
template <class Acc, class TOut>
__device__ void store_tiles(Acc (&acc)[2][4], float* st, int lane, TOut* __restrict__ d_c,
                            const float* __restrict__ d_bias, int64_t r0, int64_t c0, int64_t m,
                            int64_t n, float alpha, float beta) {
  using namespace nvcuda;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      wmma::store_matrix_sync(st, acc[i][j], 16, wmma::mem_row_major);
      __syncwarp();
      for (int e = lane; e < 256; e += 32) {
        const int64_t gi = r0 + i * 16 + e / 16, gj = c0 + j * 16 + e % 16;
        if (gi < m && gj < n) {
          float v = alpha * st[e];
          if (beta != 0.0f) v = fmaf(beta, load_elem(d_c, gi * n + gj), v);
          if (d_bias) v += d_bias[gj];
          store_elem(d_c, gi * n + gj, v);
        }
      }
      __syncwarp();
    }
  }
}

// Stages the BK-deep slice at depth k0 of op(a) (kTcBM rows from row0) and op(b) (kTcBN
// columns from col0) in shared memory, k-minor for a and k-major for b as the WMMA loads want
// them; zeros past the edges. Consecutive threads walk each matrix's contiguous dimension, so
// the global loads coalesce.
template <bool kTransA, bool kTransB, class T, int BK, int kPadA, int kPadB>
__device__ void stage_slice(T (&as)[kTcBM][kPadA], T (&bs)[BK][kPadB], const T* __restrict__ d_a,
                            const T* __restrict__ d_b, int64_t m, int64_t n, int64_t k,
                            int64_t row0, int64_t col0, int64_t k0, int tid) {
#pragma unroll
  for (int l = 0; l < (kTcBM * BK) / kTcThreads; ++l) {
    const int idx = tid + l * kTcThreads;
    int r, p;
    if (kTransA)
      r = idx % kTcBM, p = idx / kTcBM;
    else
      r = idx / BK, p = idx % BK;
    const int64_t gi = row0 + r, gp = k0 + p;
    as[r][p] = (gi < m && gp < k) ? (kTransA ? d_a[gp * m + gi] : d_a[gi * k + gp]) : T(0);
    int c, q;
    if (kTransB)
      c = idx / BK, q = idx % BK;
    else
      c = idx % kTcBN, q = idx / kTcBN;
    const int64_t gj = col0 + c, gq = k0 + q;
    bs[q][c] = (gj < n && gq < k) ? (kTransB ? d_b[gj * k + gq] : d_b[gq * n + gj]) : T(0);
  }
}

// The two tensor-core GEMMs differ only in what their tiles hold. TF32 (opt-in, with
// GemmOptions::allow_tf32): F32 in shared memory, rounded to TF32 as the fragments load, WMMA
// m16n16k8, 16-deep slices. BF16: BF16 bits in shared memory, WMMA m16n16k16, 32-deep slices.
// Both compile to mma.sync on sm_80+ and accumulate in FP32. WMMA pointers must be 32-byte
// aligned and strides multiples of 16 bytes: the padded strides keep every fragment start so.
struct Tf32Tiles {
  using Stored = float;
  static constexpr int kFragK = 8, kBK = 16, kPadA = kBK + 4, kPadB = kTcBN + 4;
  using FragA = nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 8,
                                       nvcuda::wmma::precision::tf32, nvcuda::wmma::row_major>;
  using FragB = nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 8,
                                       nvcuda::wmma::precision::tf32, nvcuda::wmma::row_major>;
  __device__ static const float* ptr(const float* p) { return p; }
  template <class Frag>
  __device__ static void convert(Frag& f) {
#pragma unroll
    for (int t = 0; t < f.num_elements; ++t) f.x[t] = nvcuda::wmma::__float_to_tf32(f.x[t]);
  }
};

struct Bf16Tiles {
  using Stored = uint16_t;  // the bits of __nv_bfloat16
  static constexpr int kFragK = 16, kBK = 32, kPadA = kBK + 8, kPadB = kTcBN + 8;
  using FragA = nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __nv_bfloat16,
                                       nvcuda::wmma::row_major>;
  using FragB = nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, __nv_bfloat16,
                                       nvcuda::wmma::row_major>;
  __device__ static const __nv_bfloat16* ptr(const uint16_t* p) {
    return reinterpret_cast<const __nv_bfloat16*>(p);
  }
  template <class Frag>
  __device__ static void convert(Frag&) {}
};

template <class Tiles, bool kTransA, bool kTransB, class TOut>
__global__ void __launch_bounds__(kTcThreads)
    tensor_core_gemm_kernel(TOut* __restrict__ d_c, const typename Tiles::Stored* __restrict__ d_a,
                            const typename Tiles::Stored* __restrict__ d_b,
                            const float* __restrict__ d_bias, int64_t m, int64_t n, int64_t k,
                            float alpha, float beta) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  using T = typename Tiles::Stored;
  constexpr int kBK = Tiles::kBK, kPadA = Tiles::kPadA, kPadB = Tiles::kPadB;
  __shared__ __align__(128) T as[kTcBM][kPadA];
  __shared__ __align__(128) T bs[kBK][kPadB];
  __shared__ __align__(128) float staging[kTcWarps][16 * 16];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid & 31;
  const int warp_m = warp / 2, warp_n = warp % 2;  // 4 x 2 warps of 32 x 64
  const int64_t row0 = int64_t(blockIdx.x) * kTcBM, col0 = int64_t(blockIdx.y) * kTcBN;
  wmma::fragment<wmma::accumulator, 16, 16, Tiles::kFragK, float> acc[2][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  for (int64_t k0 = 0; k0 < k; k0 += kBK) {
    stage_slice<kTransA, kTransB>(as, bs, d_a, d_b, m, n, k, row0, col0, k0, tid);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; kk += Tiles::kFragK) {
      typename Tiles::FragA fa[2];
      typename Tiles::FragB fb[4];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        wmma::load_matrix_sync(fa[i], Tiles::ptr(&as[warp_m * 32 + i * 16][kk]), kPadA);
        Tiles::convert(fa[i]);
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        wmma::load_matrix_sync(fb[j], Tiles::ptr(&bs[kk][warp_n * 64 + j * 16]), kPadB);
        Tiles::convert(fb[j]);
      }
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();
  }
  store_tiles(acc, staging[warp], lane, d_c, d_bias, row0 + warp_m * 32, col0 + warp_n * 64, m, n,
              alpha, beta);
#endif
}

}  // namespace

namespace {

// One launch of the WMMA kernel for the tiles (and so the operand type) of Tiles.
template <class Tiles, class TIn, class TOut>
void launch_wmma(bool trans_a, bool trans_b, TOut* c, const TIn* a, const TIn* b, const float* bias,
                 int64_t m, int64_t n, int64_t k, float alpha, float beta, const char* name) {
  by_transpose(trans_a, trans_b, [&](auto ta, auto tb) {
    tensor_core_gemm_kernel<Tiles, decltype(ta)::value, decltype(tb)::value, TOut>
        <<<output_grid(m, n), kTcThreads, 0, t_stream>>>(c, a, b, bias, m, n, k, alpha, beta);
  });
  check_launch(name);
}

}  // namespace

template <class TOut>
void launch_wmma_tf32(bool trans_a, bool trans_b, TOut* c, const float* a, const float* b,
                      const float* bias, int64_t m, int64_t n, int64_t k, float alpha, float beta) {
  launch_wmma<Tf32Tiles>(trans_a, trans_b, c, a, b, bias, m, n, k, alpha, beta,
                         "tensor_core_gemm_kernel (TF32)");
}

template <class TOut>
void launch_wmma_bf16(bool trans_a, bool trans_b, TOut* c, const uint16_t* a, const uint16_t* b,
                      const float* bias, int64_t m, int64_t n, int64_t k, float alpha, float beta) {
  launch_wmma<Bf16Tiles>(trans_a, trans_b, c, a, b, bias, m, n, k, alpha, beta,
                         "tensor_core_gemm_kernel (BF16)");
}

#define NNOPS_WMMA_INSTANCES(TOut)                                                             \
  template void launch_wmma_tf32<TOut>(bool, bool, TOut*, const float*, const float*,          \
                                       const float*, int64_t, int64_t, int64_t, float, float); \
  template void launch_wmma_bf16<TOut>(bool, bool, TOut*, const uint16_t*, const uint16_t*,    \
                                       const float*, int64_t, int64_t, int64_t, float, float);
NNOPS_WMMA_INSTANCES(float)
NNOPS_WMMA_INSTANCES(uint16_t)
#undef NNOPS_WMMA_INSTANCES

}  // namespace nnops::detail::gemm
