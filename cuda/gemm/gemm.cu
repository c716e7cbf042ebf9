// CUDA matrix products: which kernel family runs (NNOPS_CUDA_GEMM / cuda::set_gemm_kernel), the
// BLAS conventions every family shares (alpha == 0 reads neither input, beta == 0 never reads c),
// and the linear layer on top (the bias fused into the epilogue; db a column sum).
//
// Families (kernels.hpp): SIMT FP32 (simt.cu), WMMA tensor cores (wmma.cu) and the multistage
// mma.sync kernels (mma.cu), and for BF16 on compute capability 9.0 the warpgroup-MMA kernel
// (wgmma.cu), with TMA loads and warp specialization (wgmma_tma.cu). F32 operands take the SIMT kernel unless GemmOptions::allow_tf32; BF16 operands
// always take tensor cores. Until a GPU has compared them, TF32 and BF16 default to the WMMA
// kernels, NNOPS_CUDA_GEMM=mma opts into the multistage ones, =wgmma into the sm_90a one and =wgmma_tma
// into the TMA one (for K-major operands; the others then take wgmma.cu's).
#include "../elementwise.cuh"
#include "kernels.hpp"
#include "nnops/cuda.hpp"

namespace nnops::detail {

namespace {

// db[j] = sum over rows of dy[r, j] in two passes with a fixed order (the same bits on every
// run): column blocks x row blocks of partial sums in double, each over `span` rows (256, more
// past 16.7M rows) in row order, then one thread per column adds its partials in row-block order.
// One thread per column over every row would leave most of the GPU idle for a few wide columns.
constexpr int kColumnThreads = 128;
constexpr int64_t kMinRowsPerPartial = 256, kMaxRowBlocks = 65535;

template <class TDy>
__global__ void column_partial_sums_kernel(double* d_partial, const TDy* d_dy, int64_t rows,
                                           int64_t cols, int64_t span) {
  const int64_t j = blockIdx.x * int64_t(kColumnThreads) + threadIdx.x;
  if (j >= cols) return;
  const int64_t r0 = int64_t(blockIdx.y) * span;
  const int64_t r1 = r0 + span < rows ? r0 + span : rows;
  double s = 0.0;
  for (int64_t r = r0; r < r1; ++r) s += load_elem(d_dy, r * cols + j);
  d_partial[int64_t(blockIdx.y) * cols + j] = s;
}

template <class TDb>
__global__ void column_finish_kernel(TDb* d_db, const double* d_partial, int64_t blocks,
                                     int64_t cols) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < cols;
       j += int64_t(gridDim.x) * blockDim.x) {
    double s = 0.0;
    for (int64_t b = 0; b < blocks; ++b) s += d_partial[b * cols + j];
    store_elem(d_db, j, static_cast<float>(s));
  }
}

template <class TDb, class TDy>
void column_sum(TDb* db, const TDy* dy, int64_t rows, int64_t cols) {
  // Row blocks in grid.y (at most 65535): longer batches take more rows per partial.
  int64_t span = (rows + kMaxRowBlocks - 1) / kMaxRowBlocks;
  if (span < kMinRowsPerPartial) span = kMinRowsPerPartial;
  const int64_t blocks = rows > 0 ? (rows + span - 1) / span : 1;
  DeviceScratch partial(sizeof(double) * blocks * cols);
  const dim3 grid(static_cast<unsigned>((cols + kColumnThreads - 1) / kColumnThreads),
                  static_cast<unsigned>(blocks));
  column_partial_sums_kernel<<<grid, kColumnThreads, 0, t_stream>>>(partial.as<double>(), dy, rows,
                                                                    cols, span);
  check_launch("column_partial_sums_kernel");
  column_finish_kernel<<<grid_for(cols, 256), 256, 0, t_stream>>>(db, partial.as<double>(), blocks,
                                                                  cols);
  check_launch("column_finish_kernel");
}

bool device_is_sm80_or_newer() {
  return current_compute_major() >= 8;  // per device: a process may drive GPUs of two kinds
}

