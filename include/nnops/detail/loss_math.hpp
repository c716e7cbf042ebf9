// Per-element loss terms shared by the CPU and CUDA backends.
#pragma once

#include "nnops/detail/hd.hpp"

namespace nnops::detail {

// F.kl_div's pointwise term for log-target false, xlogy(p_t, p_t) - p_t * log p_s: xlogy is 0
// where p_t is 0, but 0 * log p_s is NaN when log p_s is infinite, and a NaN anywhere spreads
// (SEMANTICS.md, KD). Everything in double: at a high temperature the loss is T^2 times a sum of
// nearly cancelling terms, so float logs would be magnified (T = 1000 on 1e5 classes: 5% off).
NNOPS_HD inline double kd_pointwise(double pt, double log_pt, double log_ps) {
  const double xlogy = pt == 0.0 ? 0.0 : pt * log_pt;
  return xlogy - pt * log_ps;
}

// A max that propagates NaN (std::fmax would drop it), for the KD rows' double logits.
NNOPS_HD inline double nan_max_double(double a, double b) {
  return (a != a || a > b) ? a : b;
}

}  // namespace nnops::detail
