// The CPU GEMM micro-kernels and their tile shapes. Each computes
//   c[mr, nr] (row stride ldc) = alpha * (a_panel * b_panel) + beta * c
// from an MR-tall packed A panel and an NR-wide B panel of depth kc whose depth rows lie ldb
// floats apart (NR for a packed panel, the row stride of b when a non-transposed F32 b is read
// in place); only the valid mr x nr corner is written, and beta == 0 writes without reading c.
#pragma once

#include <cstdint>

namespace nnops::detail {

using MicroKernel = void (*)(int64_t kc, const float* a, const float* b, int64_t ldb, float* c,
                             int64_t ldc, float alpha, float beta, int mr, int nr);
using TailKernel = void (*)(int64_t kc, const float* a, const float* b, int64_t ldb, float* c,
                            int64_t ldc, float alpha, float beta, int mr);

// The portable and AVX2 kernels (cpu/gemm/kernel_narrow.cpp): 6 x 16 tiles.
constexpr int kNarrowMR = 6, kNarrowNR = 16;
// The AVX-512 kernel (cpu/gemm/kernel_wide.cpp): 12 x 32 tiles.
constexpr int kWideMR = 12, kWideNR = 32;

void micro_kernel_generic(int64_t kc, const float* a, const float* b, int64_t ldb, float* c,
                          int64_t ldc, float alpha, float beta, int mr, int nr);

#if defined(__x86_64__) && defined(__GNUC__)
void micro_kernel_avx2(int64_t kc, const float* a, const float* b, int64_t ldb, float* c,
                       int64_t ldc, float alpha, float beta, int mr, int nr);
void micro_kernel_avx512(int64_t kc, const float* a, const float* b, int64_t ldb, float* c,
                         int64_t ldc, float alpha, float beta, int mr, int nr);
// Rows [0, mr <= 4) of an A panel (12-row layout) against 64 columns of a B read in place
// (two adjacent full panels, row stride ldb): the short product's last rows (cpu/gemm/driver.cpp).
void micro_kernel_avx512_tail64(int64_t kc, const float* a, const float* b, int64_t ldb, float* c,
                                int64_t ldc, float alpha, float beta, int mr);
void micro_kernel_wide_on_avx2_tail64(int64_t kc, const float* a, const float* b, int64_t ldb,
                                      float* c, int64_t ldc, float alpha, float beta, int mr);
// 12 rows of a read in place (row stride lda; mr <= 12 of them stored) against a packed 32-wide B
// panel: c[mr, 32] = alpha * a_rows * b_panel + beta * c (cpu/gemm/short_nt.cpp).
using RowsKernel = void (*)(int64_t kc, const float* a, int64_t lda, const float* b, float* c,
                            int64_t ldc, float alpha, float beta, int mr);
void micro_kernel_avx512_rows(int64_t kc, const float* a, int64_t lda, const float* b, float* c,
                              int64_t ldc, float alpha, float beta, int mr);
void micro_kernel_wide_on_avx2_rows(int64_t kc, const float* a, int64_t lda, const float* b,
                                    float* c, int64_t ldc, float alpha, float beta, int mr);
// The same code compiled for AVX2, so that machines without AVX-512 test the wide tiles.
void micro_kernel_wide_on_avx2(int64_t kc, const float* a, const float* b, int64_t ldb, float* c,
                               int64_t ldc, float alpha, float beta, int mr, int nr);
// BF16 operands packed in depth pairs (cpu/gemm/kernel_bf16.cpp), 12 x 32 tiles: the AVX512_BF16
// kernel, and the same code with the pair products emulated on AVX2 (for tests).
void micro_kernel_avx512_bf16(int64_t kc, const float* a, const float* b, int64_t ldb, float* c,
                              int64_t ldc, float alpha, float beta, int mr, int nr);
// VDPBF16PS's time over an FP32 FMA's (same lanes, throughput), measured in a few tenths of a
// millisecond: 1 where the instruction runs at the FMA's rate (two multiply-adds per lane for
// one), 2 or more where it does not. AVX512_BF16 CPUs only.
double dpbf16_time_per_fma_time();
void micro_kernel_bf16_pairs_on_avx2(int64_t kc, const float* a, const float* b, int64_t ldb,
                                     float* c, int64_t ldc, float alpha, float beta, int mr,
                                     int nr);
#endif

}  // namespace nnops::detail
