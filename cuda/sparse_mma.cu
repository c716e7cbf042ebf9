// The 2:4 linear layer's forward on sparse tensor cores: y = x w^T + b with BF16 x and BF16 NM24
// values, FP32 sums (mma.sp m16n8k32, sm_80 and newer). It computes y^T = w x^T: w is the
// sparse A operand (rows = outputs, K = inputs, two values kept in every four), x^T the dense B.
//
// Not yet run on a GPU, so it is opt-in: NNOPS_CUDA_SPARSE=mma selects the sparse tensor cores
// (the tiled FP32 kernels stay the default): the staged kernel (sparse_mma_staged.cu: cp.async
// ring, ldmatrix, 128 x 128 blocks) from 128 batch rows where its shape and alignment fit, else
// the direct kernel below; =mma-staged takes the staged kernel wherever it fits, =mma-direct
// always the direct one, so a first GPU run can compare them and fall back. The fragment layouts
// of A, B and C follow the PTX ISA's text for this shape; the metadata register's layout is given
// there only as a figure, so both readings of it are built: NNOPS_CUDA_SPARSE_META=halves
// (default: the selected thread pair holds chunks 0-3 and 4-7 of rows g and g + 8, 16 bits each;
// MLIR's sm_80 2:4 integration test reads the figure so) or rows (one thread row g's eight
// chunks, the other row g + 8's). The GPU-vs-CPU test runs both; the one that passes is the
// layout.
//
// The direct kernel is the simplest correct one: each warp loads its fragments straight from
// global memory (through L1), a block of 4 warps computes 64 outputs x 32 batch rows.
#include <cstdlib>
#include <cstring>

#include "nnops/detail/sparse_layout.hpp"
#include "sparse_mma.hpp"

namespace nnops::detail {

namespace {

constexpr int kMmaWarps = 4, kRowsPerWarp = 16, kBatchPerWarp = 32;

// The mma.sp metadata nibble of row o, group q (a padding row or group: indices 0 and 1).
__device__ __forceinline__ uint32_t meta_nibble(const uint8_t* meta, int64_t meta_cols,
                                                int64_t rows, int64_t groups, int64_t o,
                                                int64_t q) {
  if (o >= rows || q >= groups) return 0x4u;
  return nm24_mma_code(nm24_code(meta + o * meta_cols, q));
}

// Two BF16 values at p (an even element index) as one 32-bit register, 0 when out of range.
__device__ __forceinline__ uint32_t load_pair(const uint16_t* p, bool valid) {
  return valid ? *reinterpret_cast<const uint32_t*>(p) : 0u;
}

__global__ void __launch_bounds__(kMmaWarps * 32)
    sparse_forward_mma_kernel(float* __restrict__ d_y, const uint16_t* __restrict__ d_x,
                              const uint16_t* __restrict__ d_values,
                              const uint8_t* __restrict__ d_meta, const float* __restrict__ d_bias,
                              int64_t rows, int64_t cols, int64_t n, bool meta_by_rows) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int g = lane / 4, t = lane % 4;
  const int64_t o0 = (int64_t(blockIdx.x) * kMmaWarps + warp) * kRowsPerWarp;
  const int64_t n0 = int64_t(blockIdx.y) * kBatchPerWarp;
  const int64_t groups = cols / 4, half = cols / 2, meta_cols = nm24_metadata_cols(cols);
  const int64_t row_lo = o0 + g, row_hi = o0 + g + 8;
  float acc[kBatchPerWarp / 8][4] = {};
  for (int64_t k0 = 0; k0 < cols; k0 += 32) {
    const int64_t q0 = k0 / 4;  // the first of this step's eight groups
    // A: row g / g + 8, chunks t and t + 4, two stored values each.
    const int64_t qa = q0 + t, qb = q0 + t + 4;
    const uint32_t a0 = load_pair(d_values + row_lo * half + 2 * qa, row_lo < rows && qa < groups);
    const uint32_t a1 = load_pair(d_values + row_hi * half + 2 * qa, row_hi < rows && qa < groups);
    const uint32_t a2 = load_pair(d_values + row_lo * half + 2 * qb, row_lo < rows && qb < groups);
    const uint32_t a3 = load_pair(d_values + row_hi * half + 2 * qb, row_hi < rows && qb < groups);
    // Metadata from threads 0 and 1 of each group of four (sparsity selector 0).
    uint32_t e = 0;
    if (t < 2) {
      if (meta_by_rows) {  // thread 0 row g's eight chunks, thread 1 row g + 8's
        const int64_t o = t == 0 ? row_lo : row_hi;
        for (int j = 0; j < 8; ++j)
          e |= meta_nibble(d_meta, meta_cols, rows, groups, o, q0 + j) << (4 * j);
      } else {  // thread 0 chunks 0-3, thread 1 chunks 4-7; row g low 16 bits, g + 8 high
        for (int j = 0; j < 4; ++j) {
          const int64_t q = q0 + 4 * t + j;
          e |= meta_nibble(d_meta, meta_cols, rows, groups, row_lo, q) << (4 * j);
          e |= meta_nibble(d_meta, meta_cols, rows, groups, row_hi, q) << (16 + 4 * j);
        }
      }
    }
#pragma unroll
    for (int nt = 0; nt < kBatchPerWarp / 8; ++nt) {
      // B = x^T (K x 8, column-major: x's row n0 + 8 nt + g): register j holds k = 8 j + 2 t, + 1.
      const int64_t r = n0 + 8 * nt + g;
      const uint16_t* xr = d_x + r * cols + k0 + 2 * t;
      uint32_t b[4];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = load_pair(xr + 8 * j, r < n && k0 + 8 * j + 2 * t < cols);
      asm volatile(
          "mma.sp.sync.aligned.m16n8k32.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
          "{%4, %5, %6, %7}, {%8, %9, %10, %11}, {%0, %1, %2, %3}, %12, 0x0;\n"
          : "+f"(acc[nt][0]), "+f"(acc[nt][1]), "+f"(acc[nt][2]), "+f"(acc[nt][3])
          : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b[0]), "r"(b[1]), "r"(b[2]), "r"(b[3]), "r"(e));
    }
  }
  // C: c0, c1 at (row g, batch 2t, 2t + 1); c2, c3 at row g + 8. y[batch, output].
#pragma unroll
  for (int nt = 0; nt < kBatchPerWarp / 8; ++nt) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      const int64_t o = i < 2 ? row_lo : row_hi;
      const int64_t r = n0 + 8 * nt + 2 * t + (i % 2);
      if (o < rows && r < n) d_y[r * rows + o] = acc[nt][i] + (d_bias ? d_bias[o] : 0.0f);
    }
  }
