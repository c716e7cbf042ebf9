// Per-element loss terms shared by the CPU and CUDA backends.
#pragma once

#include "nnops/detail/hd.hpp"

namespace nnops::detail {

// F.kl_div's pointwise term for log-target false, xlogy(p_t, p_t) - p_t * log p_s, in double:
// xlogy is 0 where p_t is 0, but 0 * log p_s is NaN when log p_s is infinite, and a NaN anywhere
// spreads (SEMANTICS.md, KD).
NNOPS_HD inline double kd_pointwise(float pt, float log_pt, float log_ps) {
  const double xlogy = pt == 0.0f ? 0.0 : static_cast<double>(pt) * log_pt;
  return xlogy - static_cast<double>(pt) * log_ps;
}

}  // namespace nnops::detail
