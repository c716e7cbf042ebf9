// The vectorized element-wise kernels (activation_vec.inc) over 8 lanes for AVX2+FMA. Only
// entered when the CPU has AVX2 and FMA (see cpu_supports_avx2); this file holds nothing with
// external linkage but the table, so no baseline code can pick up an AVX2 copy.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif

#define NNOPS_VEC_MATH_AVX2 1
#include "activation_fast.hpp"
#include "vec_math.hpp"

namespace nnops::detail {

#ifdef NNOPS_HAVE_F8
namespace {
using V = F8;
constexpr int kLanes = 8;
}  // namespace
#include "activation_vec.inc"

const VecKernels& vec_kernels_avx2() {
  return kKernels;
}
#endif

}  // namespace nnops::detail

#if defined(__clang__)
#pragma clang attribute pop
#endif
