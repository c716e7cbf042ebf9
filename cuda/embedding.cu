// CUDA embedding lookup and gradient. An index outside [0, V) makes its output row NaN and sets
// the calling thread's error flag (as cross-entropy's targets). The gradient sorts (index,
// position) pairs with CUB's stable radix sort, so each vocabulary row finds its positions in
// increasing order and adds them in that order: the CPU's order, no atomics.
#include <cub/device/device_radix_sort.cuh>

#include "cuda_backend.hpp"

namespace nnops::detail {

namespace {

__global__ void embedding_forward_kernel(float* d_out, const int32_t* d_idx, const float* d_w,
                                         int64_t n, int64_t vocab, int64_t dim,
                                         unsigned* d_error_flags) {
  const int64_t total = n * dim;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t s = t / dim, c = t % dim;
    const int32_t v = d_idx[s];
    if (v < 0 || v >= vocab) {
      d_out[t] = NAN;
      if (c == 0) atomicOr(d_error_flags, kEmbeddingIndexOutOfRange);
    } else {
      d_out[t] = d_w[static_cast<int64_t>(v) * dim + c];
    }
  }
}

// Positions 0 .. n-1 (the values the sort carries), and the range check of every index.
__global__ void positions_kernel(int64_t* d_pos, const int32_t* d_idx, int64_t n, int64_t vocab,
                                 unsigned* d_error_flags) {
  for (int64_t s = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; s < n;
       s += int64_t(gridDim.x) * blockDim.x) {
    d_pos[s] = s;
    if (d_idx[s] < 0 || d_idx[s] >= vocab) atomicOr(d_error_flags, kEmbeddingGradIndexOutOfRange);
  }
}

__device__ int64_t lower_bound(const int32_t* keys, int64_t n, int64_t value) {
  int64_t lo = 0, hi = n;
  while (lo < hi) {
    const int64_t mid = (lo + hi) / 2;
    if (keys[mid] < value)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

// dweight[v, c] = sum of dout[pos, c] over v's positions, in increasing position order.
__global__ void embedding_sum_kernel(float* d_dw, const int32_t* d_keys, const int64_t* d_pos,
                                     const float* d_dout, int64_t n, int64_t vocab, int64_t dim) {
  const int64_t total = vocab * dim;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t v = t / dim, c = t % dim;
    const int64_t end = lower_bound(d_keys, n, v + 1);
    float sum = 0.0f;
    for (int64_t i = lower_bound(d_keys, n, v); i < end; ++i) sum += d_dout[d_pos[i] * dim + c];
    d_dw[t] = sum;
  }
}

}  // namespace

void CudaBackend::embedding_forward(float* out, const int32_t* idx, const float* weight, int64_t n,
                                    int64_t vocab, int64_t dim) {
  unsigned* flags = error_flags();
  embedding_forward_kernel<<<grid_for(n * dim, 256), 256, 0, t_stream>>>(out, idx, weight, n, vocab,
                                                                         dim, flags);
  check_launch("embedding_forward_kernel");
}

void CudaBackend::embedding_backward(float* dweight, const int32_t* idx, const float* dout,
                                     int64_t n, int64_t vocab, int64_t dim) {
  unsigned* flags = error_flags();
  if (n > INT32_MAX) throw Error("nnops::embedding_backward: more than 2^31 indices on CUDA");
  // Every allocation before the first write of dweight.
  size_t temp_bytes = 0;
  NNOPS_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
      nullptr, temp_bytes, static_cast<const int32_t*>(nullptr), static_cast<int32_t*>(nullptr),
      static_cast<const int64_t*>(nullptr), static_cast<int64_t*>(nullptr), static_cast<int>(n), 0,
      32, t_stream));
  DeviceScratch keys(n * sizeof(int32_t)), pos_in(n * sizeof(int64_t)), pos(n * sizeof(int64_t)),
      temp(temp_bytes);
  if (n > 0) {
    positions_kernel<<<grid_for(n, 256), 256, 0, t_stream>>>(pos_in.as<int64_t>(), idx, n, vocab,
                                                             flags);
    check_launch("positions_kernel");
    NNOPS_CUDA_CHECK(cub::DeviceRadixSort::SortPairs(
        temp.as<void>(), temp_bytes, idx, keys.as<int32_t>(), pos_in.as<int64_t>(),
        pos.as<int64_t>(), static_cast<int>(n), 0, 32, t_stream));
  }
  embedding_sum_kernel<<<grid_for(vocab * dim, 256), 256, 0, t_stream>>>(
      dweight, keys.as<int32_t>(), pos.as<int64_t>(), dout, n, vocab, dim);
  check_launch("embedding_sum_kernel");
}

}  // namespace nnops::detail
