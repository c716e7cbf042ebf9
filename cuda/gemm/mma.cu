// The multistage tensor-core GEMMs, after CUTLASS's sm80 design: 128 x 128 output tiles per block
// of 8 warps (2 x 4, each 64 x 32 as 4 x 4 mma tiles of 16 x 8), k-slices copied global ->
// shared with 16-byte cp.async into a 4-stage ring (3 slices in flight while one is multiplied),
// fragments read with ldmatrix (BF16) or conflict-free 4-byte loads (TF32), mma.sync m16n8k16
// (BF16) or m16n8k8 (TF32, rounded with cvt.rna as fragments load), FP32 sums, 2 blocks per
// multiprocessor (80 KiB of shared memory and at most 128 registers per thread each).
//
// Shared tiles are padded rather than XOR-swizzled: a k-contiguous row is 80 bytes (32 BF16 or
// 16 F32 + 16 bytes of pad) and an m- or n-contiguous row is 272 (BF16) or 544 (F32) bytes, so
// the 8 row addresses of an ldmatrix phase, and the 32 lanes of a TF32 fragment load, fall in
// distinct banks; cp.async writes 16-byte chunks at 16-byte aligned addresses either way.
//
// cp.async needs every 16-byte chunk wholly inside or wholly outside the matrix (zero-filled
// outside): each operand's contiguous extent a multiple of 8 BF16 or 4 F32 and 16-byte aligned
// base addresses. Other shapes stage the same tiles through registers with bounds-checked element
// loads (synchronous, so no overlap), which keeps every size correct.
#include "../elementwise.cuh"
#include "cp_async.cuh"
#include "kernels.hpp"

