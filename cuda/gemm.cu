// CUDA FP32 GEMM written here (cuBLAS is only a baseline in the benchmarks): 128 x 128 output
// tiles per block of 256 threads, 8-deep slices of op(a) and op(b) staged in shared memory, and
// an 8 x 8 register block of accumulators per thread (the classic SIMT SGEMM of CUTLASS and
// siboehm's SGEMM_CUDA). Every transpose case is a template instance; loads are bounds-checked,
// so any m, n, k works. Each element sums over k in order: the same bits on every run.
// linear_forward fuses the bias into the epilogue; db is a column sum in row order.
#include "cuda_backend.hpp"

namespace nnops::detail {

namespace {

constexpr int kBM = 128, kBN = 128, kBK = 8, kTM = 8, kTN = 8, kThreads = 256;
static_assert((kBM / kTM) * (kBN / kTN) == kThreads, "one thread per 8 x 8 register block");
static_assert(kBM * kBK == 4 * kThreads && kBN * kBK == 4 * kThreads, "4 loads per thread");

// op(a) is [m, k]: a is [m, k] row-major, or [k, m] when trans_a.
template <bool kTransA, bool kTransB>
__global__ void __launch_bounds__(kThreads)
    sgemm_kernel(float* __restrict__ d_c, const float* __restrict__ d_a,
                 const float* __restrict__ d_b, const float* __restrict__ d_bias, int64_t m,
                 int64_t n, int64_t k, float alpha, float beta) {
  __shared__ float as[kBK][kBM];  // op(a) slice, k-major: a thread reads 8 rows as a column
  __shared__ float bs[kBK][kBN];
  const int tid = threadIdx.x;
  const int64_t row0 = int64_t(blockIdx.y) * kBM, col0 = int64_t(blockIdx.x) * kBN;
  const int ty = tid / (kBN / kTN), tx = tid % (kBN / kTN);
  float acc[kTM][kTN] = {};

  for (int64_t k0 = 0; k0 < k; k0 += kBK) {
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      const int idx = tid + l * kThreads;
      // Consecutive threads walk the contiguous dimension of each matrix (coalesced).
      int r, p;
      if (kTransA) r = idx % kBM, p = idx / kBM;
      else r = idx / kBK, p = idx % kBK;
      const int64_t gi = row0 + r, gp = k0 + p;
      float v = 0.0f;
      if (gi < m && gp < k) v = kTransA ? d_a[gp * m + gi] : d_a[gi * k + gp];
      as[p][r] = v;
      int c, q;
      if (kTransB) c = idx / kBK, q = idx % kBK;
      else c = idx % kBN, q = idx / kBN;
      const int64_t gj = col0 + c, gq = k0 + q;
      float w = 0.0f;
      if (gj < n && gq < k) w = kTransB ? d_b[gj * k + gq] : d_b[gq * n + gj];
      bs[q][c] = w;
    }
    __syncthreads();
#pragma unroll
    for (int p = 0; p < kBK; ++p) {
      float ar[kTM], br[kTN];
#pragma unroll
      for (int i = 0; i < kTM; ++i) ar[i] = as[p][ty * kTM + i];
#pragma unroll
      for (int j = 0; j < kTN; ++j) br[j] = bs[p][tx * kTN + j];
#pragma unroll
      for (int i = 0; i < kTM; ++i)
#pragma unroll
        for (int j = 0; j < kTN; ++j) acc[i][j] = fmaf(ar[i], br[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < kTM; ++i) {
    const int64_t gi = row0 + ty * kTM + i;
    if (gi >= m) continue;
#pragma unroll
    for (int j = 0; j < kTN; ++j) {
      const int64_t gj = col0 + tx * kTN + j;
      if (gj >= n) continue;
      float v = alpha * acc[i][j];
      if (beta != 0.0f) v = fmaf(beta, d_c[gi * n + gj], v);  // beta == 0 never reads c
      if (d_bias) v += d_bias[gj];
      d_c[gi * n + gj] = v;
    }
  }
}

// db[j] = sum over rows of dy[r, j], in row order (one thread per column, coalesced rows).
__global__ void column_sum_kernel(float* d_db, const float* d_dy, int64_t rows, int64_t cols) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < cols;
       j += int64_t(gridDim.x) * blockDim.x) {
    double s = 0.0;
    for (int64_t r = 0; r < rows; ++r) s += d_dy[r * cols + j];
    d_db[j] = static_cast<float>(s);
  }
}

void launch_sgemm(bool trans_a, bool trans_b, float* c, const float* a, const float* b,
                  const float* bias, int64_t m, int64_t n, int64_t k, float alpha, float beta) {
  const int64_t grid_x = (n + kBN - 1) / kBN, grid_y = (m + kBM - 1) / kBM;
  if (grid_y > 65535 || grid_x > 2147483647) {
    throw Error("nnops::matmul: [" + std::to_string(m) + ", " + std::to_string(n) +
                "] output exceeds one CUDA launch");
  }
  const dim3 grid(static_cast<unsigned>(grid_x), static_cast<unsigned>(grid_y));
  if (!trans_a && !trans_b)
    sgemm_kernel<false, false><<<grid, kThreads, 0, t_stream>>>(c, a, b, bias, m, n, k, alpha, beta);
  else if (!trans_a && trans_b)
    sgemm_kernel<false, true><<<grid, kThreads, 0, t_stream>>>(c, a, b, bias, m, n, k, alpha, beta);
  else if (trans_a && !trans_b)
    sgemm_kernel<true, false><<<grid, kThreads, 0, t_stream>>>(c, a, b, bias, m, n, k, alpha, beta);
  else
    sgemm_kernel<true, true><<<grid, kThreads, 0, t_stream>>>(c, a, b, bias, m, n, k, alpha, beta);
  check_launch("sgemm_kernel");
}

}  // namespace

void CudaBackend::gemm(float* c, const float* a, const float* b, int64_t m, int64_t n, int64_t k,
                       const GemmOptions& options) {
  launch_sgemm(options.trans_a, options.trans_b, c, a, b, nullptr, m, n, k, options.alpha,
               options.beta);
}

void CudaBackend::linear_forward(float* y, const float* x, const float* w, const float* bias,
                                 int64_t rows, int64_t in, int64_t out) {
  launch_sgemm(false, true, y, x, w, bias, rows, out, in, 1.0f, 0.0f);
}

void CudaBackend::linear_backward(float* dx, float* dw, float* db, const float* x, const float* w,
                                  const float* dy, int64_t rows, int64_t in, int64_t out) {
  if (dx && rows > 0 && in > 0) launch_sgemm(false, false, dx, dy, w, nullptr, rows, in, out, 1.0f, 0.0f);
  if (out > 0 && in > 0) launch_sgemm(true, false, dw, dy, x, nullptr, out, in, rows, 1.0f, 0.0f);
  if (db && out > 0) {
    column_sum_kernel<<<grid_for(out, 256), 256, 0, t_stream>>>(db, dy, rows, out);
    check_launch("column_sum_kernel");
  }
}

}  // namespace nnops::detail
