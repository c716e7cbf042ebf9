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

// Dropout: element i is kept when the Philox uniform of (seed, i) (the value fill_uniform draws
// on [0, 1)) is >= p, and kept values are multiplied by 1 / (1 - p) (rounded to float, as
// PyTorch); p = 0 is the identity, p = 1 gives zeros, p outside [0, 1] is an error. The same bits
// on every device and thread count. x and y are F32 or BF16 each; y may be x.
void dropout_forward(const Tensor& x, float p, uint64_t seed, Tensor& y);
// The forward's mask and scale, regenerated from the seed, applied to dy; dx may be dy.
void dropout_backward(const Tensor& dy, float p, uint64_t seed, Tensor& dx);

}  // namespace nnops
