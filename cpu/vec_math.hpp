// Vectorizable exp, erf and tanh for the CPU backend, written once over a lane type V: float
// (the scalar form) or a GCC vector of floats (AVX2: 8 lanes; AVX-512: 16 lanes). Polynomials with
// range reduction in the manner of Cephes and SLEEF; coefficients fitted here (least squares on
// Chebyshev nodes, relative error) and checked by tests/test_vec_math.cpp over a sweep of the whole
// float range (bound asserted; largest error seen over 70 million floats, scalar and AVX2 alike):
//   exp   <= 1.5 ulp (seen 1.00; subnormal results count ulps of 2^-149)
//   erf   <= 3 ulp   (seen 2.42, near |x| = 0.47 where the small-argument polynomial rounds)
//   tanh  <= 2 ulp   (seen 1.30)
// NaN propagates; +-inf and the saturation points give exactly what libm gives.
// Everything here has internal linkage: a file compiled for AVX2 must not lend its copies to a
// file compiled for baseline x86-64.
#pragma once

#include <cstdint>
#include <cstring>
#if defined(NNOPS_VEC_MATH_AVX2) || defined(NNOPS_VEC_MATH_AVX512)
#include <immintrin.h>
#endif

namespace nnops::detail {
namespace {

// Lane traits: the matching integer type and the few operations GCC's vector extensions spell
// differently from scalars.
template <class V>
struct Lanes;

template <>
struct Lanes<float> {
  using I = int32_t;
  static float from_bits(I i) {
    float x;
    std::memcpy(&x, &i, 4);
    return x;
  }
  static I to_int(float x) { return static_cast<I>(x); }
  static float to_float(I i) { return static_cast<float>(i); }
  static float splat(float x) { return x; }
  static float select(bool m, float a, float b) { return m ? a : b; }
  static float lookup8(const float* table, I i) { return table[i]; }
};

// 8-lane vectors, for the file that defines NNOPS_VEC_MATH_AVX2 (compiled for AVX2).
#if defined(__GNUC__) && defined(NNOPS_VEC_MATH_AVX2)
typedef float F8 __attribute__((vector_size(32)));
typedef int32_t I8 __attribute__((vector_size(32)));

template <>
struct Lanes<F8> {
  using I = I8;
  static F8 from_bits(I i) { return (F8)i; }  // a vector cast reinterprets the bits
  static I to_int(F8 x) { return __builtin_convertvector(x, I8); }
  static F8 to_float(I8 i) { return __builtin_convertvector(i, F8); }
  static F8 splat(float x) { return F8{} + x; }
  static F8 select(I8 m, F8 a, F8 b) { return m ? a : b; }
  // table[i] per lane, i in [0, 8): one vpermps.
  static F8 lookup8(const float* table, I8 i) {
    return (F8)_mm256_permutevar8x32_ps(_mm256_loadu_ps(table), (__m256i)i);
  }
};
#define NNOPS_HAVE_F8 1
#endif

// 16-lane vectors, for the files that define NNOPS_VEC_MATH_WIDE (compiled for AVX-512F, or
// for AVX2 where GCC splits each vector in two halves).
#if defined(__GNUC__) && defined(NNOPS_VEC_MATH_WIDE)
typedef float F16 __attribute__((vector_size(64)));
typedef int32_t I16 __attribute__((vector_size(64)));

template <>
struct Lanes<F16> {
  using I = I16;
  static F16 from_bits(I i) { return (F16)i; }
  static I to_int(F16 x) { return __builtin_convertvector(x, I16); }
  static F16 to_float(I16 i) { return __builtin_convertvector(i, F16); }
  static F16 splat(float x) { return F16{} + x; }
  static F16 select(I16 m, F16 a, F16 b) { return m ? a : b; }
  // table[i] per lane, i in [0, 8), from a table padded to 16 floats: one vpermps on AVX-512;
  // lane by lane where the 16 lanes are compiled for AVX2 (tests only).
  static F16 lookup8(const float* table, I16 i) {
#ifdef NNOPS_VEC_MATH_AVX512
    // The masked form with every lane set: the same vpermps, without the unmasked intrinsic's
    // undefined pass-through value, which GCC 12 reports as maybe uninitialized.
    const __m512 t = _mm512_loadu_ps(table);
    return (F16)_mm512_mask_permutexvar_ps(t, 0xFFFF, (__m512i)i, t);
#else
    F16 r;
    for (int j = 0; j < 16; ++j) r[j] = table[i[j]];
    return r;
#endif
  }
};
#define NNOPS_HAVE_F16 1
#endif

// x rounded to the nearest integer (ties to even) for |x| < 2^22, still as a float.
template <class V>
inline V round_nearest(V x) {
  const V magic = Lanes<V>::splat(12582912.0f);  // 1.5 * 2^23
  return (x + magic) - magic;
}

// e^xc / 2^n for n = round(xc / ln 2): xc - n ln 2 (in two parts) into the polynomial, the
// part vexp and vexp_nonpositive share.
template <class V>
inline V exp_reduced(V xc, V n) {
  using L = Lanes<V>;
  V r = xc - n * L::splat(0.693359375f);
  r = r - n * L::splat(-2.12194440e-4f);
  const V z = r * r;
  V p = L::splat(1.9875691500e-4f);
  p = p * r + L::splat(1.3981999507e-3f);
  p = p * r + L::splat(8.3334519073e-3f);
  p = p * r + L::splat(4.1665795894e-2f);
  p = p * r + L::splat(1.6666665459e-1f);
  p = p * r + L::splat(5.0000001201e-1f);
  return p * z + r + L::splat(1.0f);
}

// e^x. x = n ln2 + r with |r| <= ln2/2 (ln2 in two parts, so n ln2 is exact), e^r by Cephes'
// degree-7 polynomial, and 2^n applied in two factors so that subnormal results round once.
template <class V>
inline V vexp(V x) {
  using L = Lanes<V>;
  using I = typename L::I;
  const V hi = L::splat(88.72283935546875f), lo = L::splat(-103.97208404541016f);
  // Clamped (and NaN replaced by 0) so the integer conversion below stays defined.
  V xc = L::select(x > hi, hi, x);
  xc = L::select(xc < lo, lo, xc);
  xc = L::select(x != x, L::splat(0.0f), xc);
  const V n = round_nearest(xc * L::splat(1.44269504088896341f));
  V y = exp_reduced(xc, n);
  const I ni = L::to_int(n);
  const I n1 = ni >> 1, n2 = ni - n1;  // each within the normal exponent range
  y = y * L::from_bits((n1 + 127) << 23);
  y = y * L::from_bits((n2 + 127) << 23);
  y = L::select(x > hi, L::splat(__builtin_inff()), y);
  y = L::select(x < lo, L::splat(0.0f), y);
  return L::select(x != x, x, y);
}

// Evaluates c[0] + c[1] t + ... + c[N-1] t^(N-1) by Horner's rule.
template <class V, int N>
inline V poly(V t, const float (&c)[N]) {
  V p = Lanes<V>::splat(c[N - 1]);
  for (int i = N - 2; i >= 0; --i) p = p * t + Lanes<V>::splat(c[i]);
  return p;
}

// x*x as hi + lo exactly (Dekker's product; no fused multiply-add needed).
template <class V>
inline void exact_square(V x, V& hi, V& lo) {
  using L = Lanes<V>;
  const V c = x * L::splat(4097.0f);
  const V xh = c - (c - x), xl = x - xh;
  hi = x * x;
  lo = ((xh * xh - hi) + L::splat(2.0f) * xh * xl) + xl * xl;
}

// erf(x). |x| < 1: x P(x^2); 1 <= |x| < 4: 1 - e^(-x^2) R(1/|x|), with e^(-x^2) from the exact
// square (e^(-hi) (1 - lo)); beyond 4 erf rounds to +-1 in float.
template <class V>
inline V verf(V x) {
  using L = Lanes<V>;
  static constexpr float kSmall[] = {1.128379167e+00f,  -3.761262884e-01f, 1.128361243e-01f,
                                     -2.685480853e-02f, 5.190053574e-03f,  -8.024354100e-04f,
                                     7.898210124e-05f};
  // R(x) = erfc(x) e^(x^2) in t = (1/x - 0.625) / 0.375, for x in [1, 4].
  static constexpr float kTail[] = {3.059529928e-01f, 1.433564133e-01f,  -2.424304016e-02f,
                                    2.308036585e-03f, 4.615784242e-04f,  -3.481706499e-04f,
                                    1.196118551e-04f, -2.800460924e-05f, 2.475176379e-06f,
                                    3.783946049e-06f, -2.101726228e-06f};
  const V a = L::select(x < L::splat(0.0f), -x, x);
  const V small = a * poly(a * a, kSmall);
  // The tail on a clamped argument, so the lanes that take the small branch compute finite junk.
  const V at = L::select(a < L::splat(1.0f), L::splat(1.0f), a);
  const V t = L::splat(1.0f) / at * L::splat(1.0f / 0.375f) - L::splat(0.625f / 0.375f);
  V hi, lo;
  exact_square(at, hi, lo);
  const V erfc = vexp(-hi) * (L::splat(1.0f) - lo) * poly(t, kTail);
  V y = L::select(a < L::splat(1.0f), small, L::splat(1.0f) - erfc);
  y = L::select(a >= L::splat(4.0f), L::splat(1.0f), y);
  y = L::select(x < L::splat(0.0f), -y, y);
  return L::select(x != x, x, y);
}

// tanh(x). |x| < 0.625: x + x^3 P(x^2) (no cancellation near 0); else 1 - 2 / (e^(2|x|) + 1),
// which reaches exactly 1 once e^(2|x|) overflows the float range.
template <class V>
inline V vtanh(V x) {
  using L = Lanes<V>;
  static constexpr float kSmall[] = {-3.333333326e-01f, 1.333330958e-01f,  -5.396022702e-02f,
                                     2.177492766e-02f,  -8.359901955e-03f, 2.307968084e-03f};
  const V a = L::select(x < L::splat(0.0f), -x, x);
  const V a2 = a * a;
  const V small = a + a * a2 * poly(a2, kSmall);
  const V large = L::splat(1.0f) - L::splat(2.0f) / (vexp(a + a) + L::splat(1.0f));
  V y = L::select(a < L::splat(0.625f), small, large);
  y = L::select(x < L::splat(0.0f), -y, y);
  return L::select(x != x, x, y);
}

// The standard normal CDF, Phi(x) = (1 + erf(x / sqrt 2)) / 2, for GELU: 1/2 + sign(x) g(|x|),
// g(a) = erf(a / sqrt 2) / 2 by a degree-6 polynomial on each of 8 intervals of width 0.7 over
// [0, 5.6) (in a minus the interval's centre, coefficients picked per lane by a table lookup:
// one permute each), and 1/2 beyond, where 1/2 - g < 1e-8. Coefficients fitted here (least
// squares on Chebyshev nodes per interval). Absolute error <= 1.2e-7 over the floats (seen
// 7.3e-8, about one ulp of Phi near 1), against erf's exponential, division and two
// polynomials: a quarter of the work, and GELU's absolute bound allows it (GELU = x Phi(x)).
template <class V>
inline V vnormal_cdf(V x) {
  using L = Lanes<V>;
  using I = typename L::I;
  static constexpr float kWidth = 0.7f, kInvWidth = 1.42857146f, kEnd = 5.6f;
  // Rows padded to 16 floats, so AVX-512 loads one whole register.
  alignas(64) static constexpr float kCoeff[7][16] = {
      {1.368306577e-01f, 3.531409502e-01f, 4.599408507e-01f, 4.928571880e-01f, 4.991836548e-01f,
       4.999409318e-01f, 4.999973178e-01f, 4.999999106e-01f, 0, 0, 0, 0, 0, 0, 0, 0},
      {3.752402067e-01f, 2.298822999e-01f, 8.627735823e-02f, 1.983730122e-02f, 2.794250380e-03f,
       2.411323803e-04f, 1.274906845e-05f, 4.130320406e-07f, 0, 0, 0, 0, 0, 0, 0, 0},
      {-6.566692889e-02f, -1.206880882e-01f, -7.549273223e-02f, -2.430075221e-02f,
       -4.400941543e-03f, -4.641695414e-04f, -2.900146683e-05f, -1.083921120e-06f, 0, 0, 0, 0, 0, 0,
       0, 0},
      {-5.486956611e-02f, 3.916779999e-03f, 2.965534292e-02f, 1.654290408e-02f, 4.155815113e-03f,
       5.551156355e-04f, 4.174584683e-05f, 1.815686119e-06f, 0, 0, 0, 0, 0, 0, 0, 0},
      {1.574088819e-02f, 1.908229291e-02f, -3.898522700e-04f, -6.080564577e-03f, -2.539429814e-03f,
       -4.572662001e-04f, -4.272886144e-05f, -2.210209686e-06f, 0, 0, 0, 0, 0, 0, 0, 0},
      {6.976555102e-03f, -4.426344298e-03f, -4.270671867e-03f, 4.408610403e-04f, 9.677532362e-04f,
       2.750203421e-04f, 3.449387441e-05f, 2.249486897e-06f, 0, 0, 0, 0, 0, 0, 0, 0},
      {-2.442837227e-03f, -1.720319153e-03f, 1.266027917e-03f, 6.113529089e-04f, -1.657672256e-04f,
       -1.119972367e-04f, -1.974184852e-05f, -1.606690148e-06f, 0, 0, 0, 0, 0, 0, 0, 0}};
  const V a = L::select(x < L::splat(0.0f), -x, x);
  // Beyond the table (and NaN) the lookup runs on a point of the last interval; the result is
  // replaced below.
  const V ac = L::select(a < L::splat(kEnd), a, L::splat(5.0f));
  const I i = L::to_int(ac * L::splat(kInvWidth));
  const I last = i * 0 + 7;
  const I idx = i < last ? i : last;  // kept in the table whatever the rounding of ac / 0.7
  const V t = ac - (L::to_float(idx) * L::splat(kWidth) + L::splat(kWidth / 2));
  V g = L::lookup8(kCoeff[6], idx);
  for (int j = 5; j >= 0; --j) g = g * t + L::lookup8(kCoeff[j], idx);
  g = L::select(a < L::splat(kEnd), g, L::splat(0.5f));
  const V y = L::splat(0.5f) + L::select(x < L::splat(0.0f), -g, g);
  return L::select(x != x, x, y);
}

// e^x for x <= 0, for vsigmoid: vexp without its overflow side and NaN handling (a NaN lane
// gives a finite value, which vsigmoid replaces), and 2^n applied as 2^(n + 64) times 2^-64
// instead of split in two halves: about a third fewer operations, the same results.
template <class V>
inline V vexp_nonpositive(V x) {
  using L = Lanes<V>;
  const V lo = L::splat(-103.97208404541016f);
  const V xc = L::select(x > lo, x, lo);  // NaN compares false: clamped too
  const V n = round_nearest(xc * L::splat(1.44269504088896341f));
  V y = exp_reduced(xc, n);
  // n in [-150, 0]: 2^(n + 64) is a normal float, and the product with 2^-64 rounds once.
  y = y * L::from_bits((L::to_int(n) + (127 + 64)) << 23);
  y = y * L::splat(5.42101086242752217e-20f);  // 2^-64
  return L::select(x < lo, L::splat(0.0f), y);
}

// 1 / (1 + e^-x) without overflow: the exponential is only taken of -|x|. One division: e^-|x|
// / (1 + e^-|x|) as e^-|x| times the reciprocal (one rounding more, for half the divider's time).
template <class V>
inline V vsigmoid(V x) {
  using L = Lanes<V>;
  const V a = L::select(x < L::splat(0.0f), -x, x);
  const V e = vexp_nonpositive(-a);
  const V one = L::splat(1.0f);
  const V r = one / (one + e);
  const V y = L::select(x >= L::splat(0.0f), r, e * r);
  return L::select(x != x, x, y);
}

}  // namespace
}  // namespace nnops::detail
