// nnops::bf16, the host type of DType::BF16 tensors: the top 16 bits of a float (8 exponent
// bits, 7 mantissa bits). Conversions round to nearest even like torch.bfloat16.
#pragma once

#include <cstdint>

#include "nnops/detail/bf16_math.hpp"

namespace nnops {

struct bf16 {
  uint16_t bits = 0;

  bf16() = default;
  explicit bf16(float f) : bits(detail::float_to_bf16_bits(f)) {}
  static bf16 from_bits(uint16_t b) {
    bf16 v;
    v.bits = b;
    return v;
  }
  float to_float() const { return detail::bf16_bits_to_float(bits); }
  explicit operator float() const { return to_float(); }
};

static_assert(sizeof(bf16) == 2, "bf16 is two bytes");

}  // namespace nnops
