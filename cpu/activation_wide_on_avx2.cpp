// The vectorized element-wise kernels (activation_vec.inc) over 16 lanes compiled for AVX2+FMA,
// where GCC splits each vector in two: the AVX-512 code, run on machines without AVX-512 for the
// tests (CpuIsa::AVX2WideTiles). Not meant to be fast.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
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

const VecKernels& vec_kernels_wide_on_avx2() {
  return kKernels;
}
#endif

}  // namespace nnops::detail

#if defined(__clang__)
#pragma clang attribute pop
#endif
