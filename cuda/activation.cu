// CUDA activations (the shared NNOPS_HD formulas of include/nnops/detail/activation_math.hpp) and
// softmax / log_softmax over rows (a warp per short row, a block per long one).
#include "cuda_backend.hpp"
#include "elementwise.cuh"
#include "nnops/detail/activation_math.hpp"
#include "nnops/detail/transformer_math.hpp"
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
template <int kT>
__global__ void softmax_forward_kernel(float* d_y, const float* d_x, int64_t rows, int64_t cols,
                                       bool log) {
  const auto team = RowTeam<kT>::here();
  if (team.row >= rows) return;  // a whole team: no barrier is skipped
  const float* x = d_x + team.row * cols;
  float* y = d_y + team.row * cols;
  float mx, log_sum;
  team.logsumexp(x, cols, 1.0f, mx, log_sum);
  if (log) {
    for (int64_t c = team.lane; c < cols; c += kT) y[c] = (x[c] - mx) - log_sum;
  } else {
    const float inv_sum = expf(-log_sum);
    for (int64_t c = team.lane; c < cols; c += kT) y[c] = expf(x[c] - mx) * inv_sum;
  }
}

template <int kT>
__global__ void softmax_backward_kernel(float* d_dx, const float* d_y, const float* d_dy,
                                        int64_t rows, int64_t cols, bool log) {
  __shared__ double s_sum[32];
  const auto team = RowTeam<kT>::here();
  if (team.row >= rows) return;
  const float* y = d_y + team.row * cols;
  const float* dy = d_dy + team.row * cols;
  float* dx = d_dx + team.row * cols;
  double s = 0.0;  // sum(dy * y) for softmax, sum(dy) for log_softmax
  for (int64_t c = team.lane; c < cols; c += kT)
    s += log ? dy[c] : static_cast<double>(dy[c]) * y[c];
  const float sum = static_cast<float>(team.reduce(s, SumOp{}, s_sum));
  if (log) {
    for (int64_t c = team.lane; c < cols; c += kT) dx[c] = dy[c] - expf(y[c]) * sum;
  } else {
    for (int64_t c = team.lane; c < cols; c += kT) dx[c] = y[c] * (dy[c] - sum);
  }
}

}  // namespace

void CudaBackend::activation_forward(View y, ConstView x, int64_t n, Activation activation,
                                     float negative_slope) {
  launch_typed_unary(y, x, n, Forward{activation, negative_slope}, "activation_forward");
}

void CudaBackend::activation_backward(View dx, ConstView x, ConstView dy, int64_t n,
                                      Activation activation, float negative_slope) {
  launch_typed_binary(dx, x, dy, n, Backward{activation, negative_slope}, "activation_backward");
}

void CudaBackend::softmax_forward(float* y, const float* x, int64_t rows, int64_t cols, bool log) {
  launch_rows(rows, cols, log ? "log_softmax_forward" : "softmax_forward",
              [&](auto t, unsigned blocks) {
                softmax_forward_kernel<decltype(t)::value>
                    <<<blocks, kBlockThreads, 0, t_stream>>>(y, x, rows, cols, log);
                check_launch("softmax_forward_kernel");
              });
}

void CudaBackend::softmax_backward(float* dx, const float* y, const float* dy, int64_t rows,
                                   int64_t cols, bool log) {
  launch_rows(rows, cols, log ? "log_softmax_backward" : "softmax_backward",
              [&](auto t, unsigned blocks) {
                softmax_backward_kernel<decltype(t)::value>
                    <<<blocks, kBlockThreads, 0, t_stream>>>(dx, y, dy, rows, cols, log);
                check_launch("softmax_backward_kernel");
              });
}

}  // namespace nnops::detail

namespace nnops::detail {

namespace {

__global__ void gated_forward_kernel(float* d_y, const float* d_x, int64_t rows, int64_t h,
                                     Activation act) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < rows * h;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = t / h, j = t % h;
    d_y[t] = gated_apply(act, d_x[r * 2 * h + j], d_x[r * 2 * h + h + j]);
  }
}

__global__ void gated_backward_kernel(float* d_dx, const float* d_x, const float* d_dy,
                                      int64_t rows, int64_t h, Activation act) {
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < rows * h;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = t / h, j = t % h;
    gated_grad(act, d_x[r * 2 * h + j], d_x[r * 2 * h + h + j], d_dy[t], d_dx[r * 2 * h + j],
               d_dx[r * 2 * h + h + j]);
  }
}

}  // namespace

void CudaBackend::gated_activation_forward(float* y, const float* x, int64_t rows, int64_t h,
                                           Activation activation) {
  gated_forward_kernel<<<grid_for(rows * h, 256), 256, 0, t_stream>>>(y, x, rows, h, activation);
  check_launch("gated_forward_kernel");
}

void CudaBackend::gated_activation_backward(float* dx, const float* x, const float* dy,
                                            int64_t rows, int64_t h, Activation activation) {
  gated_backward_kernel<<<grid_for(rows * h, 256), 256, 0, t_stream>>>(dx, x, dy, rows, h,
                                                                       activation);
  check_launch("gated_backward_kernel");
}

}  // namespace nnops::detail
