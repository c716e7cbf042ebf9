// Rotary position embedding in the "rotate half" layout of Hugging Face's Llama: x is
// [..., T, D] with D even; for i < D/2 the pair (x[i], x[i + D/2]) at position
// pos = position_offset + t is rotated by the angle pos * theta^(-2i/D). Angles and their sines
// are formed in double, so positions up to 1e5 and beyond lose nothing but the float rounding of
// the result. x and y are F32 or BF16 each; y may be x.
#pragma once

#include <cstdint>

#include "nnops/tensor.hpp"

namespace nnops {

void rope_forward(const Tensor& x, int64_t position_offset, float theta, Tensor& y);
// The rotation by the opposite angles (the forward's transpose); dx may be dy.
void rope_backward(const Tensor& dy, int64_t position_offset, float theta, Tensor& dx);

}  // namespace nnops
