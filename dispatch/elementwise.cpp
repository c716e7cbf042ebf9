// Validation and dispatch for the element-wise helpers.
#include "nnops/elementwise.hpp"

#include "backend.hpp"
#include "check.hpp"

namespace nnops {

void add_scaled(Tensor& y, const Tensor& x, float alpha, float beta) {
  detail::ArgCheck check("nnops::add_scaled");
  check.floating_output("y", y).floating("x", x).same_shape("y", y, "x", x);
  check.in_place_or_disjoint("y", y, "x", x);
  check.option_finite("alpha", alpha).option_finite("beta", beta);
  if (y.numel() == 0) return;
  check.run([&](detail::Backend& be) {
    be.add_scaled(detail::view_of(y), detail::view_of(x), y.numel(), alpha, beta);
  });
}

void fill(Tensor& t, float value) {
  detail::ArgCheck check("nnops::fill");
  check.output("t", t, DType::F32);
  if (t.numel() == 0) return;
  check.run([&](detail::Backend& be) { be.fill(t.data<float>(), t.numel(), value); });
}

}  // namespace nnops
