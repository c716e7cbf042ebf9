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

// The kept entries of output row o, as (value, column) pairs in stored order, fed to `add`.
// NM24's unused slots are fed too (value 0).
#define NNOPS_FOR_EACH_ENTRY(w, o, ADD)                                     \
  if ((w).nm24) {                                                           \
    const int64_t groups_ = (w).cols / 4;                                   \
    const float* v_ = (w).values + (o) * ((w).cols / 2);                    \
    const uint8_t* meta_ = (w).metadata + (o)*nm24_metadata_cols((w).cols); \
    for (int64_t g_ = 0; g_ < groups_; ++g_) {                              \
      const Nm24Group grp_ = nm24_group(meta_, g_); /* unused slots: 0 */   \
      ADD(v_[2 * g_], 4 * g_ + grp_.p0);                                    \
      ADD(v_[2 * g_ + 1], 4 * g_ + grp_.p1);                                \
    }                                                                       \
  } else {                                                                  \
    for (int64_t e_ = (w).row_ptr[o]; e_ < (w).row_ptr[(o) + 1]; ++e_)      \
      ADD((w).values[e_], static_cast<int64_t>((w).col[e_]));               \
  }

// The same for the entries with columns in [c0, c1): NM24 blocks start and end on group
// boundaries; CSR rows resume where the previous block stopped (*cursor, advanced).
#define NNOPS_FOR_EACH_ENTRY_IN(w, o, c0, c1, cursor, ADD)                  \
  if ((w).nm24) {                                                           \
    const float* v_ = (w).values + (o) * ((w).cols / 2);                    \
    const uint8_t* meta_ = (w).metadata + (o)*nm24_metadata_cols((w).cols); \
    for (int64_t g_ = (c0) / 4; g_ < (c1) / 4; ++g_) {                      \
      const Nm24Group grp_ = nm24_group(meta_, g_); /* unused slots: 0 */   \
      ADD(v_[2 * g_], 4 * g_ + grp_.p0);                                    \
      ADD(v_[2 * g_ + 1], 4 * g_ + grp_.p1);                                \
    }                                                                       \
  } else {                                                                  \
    int64_t e_ = *(cursor);                                                 \
    const int64_t end_ = (w).row_ptr[(o) + 1];                              \
    for (; e_ < end_ && (w).col[e_] < (c1); ++e_)                           \
      ADD((w).values[e_], static_cast<int64_t>((w).col[e_]));               \
    *(cursor) = e_;                                                         \
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
#endif

}  // namespace nnops::detail::sparse