// c = alpha * op(a) * op(b) + beta * c (+ bias per column) for F32 or BF16 operands (a and b
// alike) into an F32 or BF16 c.
template <class TOut>
void launch_gemm(bool trans_a, bool trans_b, TOut* c, ConstView a, ConstView b, const float* bias,
                 int64_t m, int64_t n, int64_t k, float alpha, float beta, bool allow_tf32) {
  if (alpha == 0.0f) k = 0;  // BLAS: with alpha == 0, a and b are not read (no NaN from them)
  const int64_t grid_x = (m + gemm::kTileM - 1) / gemm::kTileM;
  const int64_t grid_y = (n + gemm::kTileN - 1) / gemm::kTileN;
  if (grid_y > 65535 || grid_x > 2147483647) {
    throw Error("nnops::matmul: [" + std::to_string(m) + ", " + std::to_string(n) +
                "] output exceeds one CUDA launch");
  }
  const cuda::GemmKernel family = cuda::gemm_kernel();
  if (a.dtype == DType::BF16) {
    if (!device_is_sm80_or_newer()) {
      throw Error("nnops::matmul: BF16 products need a GPU of compute capability 8.0 or newer");
    }
    const auto* a16 = static_cast<const uint16_t*>(a.data);
    const auto* b16 = static_cast<const uint16_t*>(b.data);
    const bool wgmma_family =
        family == cuda::GemmKernel::Wgmma || family == cuda::GemmKernel::WgmmaTma;
#ifdef NNOPS_WITH_WGMMA
    if (wgmma_family && current_compute_major() == 9) {
      // The TMA kernel where its operands allow (K-major), else the cp.async one.
      if (family == cuda::GemmKernel::WgmmaTma &&
          gemm::launch_wgmma_tma_bf16(trans_a, trans_b, c, a16, b16, bias, m, n, k, alpha, beta))
        return;
      gemm::launch_wgmma_bf16(trans_a, trans_b, c, a16, b16, bias, m, n, k, alpha, beta);
      return;
    }
#endif
    // Wgmma elsewhere (no sm_90a kernel for this GPU or this build) takes the multistage kernel.
    if (family == cuda::GemmKernel::Mma || wgmma_family)
      gemm::launch_mma_bf16(trans_a, trans_b, c, a16, b16, bias, m, n, k, alpha, beta);
    else  // Simt has no BF16 kernel: tensor cores are BF16's only path
      gemm::launch_wmma_bf16(trans_a, trans_b, c, a16, b16, bias, m, n, k, alpha, beta);
    return;
  }
  const auto* a32 = static_cast<const float*>(a.data);
  const auto* b32 = static_cast<const float*>(b.data);
  if (allow_tf32 && family != cuda::GemmKernel::Simt && device_is_sm80_or_newer() && k > 0) {
    if (family != cuda::GemmKernel::Wmma && family != cuda::GemmKernel::Default)  // no TF32 wgmma
      gemm::launch_mma_tf32(trans_a, trans_b, c, a32, b32, bias, m, n, k, alpha, beta);
    else
      gemm::launch_wmma_tf32(trans_a, trans_b, c, a32, b32, bias, m, n, k, alpha, beta);
    return;
  }
  gemm::launch_simt(trans_a, trans_b, c, a32, b32, bias, m, n, k, alpha, beta);
}

void launch_gemm(bool trans_a, bool trans_b, View c, ConstView a, ConstView b, const float* bias,
                 int64_t m, int64_t n, int64_t k, float alpha, float beta,
                 bool allow_tf32 = false) {
  with_type(c, [&](auto* typed_c) {
    launch_gemm(trans_a, trans_b, typed_c, a, b, bias, m, n, k, alpha, beta, allow_tf32);
  });
}

}  // namespace

void CudaBackend::gemm(View c, ConstView a, ConstView b, int64_t m, int64_t n, int64_t k,
                       const GemmOptions& options) {
  launch_gemm(options.trans_a, options.trans_b, c, a, b, nullptr, m, n, k, options.alpha,
              options.beta, options.allow_tf32);
}

void CudaBackend::linear_forward(View y, ConstView x, ConstView w, ConstView bias, int64_t rows,
                                 int64_t in, int64_t out) {
  // The epilogue adds an F32 bias; a BF16 one is widened first (out elements).
  const float* bias32 = static_cast<const float*>(bias.data);
  DeviceScratch widened(bias.data && bias.dtype == DType::BF16 ? sizeof(float) * out : 0);
  if (bias.data && bias.dtype == DType::BF16) {
    cast(widened.as<float>(), DType::F32, bias.data, DType::BF16, out);
    bias32 = widened.as<float>();
  }
  launch_gemm(false, true, y, x, w, bias32, rows, out, in, 1.0f, 0.0f);
}

void CudaBackend::linear_backward(View dx, View dw, View db, ConstView x, ConstView w, ConstView dy,
                                  int64_t rows, int64_t in, int64_t out) {
  if (dx.data && rows > 0 && in > 0)
    launch_gemm(false, false, dx, dy, w, nullptr, rows, in, out, 1.0f, 0.0f);
  if (out > 0 && in > 0) launch_gemm(true, false, dw, dy, x, nullptr, out, in, rows, 1.0f, 0.0f);
  if (db.data && out > 0) {
    with_type(db, [&](auto* typed_db) {
      with_type(dy, [&](auto* typed_dy) { column_sum(typed_db, typed_dy, rows, out); });
    });
  }
}

}  // namespace nnops::detail
