// The 2:4 linear layer's forward on sparse tensor cores, staged: y = x w^T + b with BF16 x and
// BF16 NM24 values, FP32 sums, as sparse_mma.cu's direct kernel computes it (y^T = w x^T, w the
// sparse A operand of mma.sp m16n8k32), with the multistage structure of the dense tensor-core
// GEMM (gemm/mma.cu): a block of 8 warps (2 x 4, each 64 outputs x 32 batch rows as 4 x 4 mma
// tiles) owns 128 outputs x 128 batch rows; 64-column depth slices of the stored values (128 rows
// x 32 BF16), their codes (8 bytes a row) and x (128 rows x 64 BF16) go global -> shared by
// cp.async into a 3-stage ring (two slices in flight while one is multiplied); fragments come
// from ldmatrix (values, x) and 32-bit shared loads (codes, made mma.sp metadata eight at a time
// by nm24_mma_codes). 87 KiB of shared memory and 128 registers a thread (ptxas: no spills for
// sm_90, 20 bytes for sm_80) a block: two blocks per multiprocessor on sm_90.
//
// Shared rows are padded rather than swizzled (values 80 bytes, x 144 bytes), so the 8 row
// addresses of an ldmatrix phase fall in distinct banks; the codes' 32-bit loads of a warp hit 16
// rows 8 bytes apart, distinct banks too.
//
// Takes a depth (the layer's inputs) that is a multiple of 64, 16-byte aligned x and values and
// 8-byte aligned metadata; any number of outputs and batch rows (zero-filled past the edges, the
// stores guarded). Not yet run on a GPU (see sparse_mma.cu for the selection).
#include <cstdint>

#include "gemm/cp_async.cuh"
#include "nnops/detail/sparse_layout.hpp"
#include "sparse_mma.hpp"

namespace nnops::detail {

namespace {

using gemm::cp_async_16;
using gemm::cp_async_8;
using gemm::ldmatrix_x4;

constexpr int kThreads = 256, kStages = 3;
constexpr int kTileOut = 128, kTileBatch = 128;
constexpr int kDepth = 64;                     // dense columns per slice: two k32 steps
constexpr int kWarpOut = 64, kWarpBatch = 32;  // warps 2 (outputs) x 4 (batch)
constexpr int kFragsOut = kWarpOut / 16, kFragsBatch = kWarpBatch / 8;
constexpr int kValueStride = kDepth / 2 + 8;  // BF16 per values row: 32 stored + 8 of pad
constexpr int kXStride = kDepth + 8;          // BF16 per x row: 64 + 8 of pad
constexpr int kCodeBytes = kDepth / 8;        // a row's 16 codes per slice, 4 bits each
constexpr int kValueTileBytes = kTileOut * kValueStride * 2;
constexpr int kXTileBytes = kTileBatch * kXStride * 2;
constexpr int kStageBytes = kValueTileBytes + kXTileBytes + kTileOut * kCodeBytes;
constexpr int kSharedBytes = kStages * kStageBytes;
static_assert(kValueTileBytes % 16 == 0 && kXTileBytes % 16 == 0 && kStageBytes % 16 == 0,
              "16-byte aligned tiles");
static_assert(kTileOut * 4 == 2 * kThreads && kTileBatch * 8 == 4 * kThreads,
              "whole 16-byte chunks per thread");

struct StageTiles {
  uint16_t* values;  // [kTileOut][kValueStride]
  uint16_t* x;       // [kTileBatch][kXStride]
  uint8_t* codes;    // [kTileOut][kCodeBytes]
};

__device__ inline StageTiles stage_tiles(unsigned char* smem, int s) {
  unsigned char* base = smem + s * kStageBytes;
  return {reinterpret_cast<uint16_t*>(base), reinterpret_cast<uint16_t*>(base + kValueTileBytes),
          base + kValueTileBytes + kXTileBytes};
}

struct Operands {
  const uint16_t* x;       // [n, cols]
  const uint16_t* values;  // [rows, cols / 2]
  const uint8_t* meta;     // [rows, cols / 8]
  int64_t rows, cols, n;
};

// This thread's share of a slice's cp.async copies, its sources found once per block: two
// 16-byte chunks of values (rows tid / 4 and + 64, chunk tid % 4), four of x (rows tid / 8 and
// + 32, + 64, + 96, chunk tid % 8) and, for the first 128 threads, the 8 bytes of codes of row
// tid. The depth offset is all that changes from slice to slice.
struct SliceCopies {
  const uint16_t* values;  // the first value chunk's source at depth 0
  const uint16_t* x;       // the first x chunk's
  const uint8_t* codes;
  int64_t value_rows64, x_rows32;  // 64 value rows, 32 x rows, in elements
  unsigned inside;                 // bit l: value chunk l; bit 2 + l: x chunk l; bit 6: codes

