// Random fills from the counter-based Philox-4x32-10 generator: the same seed and size give the
// same bits on every device, independent of thread counts.
#pragma once

#include <cstdint>

#include "nnops/tensor.hpp"

namespace nnops {

// Uniform in [lo, hi) (F32).
void fill_uniform(Tensor& t, float lo, float hi, uint64_t seed);
// Normal with the given mean and standard deviation (F32), by Box-Muller.
void fill_normal(Tensor& t, float mean, float std, uint64_t seed);

}  // namespace nnops
