// Block-wide reductions for the row kernels (one block per row): a fixed tree of warp shuffles
// and one shared-memory step, so every run adds in the same order and gives the same bits.
#pragma once

#include <cmath>

namespace nnops::detail {

constexpr int kRowThreads = 256;

// Max that propagates NaN, as the CPU's row max does (fmax would drop it).
__device__ inline float nan_max(float a, float b) {
  return (a != a || a > b) ? a : b;
}

template <class T, class Op>
__device__ T block_reduce(T value, Op op, T* shared /* [32] */) {
  for (int offset = 16; offset > 0; offset /= 2)
    value = op(value, __shfl_down_sync(0xffffffffu, value, offset));
  const int warp = threadIdx.x / 32, lane = threadIdx.x & 31;
  __syncthreads();  // shared may still be read by a previous reduction
  if (lane == 0) shared[warp] = value;
  __syncthreads();
  if (threadIdx.x == 0) {
    const int warps = (blockDim.x + 31) / 32;
    T acc = shared[0];
    for (int w = 1; w < warps; ++w) acc = op(acc, shared[w]);  // fixed order
    shared[0] = acc;
  }
  __syncthreads();
  return shared[0];
}

struct SumOp {
  template <class T>
  __device__ T operator()(T a, T b) const {
    return a + b;
  }
};
struct MaxOp {
  __device__ float operator()(float a, float b) const { return nan_max(a, b); }
};

// max over c of scale * x[c], and log(sum(exp(scale * x[c] - max))) with the sum in double: the
// CPU's row_logsumexp, reduced over the block.
__device__ inline void block_row_logsumexp(const float* x, int64_t cols, float scale, float& mx,
                                           float& log_sum) {
  __shared__ float smax[32];
  __shared__ double ssum[32];
  float m = -INFINITY;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) m = nan_max(m, x[c] * scale);
  mx = block_reduce(m, MaxOp{}, smax);
  double s = 0.0;
  for (int64_t c = threadIdx.x; c < cols; c += blockDim.x)
    s += exp(static_cast<double>(x[c] * scale - mx));
  log_sum = static_cast<float>(log(block_reduce(s, SumOp{}, ssum)));
}

}  // namespace nnops::detail
