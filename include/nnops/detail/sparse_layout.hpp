// The NM24 layout of nnops/sparse.hpp, decoded once for every backend: group g of a row keeps
// its values in slots 2g and 2g + 1 at columns 4g + p0 and 4g + p1, where (p0, p1) is the
// group's 4-bit code (low nibble first in the row's metadata bytes). Kept pairs have p0 < p1;
// (p, p) keeps one value (slot 1 unused), (p0 > p1) keeps none.
#pragma once

#include <cstdint>

#include "nnops/detail/hd.hpp"

namespace nnops::detail {

struct Nm24Group {
  unsigned p0, p1;    // column offsets of slots 0 and 1 within the group
  bool used0, used1;  // whether each slot holds a kept entry
};

NNOPS_HD inline int64_t nm24_metadata_cols(int64_t cols) {
  return (cols / 4 + 1) / 2;
}

// The 4-bit code of group g of the row whose metadata starts at `row_metadata`.
NNOPS_HD inline unsigned nm24_code(const uint8_t* row_metadata, int64_t g) {
  return (row_metadata[g / 2] >> (4 * (g % 2))) & 0xFu;
}

// What a code keeps.
NNOPS_HD constexpr Nm24Group nm24_decode(unsigned code) {
  return {code & 3u, code >> 2, (code & 3u) <= (code >> 2), (code & 3u) < (code >> 2)};
}

// A code as sparse tensor cores' metadata (mma.sp wants two different indices, slot 0's then
// slot 1's): one kept value (p, p) becomes (p, 1) for p = 0 and (p, 0) otherwise, its unused slot
// holding 0; kept pairs and empty groups (two different indices already) stay.
NNOPS_HD constexpr unsigned nm24_mma_code(unsigned code) {
  const unsigned p0 = code & 3u, p1 = code >> 2;
  return p0 == p1 ? (p0 | (p0 == 0u ? 1u : 0u) << 2) : code;
}

// nm24_mma_code on each of the eight codes of a 32-bit word (nibble j, group j), branch-free.
NNOPS_HD constexpr uint32_t nm24_mma_codes(uint32_t codes) {
  const uint32_t p0 = codes & 0x33333333u, p1 = (codes >> 2) & 0x33333333u;
  const uint32_t diff = p0 ^ p1;
  const uint32_t same = ~(diff | diff >> 1) & 0x11111111u;  // bit 0 of a nibble: p0 == p1
  const uint32_t zero = ~(p0 | p0 >> 1) & 0x11111111u;      // bit 0 of a nibble: p0 == 0
  const uint32_t keep_one = same * 0xFu;                    // those nibbles, whole
  return (codes & ~keep_one) | ((p0 | zero << 2) & keep_one);
}

// Group g of the row whose metadata starts at `row_metadata`.
NNOPS_HD inline Nm24Group nm24_group(const uint8_t* row_metadata, int64_t g) {
  return nm24_decode(nm24_code(row_metadata, g));
}

}  // namespace nnops::detail
