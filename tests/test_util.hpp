// Shared test helpers: device parameterisation (CUDA cases skip without a usable GPU), seeded
// random inputs, poisoned outputs, and tolerance checks that report the first mismatches.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <functional>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <tuple>
#include <vector>

#include "../cpu/cpu_backend.hpp"
#include "nnops/cuda.hpp"
#include "nnops/nnops.hpp"

namespace nnops::test {

constexpr double kEps32 = 5.9604644775390625e-08;  // unit roundoff of float, 2^-24

inline std::vector<float> random_floats(size_t n, uint32_t seed, float lo = -1.0f,
                                        float hi = 1.0f) {
  std::mt19937 gen(seed);
  std::uniform_real_distribution<float> dist(lo, hi);
  std::vector<float> v(n);
  for (auto& x : v) x = dist(gen);
  return v;
}

inline std::vector<double> to_double(const std::vector<float>& v) {
  return std::vector<double>(v.begin(), v.end());
}

inline int64_t numel_of(const Shape& shape) {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

// The values of an F32 or BF16 tensor as floats (exact either way).
inline std::vector<float> as_floats(const Tensor& t) {
  std::vector<float> out;
  if (t.dtype() == DType::BF16) {
    for (bf16 v : t.to_vector<bf16>()) out.push_back(v.to_float());
  } else {
    for (float v : t.to_vector<float>()) out.push_back(v);
  }
  return out;
}

// The bit patterns of a BF16 tensor (for exact comparisons).
inline std::vector<uint16_t> bf16_bits(const Tensor& t) {
  std::vector<uint16_t> out;
  for (bf16 v : t.to_vector<bf16>()) out.push_back(v.bits);
  return out;
}

// An output tensor full of NaN, so a kernel that skips an element is caught.
inline Tensor poisoned(const Shape& shape, Device device) {
  const auto n = static_cast<size_t>(numel_of(shape));
  return Tensor::from_vector(std::vector<float>(n, std::numeric_limits<float>::quiet_NaN()), shape,
                             device);
}

inline Tensor on(Device device, const std::vector<float>& v, const Shape& shape) {
  return Tensor::from_vector(v, shape, device);
}

// max |out - ref| <= atol + rtol * |ref|, element by element; NaN must match NaN.
inline ::testing::AssertionResult all_close(const std::vector<float>& out,
                                            const std::vector<double>& ref, double atol,
                                            double rtol) {
  if (out.size() != ref.size()) {
    return ::testing::AssertionFailure() << "size " << out.size() << " vs reference " << ref.size();
  }
  std::ostringstream bad;
  int failures = 0;
  for (size_t i = 0; i < out.size(); ++i) {
    const double o = out[i], r = ref[i];
    bool ok;
    if (std::isnan(r)) {
      ok = std::isnan(o);
    } else if (std::isinf(r)) {
      ok = o == r;
    } else {
      ok = std::isfinite(o) && std::fabs(o - r) <= atol + rtol * std::fabs(r);
    }
    if (!ok) {
      if (failures < 5) bad << "\n  [" << i << "] got " << o << " expected " << r;
      ++failures;
    }
  }
  if (failures == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << failures << " of " << out.size() << " elements outside atol " << atol << " + rtol "
         << rtol << bad.str();
}

inline ::testing::AssertionResult all_close(const Tensor& out, const std::vector<double>& ref,
                                            double atol, double rtol) {
  return all_close(out.to_vector<float>(), ref, atol, rtol);
}

// |out - ref| <= bound, element by element, with a bound per element (e.g. the error bound of
// a dot product, gamma_k * sum |a_i b_i|).
inline ::testing::AssertionResult all_within(const Tensor& t, const std::vector<double>& ref,
                                             const std::vector<double>& bound) {
  const std::vector<float> out = t.to_vector<float>();
  std::ostringstream bad;
  int failures = 0;
  for (size_t i = 0; i < out.size() && i < ref.size(); ++i) {
    if (!(std::fabs(out[i] - ref[i]) <= bound[i])) {
      if (failures < 5)
        bad << "\n  [" << i << "] got " << out[i] << " expected " << ref[i] << " (bound "
            << bound[i] << ")";
      ++failures;
    }
  }
  if (out.size() != ref.size())
    return ::testing::AssertionFailure() << "size " << out.size() << " vs " << ref.size();
  if (failures == 0) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure()
         << failures << " of " << out.size() << " elements outside their bound" << bad.str();
}

// The call must throw nnops::Error whose message starts with `fn` and contains `needle`.
inline ::testing::AssertionResult throws_error(const std::function<void()>& call,
                                               const std::string& fn,
                                               const std::string& needle = "") {
  try {
    call();
  } catch (const Error& e) {
    const std::string msg = e.what();
    if (msg.rfind(fn, 0) != 0) {
      return ::testing::AssertionFailure() << "message does not start with '" << fn << "': " << msg;
    }
    if (!needle.empty() && msg.find(needle) == std::string::npos) {
      return ::testing::AssertionFailure() << "message lacks '" << needle << "': " << msg;
    }
    return ::testing::AssertionSuccess();
  } catch (const std::exception& e) {
    return ::testing::AssertionFailure() << "threw a non-nnops exception: " << e.what();
  }
  return ::testing::AssertionFailure() << "did not throw";
}

// Parameterised over devices; CUDA cases skip (never pass) when no GPU is usable.
class DeviceTest : public ::testing::TestWithParam<Device> {
 protected:
  void SetUp() override {
    if (GetParam() == Device::CUDA && !cuda_available()) {
      GTEST_SKIP() << "no usable CUDA device (or nnops built without CUDA)";
    }
  }
  Device device() const { return GetParam(); }
};

inline std::string device_name(const ::testing::TestParamInfo<Device>& info) {
  return info.param == Device::CPU ? "CPU" : "CUDA";
}

// Runs `body` once per CPU code path this machine has (portable, AVX2, AVX-512, and the AVX-512
// code compiled for AVX2), or once on
// CUDA, so every fast path meets the same checks.
template <class Body>
void for_each_cpu_isa(Device device, Body body) {
  if (device != Device::CPU) return body();
  using detail::CpuIsa;
  for (CpuIsa isa : {CpuIsa::Generic, CpuIsa::AVX2, CpuIsa::AVX2WideTiles, CpuIsa::AVX512}) {
    if (isa != CpuIsa::Generic && !detail::cpu_supports_avx2()) continue;
    if (isa == CpuIsa::AVX512 && !detail::cpu_supports_avx512()) continue;
    detail::set_cpu_isa(isa);
    SCOPED_TRACE(isa == CpuIsa::AVX512          ? "cpu isa avx512"
                 : isa == CpuIsa::AVX2WideTiles ? "cpu isa avx512 code on avx2"
                 : isa == CpuIsa::AVX2          ? "cpu isa avx2"
                                                : "cpu isa generic");
    body();
  }
  detail::set_cpu_isa(detail::CpuIsa::Auto);
}

// The GEMM code paths: every CPU micro-kernel (the AVX-512 kernel's tiles also compiled for
// AVX2, so machines without AVX-512 test its code) and CUDA, with the default kernels and with
// the multistage mma.sync ones (cuda::GemmKernel::Mma; F32 without TF32 is SIMT in both), and
// with the sm_90a warpgroup-MMA one (cuda::GemmKernel::Wgmma: BF16 on compute capability 9.0;
// elsewhere, and for TF32, it runs the mma.sync kernels), and with its TMA form
// (cuda::GemmKernel::WgmmaTma: the K-major BF16 products; the others as CudaWgmma).
enum class GemmPath {
  CpuGeneric,
  CpuAvx2,
  CpuAvx512,
  CpuWideOnAvx2,
  Cuda,
  CudaMma,
  CudaWgmma,
  CudaWgmmaTma
};

inline bool is_cuda_path(GemmPath p) {
  return p == GemmPath::Cuda || p == GemmPath::CudaMma || p == GemmPath::CudaWgmma ||
         p == GemmPath::CudaWgmmaTma;
}

inline std::string gemm_path_name(GemmPath p) {
  switch (p) {
    case GemmPath::CpuGeneric:
      return "CpuGeneric";
    case GemmPath::CpuAvx2:
      return "CpuAvx2";
    case GemmPath::CpuAvx512:
      return "CpuAvx512";
    case GemmPath::CpuWideOnAvx2:
      return "CpuWideOnAvx2";
    case GemmPath::CudaMma:
      return "CudaMma";
    case GemmPath::CudaWgmma:
      return "CudaWgmma";
    case GemmPath::CudaWgmmaTma:
      return "CudaWgmmaTma";
    default:
      return "Cuda";
  }
}

// Selects the path for the calling test; returns why this machine cannot run it (empty: it can).
inline std::string select_gemm_path(GemmPath p) {
  switch (p) {
    case GemmPath::Cuda:
      return cuda_available() ? "" : "no usable CUDA device";
    case GemmPath::CudaMma:
      if (!cuda_available()) return "no usable CUDA device";
      cuda::set_gemm_kernel(cuda::GemmKernel::Mma);
      return "";
    case GemmPath::CudaWgmma:
      if (!cuda_available()) return "no usable CUDA device";
      cuda::set_gemm_kernel(cuda::GemmKernel::Wgmma);
      return "";
    case GemmPath::CudaWgmmaTma:
      if (!cuda_available()) return "no usable CUDA device";
      cuda::set_gemm_kernel(cuda::GemmKernel::WgmmaTma);
      return "";
    case GemmPath::CpuGeneric:
      detail::set_cpu_isa(detail::CpuIsa::Generic);
      return "";
    case GemmPath::CpuAvx512:
      if (!detail::cpu_supports_avx512()) return "CPU lacks AVX-512F";
      detail::set_cpu_isa(detail::CpuIsa::AVX512);
      return "";
    default:
      if (!detail::cpu_supports_avx2()) return "CPU lacks AVX2+FMA";
      detail::set_cpu_isa(p == GemmPath::CpuAvx2 ? detail::CpuIsa::AVX2
                                                 : detail::CpuIsa::AVX2WideTiles);
      return "";
  }
}

inline auto all_gemm_paths() {
  return ::testing::Values(GemmPath::CpuGeneric, GemmPath::CpuAvx2, GemmPath::CpuAvx512,
                           GemmPath::CpuWideOnAvx2, GemmPath::Cuda, GemmPath::CudaMma,
                           GemmPath::CudaWgmma, GemmPath::CudaWgmmaTma);
}

// A test on one GEMM path and transpose case (trans_a, trans_b): selects the CPU code path, or
// skips what the machine lacks.
class GemmPathFixture : public ::testing::TestWithParam<std::tuple<GemmPath, bool, bool>> {
 protected:
  void SetUp() override {
    const std::string missing = select_gemm_path(path());
    if (!missing.empty()) GTEST_SKIP() << missing;
  }
  void TearDown() override {
    detail::set_cpu_isa(detail::CpuIsa::Auto);
    cuda::set_gemm_kernel(cuda::GemmKernel::Default);
  }
  GemmPath path() const { return std::get<0>(GetParam()); }
  Device device() const { return is_cuda_path(path()) ? Device::CUDA : Device::CPU; }
  bool ta() const { return std::get<1>(GetParam()); }
  bool tb() const { return std::get<2>(GetParam()); }
};

inline std::string gemm_case_name(
    const ::testing::TestParamInfo<std::tuple<GemmPath, bool, bool>>& info) {
  return gemm_path_name(std::get<0>(info.param)) + (std::get<1>(info.param) ? "_At" : "_A") +
         (std::get<2>(info.param) ? "Bt" : "B");
}

#define NNOPS_INSTANTIATE_DEVICES(Suite)                                                   \
  INSTANTIATE_TEST_SUITE_P(Devices, Suite,                                                 \
                           ::testing::Values(::nnops::Device::CPU, ::nnops::Device::CUDA), \
                           ::nnops::test::device_name)

// BLIS's cheap check for large sizes: ||c t - a (b t)|| / ||a (b t)|| for a random vector t,
// with a, b, c as laid out for op(a) = a or a^T, op(b) = b or b^T.
inline double vector_probe_error(const std::vector<float>& a, const std::vector<float>& b,
                          const std::vector<float>& c, int64_t m, int64_t n, int64_t k, bool ta,
                          bool tb, uint32_t seed) {
  const auto t = random_floats(n, seed);
  std::vector<double> bt(k, 0.0);
  for (int64_t p = 0; p < k; ++p)
    for (int64_t j = 0; j < n; ++j) bt[p] += double(tb ? b[j * k + p] : b[p * n + j]) * t[j];
  double err2 = 0, ref2 = 0;
  for (int64_t i = 0; i < m; ++i) {
    double abt = 0, ct = 0;
    for (int64_t p = 0; p < k; ++p) abt += double(ta ? a[p * m + i] : a[i * k + p]) * bt[p];
    for (int64_t j = 0; j < n; ++j) ct += double(c[i * n + j]) * t[j];
    err2 += (ct - abt) * (ct - abt);
    ref2 += abt * abt;
  }
  return std::sqrt(err2 / ref2);
}

}  // namespace nnops::test
