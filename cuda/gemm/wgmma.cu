// The sm_90a BF16 GEMM on warpgroup MMA (wgmma.mma_async): 128 x 128 output tiles per block of
// two warpgroups (each 64 rows x 128 columns, m64n128k16 with FP32 sums in 64 registers per
// thread), 64-deep k-slices copied global -> shared with 16-byte cp.async into a 3-stage ring
// and read by the tensor cores straight from shared memory through matrix descriptors.
//
// Shared tiles use the descriptors' canonical K-major layout without swizzling: 8 x 8 "core
// matrices" of 8 rows by 16 bytes (8 BF16 of k), 128 contiguous bytes each; the two core matrices
// of a 16-deep step lie 128 bytes apart (the leading-dimension offset), successive groups of 8
// rows 256 bytes apart (the stride offset), and each 16-deep step of a slice takes 4 KiB for
// 128 rows. Both operands are staged K-major: a K-contiguous operand (a not transposed, b
// transposed) by cp.async where every 16-byte chunk is wholly inside or outside the matrix
// (k a multiple of 8, 16-byte aligned base), otherwise through registers by bounds-checked element
// loads (a transposed a, a non-transposed b: a gather along k; synchronous, no overlap).
//
// Compiled for sm_90a only (its own object library, see CMakeLists.txt) and chosen only on
// compute capability 9.0 with NNOPS_CUDA_GEMM=wgmma. Not yet run on a GPU: mma.cu's kernels stay
// the default. Left for later: TMA loads with a producer warpgroup and mbarriers, 128-byte
// swizzling (the unswizzled layout leaves bank conflicts in the tensor cores' shared reads), and
// the MN-major (transposed) descriptors instead of the register gather.
#include <cuda_runtime.h>

#include <cstdint>

#include "../elementwise.cuh"
#include "cp_async.cuh"
#include "kernels.hpp"
#include "wgmma.cuh"

namespace nnops::detail::gemm {

namespace {

constexpr int kThreads = 256, kStages = 3, kBK = 64;
constexpr int kOperandBytes = kTileM * kBK * 2;  // 16 KiB: 128 rows x 64 BF16
constexpr int kStageBytes = 2 * kOperandBytes;
constexpr int kSharedBytes = kStages * kStageBytes;  // 96 KiB
static_assert(kTileM == kTileN, "one layout serves a and b");

// Byte offset of element (row, kk) of a 128 x 64 operand tile in the canonical layout.
__device__ inline int canonical_offset(int row, int kk) {
  return (kk >> 4) * 4096 + (row >> 3) * 256 + ((kk >> 3) & 1) * 128 + (row & 7) * 16 +
         (kk & 7) * 2;
}

// A shared-memory matrix descriptor: start address, leading-dimension byte offset 128 (the next
// core matrix along k), stride byte offset 256 (the next 8 rows), no swizzle; addresses and
// offsets in units of 16 bytes.
__device__ inline uint64_t descriptor(const void* tile) {
  uint64_t d = (shared_address(tile) & 0x3FFFF) >> 4;
  d |= uint64_t(128 >> 4) << 16;
  d |= uint64_t(256 >> 4) << 32;
  return d;
}

// One operand tile, rows [row0, row0 + 128) of op (m or n) and depths [k0, k0 + 64), into the
// canonical layout. k_contiguous: element (r, p) at src[r * k + p] (a not transposed, b
// transposed); else at src[p * rows + r]. async: cp.async for every chunk (k_contiguous only).
__device__ void load_operand(unsigned char* tile, const uint16_t* __restrict__ src, int64_t rows,
                             int64_t k, int64_t row0, int64_t k0, bool k_contiguous, bool async,
                             int tid) {
  constexpr int kChunksPerRow = kBK / 8;
#pragma unroll
  for (int l = 0; l < kTileM * kChunksPerRow / kThreads; ++l) {
    const int chunk = tid + l * kThreads;
    const int r = chunk / kChunksPerRow, kk = (chunk % kChunksPerRow) * 8;
    const int64_t gr = row0 + r, gk = k0 + kk;
    unsigned char* dst = tile + canonical_offset(r, kk);
    if (async) {
      const bool inside = gr < rows && gk < k;
      cp_async_16(dst, inside ? src + gr * k + gk : src, inside);
      continue;
    }
    alignas(16) uint16_t v[8];
#pragma unroll
    for (int x = 0; x < 8; ++x) {
      const bool inside = gr < rows && gk + x < k;
      v[x] = inside ? (k_contiguous ? src[gr * k + gk + x] : src[(gk + x) * rows + gr]) : 0;
    }
    *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(v);
  }
}

template <bool kTransA, bool kTransB, class TOut>
__global__ void __launch_bounds__(kThreads, 1)
    wgmma_gemm_kernel(TOut* __restrict__ d_c, const uint16_t* __restrict__ d_a,
                      const uint16_t* __restrict__ d_b, const float* __restrict__ d_bias,
                      int64_t m, int64_t n, int64_t k, float alpha, float beta, bool async_a,
                      bool async_b) {
  extern __shared__ __align__(128) unsigned char smem[];
  auto a_tile = [&](int s) { return smem + s * kStageBytes; };
  auto b_tile = [&](int s) { return smem + s * kStageBytes + kOperandBytes; };
  const int tid = threadIdx.x, warpgroup = tid / 128, warp = (tid % 128) / 32, lane = tid % 32;
  const int64_t row0 = int64_t(blockIdx.x) * kTileM, col0 = int64_t(blockIdx.y) * kTileN;
  // op(a) rows are a's rows when a is [m, k] (k contiguous); op(b) columns are b's rows when b
  // is [n, k].
  auto load_stage = [&](int s, int64_t kt) {
    load_operand(a_tile(s), d_a, m, k, row0, kt * kBK, !kTransA, async_a, tid);
    load_operand(b_tile(s), d_b, n, k, col0, kt * kBK, kTransB, async_b, tid);
  };

  float d[64];
#pragma unroll
  for (int i = 0; i < 64; ++i) d[i] = 0.0f;
  const int64_t slices = (k + kBK - 1) / kBK;
  cp_async_prologue<kStages>(slices, load_stage);
  for (int64_t kt = 0; kt < slices; ++kt) {
    cp_async_wait<kStages - 2>();  // this thread's copies of slice kt have landed
    // Its shared writes (copies and stores) before the tensor cores' reads, which go through
    // the async proxy; then everyone's. Stage (kt - 1) % kStages is free after the barrier:
    // every warpgroup waited for its MMAs on it in the previous iteration.
    asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory");
    __syncthreads();
    const int64_t next = kt + kStages - 1;
    if (next < slices) load_stage(int(next % kStages), next);
    cp_async_commit();
    const int s = int(kt % kStages);
    pin(d);
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int step = 0; step < kBK / 16; ++step) {
      // This warpgroup's 64 rows of a (8 groups of 8 rows: 2 KiB in) and all 128 columns of b.
      const uint64_t desc_a = descriptor(a_tile(s) + step * 4096 + warpgroup * 2048);
      const uint64_t desc_b = descriptor(b_tile(s) + step * 4096);
      wgmma_m64n128k16(d, desc_a, desc_b, 1);
    }
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
    pin(d);
  }
  cp_async_wait<0>();  // no copy outlives the block (the trailing groups are empty)

