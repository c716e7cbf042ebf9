// Row reductions for the row kernels (softmax, cross-entropy, KD). A row is handled by one warp
// when it is short (kRowThreads = 32: 8 rows per block, shuffles only) or by a whole block when
// it is long (256 threads: shuffles, then one shared-memory step). Both reduce in a fixed order,
// so every run gives the same bits.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <type_traits>

#include "nnops/error.hpp"

namespace nnops::detail {

constexpr int kBlockThreads = 256;         // threads per block for every row kernel
constexpr int64_t kWarpRowMaxCols = 1024;  // rows up to this long go one per warp

// Max that propagates NaN, as the CPU's row max does (fmax would drop it).
__device__ inline float nan_max(float a, float b) {
  return (a != a || a > b) ? a : b;
}

struct SumOp {
  template <class T>
  __device__ T operator()(T a, T b) const {
    return a + b;
  }
};
struct MaxOp {
  __device__ float operator()(float a, float b) const { return nan_max(a, b); }
  __device__ double operator()(double a, double b) const { return (a != a || a > b) ? a : b; }
};

// Whole-block reduction; every thread of the block must call it. Returns the result everywhere.
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

// The threads that share one row: where the row lives and how they reduce over it.
template <int kThreadsPerRow>
struct RowTeam {
  static_assert(kThreadsPerRow == 32 || kThreadsPerRow == kBlockThreads, "a warp or a block");
  int64_t row;  // this team's row
  int lane;     // this thread's place in the team

  __device__ static RowTeam here() {
    return {int64_t(blockIdx.x) * (kBlockThreads / kThreadsPerRow) + threadIdx.x / kThreadsPerRow,
            static_cast<int>(threadIdx.x % kThreadsPerRow)};
  }
  // Every thread of the team must call it; the result reaches all of them. A warp uses a
  // butterfly: paired lanes add the same two values, so all lanes hold the same bits.
  template <class T, class Op>
  __device__ T reduce(T value, Op op, T* shared) const {
    if constexpr (kThreadsPerRow == 32) {
      for (int offset = 16; offset > 0; offset /= 2)
        value = op(value, __shfl_xor_sync(0xffffffffu, value, offset));
      return value;
    } else {
      return block_reduce(value, op, shared);
    }
  }
  // max over c of scale * x[c], and log(sum(exp(scale * x[c] - max))) with the sum in double:
  // the CPU's row_logsumexp.
  __device__ void logsumexp(const float* x, int64_t cols, float scale, float& mx,
                            float& log_sum) const {
    __shared__ float s_max[32];
    __shared__ double s_sum[32];
    float m = -INFINITY;
    for (int64_t c = lane; c < cols; c += kThreadsPerRow) m = nan_max(m, x[c] * scale);
    mx = reduce(m, MaxOp{}, s_max);
    double s = 0.0;
    for (int64_t c = lane; c < cols; c += kThreadsPerRow)
      s += exp(static_cast<double>(x[c] * scale - mx));
    log_sum = static_cast<float>(log(reduce(s, SumOp{}, s_sum)));
  }
};

// Blocks for `rows` rows, one team each; false when that exceeds one launch.
template <int kThreadsPerRow>
inline bool row_grid(int64_t rows, unsigned& blocks) {
  const int64_t per_block = kBlockThreads / kThreadsPerRow;
  const int64_t b = (rows + per_block - 1) / per_block;
  blocks = static_cast<unsigned>(b);
  return b <= 2147483647;
}

// A warp per row for short rows (8 rows per block), a block per row for long ones.
template <class Launch>
void launch_rows(int64_t rows, int64_t cols, const char* op, Launch launch) {
  unsigned blocks = 0;
  const bool fits =
      cols <= kWarpRowMaxCols ? row_grid<32>(rows, blocks) : row_grid<kBlockThreads>(rows, blocks);
  if (!fits) {
    throw Error(std::string("nnops::") + op + ": " + std::to_string(rows) +
                " rows exceed one CUDA launch");
  }
  if (cols <= kWarpRowMaxCols)
    launch(std::integral_constant<int, 32>{}, blocks);
  else
    launch(std::integral_constant<int, kBlockThreads>{}, blocks);
}

}  // namespace nnops::detail
