// CPU rotary position embedding ("rotate half"): the cos/sin table of the call's positions is
// formed in double (rope_angle) and kept for calls with the same positions, then every row of
// every batch is rotated in double and rounded once.
#include <cmath>

#include "cpu_backend.hpp"
#include "isa_variants.hpp"
#include "nnops/detail/transformer_math.hpp"

namespace nnops::detail {

namespace {

// One row's pairs, rotated in double (8 lanes on AVX-512) and rounded once; y may be x.
NNOPS_ALWAYS_INLINE void rotate_row(float* yr, const float* xr, const double* c, const double* s,
                                    int64_t half, bool inverse) {
  const double sign = inverse ? -1.0 : 1.0;
#pragma omp simd
  for (int64_t i = 0; i < half; ++i) {
    const double x0 = xr[i], x1 = xr[i + half], sn = sign * s[i];
    yr[i] = static_cast<float>(x0 * c[i] - x1 * sn);
    yr[i + half] = static_cast<float>(x1 * c[i] + x0 * sn);
  }
}

NNOPS_ISA_VARIANTS(rotate_row, void,
                   (float* yr, const float* xr, const double* c, const double* s, int64_t half,
                    bool inverse),
                   (yr, xr, c, s, half, inverse))

// The cos/sin table of positions offset .. offset + t - 1, kept per thread for the next call:
// a model calls RoPE with the same positions for q and k, in every layer, forward and backward.
struct AngleTable {
  int64_t offset = -1, t = 0, d = 0;
  float theta = 0.0f;
  std::vector<double> cos_a, sin_a;
  void make(int64_t offset_, int64_t t_, int64_t d_, float theta_) {
    if (offset_ == offset && t_ == t && d_ == d && theta_ == theta) return;
    const int64_t half = d_ / 2;
    offset = -1;  // invalid until filled (an allocation may throw)
    cos_a = scratch_vector<double>(static_cast<size_t>(t_ * half));
    sin_a = scratch_vector<double>(static_cast<size_t>(t_ * half));
#pragma omp parallel for schedule(static) if (t_ * half >= kParallelThreshold / 8)
    for (int64_t p = 0; p < t_; ++p) {
      for (int64_t i = 0; i < half; ++i) {
        const double a = rope_angle(offset_ + p, i, d_, theta_);
        cos_a[p * half + i] = std::cos(a);
        sin_a[p * half + i] = std::sin(a);
      }
    }
    offset = offset_, t = t_, d = d_, theta = theta_;
  }
};

}  // namespace

void CpuBackend::rope(float* y, const float* x, int64_t batch, int64_t t, int64_t d, int64_t offset,
                      float theta, bool inverse) {
  const int64_t half = d / 2;
  thread_local AngleTable table;
  table.make(offset, t, d, theta);
  const double* cos_a = table.cos_a.data();
  const double* sin_a = table.sin_a.data();
  const auto rotate = rotate_row_for_active_isa();
#pragma omp parallel for schedule(static) if (batch * t * d >= kParallelThreshold)
  for (int64_t row = 0; row < batch * t; ++row) {
    const int64_t p = row % t;
    rotate(y + row * d, x + row * d, cos_a + p * half, sin_a + p * half, half, inverse);
  }
}

}  // namespace nnops::detail
