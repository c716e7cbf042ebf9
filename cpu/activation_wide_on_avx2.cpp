// The vectorized element-wise kernels (activation_vec.inc) over 16 lanes compiled for AVX2+FMA,
// where GCC splits each vector in two: the AVX-512 code, run on machines without AVX-512 for the
// tests (CpuIsa::AVX2WideTiles). Not meant to be fast.
#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif

#define NNOPS_VEC_MATH_WIDE 1
#define NNOPS_VEC_KERNELS vec_kernels_wide_on_avx2
#include "activation_vec.inc"

#if defined(__clang__)
#pragma clang attribute pop
#endif
