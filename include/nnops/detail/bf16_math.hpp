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
  if ((u & 0x7FFFFFFFu) > 0x7F800000u) return kBf16NaN;
  // Adding 0x7FFF, plus 1 when the kept half is odd, carries into it exactly when the dropped
  // half is above one half, or exactly one half with an odd kept half.
  u += 0x7FFFu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

NNOPS_HD inline float bf16_bits_to_float(uint16_t b) {
  const uint32_t u = static_cast<uint32_t>(b) << 16;
  float f;
  memcpy(&f, &u, 4);
  return f;
}

}  // namespace nnops::detail
