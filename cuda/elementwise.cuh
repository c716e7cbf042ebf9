// Grid-stride element-wise maps shared by the CUDA kernels: out[i] = f(a[i]) or f(a[i], b[i]),
// with float4 loads and stores when every pointer is 16-byte aligned and a scalar tail.
#pragma once

#include <cstdint>

#include "cuda_backend.hpp"

namespace nnops::detail {

template <class F>
__global__ void unary_map_kernel(float* out, const float* a, int64_t n, F f) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const bool vec = ((reinterpret_cast<uintptr_t>(out) | reinterpret_cast<uintptr_t>(a)) & 15) == 0;
  int64_t tail = 0;
  if (vec) {
    const int64_t n4 = n / 4;
    for (int64_t i = first; i < n4; i += stride) {
      const float4 va = reinterpret_cast<const float4*>(a)[i];
      reinterpret_cast<float4*>(out)[i] = make_float4(f(va.x), f(va.y), f(va.z), f(va.w));
    }
    tail = n4 * 4;
  }
  for (int64_t i = tail + first; i < n; i += stride) out[i] = f(a[i]);
}

// out may be a or b exactly (in place): each element is read before it is written.
template <class F>
__global__ void binary_map_kernel(float* out, const float* a, const float* b, int64_t n, F f) {
  const int64_t stride = int64_t(gridDim.x) * blockDim.x;
  const int64_t first = blockIdx.x * int64_t(blockDim.x) + threadIdx.x;
  const bool vec = ((reinterpret_cast<uintptr_t>(out) | reinterpret_cast<uintptr_t>(a) |
                     reinterpret_cast<uintptr_t>(b)) &
                    15) == 0;
  int64_t tail = 0;
  if (vec) {
    const int64_t n4 = n / 4;
    for (int64_t i = first; i < n4; i += stride) {
      const float4 va = reinterpret_cast<const float4*>(a)[i];
      const float4 vb = reinterpret_cast<const float4*>(b)[i];
      reinterpret_cast<float4*>(out)[i] =
          make_float4(f(va.x, vb.x), f(va.y, vb.y), f(va.z, vb.z), f(va.w, vb.w));
    }
    tail = n4 * 4;
  }
  for (int64_t i = tail + first; i < n; i += stride) out[i] = f(a[i], b[i]);
}

template <class F>
void launch_unary_map(float* out, const float* a, int64_t n, F f, const char* what) {
  unary_map_kernel<<<grid_for((n + 3) / 4, 256), 256, 0, t_stream>>>(out, a, n, f);
  check_launch(what);
}

template <class F>
void launch_binary_map(float* out, const float* a, const float* b, int64_t n, F f,
                       const char* what) {
  binary_map_kernel<<<grid_for((n + 3) / 4, 256), 256, 0, t_stream>>>(out, a, b, n, f);
  check_launch(what);
}

}  // namespace nnops::detail
