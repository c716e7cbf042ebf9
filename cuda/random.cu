// CUDA Philox fills: element i takes lane i % 4 of the Philox block on counter i / 4, exactly as
// cpu/random.cpp. This file is compiled with -fmad=false so no multiply-add is contracted and the
// float results are the CPU's bit for bit.
#include "cuda_backend.hpp"
#include "nnops/detail/philox.hpp"
#include "nnops/detail/transformer_math.hpp"

namespace nnops::detail {

namespace {

__global__ void uniform_kernel(float* d_t, int64_t n, float lo, float hi, uint64_t seed) {
  const int64_t blocks = (n + 3) / 4;
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < blocks;
       b += int64_t(gridDim.x) * blockDim.x) {
    const Philox4 bits = philox_block(seed, static_cast<uint64_t>(b));
    for (int lane = 0; lane < 4 && b * 4 + lane < n; ++lane)
      d_t[b * 4 + lane] = uniform_in(bits_to_unit(bits.v[lane]), lo, hi);
  }
}

__global__ void normal_kernel(float* d_t, int64_t n, float mean, float std, uint64_t seed) {
  const int64_t blocks = (n + 3) / 4;
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < blocks;
       b += int64_t(gridDim.x) * blockDim.x) {
    const Philox4 bits = philox_block(seed, static_cast<uint64_t>(b));
    float z[4];
    box_muller(bits_to_unit(bits.v[0]), bits_to_unit(bits.v[1]), z[0], z[1]);
    box_muller(bits_to_unit(bits.v[2]), bits_to_unit(bits.v[3]), z[2], z[3]);
    for (int lane = 0; lane < 4 && b * 4 + lane < n; ++lane)
      d_t[b * 4 + lane] = mean + std * z[lane];
  }
}

}  // namespace

void CudaBackend::fill_uniform(float* t, int64_t n, float lo, float hi, uint64_t seed) {
  uniform_kernel<<<grid_for((n + 3) / 4, 256), 256, 0, t_stream>>>(t, n, lo, hi, seed);
  check_launch("uniform_kernel");
}

void CudaBackend::fill_normal(float* t, int64_t n, float mean, float std, uint64_t seed) {
  normal_kernel<<<grid_for((n + 3) / 4, 256), 256, 0, t_stream>>>(t, n, mean, std, seed);
  check_launch("normal_kernel");
}

}  // namespace nnops::detail

namespace nnops::detail {

namespace {

// Dropout: element i keeps x * 1/(1-p) when fill_uniform's value for (seed, i) is >= p.
__global__ void dropout_kernel(float* d_y, const float* d_x, int64_t n, float p, uint64_t seed) {
  const int64_t blocks = (n + 3) / 4;
  const float scale = dropout_scale(p);
  for (int64_t b = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; b < blocks;
       b += int64_t(gridDim.x) * blockDim.x) {
    const Philox4 bits = philox_block(seed, static_cast<uint64_t>(b));
    for (int64_t i = b * 4; i < b * 4 + 4 && i < n; ++i)
      d_y[i] = dropout_keeps(bits, i, p) ? d_x[i] * scale : 0.0f;
  }
}

}  // namespace

void CudaBackend::dropout(float* y, const float* x, int64_t n, float p, uint64_t seed) {
  dropout_kernel<<<grid_for((n + 3) / 4, 256), 256, 0, t_stream>>>(y, x, n, p, seed);
  check_launch("dropout_kernel");
}

}  // namespace nnops::detail