  __device__ SliceCopies(const Operands& p, int64_t o0, int64_t r0, int tid) {
    const int64_t half = p.cols / 2;
    const int64_t vr = o0 + tid / 4, xr = r0 + tid / 8;
    values = p.values + (vr < p.rows ? vr * half + 8 * (tid % 4) : 0);
    x = p.x + (xr < p.n ? xr * p.cols + 8 * (tid % 8) : 0);
    codes = p.meta + (o0 + tid < p.rows ? (o0 + tid) * (p.cols / 8) : 0);
    value_rows64 = 64 * half;
    x_rows32 = 32 * p.cols;
    inside = 0;
    for (int l = 0; l < 2; ++l) inside |= unsigned(vr + 64 * l < p.rows) << l;
    for (int l = 0; l < 4; ++l) inside |= unsigned(xr + 32 * l < p.n) << (2 + l);
    inside |= unsigned(tid < kTileOut && o0 + tid < p.rows) << 6;
  }

  // Depth slice [k0, k0 + kDepth) into a stage (zero-filled past the matrices' edges).
  __device__ void copy(const StageTiles& st, int64_t k0, int tid) const {
#pragma unroll
    for (int l = 0; l < 2; ++l) {
      const bool in = inside >> l & 1u;
      cp_async_16(st.values + (tid / 4 + 64 * l) * kValueStride + 8 * (tid % 4),
                  in ? values + l * value_rows64 + k0 / 2 : values, in);
    }
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      const bool in = inside >> (2 + l) & 1u;
      cp_async_16(st.x + (tid / 8 + 32 * l) * kXStride + 8 * (tid % 8),
                  in ? x + l * x_rows32 + k0 : x, in);
    }
    if (tid < kTileOut) {  // an all-zero code past the last row is a valid one
      const bool in = inside >> 6 & 1u;
      cp_async_8(st.codes + tid * kCodeBytes, in ? codes + k0 / 8 : codes, in);
    }
  }
};

// The metadata register of the 16-row tile whose first row is `row`, k32 step ks of the slice:
// halves (thread t = 0: groups 0-3 of rows g and g + 8 in the low and high 16 bits; t = 1:
// groups 4-7), the layout of the PTX ISA's figure for m16n8k32 (and of MLIR's sm_80 2:4
// integration test), or rows (t = 0 row g's eight groups, t = 1 row g + 8's). Threads 2 and 3
// of each quad are not read (sparsity selector 0).
__device__ inline uint32_t metadata(const uint8_t* codes, int row, int g, int ks, int t,
                                    bool by_rows) {
  const uint32_t lo =
      nm24_mma_codes(*reinterpret_cast<const uint32_t*>(codes + (row + g) * kCodeBytes + 4 * ks));
  const uint32_t hi = nm24_mma_codes(
      *reinterpret_cast<const uint32_t*>(codes + (row + g + 8) * kCodeBytes + 4 * ks));
  if (by_rows) return t == 0 ? lo : hi;
  return t == 0 ? (lo & 0xFFFFu) | (hi << 16) : (lo >> 16) | (hi & 0xFFFF0000u);
}

__device__ inline void mma_sp(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[4],
                              uint32_t e) {
  asm volatile(
      "mma.sp.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, 0x0;\n"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]),
        "r"(e));
}

