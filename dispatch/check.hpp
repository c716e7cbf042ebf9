// Argument validation shared by every public function. All checks run before any output is
// written, so a throwing call leaves its outputs untouched.
#pragma once

#include <initializer_list>
#include <sstream>
#include <string>

#include "backend.hpp"
#include "nnops/error.hpp"
#include "nnops/tensor.hpp"

namespace nnops::detail {

// Whether the bytes of two tensors on one device intersect (empty tensors never do).
bool overlaps(const Tensor& a, const Tensor& b);

class ArgCheck {
 public:
  explicit ArgCheck(const char* fn) : fn_(fn) {}

  [[noreturn]] void fail(const std::string& problem) const {
    throw Error(std::string(fn_) + ": " + problem);
  }
  template <class... Parts>
  [[noreturn]] void fail_with(const Parts&... parts) const {
    std::ostringstream os;
    (os << ... << parts);
    fail(os.str());
  }

  // A required tensor: not null, defined, of this dtype, on the same device as the others.
  ArgCheck& tensor(const char* name, const Tensor* t, DType dtype);
  ArgCheck& tensor(const char* name, const Tensor& t, DType dtype) {
    return tensor(name, &t, dtype);
  }
  // An optional tensor: skipped when null.
  ArgCheck& optional(const char* name, const Tensor* t, DType dtype) {
    return t ? tensor(name, t, dtype) : *this;
  }
  ArgCheck& ndim(const char* name, const Tensor& t, int expected);
  ArgCheck& min_ndim(const char* name, const Tensor& t, int expected);
  ArgCheck& same_shape(const char* name_a, const Tensor& a, const char* name_b, const Tensor& b);
  ArgCheck& shape_is(const char* name, const Tensor& t, const Shape& expected);
  // The same without allocating (validation must not throw std::bad_alloc before the op runs).
  ArgCheck& shape_is(const char* name, const Tensor& t, std::initializer_list<int64_t> expected);
  // A finite float option within [lo, hi] (inclusive ends unless told otherwise).
  ArgCheck& option_in(const char* name, double value, double lo, double hi, bool lo_open = false,
                      bool hi_open = false);
  ArgCheck& option_finite(const char* name, double value);
  // A tensor of floating elements, F32 or BF16 (for the ops that compute in FP32 inside).
  ArgCheck& floating(const char* name, const Tensor* t);
  ArgCheck& floating(const char* name, const Tensor& t) { return floating(name, &t); }
  ArgCheck& floating_output(const char* name, Tensor& t);
  ArgCheck& optional_floating_output(const char* name, Tensor* t) {
    return t ? floating_output(name, *t) : *this;
  }
  // Two tensors of one dtype (the operands of a product).
  ArgCheck& same_dtype(const char* name_a, const Tensor& a, const char* name_b, const Tensor& b);
  // An output: like tensor(), and it must be writable (not wrapped from const memory).
  ArgCheck& output(const char* name, Tensor* t, DType dtype);
  ArgCheck& output(const char* name, Tensor& t, DType dtype) { return output(name, &t, dtype); }
  ArgCheck& optional_output(const char* name, Tensor* t, DType dtype) {
    return t ? output(name, t, dtype) : *this;
  }
  // An output that must not overlap an input by a single byte (null or empty: nothing to check).
  ArgCheck& no_alias(const char* out_name, const Tensor* out, const char* in_name,
                     const Tensor& in);
  ArgCheck& no_alias(const char* out_name, const Tensor* out, const char* in_name,
                     const Tensor* in) {
    return in ? no_alias(out_name, out, in_name, *in) : *this;
  }
  // An element-wise output: either exactly in place over the input or disjoint from it.
  ArgCheck& in_place_or_disjoint(const char* out_name, const Tensor& out, const char* in_name,
                                 const Tensor& in);

  // Runs the backend entry for this call's device; allocation failures inside name fn().
  // Runs the backend entry for this call's device (on the tensors' GPU); allocation failures
  // inside name fn().
  template <class Body>
  void run(Body&& body) const {
    guarded(fn_, [&] {
      Backend& backend = backend_for(device_, fn_);
      const DeviceGuard on_device(backend, device_index_);
      body(backend);
    });
  }

  Device device() const { return device_; }
  int device_index() const { return device_index_; }
  const char* fn() const { return fn_; }

 private:
  const char* fn_;
  Device device_ = Device::CPU;
  int device_index_ = 0;
  const char* device_from_ = nullptr;  // the first tensor seen names the device
};

}  // namespace nnops::detail
