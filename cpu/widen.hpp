// F32 or BF16 tensors through the CPU's F32 kernels: chunks of each input are widened to float
// in a thread's buffers, the F32 kernel runs on them, and the output chunk is narrowed back
// (round to nearest even). All-F32 calls never come here.
#pragma once

#include <cstdint>
#include <cstring>

#include "cpu_backend.hpp"
#include "nnops/detail/bf16_math.hpp"

namespace nnops::detail {

inline void widen(float* dst, ConstView v, int64_t offset, int64_t count) {
  if (v.dtype == DType::F32) {
    std::memcpy(dst, static_cast<const float*>(v.data) + offset, static_cast<size_t>(count) * 4);
    return;
  }
  const uint16_t* src = static_cast<const uint16_t*>(v.data) + offset;
  for (int64_t i = 0; i < count; ++i) dst[i] = bf16_bits_to_float(src[i]);
}

inline void narrow_into(View v, int64_t offset, const float* src, int64_t count) {
  if (v.dtype == DType::F32) {
    std::memcpy(static_cast<float*>(v.data) + offset, src, static_cast<size_t>(count) * 4);
    return;
  }
  uint16_t* dst = static_cast<uint16_t*>(v.data) + offset;
  for (int64_t i = 0; i < count; ++i) dst[i] = float_to_bf16_bits(src[i]);
}

// kernel(float* out, const float* a, const float* b, int64_t count) over chunks; b (and a) may
// be absent (data null): the kernel then gets null for it.
template <class Kernel>
void over_f32_chunks(View out, ConstView a, ConstView b, int64_t n, Kernel kernel) {
  constexpr int64_t kChunk = 4096;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n >= kParallelThreshold)
  for (int64_t c = 0; c < chunks; ++c) {
    float fa[kChunk], fb[kChunk], fo[kChunk];
    const int64_t begin = c * kChunk, count = begin + kChunk < n ? kChunk : n - begin;
    if (a.data) widen(fa, a, begin, count);
    if (b.data) widen(fb, b, begin, count);
    kernel(fo, a.data ? fa : nullptr, b.data ? fb : nullptr, count);
    narrow_into(out, begin, fo, count);
  }
}

}  // namespace nnops::detail
