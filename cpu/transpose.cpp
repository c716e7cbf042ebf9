// A row-major matrix transposed (see transpose.hpp).
#include "transpose.hpp"

#include "cpu_backend.hpp"

namespace nnops::detail {

namespace {

void transpose_scalar(float* out, const float* in, int64_t rows, int64_t cols, int64_t c0,
                      int64_t c1, int64_t r0) {
  for (int64_t c = c0; c < c1; ++c)
    for (int64_t r = r0; r < rows; ++r) out[c * rows + r] = in[r * cols + c];
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx2,fma"))) void transpose_column_block(float* out, const float* in,
                                                                int64_t rows, int64_t cols,
                                                                int64_t c0) {
  const int64_t rows8 = rows / 8 * 8;
  for (int64_t r = 0; r < rows8; r += 8)
    transpose_8x8(in + r * cols + c0, cols, out + c0 * rows + r, rows);
  transpose_scalar(out, in, rows, cols, c0, c0 + 8, rows8);
}
#endif

}  // namespace

void transpose_strided(float* out, int64_t out_stride, const float* in, int64_t in_stride,
                       int64_t rows, int64_t cols, bool avx2) {
  int64_t rows8 = 0, cols8 = 0;
#if defined(__x86_64__) && defined(__GNUC__)
  if (avx2) {
    rows8 = rows / 8 * 8, cols8 = cols / 8 * 8;
    for (int64_t c = 0; c < cols8; c += 8)
      for (int64_t r = 0; r < rows8; r += 8)
        transpose_8x8(in + r * in_stride + c, in_stride, out + c * out_stride + r, out_stride);
  }
#else
  (void)avx2;
#endif
  for (int64_t c = 0; c < cols; ++c)  // the edges
    for (int64_t r = c < cols8 ? rows8 : 0; r < rows; ++r)
      out[c * out_stride + r] = in[r * in_stride + c];
}

void transpose(float* out, const float* in, int64_t rows, int64_t cols, bool avx2) {
#if defined(__x86_64__) && defined(__GNUC__)
  const int64_t blocks = avx2 ? cols / 8 : 0;
#pragma omp parallel for schedule(static) if (rows * cols >= kParallelThreshold)
  for (int64_t b = 0; b < blocks; ++b) transpose_column_block(out, in, rows, cols, 8 * b);
#else
  const int64_t blocks = 0;  // no register transposes off x86-64
  (void)avx2;
#endif
  transpose_scalar(out, in, rows, cols, 8 * blocks, cols, 0);
}

}  // namespace nnops::detail
