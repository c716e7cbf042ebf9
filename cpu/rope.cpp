// CPU rotary position embedding ("rotate half"): the cos/sin table of the call's positions is
// formed once in double (rope_angle), then every row of every batch is rotated in double and
// rounded once.
#include <cmath>

#include "cpu_backend.hpp"
#include "nnops/detail/transformer_math.hpp"

namespace nnops::detail {

void CpuBackend::rope(float* y, const float* x, int64_t batch, int64_t t, int64_t d, int64_t offset,
                      float theta, bool inverse) {
  const int64_t half = d / 2;
  std::vector<double> cos_a = scratch_vector<double>(static_cast<size_t>(t * half));
  std::vector<double> sin_a = scratch_vector<double>(static_cast<size_t>(t * half));
#pragma omp parallel for schedule(static) if (t * half >= kParallelThreshold / 8)
  for (int64_t p = 0; p < t; ++p) {
    for (int64_t i = 0; i < half; ++i) {
      const double a = rope_angle(offset + p, i, d, theta);
      cos_a[p * half + i] = std::cos(a);
      sin_a[p * half + i] = std::sin(a);
    }
  }
#pragma omp parallel for schedule(static) if (batch * t * d >= kParallelThreshold)
  for (int64_t row = 0; row < batch * t; ++row) {
    const int64_t p = row % t;
    const float* xr = x + row * d;
    float* yr = y + row * d;
    const double* c = cos_a.data() + p * half;
    const double* s = sin_a.data() + p * half;
#pragma omp simd
    for (int64_t i = 0; i < half; ++i) {
      float y0, y1;
      rope_rotate(xr[i], xr[i + half], c[i], s[i], inverse, y0, y1);  // y may be x: both read first
      yr[i] = y0;
      yr[i + half] = y1;
    }
  }
}

}  // namespace nnops::detail
