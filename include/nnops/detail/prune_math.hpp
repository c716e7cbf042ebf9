// The one ranking rule of magnitude pruning, (|w|, flat index), as integers, for every backend
// and for distributed selection: the bit pattern of a non-negative float grows with its value,
// and NaN, made canonical, sits above +inf (never pruned before a number).
#pragma once

#include <cstdint>
#include <cstring>

#include "nnops/detail/hd.hpp"

namespace nnops::detail {

NNOPS_HD inline uint32_t magnitude_bits(float w) {
  uint32_t bits;
#ifdef __CUDA_ARCH__
  bits = __float_as_uint(w);
#else
  std::memcpy(&bits, &w, sizeof bits);
#endif
  bits &= 0x7fffffffu;                               // |w|, -0 included
  return bits > 0x7f800000u ? 0x7fc00000u : bits;  // every NaN as the canonical quiet NaN
}

}  // namespace nnops::detail
