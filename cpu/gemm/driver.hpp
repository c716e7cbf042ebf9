// The CPU GEMM's entry inside the library (cpu/gemm/driver.cpp).
#pragma once

#include <cstdint>

#include "../cpu_backend.hpp"

namespace nnops::detail {

// c (F32) = alpha * op(a) * op(b) + beta * c, with a and b both F32 or both BF16. With
// reserve_only, only the calling thread's packing buffers are grown for this product, so an op
// that writes its outputs in several steps can allocate everything before the first write.
void gemm_f32_out(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const void* a, const void* b, DType in_dtype, float beta, float* c,
                  bool reserve_only = false);

}  // namespace nnops::detail
