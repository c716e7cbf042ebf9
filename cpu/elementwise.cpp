// CPU element-wise helpers and argmax over rows.
#include <cmath>
#include <cstring>

#include "cpu_backend.hpp"
#include "isa_variants.hpp"
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

// F32 -> BF16 over a range, compiled per CPU level: the baseline build vectorizes it four
// lanes wide, where the mixed-precision trainers' casts of every product's input cost a few
// percent of a step.
NNOPS_ALWAYS_INLINE void to_bf16(uint16_t* d, const float* s, int64_t n) {
  for (int64_t i = 0; i < n; ++i) d[i] = float_to_bf16_bits(s[i]);
}
NNOPS_ISA_VARIANTS(to_bf16, void, (uint16_t * d, const float* s, int64_t n), (d, s, n))

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
    const auto convert = to_bf16_for_active_isa();
    for_chunks(n, [&](int64_t begin, int64_t end) { convert(d + begin, s + begin, end - begin); });
  } else {
    auto* d = static_cast<float*>(dst);
    const auto* s = static_cast<const uint16_t*>(src);
#pragma omp parallel for simd if (n >= kParallelThreshold)
    for (int64_t i = 0; i < n; ++i) d[i] = bf16_bits_to_float(s[i]);
  }
}

namespace {

template <class Element>
void gather_row(char* out, const char* in, int64_t count, int64_t stride) {
  auto* o = reinterpret_cast<Element*>(out);
  const auto* i = reinterpret_cast<const Element*>(in);
  for (int64_t c = 0; c < count; ++c) o[c] = i[c * stride];
}

}  // namespace

// Rows of y's last (merged) dimension, each a memcpy when x holds it contiguously too.
void CpuBackend::permute(void* y, const void* x, size_t element_size, const PermutePlan& plan) {
  const int last = plan.ndim - 1;
  const int64_t inner = plan.out_shape[last], inner_stride = plan.in_stride[last];
  int64_t rows = 1;
  for (int d = 0; d < last; ++d) rows *= plan.out_shape[d];
  auto* out = static_cast<char*>(y);
  const auto* in = static_cast<const char*>(x);
  const auto es = static_cast<int64_t>(element_size);
#pragma omp parallel for if (rows * inner >= kParallelThreshold)
  for (int64_t r = 0; r < rows; ++r) {
    int64_t offset = 0;  // x's element offset of this row's first element
    for (int64_t d = last - 1, rest = r; d >= 0; --d) {
      offset += rest % plan.out_shape[d] * plan.in_stride[d];
      rest /= plan.out_shape[d];
    }
    char* o = out + r * inner * es;
    const char* i = in + offset * es;
    if (inner_stride == 1) {
      std::memcpy(o, i, static_cast<size_t>(inner * es));
    } else if (es == 4) {
      gather_row<uint32_t>(o, i, inner, inner_stride);
    } else if (es == 2) {
      gather_row<uint16_t>(o, i, inner, inner_stride);
    } else if (es == 8) {
      gather_row<uint64_t>(o, i, inner, inner_stride);
    } else {
      gather_row<uint8_t>(o, i, inner, inner_stride);
    }
  }
}

void CpuBackend::fill(float* t, int64_t n, float value) {
#pragma omp parallel for simd if (n >= kParallelThreshold)
  for (int64_t i = 0; i < n; ++i) t[i] = value;
}

}  // namespace nnops::detail
