// The 6 x 16 GEMM micro-kernels: the portable loop nest the compiler vectorizes for baseline
// x86-64, and AVX2+FMA in intrinsics with the accumulators in registers.
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include <cmath>
#include <cstdint>

#include "kernels.hpp"

namespace nnops::detail {

namespace {
constexpr int kMR = kNarrowMR;  // 6 x 16 accumulators = 12 AVX2 registers
constexpr int kNR = kNarrowNR;
}  // namespace

// c[mr, nr] (row stride ldc) = alpha * (a_panel * b_panel) + beta * c; only the valid mr x nr
// corner is written. beta == 0 writes without reading c. The portable reference kernel.
void micro_kernel_generic(int64_t kc, const float* __restrict a, const float* __restrict b,
                          int64_t ldb, float* c, int64_t ldc, float alpha, float beta, int mr,
                          int nr) {
  float acc[kMR][kNR] = {};
  for (int64_t p = 0; p < kc; ++p) {
    const float* ap = a + p * kMR;
    const float* bp = b + p * ldb;
#pragma GCC unroll 6
    for (int i = 0; i < kMR; ++i) {
      const float ai = ap[i];
#pragma GCC unroll 16
      for (int j = 0; j < kNR; ++j) acc[i][j] += ai * bp[j];
    }
  }
  for (int i = 0; i < mr; ++i) {
    float* ci = c + i * ldc;
    if (beta == 0.0f) {
      for (int j = 0; j < nr; ++j) ci[j] = alpha * acc[i][j];
    } else {
      for (int j = 0; j < nr; ++j) ci[j] = alpha * acc[i][j] + beta * ci[j];
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// The same computation with AVX2 intrinsics: the 6 x 16 accumulators live in 12 ymm
// registers, each step broadcasts one A value per row and issues two FMAs per row against two
// B vectors. Per element the sum still runs over p in order, with one fused multiply-add each
// (the portable kernel, built without FMA, rounds the product and the sum separately).
__attribute__((target("avx2,fma"))) void micro_kernel_avx2(int64_t kc, const float* a,
                                                           const float* b, int64_t ldb, float* c,
                                                           int64_t ldc, float alpha, float beta,
                                                           int mr, int nr) {
  static_assert(kMR == 6 && kNR == 16, "the AVX2 kernel is written for 6 x 16 tiles");
  // Twelve named accumulators: GCC keeps named __m256 locals in registers, an array it spills.
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t p = 0; p < kc; ++p) {
    const __m256 b0 = _mm256_loadu_ps(b + p * ldb);
    const __m256 b1 = _mm256_loadu_ps(b + p * ldb + 8);
    const float* ap = a + p * kMR;
    __m256 ai = _mm256_broadcast_ss(ap + 0);
    c00 = _mm256_fmadd_ps(ai, b0, c00);
    c01 = _mm256_fmadd_ps(ai, b1, c01);
    ai = _mm256_broadcast_ss(ap + 1);
    c10 = _mm256_fmadd_ps(ai, b0, c10);
    c11 = _mm256_fmadd_ps(ai, b1, c11);
    ai = _mm256_broadcast_ss(ap + 2);
    c20 = _mm256_fmadd_ps(ai, b0, c20);
    c21 = _mm256_fmadd_ps(ai, b1, c21);
    ai = _mm256_broadcast_ss(ap + 3);
    c30 = _mm256_fmadd_ps(ai, b0, c30);
    c31 = _mm256_fmadd_ps(ai, b1, c31);
    ai = _mm256_broadcast_ss(ap + 4);
    c40 = _mm256_fmadd_ps(ai, b0, c40);
    c41 = _mm256_fmadd_ps(ai, b1, c41);
    ai = _mm256_broadcast_ss(ap + 5);
    c50 = _mm256_fmadd_ps(ai, b0, c50);
    c51 = _mm256_fmadd_ps(ai, b1, c51);
  }
  const __m256 acc[kMR][2] = {{c00, c01}, {c10, c11}, {c20, c21},
                              {c30, c31}, {c40, c41}, {c50, c51}};
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  if (mr == kMR && nr == kNR) {
    for (int i = 0; i < kMR; ++i) {
      float* ci = c + i * ldc;
      for (int h = 0; h < 2; ++h) {
        __m256 r = _mm256_mul_ps(va, acc[i][h]);
        // alpha*acc + beta*c, rounded like the portable kernel's `alpha * acc + beta * c`.
        if (beta != 0.0f) r = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci + 8 * h), r);
        _mm256_storeu_ps(ci + 8 * h, r);
      }
    }
    return;
  }
  alignas(32) float tile[kMR][kNR];  // edge tile: write only the valid corner
  for (int i = 0; i < kMR; ++i) {
    _mm256_store_ps(tile[i], acc[i][0]);
    _mm256_store_ps(tile[i] + 8, acc[i][1]);
  }
  for (int i = 0; i < mr; ++i) {
    float* ci = c + i * ldc;
    for (int j = 0; j < nr; ++j) {
      ci[j] = beta == 0.0f ? alpha * tile[i][j] : std::fma(beta, ci[j], alpha * tile[i][j]);
    }
  }
}
#endif

}  // namespace nnops::detail
