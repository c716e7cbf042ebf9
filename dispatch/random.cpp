// Validation and dispatch for the Philox random fills.
#include "nnops/random.hpp"

#include <cmath>
#include <limits>

#include "backend.hpp"
#include "check.hpp"
#include "widen.hpp"

namespace nnops {

void fill_uniform(Tensor& t, float lo, float hi, uint64_t seed) {
  detail::ArgCheck check("nnops::fill_uniform");
  check.output("t", t, DType::F32).option_finite("lo", lo).option_finite("hi", hi);
  if (!(lo <= hi)) check.fail_with("lo is ", lo, " but must be <= hi (", hi, ")");
  // PyTorch refuses a range wider than the float maximum: hi - lo would round to inf.
  if (static_cast<double>(hi) - lo > std::numeric_limits<float>::max()) {
    check.fail_with("hi - lo is ", static_cast<double>(hi) - lo,
                    " but must not exceed the float maximum (", std::numeric_limits<float>::max(),
                    ")");
  }
  if (t.numel() == 0) return;
  check.run(
      [&](detail::Backend& be) { be.fill_uniform(t.data<float>(), t.numel(), lo, hi, seed); });
}

void fill_normal(Tensor& t, float mean, float std, uint64_t seed) {
  detail::ArgCheck check("nnops::fill_normal");
  check.output("t", t, DType::F32).option_finite("mean", mean);
  check.option_in("std", std, 0.0, INFINITY, false, true);
  if (t.numel() == 0) return;
  check.run(
      [&](detail::Backend& be) { be.fill_normal(t.data<float>(), t.numel(), mean, std, seed); });
}

namespace {

void dropout_impl(const char* fn, const char* in_name, const char* out_name, const Tensor& x,
                  float p, uint64_t seed, Tensor& y) {
  detail::ArgCheck check(fn);
  check.floating(in_name, x).floating_output(out_name, y).same_shape(in_name, x, out_name, y);
  check.in_place_or_disjoint(out_name, y, in_name, x).option_in("p", p, 0.0, 1.0);
  if (x.numel() == 0) return;
  check.run([&](detail::Backend& be) {
    detail::F32Stand f32;
    const Tensor& x32 = f32.in(x);
    Tensor& y32 = f32.out(y);
    be.dropout(y32.data<float>(), x32.data<float>(), x.numel(), p, seed);
    f32.finish();
  });
}

}  // namespace

void dropout_forward(const Tensor& x, float p, uint64_t seed, Tensor& y) {
  dropout_impl("nnops::dropout_forward", "x", "y", x, p, seed, y);
}

void dropout_backward(const Tensor& dy, float p, uint64_t seed, Tensor& dx) {
  dropout_impl("nnops::dropout_backward", "dy", "dx", dy, p, seed, dx);
}

}  // namespace nnops
