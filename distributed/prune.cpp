// Magnitude pruning of a weight split across ranks (see nnops/dist.hpp): the k smallest kept
// entries of the whole weight in (|w| bits, whole-weight flat index) order, found by a radix
// select whose per-digit histograms are summed over the group with MPI, so every rank marks its
// own entries and only counts travel.
#include <mpi.h>

#include <cmath>
#include <functional>
#include <string>
#include <vector>

#include "dist_impl.hpp"
#include "nnops/detail/prune_math.hpp"
#include "nnops/error.hpp"
#include "nnops/tensor_ops.hpp"

namespace nnops::dist {

namespace {

// One kept entry of this rank's shard: its ranking key in two parts.
struct Entry {
  uint32_t magnitude;
  uint64_t index;  // in the whole weight (at most 2^40 entries)
};

}  // namespace

namespace {

// The checks of one shard and its placement in the whole weight; `which` names the tensor in a
// list.
void check_shard(const std::function<void(const std::string&)>& fail, const Tensor& w,
                 const Tensor& mask, const ShardPlacement& where, const std::string& which) {
  if (!w.defined() || w.dtype() != DType::F32 || w.ndim() != 2) {
    fail(which + "w must be a 2-D F32 shard, got " +
         (w.defined() ? w.describe() : std::string("undefined")));
  }
  if (!mask.defined() || mask.dtype() != DType::U8 || mask.shape() != w.shape()) {
    fail(which + "mask must be U8 " + shape_to_string(w.shape()) + ", got " +
         (mask.defined() ? mask.describe() : std::string("undefined")));
  }
  if (mask.is_read_only()) fail(which + "mask is read-only");
  const int64_t rows = w.dim(0), cols = w.dim(1);
  if (where.row0 < 0 || where.col0 < 0 || where.row0 + rows > where.total_rows ||
      where.col0 + cols > where.total_cols ||
      where.total_rows * where.total_cols >= (int64_t(1) << 40)) {
    fail(which + "the shard " + shape_to_string(w.shape()) + " at (" + std::to_string(where.row0) +
         ", " + std::to_string(where.col0) + ") does not lie in [" +
         std::to_string(where.total_rows) + ", " + std::to_string(where.total_cols) + "]");
  }
}

// The selection behind both entry points: one ranking over the kept entries of every listed
// shard, by (|w| bits, index in the concatenation of the whole weights).
// one_weight: the listed shards are blocks of a single weight (indices are that weight's).
void prune_shards(const char* fn, const Communicator::Impl& g, const std::vector<const Tensor*>& ws,
                  const std::vector<ShardPlacement>& places, PruneAmount amount,
                  const std::vector<Tensor*>& masks, bool one_weight) {
  auto fail = [&](const std::string& problem) {
    throw Error(std::string(fn) + ": rank " + std::to_string(g.rank) + ": " + problem);
  };
  if (ws.empty() || ws.size() != places.size() || ws.size() != masks.size()) {
    fail("needs as many shards, placements and masks (at least one), got " +
         std::to_string(ws.size()) + ", " + std::to_string(places.size()) + " and " +
         std::to_string(masks.size()));
  }
  const bool several = ws.size() > 1;
  int64_t whole_entries = 0;
  for (size_t t = 0; t < ws.size(); ++t) {
    if (ws[t] == nullptr || masks[t] == nullptr) fail("null tensor " + std::to_string(t));
    check_shard(fail, *ws[t], *masks[t], places[t],
                several ? "tensor " + std::to_string(t) + ": " : std::string());
    if (one_weight && (places[t].total_rows != places[0].total_rows ||
                       places[t].total_cols != places[0].total_cols)) {
      fail("block " + std::to_string(t) + " is placed in a weight of another shape");
    }
    if (!one_weight || t == 0) whole_entries += places[t].total_rows * places[t].total_cols;
  }
  if (whole_entries >= (int64_t(1) << 40)) fail("more than 2^40 entries in all");
  if (!amount.is_count() && !(amount.fraction_value() >= 0.0 && amount.fraction_value() <= 1.0)) {
    fail("the fraction must lie in [0, 1]");
  }
  // Each shard's kept entries with their ranking keys.
  std::vector<std::vector<float>> values(ws.size());
  std::vector<std::vector<uint8_t>> kept_masks(ws.size());
  std::vector<Entry> kept;
  int64_t local[2] = {0, 0}, total[2];
  std::vector<int64_t> offsets(ws.size());  // where each whole weight starts in the ranking
  for (size_t t = 0, offset = 0; t < ws.size(); ++t) {
    offsets[t] = static_cast<int64_t>(offset);
    if (!one_weight) offset += places[t].total_rows * places[t].total_cols;
    values[t] = ws[t]->to(Device::CPU).to_vector<float>();
    kept_masks[t] = masks[t]->to(Device::CPU).to_vector<uint8_t>();
    local[0] += ws[t]->numel();
  }
  auto index_of = [&](size_t t, int64_t r, int64_t c) {
    const ShardPlacement& where = places[t];
    return static_cast<uint64_t>(offsets[t] + (where.row0 + r) * where.total_cols + where.col0 + c);
  };
  for (size_t t = 0; t < ws.size(); ++t) {
    const int64_t rows = ws[t]->dim(0), cols = ws[t]->dim(1);
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        if (!kept_masks[t][r * cols + c]) continue;
        kept.push_back({detail::magnitude_bits(values[t][r * cols + c]), index_of(t, r, c)});
      }
    }
  }
  local[1] = static_cast<int64_t>(kept.size());
  // The shards must tile the whole weights; the amount counts their kept entries.
  check_mpi(MPI_Allreduce(local, total, 2, MPI_INT64_T, MPI_SUM, g.comm), fn, g.rank);
  if (total[0] != whole_entries) {
    fail("the shards hold " + std::to_string(total[0]) + " entries but the " +
         (several ? "weights have " : "weight has ") + std::to_string(whole_entries));
  }
  const int64_t remaining = total[1];
  const int64_t k = amount.is_count()
                        ? amount.count_value()
                        : static_cast<int64_t>(std::nearbyint(amount.fraction_value() *
                                                              static_cast<double>(remaining)));
  if (k < 0 || k > remaining) {
    fail("cannot prune " + std::to_string(k) + " of the " + std::to_string(remaining) +
         " kept entries");
  }
  if (k == 0) return;
  // Radix select of the k-th smallest (magnitude, index): 8 bits at a time, the magnitude's
  // 32 from the top, then the index's 40 among the entries whose magnitude matched.
  uint32_t mag_prefix = 0;
  uint64_t index_prefix = 0;
  int64_t rank_left = k;  // the wanted entry's position (1-based) among those matching
  for (int pass = 0; pass < 9; ++pass) {
    const bool on_magnitude = pass < 4;
    const int shift = on_magnitude ? 24 - 8 * pass : 32 - 8 * (pass - 4);
    std::vector<int64_t> hist(256, 0), sum(256, 0);
    for (const Entry& e : kept) {
      if (on_magnitude) {
        const uint32_t high = pass == 0 ? 0 : e.magnitude >> (shift + 8);
        if (pass > 0 && high != mag_prefix >> (shift + 8)) continue;
        ++hist[(e.magnitude >> shift) & 0xFFu];
      } else {
        if (e.magnitude != mag_prefix) continue;
        const uint64_t high = pass == 4 ? 0 : e.index >> (shift + 8);
        if (pass > 4 && high != index_prefix >> (shift + 8)) continue;
        ++hist[(e.index >> shift) & 0xFFu];
      }
    }
    check_mpi(MPI_Allreduce(hist.data(), sum.data(), 256, MPI_INT64_T, MPI_SUM, g.comm), fn,
              g.rank);
    int digit = 0;
    while (rank_left > sum[digit]) rank_left -= sum[digit++];
    if (on_magnitude) {
      mag_prefix |= static_cast<uint32_t>(digit) << shift;
    } else {
      index_prefix |= static_cast<uint64_t>(digit) << shift;
    }
  }
  // (mag_prefix, index_prefix) is the k-th smallest key: everything up to it is pruned.
  for (size_t t = 0; t < ws.size(); ++t) {
    const int64_t rows = ws[t]->dim(0), cols = ws[t]->dim(1);
    std::vector<uint8_t>& m = kept_masks[t];
    for (int64_t r = 0; r < rows; ++r) {
      for (int64_t c = 0; c < cols; ++c) {
        uint8_t& keep = m[r * cols + c];
        if (!keep) continue;
        const uint32_t mag = detail::magnitude_bits(values[t][r * cols + c]);
        const uint64_t index = index_of(t, r, c);
        if (mag < mag_prefix || (mag == mag_prefix && index <= index_prefix)) keep = 0;
      }
    }
  }
  for (size_t t = 0; t < ws.size(); ++t)
    copy(*masks[t], Tensor::from_vector(kept_masks[t], masks[t]->shape(), masks[t]->device()));
}

}  // namespace

void l1_unstructured(const Communicator& group, const Tensor& w, const ShardPlacement& where,
                     PruneAmount amount, Tensor& mask) {
  prune_shards("nnops::dist::l1_unstructured", *group.impl_, {&w}, {where}, amount, {&mask}, true);
}

void l1_unstructured(const Communicator& group, const std::vector<const Tensor*>& blocks,
                     const std::vector<ShardPlacement>& where, PruneAmount amount,
                     const std::vector<Tensor*>& masks) {
  prune_shards("nnops::dist::l1_unstructured", *group.impl_, blocks, where, amount, masks, true);
}

void global_unstructured(const Communicator& group, const std::vector<const Tensor*>& ws,
                         const std::vector<ShardPlacement>& where, PruneAmount amount,
                         const std::vector<Tensor*>& masks) {
  prune_shards("nnops::dist::global_unstructured", *group.impl_, ws, where, amount, masks, false);
}

}  // namespace nnops::dist
