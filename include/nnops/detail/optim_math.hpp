// Per-element Adam and SGD updates, shared by both backends. The order of operations follows
// torch/optim/adam.py and sgd.py (single-tensor path); scalars that PyTorch computes in Python
// (bias corrections, step size) arrive precomputed in double and rounded to float once.
#pragma once

#include <math.h>

#include "nnops/detail/hd.hpp"

namespace nnops::detail {

struct AdamScalars {
  float beta1, beta2, one_minus_beta1, one_minus_beta2, eps, weight_decay;
  float decay_factor;          // 1 - lr * wd for AdamW, else 1
  float neg_step_size;         // -lr / (1 - beta1^t)
  float bias_correction2_sqrt; // sqrt(1 - beta2^t)
  bool decoupled, amsgrad, maximize;
};

// vmax may be null unless amsgrad.
NNOPS_HD inline void adam_update(float& p, float grad, float& m, float& v, float* vmax,
                                 const AdamScalars& s) {
  float g = s.maximize ? -grad : grad;
  if (s.weight_decay != 0.0f) {
    if (s.decoupled) {
      p = p * s.decay_factor;
    } else {
      g = g + s.weight_decay * p;
    }
  }
  m = s.beta1 * m + s.one_minus_beta1 * g;
  v = s.beta2 * v + s.one_minus_beta2 * g * g;
  float v_used = v;
  if (s.amsgrad) {
    *vmax = fmaxf(*vmax, v);
    v_used = *vmax;
  }
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
