// Pruning masks following torch.nn.utils.prune: U8 masks of the weight's shape (1 keep,
// 0 pruned), updated in place. Entries already 0 stay 0 and the amount applies to the entries
// still kept (iterative pruning). Magnitude ties prune the lower flat index first. Weights are
// F32 or BF16: a BF16 weight gives the mask of an F32 weight holding the same values.
#pragma once

#include <cstdint>
#include <vector>

#include "nnops/tensor.hpp"

namespace nnops {

class PruneAmount {
 public:
  // Prune nearbyint(fraction * remaining) entries, rounding half to even like Python's round.
  static PruneAmount fraction(double fraction) { return PruneAmount(false, fraction, 0); }
  // Prune exactly this many entries.
  static PruneAmount count(int64_t count) { return PruneAmount(true, 0.0, count); }

  bool is_count() const { return is_count_; }
  double fraction_value() const { return fraction_; }
  int64_t count_value() const { return count_; }
  // The number of entries to prune out of `remaining` (validated by the callers).
  int64_t resolve(int64_t remaining) const;

 private:
  PruneAmount(bool is_count, double fraction, int64_t count)
      : is_count_(is_count), fraction_(fraction), count_(count) {}
  bool is_count_;
  double fraction_;
  int64_t count_;
};

// Prune the kept entries of w with the smallest |w|.
void l1_unstructured(const Tensor& w, PruneAmount amount, Tensor& mask);

// One ranking of |w| over the kept entries of all tensors (flat index across them in order).
void global_unstructured(const std::vector<const Tensor*>& ws, PruneAmount amount,
                         const std::vector<Tensor*>& masks);

// Prune whole slices w.select(dim, i) with the smallest L-p norm (p = 1 or 2). The amount counts
// the slices still kept (any mask entry 1), as PyTorch's iterative pruning does; dim may be
// negative.
void ln_structured(const Tensor& w, PruneAmount amount, int p, int dim, Tensor& mask);

// In each group of m consecutive entries along the last dimension keep the n largest |w|
// (e.g. 2:4). The last dimension must be a multiple of m.
void nm_structured(const Tensor& w, int n, int m, Tensor& mask);

// w = w * mask (pruned entries become exactly 0).
void apply_mask(Tensor& w, const Tensor& mask);

// The fraction of entries that the mask prunes (0 for an empty mask). Waits for the device.
double sparsity(const Tensor& mask);

// The number of nonzero entries of a U8 mask (the entries it keeps). Waits for the device.
int64_t count_nonzero(const Tensor& mask);

}  // namespace nnops
