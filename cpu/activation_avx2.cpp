// The vectorized element-wise kernels (activation_vec.inc) over 8 lanes for AVX2+FMA, entered
// only when the CPU has AVX2 and FMA (see cpu_supports_avx2).
#include <immintrin.h>  // before the target region: its functions carry their own targets

#if defined(__clang__)
#pragma clang attribute push(__attribute__((target("avx2,fma"))), apply_to = function)
#else
#pragma GCC target("avx2,fma")
#endif

#define NNOPS_VEC_MATH_AVX2 1
#define NNOPS_VEC_KERNELS vec_kernels_avx2
#include "activation_vec.inc"

#if defined(__clang__)
#pragma clang attribute pop
#endif
