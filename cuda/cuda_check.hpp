// One checking macro for CUDA runtime status: throws nnops::Error with file:line, the
// expression and CUDA's error string. The _NOTHROW variant is for destructors and deleters.
#pragma once

#include <cuda_runtime.h>

#include <cstdio>
#include <string>

#include "nnops/error.hpp"

namespace nnops::detail {

[[noreturn]] inline void throw_cuda_error(cudaError_t status, const char* expr, const char* file,
                                          int line) {
  throw Error(std::string("nnops: CUDA error ") + cudaGetErrorName(status) + " (" +
              cudaGetErrorString(status) + ") in " + expr + " at " + file + ":" +
              std::to_string(line));
}

}  // namespace nnops::detail

#define NNOPS_CUDA_CHECK(expr)                                                     \
  do {                                                                             \
    const cudaError_t nnops_status_ = (expr);                                      \
    if (nnops_status_ != cudaSuccess) {                                            \
      ::nnops::detail::throw_cuda_error(nnops_status_, #expr, __FILE__, __LINE__); \
    }                                                                              \
  } while (0)

// Reports nothing and never throws: a deleter has no caller to tell. The error is cleared from
// CUDA's last-error slot, so the next launch check does not blame an unrelated kernel (a sticky
// error, which ends the context, still surfaces at the next checked call).
#define NNOPS_CUDA_CHECK_NOTHROW(expr)                                \
  do {                                                                \
    if ((expr) != cudaSuccess) static_cast<void>(cudaGetLastError()); \
  } while (0)
