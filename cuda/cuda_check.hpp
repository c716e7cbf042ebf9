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

// Reports nothing and never throws: a deleter has no caller to tell. The sticky error (if any)
// surfaces at the next checked call.
#define NNOPS_CUDA_CHECK_NOTHROW(expr) static_cast<void>(expr)
