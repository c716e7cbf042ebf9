// CUDA LayerNorm and RMSNorm: blocks stride over rows, each row's statistics in double from
// centred values (two block reductions), the output formed in double and rounded once (the CPU
// forms it in float from a two-float mean; both are within a few roundings of the exact value). The
// weight and bias gradients add fixed chunks of rows per column, then the chunks in order: no
// floating-point atomics, the same bits on every run.
#include "cuda_backend.hpp"
#include "row_reduce.cuh"

namespace nnops::detail {

namespace {

constexpr int kNormThreads = 256;
constexpr int64_t kRowsPerChunk = 32;  // as the CPU

__global__ void norm_forward_kernel(float* d_y, float* d_mean, float* d_rstd, const float* d_x,
                                    const float* d_w, const float* d_b, int64_t rows, int64_t d,
                                    float eps, bool rms) {
  __shared__ double s_red[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {  // uniform across the block
    const float* xr = d_x + r * d;
    double mu = 0.0;
    if (!rms) {
      double sum = 0.0;
      for (int64_t c = threadIdx.x; c < d; c += blockDim.x) sum += xr[c];
      mu = block_reduce(sum, SumOp{}, s_red) / static_cast<double>(d);
    }
    double var = 0.0;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      const double t = xr[c] - mu;
      var += t * t;
    }
    var = block_reduce(var, SumOp{}, s_red) / static_cast<double>(d);
    const double rs = 1.0 / sqrt(var + static_cast<double>(eps));
    if (threadIdx.x == 0) {
      if (d_mean && !rms) d_mean[r] = static_cast<float>(mu);
      if (d_rstd) d_rstd[r] = static_cast<float>(rs);
    }
    // Each thread writes only the elements it read, so y may be x.
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      double v = (xr[c] - mu) * rs;
      if (d_w) v *= d_w[c];
      if (d_b) v += d_b[c];
      d_y[r * d + c] = static_cast<float>(v);
    }
  }
}

__global__ void norm_dx_kernel(float* d_dx, const float* d_x, const float* d_w, const float* d_mean,
                               const float* d_rstd, const float* d_dy, int64_t rows, int64_t d,
                               bool rms) {
  __shared__ double s_red[32];
  for (int64_t r = blockIdx.x; r < rows; r += gridDim.x) {
    const float* xr = d_x + r * d;
    const float* dyr = d_dy + r * d;
    const double mu = rms ? 0.0 : d_mean[r], rs = d_rstd[r];
    double sum_g = 0.0, sum_gx = 0.0;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      const double g = d_w ? static_cast<double>(dyr[c]) * d_w[c] : dyr[c];
      sum_g += g;
      sum_gx += g * ((xr[c] - mu) * rs);
    }
    const double mean_g = rms ? 0.0 : block_reduce(sum_g, SumOp{}, s_red) / d;
    const double mean_gx = block_reduce(sum_gx, SumOp{}, s_red) / d;
    for (int64_t c = threadIdx.x; c < d; c += blockDim.x) {
      const double g = d_w ? static_cast<double>(dyr[c]) * d_w[c] : dyr[c];
      d_dx[r * d + c] = static_cast<float>(rs * (g - mean_g - (xr[c] - mu) * rs * mean_gx));
    }
  }
}

// partial[chunk, c] = sum over the chunk's rows (in order) of dy * xh (dw) and dy (db).
__global__ void norm_partial_kernel(double* d_pw, double* d_pb, const float* d_x,
                                    const float* d_mean, const float* d_rstd, const float* d_dy,
                                    int64_t rows, int64_t d, int64_t chunks, bool rms) {
  const int64_t total = chunks * d;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t ch = t / d, c = t % d;
    double sw = 0.0, sb = 0.0;
    for (int64_t r = ch * kRowsPerChunk; r < rows && r < (ch + 1) * kRowsPerChunk; ++r) {
      const double g = d_dy[r * d + c];
      sw += g * ((d_x[r * d + c] - (rms ? 0.0 : d_mean[r])) * static_cast<double>(d_rstd[r]));
      sb += g;
    }
    if (d_pw) d_pw[t] = sw;
    if (d_pb) d_pb[t] = sb;
  }
}

__global__ void norm_combine_kernel(float* d_dw, float* d_db, const double* d_pw,
                                    const double* d_pb, int64_t d, int64_t chunks) {
  for (int64_t c = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; c < d;
       c += int64_t(gridDim.x) * blockDim.x) {
    double sw = 0.0, sb = 0.0;
    for (int64_t ch = 0; ch < chunks; ++ch) {
      if (d_pw) sw += d_pw[ch * d + c];
      if (d_pb) sb += d_pb[ch * d + c];
    }
    if (d_dw) d_dw[c] = static_cast<float>(sw);
    if (d_db) d_db[c] = static_cast<float>(sb);
  }
}

}  // namespace

void CudaBackend::norm_forward(float* y, float* mean, float* rstd, const float* x, const float* w,
                               const float* b, int64_t rows, int64_t d, float eps, bool rms) {
  norm_forward_kernel<<<grid_for(rows, 1, 1u << 20), kNormThreads, 0, t_stream>>>(
      y, mean, rstd, x, w, b, rows, d, eps, rms);
  check_launch("norm_forward_kernel");
}

void CudaBackend::norm_backward(float* dx, float* dw, float* db, const float* x, const float* w,
                                const float* mean, const float* rstd, const float* dy, int64_t rows,
                                int64_t d, bool rms) {
  const int64_t chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
  // Scratch first: running out of memory leaves every output untouched.
  DeviceScratch pw(dw ? chunks * d * sizeof(double) : 0), pb(db ? chunks * d * sizeof(double) : 0);
  if (dx && rows > 0) {
    norm_dx_kernel<<<grid_for(rows, 1, 1u << 20), kNormThreads, 0, t_stream>>>(dx, x, w, mean, rstd,
                                                                               dy, rows, d, rms);
    check_launch("norm_dx_kernel");
  }
  if (!dw && !db) return;
  if (chunks > 0) {
    norm_partial_kernel<<<grid_for(chunks * d, 256), 256, 0, t_stream>>>(
        pw.as<double>(), pb.as<double>(), x, mean, rstd, dy, rows, d, chunks, rms);
    check_launch("norm_partial_kernel");
  }
  norm_combine_kernel<<<grid_for(d, 256), 256, 0, t_stream>>>(dw, db, pw.as<double>(),
                                                              pb.as<double>(), d, chunks);
  check_launch("norm_combine_kernel");
}

}  // namespace nnops::detail
