// The vectorized element-wise kernels (activation_vec.inc) over 16 lanes for AVX-512F, chosen at
// the AVX512 level.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f"))), apply_to = function)
#else
#pragma GCC target("avx512f")
#endif

#define NNOPS_VEC_MATH_WIDE 1
#include "activation_fast.hpp"
#include "vec_math.hpp"

namespace nnops::detail {

#ifdef NNOPS_HAVE_F16
namespace {
using V = F16;
constexpr int kLanes = 16;
}  // namespace
#include "activation_vec.inc"

const VecKernels& vec_kernels_avx512() {
  return kKernels;
}
#endif

}  // namespace nnops::detail

#if defined(__clang__)
#pragma clang attribute pop
#endif
