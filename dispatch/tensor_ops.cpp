// Validation and dispatch for copy and argmax.
#include "nnops/tensor_ops.hpp"

#include <initializer_list>
#include <limits>
#include <vector>

#include "backend.hpp"
#include "check.hpp"

namespace nnops {

namespace {

// Both defined, and dst writable. Devices and dtypes may differ (copy and cast move between
// devices), so ArgCheck::tensor's one-device rule does not apply.
void check_dst_and_src(const detail::ArgCheck& check, const Tensor& dst, const Tensor& src) {
  if (!dst.defined()) check.fail("dst is an undefined tensor");
  if (!src.defined()) check.fail("src is an undefined tensor");
  if (dst.is_read_only())
    check.fail_with("dst (", dst.describe(), ") is read-only (wrapped from const memory)");
}

}  // namespace

void copy(Tensor& dst, const Tensor& src) {
  detail::ArgCheck check("nnops::copy");
  check_dst_and_src(check, dst, src);
  if (dst.dtype() != src.dtype()) {
    check.fail_with("dst is ", to_string(dst.dtype()), " but src is ", to_string(src.dtype()),
                    " (dtypes must match)");
  }
  check.same_shape("dst", dst, "src", src).in_place_or_disjoint("dst", dst, "src", src);
  if (dst.numel() == 0 || dst.raw_data() == static_cast<const Tensor&>(src).raw_data()) return;
  void* to = dst.raw_data();
  const void* from = src.raw_data();
  const size_t bytes = dst.nbytes();
  detail::guarded(check.fn(), [&] {
    // On the GPU that holds the destination, or the source when copying to the host; a copy
    // between two GPUs is one peer copy.
    const Tensor& on = dst.device() == Device::CUDA ? static_cast<const Tensor&>(dst) : src;
    detail::Backend& backend = detail::backend_for(on.device(), check.fn());
    const detail::DeviceGuard on_device(backend, on.device_index());
    if (dst.device() == src.device()) {
      backend.copy_within(to, from, bytes);
    } else if (src.device() == Device::CPU) {
      backend.copy_from_host(to, from, bytes);
    } else {
      backend.copy_to_host(to, from, bytes);
    }
  });
}

void cast(Tensor& dst, const Tensor& src) {
  detail::ArgCheck check("nnops::cast");
  check_dst_and_src(check, dst, src);
  for (const Tensor* t : std::initializer_list<const Tensor*>{&dst, &src}) {
    if (t->dtype() != DType::F32 && t->dtype() != DType::BF16) {
      check.fail_with(t == &dst ? "dst" : "src", " is ", to_string(t->dtype()),
                      " but cast converts between F32 and BF16");
    }
  }
  check.same_shape("dst", dst, "src", src);
  if (dst.dtype() == src.dtype()) {
    copy(dst, src);
    return;
  }
  check.no_alias("dst", &dst, "src", src);
  if (dst.numel() == 0) return;
  detail::guarded(check.fn(), [&] {
    detail::Backend& backend = detail::backend_for(src.device(), check.fn());
    const detail::DeviceGuard on_device(backend, src.device_index());
    if (dst.device() == src.device() && dst.device_index() == src.device_index()) {
      backend.cast(dst.raw_data(), dst.dtype(), src.raw_data(), src.dtype(), dst.numel());
      return;
    }
    // Across devices: convert where the data is, then move the converted bytes.
    Tensor converted = Tensor::empty(src.shape(), dst.dtype(), src.device());
    backend.cast(converted.raw_data(), dst.dtype(), src.raw_data(), src.dtype(), src.numel());
    copy(dst, converted);
  });
}

void argmax(const Tensor& x, Tensor& out) {
  // Validation allocates too (names, shapes): running out of memory anywhere is an Error.
  detail::guarded("nnops::argmax", [&] {
    detail::ArgCheck check("nnops::argmax");
    check.tensor("x", x, DType::F32).output("out", out, DType::I32).min_ndim("x", x, 1);
    const int64_t cols = x.dim(-1);
    Shape rows_shape(x.shape().begin(), x.shape().end() - 1);
    check.shape_is("out", out, rows_shape);
    if (cols == 0 && x.numel() == 0 && out.numel() > 0) {
      check.fail_with("x is ", shape_to_string(x.shape()), ": argmax of an empty row is undefined");
    }
    if (cols > std::numeric_limits<int32_t>::max()) {
      check.fail_with("x has ", cols, " entries per row; I32 indices reach ",
                      std::numeric_limits<int32_t>::max());
    }
    check.no_alias("out", &out, "x", x);
    if (out.numel() == 0) return;
    check.run([&](detail::Backend& be) {
      be.argmax(out.data<int32_t>(), x.data<float>(), out.numel(), cols);
    });
  });
}

void permute(const Tensor& x, const std::vector<int>& dims, Tensor& y) {
  detail::guarded("nnops::permute", [&] {
    detail::ArgCheck check("nnops::permute");
    check.tensor("x", x, x.dtype()).output("y", y, x.dtype());
    const int n = x.ndim();
    if (static_cast<int>(dims.size()) != n) {
      check.fail_with("dims has ", dims.size(), " entries but x is ", shape_to_string(x.shape()));
    }
    if (n > detail::PermutePlan::kMaxDims) {
      check.fail_with("x has ", n, " dimensions; permute takes at most ",
                      detail::PermutePlan::kMaxDims);
    }
    bool seen[detail::PermutePlan::kMaxDims] = {};
    for (int i = 0; i < n; ++i) {
      if (dims[i] < 0 || dims[i] >= n || seen[dims[i]]) {
        check.fail_with("dims[", i, "] = ", dims[i], " is not a permutation of 0..", n - 1);
      }
      seen[dims[i]] = true;
    }
    Shape out_shape(n);
    for (int i = 0; i < n; ++i) out_shape[i] = x.dim(dims[i]);
    check.shape_is("y", y, out_shape).no_alias("y", &y, "x", x);
    if (y.numel() == 0) return;
    // x's row-major strides, taken in y's order; then dimensions of size 1 dropped and runs that
    // stay adjacent merged, so [B, T, H, D] -> [B, H, T, D] moves whole rows of D.
    int64_t x_stride[detail::PermutePlan::kMaxDims];
    int64_t stride = 1;
    for (int d = n - 1; d >= 0; --d) {
      x_stride[d] = stride;
      stride *= x.dim(d);
    }
    detail::PermutePlan plan;
    for (int i = 0; i < n; ++i) {
      const int64_t size = out_shape[i], step = x_stride[dims[i]];
      if (size == 1) continue;
      if (plan.ndim > 0 && plan.in_stride[plan.ndim - 1] == step * size) {
        plan.out_shape[plan.ndim - 1] *= size;  // contiguous with the previous one in x too
        plan.in_stride[plan.ndim - 1] = step;
        continue;
      }
      plan.out_shape[plan.ndim] = size;
      plan.in_stride[plan.ndim] = step;
      ++plan.ndim;
    }
    if (plan.ndim == 0) {  // a single element
      plan.ndim = 1;
      plan.out_shape[0] = 1;
      plan.in_stride[0] = 1;
    }
    const size_t element_size = dtype_size(x.dtype());
    check.run([&](detail::Backend& be) {
      be.permute(y.raw_data(), x.raw_data(), element_size, plan);
    });
  });
}

}  // namespace nnops
