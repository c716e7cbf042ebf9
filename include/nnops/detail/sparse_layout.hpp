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

// Group g of the row whose metadata starts at `row_metadata`.
NNOPS_HD inline Nm24Group nm24_group(const uint8_t* row_metadata, int64_t g) {
  return nm24_decode(nm24_code(row_metadata, g));
}

}  // namespace nnops::detail
