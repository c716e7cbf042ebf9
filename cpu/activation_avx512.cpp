// The vectorized element-wise kernels (activation_vec.inc) over 16 lanes for AVX-512F, chosen at
// the AVX512 level.
#include <immintrin.h>  // before the target region: its functions carry their own targets

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx512f"))), apply_to = function)
#else
#pragma GCC target("avx512f")
#endif

#define NNOPS_VEC_MATH_WIDE 1
#define NNOPS_VEC_MATH_AVX512 1
#define NNOPS_VEC_KERNELS vec_kernels_avx512
#include "activation_vec.inc"

#if defined(__clang__)
#pragma clang attribute pop
#endif
