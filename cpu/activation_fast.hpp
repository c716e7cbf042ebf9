// Entry points of the CPU's AVX2+FMA element-wise paths (cpu/activation_avx2.cpp). Call them
// only when cpu_supports_avx2() and the AVX2 level is active.
#pragma once

#include <cstdint>

namespace nnops::detail {

// The activations with transcendental functions (ReLU and LeakyReLU vectorize without help).
// Its own enum: this header must not pull the library's headers (and their inline functions)
// into the AVX2 file.
enum class FastActivation { GELU, GELUTanh, SiLU, Sigmoid, Tanh };
void activation_forward_avx2(float* y, const float* x, int64_t n, FastActivation a);
void activation_backward_avx2(float* dx, const float* x, const float* dy, int64_t n,
                              FastActivation a);

// The raw functions, for tests and benchmarks.
enum class VecFunction { Exp, Erf, Tanh };
void vec_math_avx2(VecFunction f, float* y, const float* x, int64_t n);

// max over c of scale * x[c] (NaN if any is NaN).
float row_max_avx2(const float* x, int64_t cols, float scale);

// y[c] = exp(x[c] - mx) * inv_sum over a row.
void softmax_row_avx2(float* y, const float* x, int64_t cols, float mx, float inv_sum);

// sum over c of exp(scale * x[c] - mx), added in double per lane, then the lanes in order.
void row_exp_sum_avx2(const float* x, int64_t cols, float scale, float mx, double& sum);

}  // namespace nnops::detail
