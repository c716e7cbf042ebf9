// AVX2+FMA activations: the formulas of include/nnops/detail/activation_math.hpp over 8 lanes,
// with exp, erf and tanh from vec_math.hpp instead of scalar libm calls (which do not vectorize).
// Only entered when the CPU has AVX2 and FMA (see cpu_supports_avx2); this file holds nothing
// with external linkage but the entry points, so no baseline code can pick up an AVX2 copy.
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

constexpr float kInvSqrt2f = 0.7071067811865476f, kInvSqrt2Pif = 0.3989422804014327f;
constexpr float kSqrt2OverPif = 0.7978845608028654f, kTanhCoeff = 0.044715f;

F8 splat(float v) {
  return Lanes<F8>::splat(v);
}

inline F8 forward(FastActivation a, F8 x) {
  const F8 half = splat(0.5f), one = splat(1.0f);
  switch (a) {
    case FastActivation::GELU:
      return half * x * (one + verf(x * splat(kInvSqrt2f)));
    case FastActivation::GELUTanh: {
      const F8 u = splat(kSqrt2OverPif) * (x + splat(kTanhCoeff) * x * x * x);
      return half * x * (one + vtanh(u));
    }
    case FastActivation::SiLU:
      return x * vsigmoid(x);
    case FastActivation::Sigmoid:
      return vsigmoid(x);
    default:  // Tanh
      return vtanh(x);
  }
}

inline F8 backward(FastActivation a, F8 x, F8 dy) {
  const F8 half = splat(0.5f), one = splat(1.0f);
  switch (a) {
    case FastActivation::GELU: {
      const F8 cdf = half * (one + verf(x * splat(kInvSqrt2f)));
      const F8 pdf = vexp(splat(-0.5f) * x * x) * splat(kInvSqrt2Pif);
      return dy * (cdf + x * pdf);
    }
    case FastActivation::GELUTanh: {
      const F8 u = splat(kSqrt2OverPif) * (x + splat(kTanhCoeff) * x * x * x);
      const F8 t = vtanh(u);
      const F8 du = splat(kSqrt2OverPif) * (one + splat(3.0f * kTanhCoeff) * x * x);
      return dy * (half * (one + t) + half * x * (one - t * t) * du);
    }
    case FastActivation::SiLU: {
      const F8 s = vsigmoid(x);
      return dy * s * (one + x * (one - s));
    }
    case FastActivation::Sigmoid: {
      const F8 s = vsigmoid(x);
      return dy * s * (one - s);
    }
    default: {  // Tanh
      const F8 t = vtanh(x);
      return dy * (one - t * t);
    }
  }
}

// Full vectors move with one unaligned load or store; only a row's last partial vector takes
// the padded copy (count < 8: the rest of the lanes are zeros).
F8 load(const float* p, int64_t count) {
  F8 v{};
  if (count == 8) {
    __builtin_memcpy(&v, p, 32);
  } else {
    for (int64_t j = 0; j < count; ++j) v[j] = p[j];
  }
  return v;
}
void store(float* p, F8 v, int64_t count) {
  if (count == 8) {
    __builtin_memcpy(p, &v, 32);
  } else {
    for (int64_t j = 0; j < count; ++j) p[j] = v[j];
  }
}

// One loop per activation: the switch stays outside the loop. Full vectors run in a loop of
// plain unaligned loads and stores; only the last partial vector takes the padded copy.
template <FastActivation A>
void forward_range(float* y, const float* x, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    F8 v;
    __builtin_memcpy(&v, x + i, 32);
    const F8 r = forward(A, v);
    __builtin_memcpy(y + i, &r, 32);
  }
  if (i < n) store(y + i, forward(A, load(x + i, n - i)), n - i);
}
template <FastActivation A>
void backward_range(float* dx, const float* x, const float* dy, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    F8 v, g;
    __builtin_memcpy(&v, x + i, 32);
    __builtin_memcpy(&g, dy + i, 32);
    const F8 r = backward(A, v, g);
    __builtin_memcpy(dx + i, &r, 32);
  }
  if (i < n) store(dx + i, backward(A, load(x + i, n - i), load(dy + i, n - i)), n - i);
}

}  // namespace

