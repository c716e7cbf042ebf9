// CUDA rotary position embedding: a thread per pair, the angle and its cosine and sine in double
// (rope_angle), the rotation in double rounded once, as cpu/rope.cpp.
#include "cuda_backend.hpp"
#include "nnops/detail/transformer_math.hpp"

namespace nnops::detail {

namespace {

__global__ void rope_kernel(float* d_y, const float* d_x, int64_t rows, int64_t t, int64_t d,
                            int64_t offset, double theta, bool inverse) {
  const int64_t half = d / 2, total = rows * half;
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < total;
       k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = k / half, i = k % half;
    double s, c;
    sincos(rope_angle(offset + row % t, i, d, theta), &s, &c);
    float y0, y1;
    rope_rotate(d_x[row * d + i], d_x[row * d + i + half], c, s, inverse, y0, y1);
    d_y[row * d + i] = y0;  // y may be x: this thread alone reads and writes the pair
    d_y[row * d + i + half] = y1;
  }
}

}  // namespace

void CudaBackend::rope(float* y, const float* x, int64_t batch, int64_t t, int64_t d,
                       int64_t offset, float theta, bool inverse) {
  rope_kernel<<<grid_for(batch * t * (d / 2), 256), 256, 0, t_stream>>>(y, x, batch * t, t, d,
                                                                        offset, theta, inverse);
  check_launch("rope_kernel");
}

}  // namespace nnops::detail
