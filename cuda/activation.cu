// CUDA activations (the shared NNOPS_HD formulas of include/nnops/detail/activation_math.hpp) and
// softmax / log_softmax over rows, one block per row.
#include "cuda_backend.hpp"
#include "elementwise.cuh"
#include "nnops/detail/activation_math.hpp"
#include "row_reduce.cuh"

namespace nnops::detail {

namespace {

struct Forward {
  Activation a;
  float slope;
  __device__ float operator()(float x) const { return activation_apply(a, x, slope); }
};
struct Backward {
  Activation a;
  float slope;
  __device__ float operator()(float x, float dy) const { return activation_grad(a, x, dy, slope); }
};

// y may be x exactly: each row is read in full (the reductions) before it is written.
__global__ void softmax_forward_kernel(float* d_y, const float* d_x, int64_t cols, bool log) {
  const float* x = d_x + blockIdx.x * cols;
  float* y = d_y + blockIdx.x * cols;
  float mx, log_sum;
  block_row_logsumexp(x, cols, 1.0f, mx, log_sum);
  __syncthreads();
  if (log) {
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) y[c] = (x[c] - mx) - log_sum;
  } else {
    const float inv_sum = expf(-log_sum);
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) y[c] = expf(x[c] - mx) * inv_sum;
  }
}

__global__ void softmax_backward_kernel(float* d_dx, const float* d_y, const float* d_dy,
                                        int64_t cols, bool log) {
  __shared__ double ssum[32];
  const float* y = d_y + blockIdx.x * cols;
  const float* dy = d_dy + blockIdx.x * cols;
  float* dx = d_dx + blockIdx.x * cols;
  double s = 0.0;  // sum(dy * y) for softmax, sum(dy) for log_softmax
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    s += log ? dy[c] : static_cast<double>(dy[c]) * y[c];
  const float sum = static_cast<float>(block_reduce(s, SumOp{}, ssum));
  if (log) {
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dx[c] = dy[c] - expf(y[c]) * sum;
  } else {
    for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) dx[c] = y[c] * (dy[c] - sum);
  }
}

// Rows beyond the grid's y limit are covered by launching in slices of rows.
template <class Launch>
void for_row_slices(int64_t rows, Launch launch) {
  constexpr int64_t kMaxGrid = 2147483647;
  for (int64_t r0 = 0; r0 < rows; r0 += kMaxGrid)
    launch(r0, std::min<int64_t>(kMaxGrid, rows - r0));
}

}  // namespace

void CudaBackend::activation_forward(float* y, const float* x, int64_t n, Activation activation,
                                     float negative_slope) {
  launch_unary_map(y, x, n, Forward{activation, negative_slope}, "activation_forward");
}

void CudaBackend::activation_backward(float* dx, const float* x, const float* dy, int64_t n,
                                      Activation activation, float negative_slope) {
  launch_binary_map(dx, x, dy, n, Backward{activation, negative_slope}, "activation_backward");
}

void CudaBackend::softmax_forward(float* y, const float* x, int64_t rows, int64_t cols, bool log) {
  for_row_slices(rows, [&](int64_t r0, int64_t count) {
    softmax_forward_kernel<<<static_cast<unsigned>(count), kRowThreads, 0, t_stream>>>(
        y + r0 * cols, x + r0 * cols, cols, log);
    check_launch("softmax_forward_kernel");
  });
}

void CudaBackend::softmax_backward(float* dx, const float* y, const float* dy, int64_t rows,
                                   int64_t cols, bool log) {
  for_row_slices(rows, [&](int64_t r0, int64_t count) {
    softmax_backward_kernel<<<static_cast<unsigned>(count), kRowThreads, 0, t_stream>>>(
        dx + r0 * cols, y + r0 * cols, dy + r0 * cols, cols, log);
    check_launch("softmax_backward_kernel");
  });
}

}  // namespace nnops::detail
