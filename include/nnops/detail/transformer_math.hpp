// Per-element formulas of the transformer ops, shared by the CPU and CUDA backends
// (SEMANTICS.md, transformer ops).
#pragma once

#include <cmath>
#include <cstdint>

#include "nnops/activation.hpp"
#include "nnops/detail/activation_math.hpp"
#include "nnops/detail/hd.hpp"
#include "nnops/detail/philox.hpp"

namespace nnops::detail {

// RoPE's angle for pair i of a D-wide row at position pos: pos * theta^(-2i/D), in double (at
// pos = 1e5 a float angle would be off by ~4e-3 rad, far beyond the result's rounding).
NNOPS_HD inline double rope_angle(int64_t pos, int64_t i, int64_t d, double theta) {
  return static_cast<double>(pos) * pow(theta, -2.0 * static_cast<double>(i) / d);
}

// The rotation of one pair by angle a (inverse: by -a), in double, rounded once.
NNOPS_HD inline void rope_rotate(float x0, float x1, double cos_a, double sin_a, bool inverse,
                                 float& y0, float& y1) {
  const double s = inverse ? -sin_a : sin_a;
  y0 = static_cast<float>(x0 * cos_a - x1 * s);
  y1 = static_cast<float>(x1 * cos_a + x0 * s);
}

// Attention: the keys query i sees, all tk or, when causal (top-left aligned, also for Tq != Tk),
// the keys j <= i.
NNOPS_HD inline int64_t attention_visible_keys(bool causal, int64_t tk, int64_t i) {
  return causal ? (i + 1 < tk ? i + 1 : tk) : tk;
}

// Dropout: whether element i survives, from the uniform fill_uniform draws for (seed, i).
NNOPS_HD inline bool dropout_keeps(const Philox4& block, int64_t i, float p) {
  return bits_to_unit(block.v[i & 3]) >= p;
}
NNOPS_HD inline float dropout_scale(float p) {
  return 1.0f / (1.0f - p);  // rounded to float first, as PyTorch
}

// Gated activations on one pair (a of the first half, b of the second); LeakyReLU uses the
// default negative slope, as the gated API has none.
constexpr float kGatedNegativeSlope = 0.01f;
NNOPS_HD inline float gated_apply(Activation act, float a, float b) {
  return activation_apply(act, a, kGatedNegativeSlope) * b;
}
NNOPS_HD inline void gated_grad(Activation act, float a, float b, float dy, float& da, float& db) {
  da = activation_grad(act, a, dy * b, kGatedNegativeSlope);
  db = dy * activation_apply(act, a, kGatedNegativeSlope);
}

}  // namespace nnops::detail
