// Argument validation helpers (see check.hpp).
#include "check.hpp"

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace nnops::detail {

ArgCheck& ArgCheck::tensor(const char* name, const Tensor* t, DType dtype) {
  if (t == nullptr) fail_with(name, " is null");
  if (!t->defined()) fail_with(name, " is an undefined tensor");
  if (t->dtype() != dtype) {
    fail_with(name, " has dtype ", to_string(t->dtype()), " but ", to_string(dtype),
              " is required");
  }
  if (device_from_ == nullptr) {
    device_ = t->device();
    device_index_ = t->device_index();
    device_from_ = name;
  } else if (t->device() != device_) {
    fail_with(name, " is on ", to_string(t->device()), " but ", device_from_, " is on ",
              to_string(device_), " (all tensors of one call must share a device)");
  } else if (t->device_index() != device_index_) {
    fail_with(name, " is on ", to_string(device_), ":", t->device_index(), " but ", device_from_,
              " is on ", to_string(device_), ":", device_index_,
              " (all tensors of one call must share a device)");
  }
  return *this;
}

ArgCheck& ArgCheck::ndim(const char* name, const Tensor& t, int expected) {
  if (t.ndim() != expected) {
    fail_with(name, " is ", shape_to_string(t.shape()), " but must have ", expected, " dimension",
              expected == 1 ? "" : "s");
  }
  return *this;
}

ArgCheck& ArgCheck::min_ndim(const char* name, const Tensor& t, int expected) {
  if (t.ndim() < expected) {
    fail_with(name, " is ", shape_to_string(t.shape()), " but must have at least ", expected,
              " dimension", expected == 1 ? "" : "s");
  }
  return *this;
}

ArgCheck& ArgCheck::same_shape(const char* name_a, const Tensor& a, const char* name_b,
                               const Tensor& b) {
  if (a.shape() != b.shape()) {
    fail_with(name_a, " is ", shape_to_string(a.shape()), " but ", name_b, " is ",
              shape_to_string(b.shape()), " (shapes must match)");
  }
  return *this;
}

ArgCheck& ArgCheck::shape_is(const char* name, const Tensor& t, const Shape& expected) {
  if (t.shape() != expected) {
    fail_with(name, " is ", shape_to_string(t.shape()), " but must be ", shape_to_string(expected));
  }
  return *this;
}

ArgCheck& ArgCheck::shape_is(const char* name, const Tensor& t,
                             std::initializer_list<int64_t> expected) {
  const Shape& shape = t.shape();
  if (shape.size() != expected.size() ||
      !std::equal(expected.begin(), expected.end(), shape.begin()))
    return shape_is(name, t, Shape(expected));  // fails, naming both shapes
  return *this;
}

ArgCheck& ArgCheck::option_in(const char* name, double value, double lo, double hi, bool lo_open,
                              bool hi_open) {
  const bool ok = std::isfinite(value) && (lo_open ? value > lo : value >= lo) &&
                  (hi_open ? value < hi : value <= hi);
  if (!ok) {
    fail_with(name, " is ", value, " but must be in ", lo_open ? "(" : "[", lo, ", ", hi,
              hi_open ? ")" : "]");
  }
  return *this;
}

ArgCheck& ArgCheck::option_finite(const char* name, double value) {
  if (!std::isfinite(value)) fail_with(name, " is ", value, " but must be finite");
  return *this;
}

ArgCheck& ArgCheck::floating(const char* name, const Tensor* t) {
  if (t != nullptr && t->defined() && t->dtype() == DType::BF16)
    return tensor(name, t, DType::BF16);
  return tensor(name, t, DType::F32);
}

ArgCheck& ArgCheck::same_dtype(const char* name_a, const Tensor& a, const char* name_b,
                               const Tensor& b) {
  if (a.dtype() != b.dtype()) {
    fail_with(name_a, " is ", to_string(a.dtype()), " but ", name_b, " is ", to_string(b.dtype()),
              " (the operands of a product share a dtype)");
  }
  return *this;
}

ArgCheck& ArgCheck::floating_output(const char* name, Tensor& t) {
  floating(name, t);
  if (t.is_read_only()) {
    fail_with(name, " (", t.describe(), ") is read-only (wrapped from const memory)");
  }
  return *this;
}

ArgCheck& ArgCheck::output(const char* name, Tensor* t, DType dtype) {
  tensor(name, t, dtype);
  if (t->is_read_only()) {
    fail_with(name, " (", t->describe(), ") is read-only (wrapped from const memory)");
  }
  return *this;
}

bool overlaps(const Tensor& a, const Tensor& b) {
  if (a.nbytes() == 0 || b.nbytes() == 0 || a.device() != b.device()) return false;
  const auto a0 = reinterpret_cast<uintptr_t>(a.raw_data());
  const auto b0 = reinterpret_cast<uintptr_t>(b.raw_data());
  return a0 < b0 + b.nbytes() && b0 < a0 + a.nbytes();
}

ArgCheck& ArgCheck::no_alias(const char* out_name, const Tensor* out, const char* in_name,
                             const Tensor& in) {
  if (out != nullptr && overlaps(*out, in)) {
    fail_with(out_name, " must not alias ", in_name, " (their memory overlaps)");
  }
  return *this;
}

ArgCheck& ArgCheck::in_place_or_disjoint(const char* out_name, const Tensor& out,
                                         const char* in_name, const Tensor& in) {
  const bool exact = out.raw_data() == in.raw_data() && out.nbytes() == in.nbytes();
  if (!exact && overlaps(out, in)) {
    fail_with(out_name, " partly overlaps ", in_name,
              " (an element-wise output must be exactly in place or disjoint)");
  }
  return *this;
}

}  // namespace nnops::detail
