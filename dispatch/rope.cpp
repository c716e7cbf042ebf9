// Validation and dispatch for rotary position embeddings.
#include "nnops/rope.hpp"

#include <cmath>

#include "backend.hpp"
#include "check.hpp"
#include "widen.hpp"

namespace nnops {

namespace {

void rope_impl(const char* fn, const char* in_name, const char* out_name, const Tensor& x,
               int64_t offset, float theta, Tensor& y, bool inverse) {
  detail::ArgCheck check(fn);
  check.floating(in_name, x).floating_output(out_name, y).min_ndim(in_name, x, 2);
  check.same_shape(in_name, x, out_name, y).in_place_or_disjoint(out_name, y, in_name, x);
  const int64_t t = x.dim(-2), d = x.dim(-1);
  if (d % 2 != 0)
    check.fail_with(in_name, " is ", shape_to_string(x.shape()), ": D = ", d, " must be even");
  if (offset < 0) check.fail_with("position_offset is ", offset, " but must be >= 0");
  if (!(theta > 0.0f) || !std::isfinite(theta)) {
    check.fail_with("theta is ", theta, " but must be a finite number > 0");
  }
  if (x.numel() == 0) return;
  check.run([&](detail::Backend& be) {
    detail::F32Stand f32;
    const Tensor& x32 = f32.in(x);
    Tensor& y32 = f32.out(y);
    be.rope(y32.data<float>(), x32.data<float>(), x.numel() / (t * d), t, d, offset, theta,
            inverse);
    f32.finish();
  });
}

}  // namespace

void rope_forward(const Tensor& x, int64_t position_offset, float theta, Tensor& y) {
  rope_impl("nnops::rope_forward", "x", "y", x, position_offset, theta, y, false);
}

void rope_backward(const Tensor& dy, int64_t position_offset, float theta, Tensor& dx) {
  rope_impl("nnops::rope_backward", "dy", "dx", dy, position_offset, theta, dx, true);
}

}  // namespace nnops
