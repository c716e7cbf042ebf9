// Validation and dispatch for the pruning masks (torch.nn.utils.prune semantics).
#include "nnops/prune.hpp"

#include <cmath>

#include "backend.hpp"
#include "check.hpp"
#include "widen.hpp"

namespace nnops {

int64_t PruneAmount::resolve(int64_t remaining) const {
  if (is_count_) return count_;
  // Python's round(): half to even, in double (nearbyint under the default rounding mode).
  return static_cast<int64_t>(std::nearbyint(fraction_ * static_cast<double>(remaining)));
}

namespace {

// The mask is read and updated in place; it must not overlap the weights.
void check_mask(detail::ArgCheck& check, const Tensor& w, Tensor* mask) {
  check.output("mask", mask, DType::U8).same_shape("w", w, "mask", *mask);
  check.no_alias("mask", mask, "w", w);
}

// The number of entries to prune out of `available`, checking the amount against it.
int64_t resolve_amount(detail::ArgCheck& check, PruneAmount amount, int64_t available,
                       const char* what) {
  if (amount.is_count()) {
    if (amount.count_value() < 0 || amount.count_value() > available) {
      check.fail_with("amount is a count of ", amount.count_value(), " but must be in [0, ",
                      available, "] (the number of ", what, ")");
    }
  } else {
    check.option_in("amount", amount.fraction_value(), 0.0, 1.0);
  }
  return amount.resolve(available);
}

void global_unstructured_impl(const char* fn, const std::vector<const Tensor*>& ws,
                              PruneAmount amount, const std::vector<Tensor*>& masks) {
  // Validation allocates too (names, shapes): running out of memory anywhere is an Error.
  detail::guarded(fn, [&] {
    detail::ArgCheck check(fn);
    if (ws.size() != masks.size()) {
      check.fail_with(ws.size(), " weights but ", masks.size(), " masks (one mask per weight)");
    }
    for (size_t i = 0; i < ws.size(); ++i) {
      check.floating("w", ws[i]);
      check_mask(check, *ws[i], masks[i]);
      for (size_t j = 0; j < i; ++j) {
        if (detail::overlaps(*masks[j], *masks[i]) || detail::overlaps(*masks[j], *ws[i]) ||
            detail::overlaps(*masks[i], *ws[j])) {
          check.fail_with("masks[", j, "] and masks[", i,
                          "] are the same tensor or overlap (each other or a w)");
        }
      }
    }
    if (ws.empty()) {
      resolve_amount(check, amount, 0, "kept entries");
      return;
    }
    check.run([&](detail::Backend& backend) {
      // BF16 weights rank through exact F32 copies: the same |w| order, the same masks.
      detail::F32Stand f32;
      int64_t remaining = 0;
      std::vector<uint8_t*> mask_ptrs;
      std::vector<const float*> w_ptrs;
      std::vector<int64_t> sizes;
      for (size_t i = 0; i < ws.size(); ++i) {
        const int64_t n = ws[i]->numel();
        if (n > 0) remaining += backend.count_nonzero(masks[i]->data<uint8_t>(), n);
        mask_ptrs.push_back(masks[i]->data<uint8_t>());
        w_ptrs.push_back(f32.in(*ws[i]).data<float>());
        sizes.push_back(n);
      }
      const int64_t k = resolve_amount(check, amount, remaining, "kept entries");
      if (k == 0) return;
      backend.prune_unstructured(mask_ptrs.data(), w_ptrs.data(), sizes.data(),
                                 static_cast<int64_t>(ws.size()), k);
    });
  });
}

}  // namespace

void l1_unstructured(const Tensor& w, PruneAmount amount, Tensor& mask) {
  const char* fn = "nnops::l1_unstructured";
  detail::guarded(fn, [&] { global_unstructured_impl(fn, {&w}, amount, {&mask}); });
}

void global_unstructured(const std::vector<const Tensor*>& ws, PruneAmount amount,
                         const std::vector<Tensor*>& masks) {
  global_unstructured_impl("nnops::global_unstructured", ws, amount, masks);
}

void ln_structured(const Tensor& w, PruneAmount amount, int p, int dim, Tensor& mask) {
  // Validation allocates too (names, shapes): running out of memory anywhere is an Error.
  detail::guarded("nnops::ln_structured", [&] {
    detail::ArgCheck check("nnops::ln_structured");
    check.floating("w", w).min_ndim("w", w, 1);
    check_mask(check, w, &mask);
    if (p != 1 && p != 2) check.fail_with("p is ", p, " but must be 1 or 2");
    const int nd = w.ndim();
    if (dim < -nd || dim >= nd) {
      check.fail_with("dim is ", dim, " but w is ", shape_to_string(w.shape()), " (", nd,
                      " dimensions)");
    }
    const int d = dim < 0 ? dim + nd : dim;
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < d; ++i) outer *= w.dim(i);
    for (int i = d + 1; i < nd; ++i) inner *= w.dim(i);
    const int64_t slices = w.dim(d);
    if (w.numel() == 0) {
      resolve_amount(check, amount, 0, "slices still kept");
      return;
    }
    // Iterative pruning: the amount applies to the slices that still keep an entry.
    check.run([&](detail::Backend& backend) {
      const int64_t kept = backend.count_kept_slices(mask.data<uint8_t>(), outer, slices, inner);
      const int64_t k = resolve_amount(check, amount, kept, "slices still kept");
      if (k == 0) return;
      detail::F32Stand f32;
      backend.prune_ln_structured(mask.data<uint8_t>(), f32.in(w).data<float>(), outer, slices,
                                  inner, p, k);
    });
  });
}

