// Matrix transposes for the CPU backend: the 8 x 8 register transpose the GEMM packers use, and
// a whole row-major matrix transposed through it.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include <cstdint>

namespace nnops::detail {

#if defined(__x86_64__) && defined(__GNUC__)
// Eight rows of 8 floats (src, src + stride, ...) written transposed: column j of the block to
// out + j * out_stride. The standard 8 x 8 transpose: interleave pairs, then quads, then swap
// 128-bit halves.
__attribute__((target("avx2,fma"))) inline void transpose_8x8(const float* src, int64_t stride,
                                                              float* out, int64_t out_stride) {
  const __m256 r0 = _mm256_loadu_ps(src + 0 * stride), r1 = _mm256_loadu_ps(src + 1 * stride);
  const __m256 r2 = _mm256_loadu_ps(src + 2 * stride), r3 = _mm256_loadu_ps(src + 3 * stride);
  const __m256 r4 = _mm256_loadu_ps(src + 4 * stride), r5 = _mm256_loadu_ps(src + 5 * stride);
  const __m256 r6 = _mm256_loadu_ps(src + 6 * stride), r7 = _mm256_loadu_ps(src + 7 * stride);
  const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  const __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  const __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  _mm256_storeu_ps(out + 0 * out_stride, _mm256_permute2f128_ps(u0, u4, 0x20));
  _mm256_storeu_ps(out + 1 * out_stride, _mm256_permute2f128_ps(u1, u5, 0x20));
  _mm256_storeu_ps(out + 2 * out_stride, _mm256_permute2f128_ps(u2, u6, 0x20));
  _mm256_storeu_ps(out + 3 * out_stride, _mm256_permute2f128_ps(u3, u7, 0x20));
  _mm256_storeu_ps(out + 4 * out_stride, _mm256_permute2f128_ps(u0, u4, 0x31));
  _mm256_storeu_ps(out + 5 * out_stride, _mm256_permute2f128_ps(u1, u5, 0x31));
  _mm256_storeu_ps(out + 6 * out_stride, _mm256_permute2f128_ps(u2, u6, 0x31));
  _mm256_storeu_ps(out + 7 * out_stride, _mm256_permute2f128_ps(u3, u7, 0x31));
}
#endif

// out[c * rows + r] = in[r * cols + c] for an in of [rows, cols]. 8 x 8 register blocks where
// `avx2` (reading in column by column instead walks it with a stride of a whole row per value),
// a scalar loop on the edges. Threads split the columns; call outside parallel regions.
void transpose(float* out, const float* in, int64_t rows, int64_t cols, bool avx2);

// out[c * out_stride + r] = in[r * in_stride + c] for r < rows, c < cols, on the calling thread
// alone (inside a parallel region, on its share of a matrix), 8 x 8 register blocks where avx2.
void transpose_strided(float* out, int64_t out_stride, const float* in, int64_t in_stride,
                       int64_t rows, int64_t cols, bool avx2);

}  // namespace nnops::detail