namespace nnops::detail::gemm {

namespace {

constexpr int kThreads = 256, kStages = 4;
constexpr int kWarpM = 64, kWarpN = 32;  // each warp's outputs: 4 x 4 mma tiles of 16 x 8
constexpr int kFragsM = kWarpM / 16, kFragsN = kWarpN / 8;
constexpr int kStageBytes = 10240;  // the largest operand tile: 128 rows x 80 bytes

// BF16: 32-deep slices of bits, k16 steps. TF32: 16-deep slices of F32, k8 steps. kVec elements
// make a 16-byte chunk; k-contiguous rows carry kVec elements of pad, m/n-contiguous rows 8.
template <class T>
struct MmaTraits;
template <>
struct MmaTraits<uint16_t> {
  static constexpr int kBK = 32, kStep = 16, kVec = 8;
};
template <>
struct MmaTraits<float> {
  static constexpr int kBK = 16, kStep = 8, kVec = 4;
};

// One operand tile's shape in shared memory: kOuter rows of kInner contiguous elements, rows
// kStride elements apart. kKContiguous: rows are m (or n) and run along k.
template <class T, bool kKContiguous>
struct TileShape {
  static constexpr int kBK = MmaTraits<T>::kBK, kVec = MmaTraits<T>::kVec;
  static constexpr int kOuter = kKContiguous ? kTileM : kBK;
  static constexpr int kInner = kKContiguous ? kBK : kTileM;
  static constexpr int kStride = kInner + (kKContiguous ? kVec : 8);
  static constexpr int kChunks = kOuter * kInner / kVec;
  static_assert(kTileM == kTileN, "one shape serves a and b");
  static_assert(kOuter * kStride * int(sizeof(T)) <= kStageBytes, "tile fits its stage");
  static_assert(kChunks % kThreads == 0, "whole chunks per thread");
  static_assert((kStride * sizeof(T)) % 16 == 0, "rows start 16-byte aligned");
};

// Copies one operand tile: rows [outer0, outer0 + kOuter) and elements [inner0, inner0 + kInner)
// of a row-major matrix of `outer_extent` rows of `inner_extent` elements into `tile`.
template <class T, bool kKContiguous>
__device__ void load_tile(T* tile, const T* __restrict__ src, int64_t outer_extent,
                          int64_t inner_extent, int64_t outer0, int64_t inner0, bool async,
                          int tid) {
  using S = TileShape<T, kKContiguous>;
  constexpr int kChunksPerRow = S::kInner / S::kVec;
#pragma unroll
  for (int l = 0; l < S::kChunks / kThreads; ++l) {
    const int chunk = tid + l * kThreads;
    const int r = chunk / kChunksPerRow, e = (chunk % kChunksPerRow) * S::kVec;
    const int64_t go = outer0 + r, gi = inner0 + e;
    T* dst = tile + r * S::kStride + e;
    if (async) {
      const bool inside = go < outer_extent && gi < inner_extent;
      cp_async_16(dst, inside ? src + go * inner_extent + gi : src, inside);
    } else {
      alignas(16) T v[S::kVec];
#pragma unroll
      for (int x = 0; x < S::kVec; ++x)
        v[x] =
            (go < outer_extent && gi + x < inner_extent) ? src[go * inner_extent + gi + x] : T(0);
      *reinterpret_cast<uint4*>(dst) = *reinterpret_cast<const uint4*>(v);
    }
  }
}

__device__ inline uint32_t to_tf32(float x) {
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
  return r;
}

__device__ inline void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                           uint16_t /*bf16 tag*/) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ inline void mma(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                           float /*tf32 tag*/) {
  asm volatile(
      "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
      "{%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// The A fragments (16 x kStep, row-major) of the warp's 4 row tiles at depth ks of a stage.
// Fragment registers follow PTX's layouts: for lane = 4 * g + t, BF16 a0..a3 hold rows g, g + 8,
// g, g + 8 at k pairs 2t, 2t, 2t + 8, 2t + 8; TF32 a0..a3 hold (g, t), (g + 8, t), (g, t + 4),
// (g + 8, t + 4).
template <bool kTransA>
__device__ void load_a(uint32_t (&a)[kFragsM][4], const uint16_t* tile, int wm, int ks, int lane) {
  using S = TileShape<uint16_t, !kTransA>;
#pragma unroll
  for (int i = 0; i < kFragsM; ++i) {
    // ldmatrix.x4: lanes 8q..8q+7 give the row addresses of 8 x 8 matrix q; matrices in the order
    // (rows 0-7, k 0-7), (rows 8-15, k 0-7), (rows 0-7, k 8-15), (rows 8-15, k 8-15).
    const int row = wm + i * 16 + (lane & 8) + (kTransA ? 0 : (lane & 7));
    const int dep = ks + (lane & 16 ? 8 : 0) + (kTransA ? (lane & 7) : 0);
    if (kTransA)  // stored [k][m]: each stored row is 8 m values of one k; transpose on load
      ldmatrix_x4_trans(a[i], tile + dep * S::kStride + row);
    else
      ldmatrix_x4(a[i], tile + row * S::kStride + dep);
  }
}
template <bool kTransA>
__device__ void load_a(uint32_t (&a)[kFragsM][4], const float* tile, int wm, int ks, int lane) {
  using S = TileShape<float, !kTransA>;
  const int g = lane >> 2, t = lane & 3;
  auto at = [&](int r, int p) {
    return kTransA ? tile[(ks + p) * S::kStride + r] : tile[r * S::kStride + ks + p];
  };
#pragma unroll
  for (int i = 0; i < kFragsM; ++i) {
    const int r = wm + i * 16 + g;
    a[i][0] = to_tf32(at(r, t));
    a[i][1] = to_tf32(at(r + 8, t));
    a[i][2] = to_tf32(at(r, t + 4));
    a[i][3] = to_tf32(at(r + 8, t + 4));
  }
}

// The B fragments (kStep x 8, "col": k runs within a column) of the warp's 4 column tiles. BF16
// b0, b1 hold column g at k pairs 2t and 2t + 8; TF32 b0, b1 hold (k t, n g) and (k t + 4, n g).
template <bool kTransB>
__device__ void load_b(uint32_t (&b)[kFragsN][2], const uint16_t* tile, int wn, int ks, int lane) {
  using S = TileShape<uint16_t, kTransB>;
#pragma unroll
  for (int j = 0; j < kFragsN; j += 2) {
    // One ldmatrix.x4 for two column tiles: matrices (n 0-7, k 0-7), (n 0-7, k 8-15),
    // (n 8-15, k 0-7), (n 8-15, k 8-15) -> b[j][0], b[j][1], b[j + 1][0], b[j + 1][1].
    uint32_t r[4];
    const int col = wn + j * 8 + (lane & 16 ? 8 : 0) + (kTransB ? (lane & 7) : 0);
    const int dep = ks + (lane & 8) + (kTransB ? 0 : (lane & 7));
    if (kTransB)  // stored [n][k]: rows run along k, as the fragment wants
      ldmatrix_x4(r, tile + col * S::kStride + dep);
    else  // stored [k][n]
      ldmatrix_x4_trans(r, tile + dep * S::kStride + col);
    b[j][0] = r[0];
    b[j][1] = r[1];
    b[j + 1][0] = r[2];
    b[j + 1][1] = r[3];
  }
}
template <bool kTransB>
__device__ void load_b(uint32_t (&b)[kFragsN][2], const float* tile, int wn, int ks, int lane) {
  using S = TileShape<float, kTransB>;
  const int g = lane >> 2, t = lane & 3;
  auto at = [&](int c, int p) {
    return kTransB ? tile[c * S::kStride + ks + p] : tile[(ks + p) * S::kStride + c];
  };
#pragma unroll
  for (int j = 0; j < kFragsN; ++j) {
    const int c = wn + j * 8 + g;
    b[j][0] = to_tf32(at(c, t));
    b[j][1] = to_tf32(at(c, t + 4));
  }
}

template <class T, bool kTransA, bool kTransB, class TOut>
__global__ void __launch_bounds__(kThreads, 2)
    mma_gemm_kernel(TOut* __restrict__ d_c, const T* __restrict__ d_a, const T* __restrict__ d_b,
                    const float* __restrict__ d_bias, int64_t m, int64_t n, int64_t k, float alpha,
                    float beta, bool async) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  constexpr int kBK = MmaTraits<T>::kBK, kStep = MmaTraits<T>::kStep;
  extern __shared__ __align__(128) unsigned char smem[];
  auto a_tile = [&](int s) { return reinterpret_cast<T*>(smem + (2 * s) * kStageBytes); };
  auto b_tile = [&](int s) { return reinterpret_cast<T*>(smem + (2 * s + 1) * kStageBytes); };
  const int tid = threadIdx.x, warp = tid / 32, lane = tid & 31;
  const int wm = (warp / 4) * kWarpM, wn = (warp % 4) * kWarpN;
  const int64_t row0 = int64_t(blockIdx.x) * kTileM, col0 = int64_t(blockIdx.y) * kTileN;

  // op(a) rows are a's rows (k contiguous) or a's columns (a is [k, m], m contiguous); op(b)
  // columns are b's rows when trans_b (b is [n, k]) or b's columns (b is [k, n]).
  auto load_stage = [&](int s, int64_t kt) {
    const int64_t k0 = kt * kBK;
    if (kTransA)
      load_tile<T, false>(a_tile(s), d_a, k, m, k0, row0, async, tid);
    else
      load_tile<T, true>(a_tile(s), d_a, m, k, row0, k0, async, tid);
    if (kTransB)
      load_tile<T, true>(b_tile(s), d_b, n, k, col0, k0, async, tid);
    else
      load_tile<T, false>(b_tile(s), d_b, k, n, k0, col0, async, tid);
  };

  float acc[kFragsM][kFragsN][4] = {};
  const int64_t slices = (k + kBK - 1) / kBK;
  cp_async_prologue<kStages>(slices, load_stage);
  for (int64_t kt = 0; kt < slices; ++kt) {
    cp_async_wait<kStages - 2>();  // slice kt has landed (this thread's copies) ...
    __syncthreads();               // ... and everyone's; stage (kt - 1) % kStages is free
    const int64_t next = kt + kStages - 1;
    if (next < slices) load_stage(int(next % kStages), next);
    cp_async_commit();
    const int s = int(kt % kStages);
#pragma unroll
    for (int ks = 0; ks < kBK; ks += kStep) {
      uint32_t a[kFragsM][4], b[kFragsN][2];
      load_a<kTransA>(a, a_tile(s), wm, ks, lane);
      load_b<kTransB>(b, b_tile(s), wn, ks, lane);
#pragma unroll
      for (int i = 0; i < kFragsM; ++i)
#pragma unroll
        for (int j = 0; j < kFragsN; ++j) mma(acc[i][j], a[i], b[j], T{});
    }
  }
  cp_async_wait<0>();  // no copy outlives the block (the trailing groups are empty)

  // Accumulator d0, d1 hold row g, columns 2t and 2t + 1 of a 16 x 8 tile; d2, d3 row g + 8.
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int i = 0; i < kFragsM; ++i) {
#pragma unroll
    for (int j = 0; j < kFragsN; ++j) {
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t gi = row0 + wm + i * 16 + g + (e >> 1) * 8;
        const int64_t gj = col0 + wn + j * 8 + 2 * t + (e & 1);
        if (gi >= m || gj >= n) continue;
        float v = alpha * acc[i][j][e];
        if (beta != 0.0f) v = fmaf(beta, load_elem(d_c, gi * n + gj), v);  // beta 0: not read
        if (d_bias) v += d_bias[gj];
        store_elem(d_c, gi * n + gj, v);
      }
    }
  }
#endif
}

