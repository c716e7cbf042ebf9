// What the CPU sparse kernels share: walking a compressed weight's entries (by row, or by row
// within a block of columns), the slots of a row, and the L1 blocking of the source a kernel
// multiplies (x^T in the forward and dvalues, dy^T in dx).
#pragma once

#include <algorithm>
#include <cstdint>
#include <utility>

#include "../../dispatch/backend.hpp"
#include "../isa_variants.hpp"
#include "nnops/detail/sparse_layout.hpp"

namespace nnops::detail::sparse {

// NM24 groups [g0, g1) of row o as (value, column) pairs. Where the matrix has unused slots
// (value 0: a group keeping fewer than 2), they come with column `cols`, which the kernels keep
// as a row of zeros: 0 * x at the slot's own position would let a NaN or inf of x there reach
// the output. Exact 2:4 matrices skip the test (a select per slot made the forward 25% slower).
#define NNOPS_FOR_EACH_NM24_GROUP(w, o, g0, g1, ADD)                        \
  {                                                                         \
    const float* v_ = (w).values + (o) * ((w).cols / 2);                    \
    const uint8_t* meta_ = (w).metadata + (o)*nm24_metadata_cols((w).cols); \
    if ((w).nm24_unused) {                                                  \
      for (int64_t g_ = (g0); g_ < (g1); ++g_) {                            \
        const Nm24Group grp_ = nm24_group(meta_, g_);                       \
        ADD(v_[2 * g_], grp_.used0 ? 4 * g_ + grp_.p0 : (w).cols);          \
        ADD(v_[2 * g_ + 1], grp_.used1 ? 4 * g_ + grp_.p1 : (w).cols);      \
      }                                                                     \
    } else {                                                                \
      for (int64_t g_ = (g0); g_ < (g1); ++g_) {                            \
        const Nm24Group grp_ = nm24_group(meta_, g_);                       \
        ADD(v_[2 * g_], 4 * g_ + grp_.p0);                                  \
        ADD(v_[2 * g_ + 1], 4 * g_ + grp_.p1);                              \
      }                                                                     \
    }                                                                       \
  }

// The entries of output row o, as (value, column) pairs in stored order, fed to `add` (NM24's
// unused slots as above).
#define NNOPS_FOR_EACH_ENTRY(w, o, ADD)                                \
  if ((w).nm24) {                                                      \
    NNOPS_FOR_EACH_NM24_GROUP(w, o, 0, (w).cols / 4, ADD)              \
  } else {                                                             \
    for (int64_t e_ = (w).row_ptr[o]; e_ < (w).row_ptr[(o) + 1]; ++e_) \
      ADD((w).values[e_], static_cast<int64_t>((w).col[e_]));          \
  }

// The same for the entries with columns in [c0, c1): NM24 blocks start and end on group
// boundaries; CSR rows resume where the previous block stopped (*cursor, advanced).
#define NNOPS_FOR_EACH_ENTRY_IN(w, o, c0, c1, cursor, ADD)    \
  if ((w).nm24) {                                             \
    NNOPS_FOR_EACH_NM24_GROUP(w, o, (c0) / 4, (c1) / 4, ADD)  \
  } else {                                                    \
    int64_t e_ = *(cursor);                                   \
    const int64_t end_ = (w).row_ptr[(o) + 1];                \
    for (; e_ < end_ && (w).col[e_] < (c1); ++e_)             \
      ADD((w).values[e_], static_cast<int64_t>((w).col[e_])); \
    *(cursor) = e_;                                           \
  }

// The stored slots of output row o: [begin, end) into values.
NNOPS_ALWAYS_INLINE std::pair<int64_t, int64_t> row_slots(const SparseView& w, int64_t o) {
  if (w.nm24) return {o * (w.cols / 2), (o + 1) * (w.cols / 2)};
  return {w.row_ptr[o], w.row_ptr[o + 1]};
}

// The column of slot s of row o, and whether it holds a kept entry (NM24's unused slots do
// not: p1 <= p0, see nnops/sparse.hpp).
NNOPS_ALWAYS_INLINE int64_t slot_column(const SparseView& w, int64_t o, int64_t s, bool& used) {
  if (!w.nm24) {
    used = true;
    return w.col[s];
  }
  const int64_t local = s - o * (w.cols / 2), g = local / 2;
  const Nm24Group grp = nm24_group(w.metadata + o * nm24_metadata_cols(w.cols), g);
  used = local % 2 == 0 ? grp.used0 : grp.used1;
  return 4 * g + (local % 2 == 0 ? grp.p0 : grp.p1);
}

// Source rows (x^T or dy^T rows of `width` floats) per block: a block of 24 KiB stays in the 32
// KiB L1 while every output of the thread adds its entries from it; without blocking each entry
// fetched its source vectors from L2, whose bandwidth bounded the kernels. A multiple of 32, so
// NM24 blocks hold whole groups and whole 16-slot chunks.
inline int64_t block_rows(int64_t width) {
  constexpr int64_t kL1BlockBytes = 24 * 1024;
  return std::max<int64_t>(32, kL1BlockBytes / (width * 4) / 32 * 32);
}

#if defined(__x86_64__) && defined(__GNUC__)
typedef float V16 __attribute__((vector_size(64)));
typedef float V8 __attribute__((vector_size(32)));
typedef uint32_t U16 __attribute__((vector_size(64)));
typedef int32_t I16 __attribute__((vector_size(64)));

// The 16 slots of 8 NM24 groups as vector lanes (AVX-512 kernels: one row's 16 stored values
// against the groups' 32 columns): lane l is slot l % 2 of group l / 2 (codes: nibble j is
// group j's), at column[l] (0-31) of the 32; used[l] is all ones where the slot holds a kept
// entry (slot 0 where p0 <= p1, slot 1 where p0 < p1), else 0.
struct Nm24Lanes {
  U16 column;
  I16 used;
};
NNOPS_ALWAYS_INLINE Nm24Lanes nm24_lanes(uint32_t codes) {
  // Lane l's own bits lie at 4 (l / 2) + 2 (l % 2) of the codes, its partner slot's at
  // 4 (l / 2) + 2 (1 - l % 2).
  const U16 own_shift = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
  const U16 partner_shift = {2, 0, 6, 4, 10, 8, 14, 12, 18, 16, 22, 20, 26, 24, 30, 28};
  const U16 group_base = {0, 0, 4, 4, 8, 8, 12, 12, 16, 16, 20, 20, 24, 24, 28, 28};
  const I16 slot0 = {-1, 0, -1, 0, -1, 0, -1, 0, -1, 0, -1, 0, -1, 0, -1, 0};
  const U16 all = U16{} + codes;
  const U16 own = all >> own_shift & 3u, partner = all >> partner_shift & 3u;
  return {own + group_base, ((own <= partner) & slot0) | ((partner < own) & ~slot0)};
}
#endif

}  // namespace nnops::detail::sparse