__global__ void __launch_bounds__(kThreads, 2)
    sparse_forward_staged_kernel(float* __restrict__ d_y, Operands p,
                                 const float* __restrict__ d_bias, bool meta_by_rows) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  extern __shared__ __align__(128) unsigned char smem[];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid & 31, g = lane >> 2, t = lane & 3;
  const int wo = (warp / 4) * kWarpOut, wb = (warp % 4) * kWarpBatch;
  const int64_t o0 = int64_t(blockIdx.x) * kTileOut, r0 = int64_t(blockIdx.y) * kTileBatch;
  const SliceCopies copies(p, o0, r0, tid);
  auto load_stage = [&](int s, int64_t slice) {
    copies.copy(stage_tiles(smem, s), slice * kDepth, tid);
  };

  float acc[kFragsOut][kFragsBatch][4] = {};
  const int64_t slices = p.cols / kDepth;
  gemm::cp_async_prologue<kStages>(slices, load_stage);
  for (int64_t kt = 0; kt < slices; ++kt) {
    gemm::cp_async_wait<kStages - 2>();  // slice kt has landed (this thread's copies) ...
    __syncthreads();                     // ... and everyone's; stage (kt - 1) % kStages is free
    const int64_t next = kt + kStages - 1;
    if (next < slices) load_stage(int(next % kStages), next);
    gemm::cp_async_commit();
    const StageTiles st = stage_tiles(smem, int(kt % kStages));
#pragma unroll 1  // unrolled, the two steps' fragments spill on sm_80
    for (int ks = 0; ks < kDepth / 32; ++ks) {
      // A (16 rows x 16 stored values per k32 step): ldmatrix.x4's matrices (rows 0-7, values
      // 0-7), (rows 8-15, 0-7), (rows 0-7, 8-15), (rows 8-15, 8-15) are a0..a3.
      uint32_t a[kFragsOut][4], e[kFragsOut];
#pragma unroll
      for (int i = 0; i < kFragsOut; ++i) {
        const int row = wo + 16 * i;
        ldmatrix_x4(a[i],
                    st.values + (row + (lane & 15)) * kValueStride + 16 * ks + (lane & 16 ? 8 : 0));
        e[i] = metadata(st.codes, row, g, ks, t, meta_by_rows);
      }
#pragma unroll
      for (int j = 0; j < kFragsBatch; ++j) {
        // B (32 deep x 8 batch rows, k running within a batch row): matrix q holds depths
        // 8q .. 8q + 7 of the 8 rows, register q of lane 4g + t depths 8q + 2t, + 1 of row g.
        uint32_t b[4];
        ldmatrix_x4(b, st.x + (wb + 8 * j + (lane & 7)) * kXStride + 32 * ks + 8 * (lane >> 3));
#pragma unroll
        for (int i = 0; i < kFragsOut; ++i) mma_sp(acc[i][j], a[i], b, e[i]);
      }
    }
  }
  gemm::cp_async_wait<0>();  // no copy outlives the block (the trailing groups are empty)

  // Accumulator c0, c1 hold output g, batch rows 2t and 2t + 1 of a 16 x 8 tile; c2, c3 output
  // g + 8. y is [batch, outputs].
#pragma unroll
  for (int i = 0; i < kFragsOut; ++i) {
#pragma unroll
    for (int j = 0; j < kFragsBatch; ++j) {
#pragma unroll
      for (int c = 0; c < 4; ++c) {
        const int64_t o = o0 + wo + 16 * i + g + 8 * (c >> 1);
        const int64_t r = r0 + wb + 8 * j + 2 * t + (c & 1);
        if (o < p.rows && r < p.n) d_y[r * p.rows + o] = acc[i][j][c] + (d_bias ? d_bias[o] : 0.0f);
      }
    }
  }
#else
  __trap();  // never launched below sm_80 (the entry point checks)
#endif
}

}  // namespace

bool sparse_mma_staged_fits(const uint16_t* x, const uint16_t* values, const uint8_t* metadata,
                            int64_t rows, int64_t cols, int64_t n) {
  const int64_t row_blocks = (rows + kTileOut - 1) / kTileOut;
  const int64_t batch_blocks = (n + kTileBatch - 1) / kTileBatch;
  return cols > 0 && cols % kDepth == 0 && gemm::aligned16(x) && gemm::aligned16(values) &&
         (reinterpret_cast<uintptr_t>(metadata) & 7) == 0 && row_blocks <= 0x7FFFFFFF &&
         batch_blocks <= 65535;
}

void sparse_forward_mma_staged(float* y, const uint16_t* x, const uint16_t* values,
                               const uint8_t* metadata, int64_t rows, int64_t cols,
                               const float* bias, int64_t n, bool meta_by_rows) {
  const dim3 grid(static_cast<unsigned>((rows + kTileOut - 1) / kTileOut),
                  static_cast<unsigned>((n + kTileBatch - 1) / kTileBatch));
  // Above 48 KiB of dynamic shared memory a kernel must opt in (per device, so every launch).
  NNOPS_CUDA_CHECK(cudaFuncSetAttribute(sparse_forward_staged_kernel,
                                        cudaFuncAttributeMaxDynamicSharedMemorySize, kSharedBytes));
  sparse_forward_staged_kernel<<<grid, kThreads, kSharedBytes, t_stream>>>(
      y, Operands{x, values, metadata, rows, cols, n}, bias, meta_by_rows);
  check_launch("sparse_forward_staged_kernel");
}

}  // namespace nnops::detail
