// Entry points of the CPU's vectorized element-wise paths: one table of kernels per code path
// (cpu/activation_vec.inc compiled for AVX2+FMA, for AVX-512, and with AVX-512's 16-lane
// vectors on AVX2 for tests). Call a table only when the CPU has its instruction set.
#pragma once

#include <cstdint>

namespace nnops::detail {

// The activations with transcendental functions (ReLU and LeakyReLU vectorize without help).
// Its own enum: this header must not pull the library's headers (and their inline functions)
// into the files compiled for other instruction sets.
enum class FastActivation { GELU, GELUTanh, SiLU, Sigmoid, Tanh };

// The raw functions, for tests and benchmarks.
enum class VecFunction { Exp, Erf, Tanh, NormalCdf };

struct VecKernels {
  void (*activation_forward)(float* y, const float* x, int64_t n, FastActivation a);
  void (*activation_backward)(float* dx, const float* x, const float* dy, int64_t n,
                              FastActivation a);
  void (*vec_math)(VecFunction f, float* y, const float* x, int64_t n);
  // max over c of scale * x[c] (NaN if any is NaN).
  float (*row_max)(const float* x, int64_t cols, float scale);
  // y[c] = exp(x[c] - mx) * inv_sum over a row.
  void (*softmax_row)(float* y, const float* x, int64_t cols, float mx, float inv_sum);
  // sum over c of exp(scale * x[c] - mx), added in double per lane, then the lanes in order.
  void (*row_exp_sum)(const float* x, int64_t cols, float scale, float mx, double& sum);
};

// The table of the active CPU level, or null on the portable path (cpu/activation.cpp).
const VecKernels* vector_kernels();

const VecKernels& vec_kernels_avx2();          // 8 lanes, AVX2+FMA
const VecKernels& vec_kernels_avx512();        // 16 lanes, AVX-512F
const VecKernels& vec_kernels_wide_on_avx2();  // 16 lanes compiled for AVX2 (tests)

}  // namespace nnops::detail
