// Grid-stride element-wise maps shared by the CUDA kernels: out[i] = f(a[i]) or f(a[i], b[i]),
// with float4 loads and stores when every pointer is 16-byte aligned and a scalar tail.
#pragma once

#include <cstdint>

#include "cuda_backend.hpp"
#include "nnops/detail/bf16_math.hpp"

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

// F32 or BF16 elements (BF16 as its bits), computed in FP32: the scalar grid-stride path.
__device__ inline float load_elem(const float* p, int64_t i) {
  return p[i];
}
__device__ inline float load_elem(const uint16_t* p, int64_t i) {
  return bf16_bits_to_float(p[i]);
}
__device__ inline void store_elem(float* p, int64_t i, float v) {
  p[i] = v;
}
__device__ inline void store_elem(uint16_t* p, int64_t i, float v) {
  p[i] = float_to_bf16_bits(v);
}

template <class TO, class TA, class F>
__global__ void typed_unary_kernel(TO* out, const TA* a, int64_t n, F f) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    store_elem(out, i, f(load_elem(a, i)));
}

template <class TO, class TA, class TB, class F>
__global__ void typed_binary_kernel(TO* out, const TA* a, const TB* b, int64_t n, F f) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    store_elem(out, i, f(load_elem(a, i), load_elem(b, i)));
}

// Calls body(typed pointer) with the view's pointer as float* or (BF16) uint16_t*.
template <class Body>
void with_type(View v, Body body) {
  if (v.dtype == DType::BF16)
    body(static_cast<uint16_t*>(v.data));
  else
    body(static_cast<float*>(v.data));
}
template <class Body>
void with_type(ConstView v, Body body) {
  if (v.dtype == DType::BF16)
    body(static_cast<const uint16_t*>(v.data));
  else
    body(static_cast<const float*>(v.data));
}

// out = f(a) over F32 or BF16 views; all-F32 takes the 16-byte path.
template <class F>
void launch_typed_unary(View out, ConstView a, int64_t n, F f, const char* what) {
  if (out.dtype == DType::F32 && a.dtype == DType::F32) {
    return launch_unary_map(static_cast<float*>(out.data), static_cast<const float*>(a.data), n, f,
                            what);
  }
  with_type(out, [&](auto* o) {
    with_type(a, [&](const auto* x) {
      typed_unary_kernel<<<grid_for(n, 256), 256, 0, t_stream>>>(o, x, n, f);
    });
  });
  check_launch(what);
}

template <class F>
void launch_typed_binary(View out, ConstView a, ConstView b, int64_t n, F f, const char* what) {
  if (out.dtype == DType::F32 && a.dtype == DType::F32 && b.dtype == DType::F32) {
    return launch_binary_map(static_cast<float*>(out.data), static_cast<const float*>(a.data),
                             static_cast<const float*>(b.data), n, f, what);
  }
  with_type(out, [&](auto* o) {
    with_type(a, [&](const auto* x) {
      with_type(b, [&](const auto* y) {
        typed_binary_kernel<<<grid_for(n, 256), 256, 0, t_stream>>>(o, x, y, n, f);
      });
    });
  });
  check_launch(what);
}

}  // namespace nnops::detail
