// CPU element-wise helpers and argmax over rows.
#include <cmath>

#include "cpu_backend.hpp"
#include "nnops/detail/bf16_math.hpp"
#include "widen.hpp"

namespace nnops::detail {

namespace {

void add_scaled_f32(float* y, const float* x, int64_t n, float alpha, float beta) {
  if (beta == 0.0f) {
#pragma omp parallel for simd if (n >= kParallelThreshold)
    for (int64_t i = 0; i < n; ++i) y[i] = alpha * x[i];
  } else {
#pragma omp parallel for simd if (n >= kParallelThreshold)
    for (int64_t i = 0; i < n; ++i) y[i] = beta * y[i] + alpha * x[i];
  }
}

}  // namespace

void CpuBackend::add_scaled(View y, ConstView x, int64_t n, float alpha, float beta) {
  if (y.dtype == DType::F32 && x.dtype == DType::F32) {
    return add_scaled_f32(static_cast<float*>(y.data), static_cast<const float*>(x.data), n, alpha,
                          beta);
  }
  // y is read only when beta != 0 (then widened as the first input).
  const ConstView y_in{beta == 0.0f ? nullptr : y.data, y.dtype};
  over_f32_chunks(y, y_in, x, n, [&](float* out, const float* old_y, const float* xs, int64_t c) {
    for (int64_t i = 0; i < c; ++i)
      out[i] = old_y ? beta * old_y[i] + alpha * xs[i] : alpha * xs[i];
  });
}

void CpuBackend::argmax(int32_t* out, const float* x, int64_t rows, int64_t cols) {
#pragma omp parallel for if (rows * cols >= kParallelThreshold)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    int64_t best = 0;
    // The first NaN wins outright; otherwise the first of the largest values.
    for (int64_t c = 1; c < cols && !std::isnan(xr[best]); ++c) {
      if (xr[c] > xr[best] || std::isnan(xr[c])) best = c;
    }
    out[r] = static_cast<int32_t>(best);
  }
}

void CpuBackend::cast(void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t n) {
  if (dst_dtype == src_dtype) {
    copy_within(dst, src, static_cast<size_t>(n) * dtype_size(dst_dtype));
  } else if (dst_dtype == DType::BF16) {
    auto* d = static_cast<uint16_t*>(dst);
    const auto* s = static_cast<const float*>(src);
#pragma omp parallel for simd if (n >= kParallelThreshold)
    for (int64_t i = 0; i < n; ++i) d[i] = float_to_bf16_bits(s[i]);
  } else {
    auto* d = static_cast<float*>(dst);
    const auto* s = static_cast<const uint16_t*>(src);
#pragma omp parallel for simd if (n >= kParallelThreshold)
    for (int64_t i = 0; i < n; ++i) d[i] = bf16_bits_to_float(s[i]);
  }
}

void CpuBackend::fill(float* t, int64_t n, float value) {
#pragma omp parallel for simd if (n >= kParallelThreshold)
  for (int64_t i = 0; i < n; ++i) t[i] = value;
}

}  // namespace nnops::detail
