// Which GEMM code path runs: the CPU's instruction sets, NNOPS_CPU_ISA, and for BF16 operands on
// AVX512_BF16 the pair kernel or widening (measured once, or NNOPS_CPU_BF16).
#include "isa.hpp"

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <optional>

#include "../cpu_backend.hpp"
#include "kernels.hpp"

namespace nnops::detail {

namespace {

CpuIsa isa_from_env() {
  const char* env = std::getenv("NNOPS_CPU_ISA");
  if (env && std::strcmp(env, "generic") == 0) return CpuIsa::Generic;
  if (env && std::strcmp(env, "avx2") == 0) return CpuIsa::AVX2;
  if (env && std::strcmp(env, "avx512") == 0) return CpuIsa::AVX512;
  return CpuIsa::Auto;
}

// BF16 products on AVX512_BF16: the VDPBF16PS pair kernel where the instruction runs near the
// FP32 FMA's rate, else BF16 operands widened into the FP32 kernel. Measured, not assumed: on an
// AMD EPYC (2 cores, 2026-12-02) VDPBF16PS ran at the FMA's instruction rate (bench_ops
// dpbf16_peak 462 against fma_peak 230 GFLOP/s) and the pair kernel was 1.6-2.0x the widened
// one; on an Intel Xeon it ran at a quarter (165 against 340) and widening was 1.8-2.1x faster.
// NNOPS_CPU_BF16=pairs|widen (or set_cpu_bf16_pairs) overrides the measurement.
enum class Bf16Kernel { Measure, Pairs, Widen };

std::atomic<Bf16Kernel>& bf16_kernel_requested() {
  static std::atomic<Bf16Kernel> kernel{[] {
    const char* env = std::getenv("NNOPS_CPU_BF16");
    if (env && std::strcmp(env, "pairs") == 0) return Bf16Kernel::Pairs;
    if (env && std::strcmp(env, "widen") == 0) return Bf16Kernel::Widen;
    return Bf16Kernel::Measure;
  }()};
  return kernel;
}

}  // namespace

bool bf16_pairs_chosen() {
  switch (bf16_kernel_requested().load()) {
    case Bf16Kernel::Pairs:
      return true;
    case Bf16Kernel::Widen:
      return false;
    case Bf16Kernel::Measure:
      break;
  }
#if defined(__x86_64__) && defined(__GNUC__)
  // The pair kernel wins where a pair's two multiply-adds cost at most 1.5 FMAs' time.
  static const bool pairs_fast = dpbf16_time_per_fma_time() <= 1.5;
  return pairs_fast;
#else
  return false;
#endif
}

namespace {

std::atomic<CpuIsa>& requested_isa() {
  static std::atomic<CpuIsa> isa{isa_from_env()};
  return isa;
}

}  // namespace

bool cpu_supports_avx2() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return supported;
#else
  return false;
#endif
}

void set_cpu_isa(CpuIsa isa) {
  requested_isa().store(isa);
}

bool cpu_supports_avx512() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool supported = __builtin_cpu_supports("avx512f") && cpu_supports_avx2();
  return supported;
#else
  return false;
#endif
}

CpuIsa active_cpu_isa() {
  const CpuIsa isa = requested_isa().load();
  if (isa == CpuIsa::Generic || !cpu_supports_avx2()) return CpuIsa::Generic;
  if (isa == CpuIsa::AVX2 || isa == CpuIsa::AVX2WideTiles) return isa;
  // Auto or AVX512: the best level the CPU has.
  return cpu_supports_avx512() ? CpuIsa::AVX512 : CpuIsa::AVX2;
}

bool cpu_supports_avx512bf16() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool supported = __builtin_cpu_supports("avx512bf16") &&
                                __builtin_cpu_supports("avx512bw") && cpu_supports_avx512();
  return supported;
#else
  return false;
#endif
}

bool cpu_isa_has_avx2() {
  return active_cpu_isa() != CpuIsa::Generic;
}

void set_cpu_bf16_pairs(std::optional<bool> pairs) {
  bf16_kernel_requested().store(!pairs   ? Bf16Kernel::Measure
                                : *pairs ? Bf16Kernel::Pairs
                                         : Bf16Kernel::Widen);
}

}  // namespace nnops::detail
