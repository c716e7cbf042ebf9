// nnops::Error, the one exception type of the library: every failure (bad arguments,
// CUDA errors, out of memory) surfaces as an Error whose message names the function.
#pragma once

#include <stdexcept>
#include <string>

namespace nnops {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace nnops