#else
  __trap();  // never launched below sm_80 (the entry point checks)
#endif
}

enum class SparseMma { Off, Auto, Staged, Direct };

SparseMma sparse_mma_choice() {
  const char* env = std::getenv("NNOPS_CUDA_SPARSE");
  if (env == nullptr) return SparseMma::Off;
  if (std::strcmp(env, "mma") == 0) return SparseMma::Auto;
  if (std::strcmp(env, "mma-staged") == 0) return SparseMma::Staged;
  if (std::strcmp(env, "mma-direct") == 0) return SparseMma::Direct;
  return SparseMma::Off;
}

bool metadata_by_rows() {
  const char* env = std::getenv("NNOPS_CUDA_SPARSE_META");
  return env != nullptr && std::strcmp(env, "rows") == 0;
}

}  // namespace

bool CudaBackend::sparse_forward_nm24_bf16(float* y, const uint16_t* x, const uint16_t* values,
                                           const uint8_t* metadata, int64_t rows, int64_t cols,
                                           const float* bias, int64_t n) {
  const SparseMma choice = sparse_mma_choice();
  if (choice == SparseMma::Off || current_compute_major() < 8) return false;
  // The staged kernel's blocks hold 128 batch rows: a smaller batch leaves most of each block
  // idle and the grid a few blocks, where the direct kernel's 32-row blocks fill more of the GPU.
  const bool staged = choice == SparseMma::Staged || (choice == SparseMma::Auto && n >= 128);
  if (staged && sparse_mma_staged_fits(x, values, metadata, rows, cols, n)) {
    sparse_forward_mma_staged(y, x, values, metadata, rows, cols, bias, n, metadata_by_rows());
    return true;
  }
  const int64_t row_blocks = (rows + kMmaWarps * kRowsPerWarp - 1) / (kMmaWarps * kRowsPerWarp);
  const int64_t batch_blocks = (n + kBatchPerWarp - 1) / kBatchPerWarp;
  if (row_blocks > 0x7FFFFFFF || batch_blocks > 65535) return false;
  const dim3 grid(static_cast<unsigned>(row_blocks), static_cast<unsigned>(batch_blocks));
  sparse_forward_mma_kernel<<<grid, kMmaWarps * 32, 0, t_stream>>>(
      y, x, values, metadata, bias, rows, cols, n, metadata_by_rows());
  check_launch("sparse_forward_mma_kernel");
  return true;
}

}  // namespace nnops::detail
