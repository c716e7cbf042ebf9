// Per-element Adam and SGD updates, shared by both backends. The order of operations follows
// torch/optim/adam.py and sgd.py (single-tensor path); scalars that PyTorch computes in Python
// (bias corrections, step size) arrive precomputed in double and rounded to float once.
#pragma once

#include <math.h>

#include "nnops/detail/hd.hpp"

namespace nnops::detail {

// Options folded into factors where that is exact (x * 1 == x, -x == x * -1), which keeps
// the per-element update short enough for the compiler to vectorize.
struct AdamScalars {
  float beta1, beta2, one_minus_beta1, one_minus_beta2, eps;
  float grad_sign;              // -1 with maximize, else 1
  float decay_factor;           // 1 - lr * wd for AdamW (decoupled), else 1
  float l2_weight_decay;        // wd for Adam's L2 penalty, else 0 (then not applied at all)
  float neg_step_size;          // -lr / (1 - beta1^t)
  float bias_correction2_sqrt;  // sqrt(1 - beta2^t)
  bool amsgrad;
};

// Selects instead of branches, so CPU loops vectorize and GPU warps do not diverge. vmax is
// read and written only with amsgrad (its value is left unchanged otherwise).
NNOPS_HD inline void adam_update(float& p, float grad, float& m, float& v, float& vmax,
                                 const AdamScalars& s) {
  float g = s.grad_sign * grad;
  p = p * s.decay_factor;  // AdamW decays the weight before the moments
  // Adam's L2 penalty; skipped (not multiplied by 0) when off, so an infinite p stays harmless.
  g = s.l2_weight_decay != 0.0f ? g + s.l2_weight_decay * p : g;
  m = s.beta1 * m + s.one_minus_beta1 * g;
  v = s.beta2 * v + s.one_minus_beta2 * g * g;
  // AMSGrad keeps the running max of the raw v (PyTorch's max_exp_avg_sqs); a NaN on either
  // side propagates, as torch.maximum does (fmaxf would drop it).
  const float vmax_new = (v > vmax || v != v) ? v : vmax;
  vmax = s.amsgrad ? vmax_new : vmax;
  const float v_used = s.amsgrad ? vmax_new : v;
  const float denom = sqrtf(v_used) / s.bias_correction2_sqrt + s.eps;
  p = p + s.neg_step_size * (m / denom);
}

struct SgdScalars {
  float lr, momentum, one_minus_dampening, weight_decay;
  bool nesterov, maximize, first_step;
};

// buf may be null when momentum == 0.
NNOPS_HD inline void sgd_update(float& p, float grad, float* buf, const SgdScalars& s) {
  float d = s.maximize ? -grad : grad;
  if (s.weight_decay != 0.0f) d = d + s.weight_decay * p;
  if (s.momentum != 0.0f) {
    *buf = s.first_step ? d : s.momentum * *buf + s.one_minus_dampening * d;
    d = s.nesterov ? d + s.momentum * *buf : *buf;
  }
  p = p - s.lr * d;
}

}  // namespace nnops::detail
