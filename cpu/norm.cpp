// CPU LayerNorm and RMSNorm (F.layer_norm, F.rms_norm): rows split across threads, each row's
// statistics in double from centred values (two passes over a row that sits in L1/L2), the
// output formed in double and rounded once. The weight and bias gradients sum fixed chunks of
// rows, then the chunks in order: the same bits for any thread count.
#include <algorithm>
#include <cmath>

#include "cpu_backend.hpp"

namespace nnops::detail {

namespace {

constexpr int64_t kRowsPerChunk = 32;  // rows whose dw/db add up before the chunks are combined

// mean (0 for RMSNorm) and 1 / sqrt(var + eps) of one row.
void row_stats(const float* x, int64_t d, float eps, bool rms, double& mu, double& rs) {
  mu = 0.0;
  if (!rms) {
    double sum = 0.0;
#pragma omp simd reduction(+ : sum)
    for (int64_t c = 0; c < d; ++c) sum += x[c];
    mu = sum / static_cast<double>(d);
  }
  double var = 0.0;
#pragma omp simd reduction(+ : var)
  for (int64_t c = 0; c < d; ++c) {
    const double t = x[c] - mu;
    var += t * t;
  }
  var /= static_cast<double>(d);
  rs = 1.0 / std::sqrt(var + static_cast<double>(eps));
}

}  // namespace

void CpuBackend::norm_forward(float* y, float* mean, float* rstd, const float* x, const float* w,
                              const float* b, int64_t rows, int64_t d, float eps, bool rms) {
#pragma omp parallel for schedule(static) if (rows * d >= kParallelThreshold)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * d;
    float* yr = y + r * d;
    double mu, rs;
    row_stats(xr, d, eps, rms, mu, rs);
    // The saved statistics are the float values the backward pass will use.
    if (mean && !rms) mean[r] = static_cast<float>(mu);
    if (rstd) rstd[r] = static_cast<float>(rs);
#pragma omp simd
    for (int64_t c = 0; c < d; ++c) {
      double v = (xr[c] - mu) * rs;
      if (w) v *= w[c];
      if (b) v += b[c];
      yr[c] = static_cast<float>(v);  // y may be x: element c is read before it is written
    }
  }
}

void CpuBackend::norm_backward(float* dx, float* dw, float* db, const float* x, const float* w,
                               const float* mean, const float* rstd, const float* dy, int64_t rows,
                               int64_t d, bool rms) {
  const int64_t chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
  // Per-chunk partial sums of dw and db, allocated before anything is written.
  std::vector<double> part_w = scratch_vector<double>(dw ? static_cast<size_t>(chunks * d) : 0);
  std::vector<double> part_b = scratch_vector<double>(db ? static_cast<size_t>(chunks * d) : 0);
#pragma omp parallel for schedule(static) if (rows * d >= kParallelThreshold)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    double* pw = dw ? part_w.data() + ch * d : nullptr;
    double* pb = db ? part_b.data() + ch * d : nullptr;
    for (int64_t r = ch * kRowsPerChunk; r < std::min(rows, (ch + 1) * kRowsPerChunk); ++r) {
      const float* xr = x + r * d;
      const float* dyr = dy + r * d;
      const double mu = rms ? 0.0 : mean[r], rs = rstd[r];
      if (dx) {
        // dx = rstd * (g - mean(g) - xh * mean(g * xh)), g = dy * w (RMSNorm: no mean(g) term).
        double sum_g = 0.0, sum_gx = 0.0;
#pragma omp simd reduction(+ : sum_g, sum_gx)
        for (int64_t c = 0; c < d; ++c) {
          const double g = w ? static_cast<double>(dyr[c]) * w[c] : dyr[c];
          sum_g += g;
          sum_gx += g * ((xr[c] - mu) * rs);
        }
        const double mean_g = rms ? 0.0 : sum_g / d, mean_gx = sum_gx / d;
        float* dxr = dx + r * d;
#pragma omp simd
        for (int64_t c = 0; c < d; ++c) {
          const double g = w ? static_cast<double>(dyr[c]) * w[c] : dyr[c];
          dxr[c] = static_cast<float>(rs * (g - mean_g - (xr[c] - mu) * rs * mean_gx));
        }
      }
      if (pw) {
#pragma omp simd
        for (int64_t c = 0; c < d; ++c) pw[c] += static_cast<double>(dyr[c]) * ((xr[c] - mu) * rs);
      }
      if (pb) {
#pragma omp simd
        for (int64_t c = 0; c < d; ++c) pb[c] += dyr[c];
      }
    }
  }
  // The chunks in order, columns split across threads.
#pragma omp parallel for schedule(static) if (chunks * d >= kParallelThreshold)
  for (int64_t c = 0; c < d; ++c) {
    double sw = 0.0, sb = 0.0;
    for (int64_t ch = 0; ch < chunks; ++ch) {
      if (dw) sw += part_w[ch * d + c];
      if (db) sb += part_b[ch * d + c];
    }
    if (dw) dw[c] = static_cast<float>(sw);
    if (db) db[c] = static_cast<float>(sb);
  }
}

}  // namespace nnops::detail