template <class T, class TOut>
void launch_mma(bool trans_a, bool trans_b, TOut* c, const T* a, const T* b, const float* bias,
                int64_t m, int64_t n, int64_t k, float alpha, float beta, const char* what) {
  constexpr int kVec = MmaTraits<T>::kVec;
  // The contiguous extent of each operand as stored: a is [m, k] or [k, m], b [k, n] or [n, k].
  const int64_t a_inner = trans_a ? m : k, b_inner = trans_b ? k : n;
  const bool async = a_inner % kVec == 0 && b_inner % kVec == 0 && aligned16(a) && aligned16(b);
  constexpr int kSharedBytes = 2 * kStages * kStageBytes;
  by_transpose(trans_a, trans_b, [&](auto ta, auto tb) {
    auto kernel = mma_gemm_kernel<T, decltype(ta)::value, decltype(tb)::value, TOut>;
    // Above 48 KiB of dynamic shared memory a kernel must opt in (per device, so every launch).
    NNOPS_CUDA_CHECK(
        cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, kSharedBytes));
    kernel<<<output_grid(m, n), kThreads, kSharedBytes, t_stream>>>(c, a, b, bias, m, n, k, alpha,
                                                                    beta, async);
  });
  check_launch(what);
}

}  // namespace

template <class TOut>
void launch_mma_tf32(bool trans_a, bool trans_b, TOut* c, const float* a, const float* b,
                     const float* bias, int64_t m, int64_t n, int64_t k, float alpha, float beta) {
  launch_mma(trans_a, trans_b, c, a, b, bias, m, n, k, alpha, beta, "mma_gemm_kernel (TF32)");
}

template <class TOut>
void launch_mma_bf16(bool trans_a, bool trans_b, TOut* c, const uint16_t* a, const uint16_t* b,
                     const float* bias, int64_t m, int64_t n, int64_t k, float alpha, float beta) {
  launch_mma(trans_a, trans_b, c, a, b, bias, m, n, k, alpha, beta, "mma_gemm_kernel (BF16)");
}

#define NNOPS_MMA_INSTANCES(TOut)                                                                  \
  template void launch_mma_tf32<TOut>(bool, bool, TOut*, const float*, const float*, const float*, \
                                      int64_t, int64_t, int64_t, float, float);                    \
  template void launch_mma_bf16<TOut>(bool, bool, TOut*, const uint16_t*, const uint16_t*,         \
                                      const float*, int64_t, int64_t, int64_t, float, float);
NNOPS_MMA_INSTANCES(float)
NNOPS_MMA_INSTANCES(uint16_t)
#undef NNOPS_MMA_INSTANCES

}  // namespace nnops::detail::gemm
