// CPU Philox fills: each block of four elements comes from one Philox call on counter i / 4,
// so the result does not depend on how the loop is split across threads.
#include "cpu_backend.hpp"
#include "nnops/detail/philox.hpp"
#include "nnops/detail/transformer_math.hpp"

namespace nnops::detail {

void CpuBackend::fill_uniform(float* t, int64_t n, float lo, float hi, uint64_t seed) {
  const int64_t blocks = (n + 3) / 4;
#pragma omp parallel for if (n >= kParallelThreshold)
  for (int64_t b = 0; b < blocks; ++b) {
    const Philox4 bits = philox_block(seed, static_cast<uint64_t>(b));
    for (int lane = 0; lane < 4 && b * 4 + lane < n; ++lane) {
      t[b * 4 + lane] = uniform_in(bits_to_unit(bits.v[lane]), lo, hi);
    }
  }
}

void CpuBackend::fill_normal(float* t, int64_t n, float mean, float std, uint64_t seed) {
  const int64_t blocks = (n + 3) / 4;
#pragma omp parallel for if (n >= kParallelThreshold)
  for (int64_t b = 0; b < blocks; ++b) {
    const Philox4 bits = philox_block(seed, static_cast<uint64_t>(b));
    float z[4];
    box_muller(bits_to_unit(bits.v[0]), bits_to_unit(bits.v[1]), z[0], z[1]);
    box_muller(bits_to_unit(bits.v[2]), bits_to_unit(bits.v[3]), z[2], z[3]);
    for (int lane = 0; lane < 4 && b * 4 + lane < n; ++lane) t[b * 4 + lane] = mean + std * z[lane];
  }
}

}  // namespace nnops::detail

namespace nnops::detail {

void CpuBackend::dropout(float* y, const float* x, int64_t n, float p, uint64_t seed) {
  const float scale = dropout_scale(p);
  const int64_t blocks = (n + 3) / 4;
#pragma omp parallel for if (n >= kParallelThreshold)
  for (int64_t b = 0; b < blocks; ++b) {
    const Philox4 bits = philox_block(seed, static_cast<uint64_t>(b));
    for (int64_t i = b * 4; i < b * 4 + 4 && i < n; ++i) {
      y[i] = dropout_keeps(bits, i, p) ? x[i] * scale : 0.0f;
    }
  }
}

}  // namespace nnops::detail