  // The accumulator fragment of m64nNk16: warp w of the warpgroup holds rows 16 w + g and
  // 16 w + g + 8 (lane = 4 g + t); for each 8-column block j, d[4 j + e] is row g + 8 (e / 2),
  // column 8 j + 2 t + e % 2.
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int j = 0; j < 16; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t gi = row0 + warpgroup * 64 + warp * 16 + g + (e >> 1) * 8;
      const int64_t gj = col0 + j * 8 + 2 * t + (e & 1);
      if (gi >= m || gj >= n) continue;
      float v = alpha * d[4 * j + e];
      if (beta != 0.0f) v = fmaf(beta, load_elem(d_c, gi * n + gj), v);  // beta 0: not read
      if (d_bias) v += d_bias[gj];
      store_elem(d_c, gi * n + gj, v);
    }
  }
}

}  // namespace

template <class TOut>
void launch_wgmma_bf16(bool trans_a, bool trans_b, TOut* c, const uint16_t* a, const uint16_t* b,
                       const float* bias, int64_t m, int64_t n, int64_t k, float alpha,
                       float beta) {
  const bool async_a = !trans_a && k % 8 == 0 && aligned16(a);
  const bool async_b = trans_b && k % 8 == 0 && aligned16(b);
  by_transpose(trans_a, trans_b, [&](auto ta, auto tb) {
    auto kernel = wgmma_gemm_kernel<decltype(ta)::value, decltype(tb)::value, TOut>;
    // Above 48 KiB of dynamic shared memory a kernel must opt in (per device, so every launch).
    NNOPS_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSharedBytes));
    kernel<<<output_grid(m, n), kThreads, kSharedBytes, t_stream>>>(c, a, b, bias, m, n, k, alpha,
                                                                    beta, async_a, async_b);
  });
  check_launch("wgmma_gemm_kernel (BF16)");
}

template void launch_wgmma_bf16<float>(bool, bool, float*, const uint16_t*, const uint16_t*,
                                       const float*, int64_t, int64_t, int64_t, float, float);
template void launch_wgmma_bf16<uint16_t>(bool, bool, uint16_t*, const uint16_t*, const uint16_t*,
                                          const float*, int64_t, int64_t, int64_t, float, float);

}  // namespace nnops::detail::gemm
