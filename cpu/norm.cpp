// CPU LayerNorm and RMSNorm (F.layer_norm, F.rms_norm): rows split across threads. A row's
// statistics take one pass in double over values shifted by the row's first element (the
// variance of shifted data loses at most D double roundings, whatever the row's offset); the
// output pass runs in float with the mean split into two floats, so x - mean keeps its low bits
// for rows far from zero. The row loops are compiled for every CPU level (isa_variants.hpp). The
// backward takes two passes per row (its sums, then dx with the weight and bias terms); dweight and
// dbias add fixed chunks of rows, then the chunks in order: the same bits for any thread count.
#include <algorithm>
#include <cmath>

#include "cpu_backend.hpp"
#include "isa_variants.hpp"

namespace nnops::detail {

namespace {

constexpr int64_t kRowsPerChunk = 32;  // rows whose dw/db add up before the chunks are combined

// mean (0 for RMSNorm) and 1 / sqrt(var + eps) of one row, in one pass.
NNOPS_ALWAYS_INLINE void row_stats(const float* x, int64_t d, float eps, bool rms, double& mu,
                                   double& rs) {
  const double shift = rms ? 0.0 : x[0];
  double s1 = 0.0, s2 = 0.0;
#pragma omp simd reduction(+ : s1, s2)
  for (int64_t c = 0; c < d; ++c) {
    const double t = x[c] - shift;
    s1 += t;
    s2 += t * t;
  }
  const double m = s1 / static_cast<double>(d);
  const double var = rms ? s2 / static_cast<double>(d) : std::max(s2 / d - m * m, 0.0);
  mu = rms ? 0.0 : shift + m;
  rs = 1.0 / std::sqrt(var + static_cast<double>(eps));
}

// One row of the forward pass; y may be x (element c is read before it is written).
NNOPS_ALWAYS_INLINE void forward_row(float* yr, float* mean, float* rstd, const float* xr,
                                     const float* w, const float* b, int64_t d, float eps,
                                     bool rms) {
  double mu, rs;
  row_stats(xr, d, eps, rms, mu, rs);
  // The saved statistics are the float values the backward pass will use.
  if (mean && !rms) *mean = static_cast<float>(mu);
  if (rstd) *rstd = static_cast<float>(rs);
  const float hi = static_cast<float>(mu), lo = static_cast<float>(mu - hi);
  const float r = static_cast<float>(rs);
  if (w && b) {
#pragma omp simd
    for (int64_t c = 0; c < d; ++c) yr[c] = ((xr[c] - hi) - lo) * r * w[c] + b[c];
  } else if (w) {
#pragma omp simd
    for (int64_t c = 0; c < d; ++c) yr[c] = ((xr[c] - hi) - lo) * r * w[c];
  } else if (b) {
#pragma omp simd
    for (int64_t c = 0; c < d; ++c) yr[c] = ((xr[c] - hi) - lo) * r + b[c];
  } else {
#pragma omp simd
    for (int64_t c = 0; c < d; ++c) yr[c] = ((xr[c] - hi) - lo) * r;
  }
}

// One row of the backward pass: dx = rstd * (g - mean(g) - xh * mean(g * xh)), g = dy * w
// (RMSNorm: no mean(g)); dy * xh and dy added to the chunk's partial dweight and dbias.
NNOPS_ALWAYS_INLINE void backward_row(float* dxr, float* pw, float* pb, const float* xr,
                                      const float* dyr, const float* w, float mean, float rstd,
                                      int64_t d, bool rms) {
  const float mu = rms ? 0.0f : mean;
  double mean_g = 0.0, mean_gx = 0.0;
  if (dxr) {
    double sum_g = 0.0, sum_gx = 0.0;
#pragma omp simd reduction(+ : sum_g, sum_gx)
    for (int64_t c = 0; c < d; ++c) {
      const float g = w ? dyr[c] * w[c] : dyr[c];
      sum_g += g;
      sum_gx += static_cast<double>(g) * ((xr[c] - mu) * rstd);
    }
    mean_g = rms ? 0.0 : sum_g / d;
    mean_gx = sum_gx / d;
  }
  const float mg = static_cast<float>(mean_g), mgx = static_cast<float>(mean_gx);
  if (dxr && pw && pb && w) {  // the training case, without branches in the vector loop
#pragma omp simd
    for (int64_t c = 0; c < d; ++c) {
      const float xh = (xr[c] - mu) * rstd;
      dxr[c] = rstd * (dyr[c] * w[c] - mg - xh * mgx);
      pw[c] += dyr[c] * xh;
      pb[c] += dyr[c];
    }
    return;
  }
#pragma omp simd
  for (int64_t c = 0; c < d; ++c) {
    const float xh = (xr[c] - mu) * rstd;
    if (dxr) dxr[c] = rstd * ((w ? dyr[c] * w[c] : dyr[c]) - mg - xh * mgx);
    if (pw) pw[c] += dyr[c] * xh;
    if (pb) pb[c] += dyr[c];
  }
}

// Each row loop compiled for AVX-512, AVX2 and the baseline (isa_variants.hpp).
NNOPS_ISA_VARIANTS(forward_row, void,
                   (float* yr, float* mean, float* rstd, const float* xr, const float* w,
                    const float* b, int64_t d, float eps, bool rms),
                   (yr, mean, rstd, xr, w, b, d, eps, rms))
NNOPS_ISA_VARIANTS(backward_row, void,
                   (float* dxr, float* pw, float* pb, const float* xr, const float* dyr,
                    const float* w, float mean, float rstd, int64_t d, bool rms),
                   (dxr, pw, pb, xr, dyr, w, mean, rstd, d, rms))

}  // namespace

void CpuBackend::norm_forward(float* y, float* mean, float* rstd, const float* x, const float* w,
                              const float* b, int64_t rows, int64_t d, float eps, bool rms) {
  const auto row = forward_row_for_active_isa();
#pragma omp parallel for schedule(static) if (rows * d >= kParallelThreshold)
  for (int64_t r = 0; r < rows; ++r) {
    row(y + r * d, mean ? mean + r : nullptr, rstd ? rstd + r : nullptr, x + r * d, w, b, d, eps,
        rms);
  }
}

void CpuBackend::norm_backward(float* dx, float* dw, float* db, const float* x, const float* w,
                               const float* mean, const float* rstd, const float* dy, int64_t rows,
                               int64_t d, bool rms) {
  const int64_t chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
  const auto row = backward_row_for_active_isa();
  // Per-chunk partial sums of dw and db (float over a chunk's 32 rows, double across chunks),
  // allocated before anything is written, and kept per calling thread between calls: a fresh
  // allocation of this size is an mmap plus a page fault per 4 KiB every step.
  thread_local std::vector<float> part_w, part_b;
  reserve_scratch(part_w, dw ? static_cast<size_t>(chunks * d) : 0);
  reserve_scratch(part_b, db ? static_cast<size_t>(chunks * d) : 0);
  part_w.assign(dw ? static_cast<size_t>(chunks * d) : 0, 0.0f);
  part_b.assign(db ? static_cast<size_t>(chunks * d) : 0, 0.0f);
  float* const pw_all = part_w.data();
  float* const pb_all = part_b.data();
#pragma omp parallel for schedule(static) if (rows * d >= kParallelThreshold)
  for (int64_t ch = 0; ch < chunks; ++ch) {
    float* pw = dw ? pw_all + ch * d : nullptr;
    float* pb = db ? pb_all + ch * d : nullptr;
    for (int64_t r = ch * kRowsPerChunk; r < std::min(rows, (ch + 1) * kRowsPerChunk); ++r) {
      row(dx ? dx + r * d : nullptr, pw, pb, x + r * d, dy + r * d, w, rms ? 0.0f : mean[r],
          rstd[r], d, rms);
    }
  }
  // The chunks in order, columns split across threads.
#pragma omp parallel for schedule(static) if (chunks * d >= kParallelThreshold)
  for (int64_t c = 0; c < d; ++c) {
    double sw = 0.0, sb = 0.0;
    for (int64_t ch = 0; ch < chunks; ++ch) {
      if (dw) sw += pw_all[ch * d + c];
      if (db) sb += pb_all[ch * d + c];
    }
    if (dw) dw[c] = static_cast<float>(sw);
    if (db) db[c] = static_cast<float>(sb);
  }
}

}  // namespace nnops::detail
