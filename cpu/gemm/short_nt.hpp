// The short-by-wide NT product of the CPU GEMM (cpu/gemm/short_nt.cpp).
#pragma once

#include <cstdint>

#include "kernels.hpp"

namespace nnops::detail {

// Products a b^T with a of at most this many rows and a b of at least this many elements take
// gemm_short_nt (AVX-512 tiles). Measured against the general driver (Intel Xeon, two threads):
// 64 x 1000 x 2000 232 -> 335 GFLOP/s, 64 x 2000 x 1000 263 -> 339, 32 x 2000 x 1000 221 -> 334,
// 128 x 2000 x 1000 304 -> 343, 160 x 1000 x 2000 279 -> 339, 256 x 1000 x 2000 298 -> 335;
// level at 100 x 1000 x 2000 (a^T padded to 128 rows) and at 128 x 512 x 512, where packing b is
// cheap beside the product; 512 x 2000 x 1000 gained 3%. Attention's 64 x 64 blocks stay on the
// general driver.
constexpr int64_t kShortNtRows = 256, kShortNtMinB = int64_t(1) << 19;

// c [m, n] = alpha * a [m, k] * (b [n, k])^T + beta * c, F32, b's rows read in place by `kernel`
// in depth blocks of kc; with reserve_only, only the scratch is grown. Call outside parallel
// regions or on one thread.
void gemm_short_nt(int64_t m, int64_t n, int64_t k, float alpha, const float* a, const float* b,
                   float beta, float* c, bool reserve_only, RowsKernel kernel, int64_t kc);

}  // namespace nnops::detail
