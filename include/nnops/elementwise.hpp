// Element-wise helpers trainers need between ops: scaled accumulation (mixing gradients of two
// losses, gradient accumulation) and constant fills.
#pragma once

#include "nnops/tensor.hpp"

namespace nnops {

// y = beta * y + alpha * x (torch: y.mul_(beta).add_(x, alpha=alpha)); with beta == 0, y is
// not read. y may alias x. Each F32 or BF16 (computed in FP32).
void add_scaled(Tensor& y, const Tensor& x, float alpha, float beta = 1.0f);

// Every element of t (F32) becomes value.
void fill(Tensor& t, float value);

}  // namespace nnops
