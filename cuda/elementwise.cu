// CUDA element-wise kernels: fill, add_scaled, masks, mask counts and argmax over rows. Streaming
// kernels are grid-stride loops with 16-byte loads where the pointers allow and a scalar tail.
#include <cmath>

#include "cuda_backend.hpp"
#include "elementwise.cuh"
#include "nnops/detail/bf16_math.hpp"

namespace nnops::detail {

namespace {

__global__ void fill_kernel(float* __restrict__ d_t, int64_t n, float value) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    d_t[i] = value;
}

__global__ void apply_mask_kernel(float* __restrict__ d_w, const uint8_t* __restrict__ d_mask,
                                  int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    d_w[i] = d_mask[i] != 0 ? d_w[i] : 0.0f;
}

// Integer sums are exact, so atomics keep the count deterministic.
__global__ void count_nonzero_kernel(unsigned long long* __restrict__ d_count,
                                     const uint8_t* __restrict__ d_mask, int64_t n) {
  unsigned long long local = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    local += d_mask[i] != 0;
  for (int offset = 16; offset > 0; offset /= 2)
    local += __shfl_down_sync(0xffffffffu, local, offset);
  if ((threadIdx.x & 31) == 0 && local != 0) atomicAdd(d_count, local);
}

// (value, index) order of torch.argmax: NaN above everything, then larger values, then the lower
// index among equals.
__device__ bool better(float a, int64_t ia, float b, int64_t ib) {
  const bool na = a != a, nb = b != b;
  if (na != nb) return na;
  if (!na && a != b) return a > b;
  return ia < ib;
}

// One warp per row.
__global__ void argmax_kernel(int32_t* __restrict__ d_out, const float* __restrict__ d_x,
                              int64_t rows, int64_t cols) {
  const int64_t row = blockIdx.x * int64_t(blockDim.x / 32) + threadIdx.x / 32;
  const int lane = threadIdx.x & 31;
  if (row >= rows) return;
  const float* xr = d_x + row * cols;
  float best = NAN;
  int64_t best_i = -1;
  for (int64_t c = lane; c < cols; c += 32) {
    if (best_i < 0 || better(xr[c], c, best, best_i)) best = xr[c], best_i = c;
  }
  for (int offset = 16; offset > 0; offset /= 2) {
    const float other = __shfl_down_sync(0xffffffffu, best, offset);
    const int64_t other_i = __shfl_down_sync(0xffffffffu, best_i, offset);
    if (other_i >= 0 && (best_i < 0 || better(other, other_i, best, best_i)))
      best = other, best_i = other_i;
  }
  if (lane == 0) d_out[row] = static_cast<int32_t>(best_i);
}

__global__ void to_bf16_kernel(uint16_t* __restrict__ d_dst, const float* __restrict__ d_src,
                               int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    d_dst[i] = float_to_bf16_bits(d_src[i]);
}

__global__ void from_bf16_kernel(float* __restrict__ d_dst, const uint16_t* __restrict__ d_src,
                                 int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    d_dst[i] = bf16_bits_to_float(d_src[i]);
}

// One thread per element of y: its index split over y's dimensions gives x's offset.
template <class Element>
__global__ void permute_kernel(Element* __restrict__ d_y, const Element* __restrict__ d_x,
                               PermutePlan plan, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    int64_t offset = 0, rest = i;
    for (int d = plan.ndim - 1; d >= 0; --d) {
      offset += rest % plan.out_shape[d] * plan.in_stride[d];
      rest /= plan.out_shape[d];
    }
    d_y[i] = d_x[offset];
  }
}

template <class Element>
void launch_permute(void* y, const void* x, const PermutePlan& plan) {
  int64_t n = 1;
  for (int d = 0; d < plan.ndim; ++d) n *= plan.out_shape[d];
  permute_kernel<Element><<<grid_for(n, 256), 256, 0, t_stream>>>(
      static_cast<Element*>(y), static_cast<const Element*>(x), plan, n);
  check_launch("permute_kernel");
}

struct AddScaled {
  float alpha, beta;
  __device__ float operator()(float y, float x) const {
    return beta == 0.0f ? alpha * x : beta * y + alpha * x;  // beta == 0 never reads y
  }
};

}  // namespace

void CudaBackend::fill(float* t, int64_t n, float value) {
  fill_kernel<<<grid_for(n, 256), 256, 0, t_stream>>>(t, n, value);
  check_launch("fill_kernel");
}

void CudaBackend::cast(void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t n) {
  if (dst_dtype == src_dtype) {
    copy_within(dst, src, static_cast<size_t>(n) * dtype_size(dst_dtype));
  } else if (dst_dtype == DType::BF16) {
    to_bf16_kernel<<<grid_for(n, 256), 256, 0, t_stream>>>(static_cast<uint16_t*>(dst),
                                                           static_cast<const float*>(src), n);
    check_launch("to_bf16_kernel");
  } else {
    from_bf16_kernel<<<grid_for(n, 256), 256, 0, t_stream>>>(static_cast<float*>(dst),
                                                             static_cast<const uint16_t*>(src), n);
    check_launch("from_bf16_kernel");
  }
}

void CudaBackend::permute(void* y, const void* x, size_t element_size, const PermutePlan& plan) {
  switch (element_size) {
    case 8: return launch_permute<uint64_t>(y, x, plan);
    case 4: return launch_permute<uint32_t>(y, x, plan);
    case 2: return launch_permute<uint16_t>(y, x, plan);
    default: return launch_permute<uint8_t>(y, x, plan);
  }
}

void CudaBackend::add_scaled(View y, ConstView x, int64_t n, float alpha, float beta) {
  launch_typed_binary(y, ConstView{y.data, y.dtype}, x, n, AddScaled{alpha, beta}, "add_scaled");
}

void CudaBackend::apply_mask(float* w, const uint8_t* mask, int64_t n) {
  apply_mask_kernel<<<grid_for(n, 256), 256, 0, t_stream>>>(w, mask, n);
  check_launch("apply_mask_kernel");
}

int64_t CudaBackend::count_nonzero(const uint8_t* mask, int64_t n) {
  DeviceScratch count(sizeof(unsigned long long));
  NNOPS_CUDA_CHECK(cudaMemsetAsync(count.as<void>(), 0, sizeof(unsigned long long), t_stream));
  count_nonzero_kernel<<<grid_for(n, 256, 4096), 256, 0, t_stream>>>(count.as<unsigned long long>(),
                                                                     mask, n);
  check_launch("count_nonzero_kernel");
  unsigned long long host = 0;
  copy_to_host(&host, count.as<void>(), sizeof host);
  return static_cast<int64_t>(host);
}

void CudaBackend::argmax(int32_t* out, const float* x, int64_t rows, int64_t cols) {
  constexpr int kThreads = 256;  // 8 rows per block
  argmax_kernel<<<grid_for(rows, kThreads / 32, 1u << 30), kThreads, 0, t_stream>>>(out, x, rows,
                                                                                    cols);
  check_launch("argmax_kernel");
}

}  // namespace nnops::detail