void activation_forward_avx2(float* y, const float* x, int64_t n, FastActivation a) {
  switch (a) {
    case FastActivation::GELU:
      return forward_range<FastActivation::GELU>(y, x, n);
    case FastActivation::GELUTanh:
      return forward_range<FastActivation::GELUTanh>(y, x, n);
    case FastActivation::SiLU:
      return forward_range<FastActivation::SiLU>(y, x, n);
    case FastActivation::Sigmoid:
      return forward_range<FastActivation::Sigmoid>(y, x, n);
    case FastActivation::Tanh:
      return forward_range<FastActivation::Tanh>(y, x, n);
  }
}

void activation_backward_avx2(float* dx, const float* x, const float* dy, int64_t n,
                              FastActivation a) {
  switch (a) {
    case FastActivation::GELU:
      return backward_range<FastActivation::GELU>(dx, x, dy, n);
    case FastActivation::GELUTanh:
      return backward_range<FastActivation::GELUTanh>(dx, x, dy, n);
    case FastActivation::SiLU:
      return backward_range<FastActivation::SiLU>(dx, x, dy, n);
    case FastActivation::Sigmoid:
      return backward_range<FastActivation::Sigmoid>(dx, x, dy, n);
    case FastActivation::Tanh:
      return backward_range<FastActivation::Tanh>(dx, x, dy, n);
  }
}

void vec_math_avx2(VecFunction f, float* y, const float* x, int64_t n) {
  for (int64_t i = 0; i < n; i += 8) {
    const int64_t c = n - i < 8 ? n - i : 8;
    const F8 v = load(x + i, c);
    store(y + i, f == VecFunction::Exp ? vexp(v) : f == VecFunction::Erf ? verf(v) : vtanh(v), c);
  }
}

void softmax_row_avx2(float* y, const float* x, int64_t cols, float mx, float inv_sum) {
  for (int64_t c = 0; c < cols; c += 8) {
    const int64_t k = cols - c < 8 ? cols - c : 8;
    store(y + c, vexp(load(x + c, k) - splat(mx)) * splat(inv_sum), k);
  }
}

float row_max_avx2(const float* x, int64_t cols, float scale) {
  F8 m = splat(-__builtin_inff());
  for (int64_t c = 0; c < cols; c += 8) {
    const int64_t k = cols - c < 8 ? cols - c : 8;
    F8 v = load(x + c, k) * splat(scale);
    if (k < 8) {
      for (int64_t j = k; j < 8; ++j) v[j] = -__builtin_inff();  // padding never wins
    }
    m = (v != v || v > m) ? v : m;  // a NaN is kept, as the scalar path's exp(NaN) would be
  }
  float r = m[0];
  for (int j = 1; j < 8; ++j) r = (m[j] != m[j] || m[j] > r) ? m[j] : r;
  return r;
}

// Row softmax pieces: the max and sum(exp(scale * x - max)) with per-lane double sums.
void row_exp_sum_avx2(const float* x, int64_t cols, float scale, float mx, double& sum) {
  typedef double D4 __attribute__((vector_size(32)));
  D4 lo{}, hi{};
  for (int64_t c = 0; c < cols; c += 8) {
    const int64_t k = cols - c < 8 ? cols - c : 8;
    F8 e = vexp(load(x + c, k) * splat(scale) - splat(mx));
    if (k < 8) {
      for (int64_t j = k; j < 8; ++j) e[j] = 0.0f;  // padding adds nothing
    }
    lo += __builtin_convertvector(__builtin_shufflevector(e, e, 0, 1, 2, 3), D4);
    hi += __builtin_convertvector(__builtin_shufflevector(e, e, 4, 5, 6, 7), D4);
  }
  const D4 s = lo + hi;
  sum = (s[0] + s[1]) + (s[2] + s[3]);
}

#endif

}  // namespace nnops::detail

#if defined(__clang__)
#pragma clang attribute pop
#endif
