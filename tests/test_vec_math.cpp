// The CPU's polynomial exp, erf and tanh (cpu/vec_math.hpp) over a sweep of the whole float
// range against double references: the maximum error in ulp of the float result, for the
// portable (scalar) form and for every vector form this CPU runs.
#include <cfloat>
#include <cstdlib>
#include <cstring>

#include "../cpu/activation_fast.hpp"
#include "../cpu/cpu_backend.hpp"
#include "../cpu/vec_math.hpp"
#include "test_util.hpp"

namespace nnops::test {
namespace {

using detail::VecFunction;

// Every float whose bit pattern is a multiple of the stride (both signs), plus the edges.
std::vector<float> sweep(uint32_t stride) {
  std::vector<float> x;
  for (uint64_t b = 0; b <= 0xFFFFFFFFull; b += stride) {
    const uint32_t bits = static_cast<uint32_t>(b);
    float v;
    std::memcpy(&v, &bits, 4);
    x.push_back(v);
  }
  for (float v : {0.0f,
                  -0.0f,
                  FLT_MIN,
                  FLT_TRUE_MIN,
                  -FLT_TRUE_MIN,
                  FLT_MAX,
                  -FLT_MAX,
                  INFINITY,
                  -INFINITY,
                  NAN,
                  88.72283935546875f,
                  88.7228470f,
                  -103.9720840f,
                  -87.33654f,
                  -103.97209f,
                  1.0f,
                  -1.0f,
                  3.92f,
                  4.0f,
                  0.625f,
                  9.01f,
                  1e-30f,
                  -1e-30f})
    x.push_back(v);
  return x;
}

double reference(VecFunction f, double x) {
  return f == VecFunction::Exp ? std::exp(x) : f == VecFunction::Erf ? std::erf(x) : std::tanh(x);
}

// |y - ref| in units of the last place of ref rounded to float (subnormals: 2^-149).
double ulp_error(float y, double ref) {
  if (std::isnan(ref)) return std::isnan(y) ? 0.0 : INFINITY;
  if (ref > FLT_MAX || ref < -FLT_MAX)
    return std::isinf(y) && (y > 0) == (ref > 0) ? 0.0 : INFINITY;
  if (std::isnan(y) || std::isinf(y)) return INFINITY;
  const double a = std::fabs(ref);
  const double ulp = a < FLT_MIN ? std::ldexp(1.0, -149) : std::ldexp(1.0, std::ilogb(a) - 23);
  return std::fabs(y - ref) / ulp;
}

struct Worst {
  double ulps = 0;
  float at = 0;
};

Worst measure(VecFunction f, const std::vector<float>& x, const std::vector<float>& y) {
  Worst w;
  for (size_t i = 0; i < x.size(); ++i) {
    const double e = ulp_error(y[i], reference(f, x[i]));
    if (!(e <= w.ulps)) w = {e, x[i]};
  }
  return w;
}

std::vector<float> portable(VecFunction f, const std::vector<float>& x) {
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    y[i] = f == VecFunction::Exp   ? detail::vexp(x[i])
           : f == VecFunction::Erf ? detail::verf(x[i])
                                   : detail::vtanh(x[i]);
  }
  return y;
}

// The documented bounds of cpu/vec_math.hpp.
double bound(VecFunction f) {
  return f == VecFunction::Exp ? 1.5 : f == VecFunction::Erf ? 3.0 : 2.0;
}
const char* name(VecFunction f) {
  return f == VecFunction::Exp ? "exp" : f == VecFunction::Erf ? "erf" : "tanh";
}

// The vector forms this CPU runs: 8 lanes on AVX2, 16 lanes on AVX-512, and the 16-lane code
// compiled for AVX2 (so machines without AVX-512 check it too).
std::vector<std::pair<const char*, const detail::VecKernels*>> vector_paths() {
  std::vector<std::pair<const char*, const detail::VecKernels*>> paths;
  if (detail::cpu_supports_avx2()) {
    paths.emplace_back("avx2", &detail::vec_kernels_avx2());
    paths.emplace_back("wide-on-avx2", &detail::vec_kernels_wide_on_avx2());
  }
  if (detail::cpu_supports_avx512()) paths.emplace_back("avx512", &detail::vec_kernels_avx512());
  return paths;
}

// Every 997th bit pattern by default (~4.3 million floats); NNOPS_VEC_MATH_STRIDE=61 sweeps
// 70 million, as was done to set the bounds.
uint32_t sweep_stride() {
  const char* env = std::getenv("NNOPS_VEC_MATH_STRIDE");
  return env ? static_cast<uint32_t>(std::strtoul(env, nullptr, 10)) : 997u;
}

TEST(VecMath, WholeFloatRangeWithinTheDocumentedUlps) {
  const std::vector<float> x = sweep(sweep_stride());
  for (VecFunction f : {VecFunction::Exp, VecFunction::Erf, VecFunction::Tanh}) {
    const Worst p = measure(f, x, portable(f, x));
    std::printf("%-5s portable: max %.3f ulp at %.9g\n", name(f), p.ulps, p.at);
    EXPECT_LE(p.ulps, bound(f)) << name(f) << " portable, worst at x = " << p.at;
    for (const auto& [label, kernels] : vector_paths()) {
      std::vector<float> y(x.size());
      kernels->vec_math(f, y.data(), x.data(), static_cast<int64_t>(x.size()));
      const Worst v = measure(f, x, y);
      std::printf("%-5s %-13s max %.3f ulp at %.9g\n", name(f), label, v.ulps, v.at);
      EXPECT_LE(v.ulps, bound(f)) << name(f) << " " << label << ", worst at x = " << v.at;
    }
  }
}

// The normal CDF behind GELU is held to an absolute bound (GELU = x Phi(x) is tested with an
// absolute tolerance): 1.2e-7, two ulp of Phi near 1; the polynomial fit's own error is 5e-8.
TEST(VecMath, NormalCdfWithinItsAbsoluteBound) {
  const std::vector<float> x = sweep(sweep_stride());
  auto worst = [&](const std::vector<float>& y) {
    Worst w;
    for (size_t i = 0; i < x.size(); ++i) {
      const double ref = 0.5 * std::erfc(-static_cast<double>(x[i]) / std::sqrt(2.0));
      const double e = std::isnan(x[i]) ? (std::isnan(y[i]) ? 0.0 : INFINITY)
                                        : std::fabs(static_cast<double>(y[i]) - ref);
      if (!(e <= w.ulps)) w = {e, x[i]};
    }
    return w;
  };
  std::vector<float> y(x.size());
  for (size_t i = 0; i < x.size(); ++i) y[i] = detail::vnormal_cdf(x[i]);
  const Worst p = worst(y);
  std::printf("Phi   portable: max abs error %.3g at %.9g\n", p.ulps, p.at);
  EXPECT_LE(p.ulps, 1.2e-7) << "portable, worst at x = " << p.at;
  for (const auto& [label, kernels] : vector_paths()) {
    kernels->vec_math(VecFunction::NormalCdf, y.data(), x.data(), static_cast<int64_t>(x.size()));
    const Worst v = worst(y);
    std::printf("Phi   %-13s max abs error %.3g at %.9g\n", label, v.ulps, v.at);
    EXPECT_LE(v.ulps, 1.2e-7) << label << ", worst at x = " << v.at;
    for (auto [in, want] : std::vector<std::pair<float, float>>{
             {INFINITY, 1.0f}, {-INFINITY, 0.0f}, {6.0f, 1.0f}, {-6.0f, 0.0f}}) {
      float out;
      kernels->vec_math(VecFunction::NormalCdf, &out, &in, 1);
      EXPECT_EQ(out, want) << "Phi(" << in << ") " << label;
    }
  }
}

TEST(VecMath, SpecialValuesAreExact) {
  for (auto [f, x, want] :
       std::vector<std::tuple<VecFunction, float, float>>{{VecFunction::Exp, 0.0f, 1.0f},
                                                          {VecFunction::Exp, -INFINITY, 0.0f},
                                                          {VecFunction::Exp, INFINITY, INFINITY},
                                                          {VecFunction::Exp, 89.0f, INFINITY},
                                                          {VecFunction::Exp, -104.0f, 0.0f},
                                                          {VecFunction::Erf, 0.0f, 0.0f},
                                                          {VecFunction::Erf, INFINITY, 1.0f},
                                                          {VecFunction::Erf, -INFINITY, -1.0f},
                                                          {VecFunction::Erf, 5.0f, 1.0f},
                                                          {VecFunction::Tanh, INFINITY, 1.0f},
                                                          {VecFunction::Tanh, -INFINITY, -1.0f},
                                                          {VecFunction::Tanh, 20.0f, 1.0f},
                                                          {VecFunction::Tanh, 0.0f, 0.0f}}) {
    EXPECT_EQ(portable(f, {x})[0], want) << name(f) << "(" << x << ")";
    for (const auto& [label, kernels] : vector_paths()) {
      float y;
      kernels->vec_math(f, &y, &x, 1);
      EXPECT_EQ(y, want) << name(f) << "(" << x << ") " << label;
    }
  }
  for (VecFunction f : {VecFunction::Exp, VecFunction::Erf, VecFunction::Tanh}) {
    EXPECT_TRUE(std::isnan(portable(f, {NAN})[0])) << name(f);
  }
}

}  // namespace
}  // namespace nnops::test
