// Row kernels compiled once per CPU level and chosen from the active level (set_cpu_isa, so the
// tests run every level the machine has): a body written once as an always-inline function,
// and NNOPS_ISA_VARIANTS(body, ...) defining body_generic, body_avx2 and body_avx512 around it,
// each compiled with its own target attribute, and body_for_active_isa() returning the one to
// call. The lane count changes the order of a row's sums, so bits may differ between levels.
#pragma once

#include "cpu_backend.hpp"

#define NNOPS_ALWAYS_INLINE __attribute__((always_inline)) inline

#if defined(__x86_64__) && defined(__GNUC__)
#define NNOPS_ISA_VARIANTS(body, ret, params, args)             \
  ret body##_generic params {                                   \
    return body args;                                           \
  }                                                             \
  __attribute__((target("avx2,fma"))) ret body##_avx2 params {  \
    return body args;                                           \
  }                                                             \
  __attribute__((target("avx512f"))) ret body##_avx512 params { \
    return body args;                                           \
  }                                                             \
  decltype(&body##_generic) body##_for_active_isa() {           \
    switch (::nnops::detail::active_cpu_isa()) {                \
      case ::nnops::detail::CpuIsa::AVX512:                     \
        return body##_avx512;                                   \
      case ::nnops::detail::CpuIsa::AVX2:                       \
      case ::nnops::detail::CpuIsa::AVX2WideTiles:              \
        return body##_avx2;                                     \
      default:                                                  \
        return body##_generic;                                  \
    }                                                           \
  }
#else
#define NNOPS_ISA_VARIANTS(body, ret, params, args)   \
  ret body##_generic params {                         \
    return body args;                                 \
  }                                                   \
  decltype(&body##_generic) body##_for_active_isa() { \
    return body##_generic;                            \
  }
#endif