void nm_structured(const Tensor& w, int n, int m, Tensor& mask) {
  detail::ArgCheck check("nnops::nm_structured");
  check.floating("w", w).min_ndim("w", w, 1);
  check_mask(check, w, &mask);
  if (m < 1) check.fail_with("m is ", m, " but must be >= 1");
  if (n < 0 || n > m) check.fail_with("n is ", n, " but must be in [0, m] with m = ", m);
  if (w.dim(-1) % m != 0) {
    check.fail_with("the last dimension of w ", shape_to_string(w.shape()),
                    " is not a multiple of m = ", m);
  }
  if (w.numel() == 0 || n == m) return;
  check.run([&](detail::Backend& be) {
    detail::F32Stand f32;
    be.prune_nm(mask.data<uint8_t>(), f32.in(w).data<float>(), w.numel() / m, n, m);
  });
}

void apply_mask(Tensor& w, const Tensor& mask) {
  detail::ArgCheck check("nnops::apply_mask");
  check.floating_output("w", w);
  check.tensor("mask", mask, DType::U8).same_shape("w", w, "mask", mask);
  check.no_alias("w", &w, "mask", mask);
  if (w.numel() == 0) return;
  check.run([&](detail::Backend& be) {
    detail::F32Stand f32;
    be.apply_mask(f32.in_out(w).data<float>(), mask.data<uint8_t>(), w.numel());
    f32.finish();
  });
}

namespace {

int64_t count_nonzero_impl(const char* fn, const Tensor& mask) {
  detail::ArgCheck check(fn);
  check.tensor("mask", mask, DType::U8);
  int64_t kept = 0;
  if (mask.numel() == 0) return 0;
  check.run([&](detail::Backend& be) {
    kept = be.count_nonzero(mask.data<uint8_t>(), mask.numel());
    be.raise_device_errors();  // a synchronising call (nothing written)
  });
  return kept;
}

}  // namespace

int64_t count_nonzero(const Tensor& mask) {
  return count_nonzero_impl("nnops::count_nonzero", mask);
}

double sparsity(const Tensor& mask) {
  const int64_t kept = count_nonzero_impl("nnops::sparsity", mask);
  if (mask.numel() == 0) return 0.0;
  return 1.0 - static_cast<double>(kept) / static_cast<double>(mask.numel());
}

}  // namespace nnops
