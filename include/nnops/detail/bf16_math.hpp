// float <-> bfloat16 conversions shared by the backends: round to nearest, ties to even, as
// torch.bfloat16; overflow rounds to infinity; every NaN becomes 0xFFFF, the pattern PyTorch's
// CPU tensor conversion (`x.to(torch.bfloat16)`) gives (still a NaN).
#pragma once

#include <stdint.h>
#include <string.h>

#include "nnops/detail/hd.hpp"

namespace nnops::detail {

constexpr uint16_t kBf16NaN = 0xFFFF;

NNOPS_HD inline uint16_t float_to_bf16_bits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  // Adding 0x7FFF, plus 1 when the kept half is odd, carries into it exactly when the dropped
  // half is above one half, or exactly one half with an odd kept half. A select, not an early
  // return, for NaN: loops over arrays of it then vectorize (an F32 -> BF16 cast of 8 MB ran at
  // half a copy's speed with the branch).
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return static_cast<uint16_t>((u & 0x7FFFFFFFu) > 0x7F800000u ? uint32_t{kBf16NaN} : rounded);
}

NNOPS_HD inline float bf16_bits_to_float(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

}  // namespace nnops::detail
