// Validation and dispatch for element-wise activations and softmax / log_softmax.
#include "nnops/activation.hpp"

#include "backend.hpp"
#include "check.hpp"
#include "nnops/detail/transformer_math.hpp"
#include "widen.hpp"

namespace nnops {

const char* to_string(Activation activation) {
  switch (activation) {
    case Activation::ReLU:
      return "relu";
    case Activation::LeakyReLU:
      return "leaky_relu";
    case Activation::GELU:
      return "gelu";
    case Activation::GELUTanh:
      return "gelu_tanh";
    case Activation::SiLU:
      return "silu";
    case Activation::Sigmoid:
      return "sigmoid";
    case Activation::Tanh:
      return "tanh";
  }
  return "?";
}

namespace {

void check_activation(detail::ArgCheck& check, Activation activation, float negative_slope) {
  const int a = static_cast<int>(activation);
  if (a < static_cast<int>(Activation::ReLU) || a > static_cast<int>(Activation::Tanh)) {
    check.fail_with("activation ", a, " is not a valid nnops::Activation");
  }
  check.option_finite("negative_slope", negative_slope);
}

}  // namespace

void activation_forward(Activation activation, const Tensor& x, Tensor& y, float negative_slope) {
  detail::ArgCheck check("nnops::activation_forward");
  check.floating("x", x).floating_output("y", y).same_shape("x", x, "y", y);
  check.in_place_or_disjoint("y", y, "x", x);
  check_activation(check, activation, negative_slope);
  if (x.numel() == 0) return;
  check.run([&](detail::Backend& be) {
    be.activation_forward(detail::view_of(y), detail::view_of(x), x.numel(), activation,
                          negative_slope);
  });
}

void activation_backward(Activation activation, const Tensor& x, const Tensor& dy, Tensor& dx,
                         float negative_slope) {
  detail::ArgCheck check("nnops::activation_backward");
  check.floating("x", x).floating("dy", dy).floating_output("dx", dx);
  check.same_shape("x", x, "dy", dy).same_shape("x", x, "dx", dx);
  check.in_place_or_disjoint("dx", dx, "dy", dy).in_place_or_disjoint("dx", dx, "x", x);
  check_activation(check, activation, negative_slope);
  if (x.numel() == 0) return;
  check.run([&](detail::Backend& be) {
    be.activation_backward(detail::view_of(dx), detail::view_of(x), detail::view_of(dy), x.numel(),
                           activation, negative_slope);
  });
}

namespace {

// x [..., 2H] and the [..., H] shape of y.
Shape halved(detail::ArgCheck& check, const Tensor& x) {
  check.min_ndim("x", x, 1);
  if (x.dim(-1) % 2 != 0) {
    check.fail_with("x is ", shape_to_string(x.shape()), ": its last dimension must be even (2H)");
  }
  Shape s = x.shape();
  s.back() /= 2;
  return s;
}

}  // namespace

void gated_activation_forward(Activation activation, const Tensor& x, Tensor& y) {
  // Validation allocates too (names, shapes): running out of memory anywhere is an Error.
  detail::guarded("nnops::gated_activation_forward", [&] {
    detail::ArgCheck check("nnops::gated_activation_forward");
    check.floating("x", x).floating_output("y", y);
    check_activation(check, activation, detail::kGatedNegativeSlope);
    check.shape_is("y", y, halved(check, x)).no_alias("y", &y, "x", x);
    if (y.numel() == 0) return;
    const int64_t h = y.dim(-1);
    check.run([&](detail::Backend& be) {
      detail::F32Stand f32;
      const Tensor& x32 = f32.in(x);
      Tensor& y32 = f32.out(y);
      be.gated_activation_forward(y32.data<float>(), x32.data<float>(), y.numel() / h, h,
                                  activation);
      f32.finish();
    });
  });
}

void gated_activation_backward(Activation activation, const Tensor& x, const Tensor& dy,
                               Tensor& dx) {
  // Validation allocates too (names, shapes): running out of memory anywhere is an Error.
  detail::guarded("nnops::gated_activation_backward", [&] {
    detail::ArgCheck check("nnops::gated_activation_backward");
    check.floating("x", x).floating("dy", dy).floating_output("dx", dx);
    check_activation(check, activation, detail::kGatedNegativeSlope);
    check.shape_is("dy", dy, halved(check, x)).same_shape("x", x, "dx", dx);
    check.no_alias("dx", &dx, "x", x).no_alias("dx", &dx, "dy", dy);
    if (dy.numel() == 0) return;
    const int64_t h = dy.dim(-1);
    check.run([&](detail::Backend& be) {
      detail::F32Stand f32;
      const Tensor& x32 = f32.in(x);
      const Tensor& dy32 = f32.in(dy);
      Tensor& dx32 = f32.out(dx);
      be.gated_activation_backward(dx32.data<float>(), x32.data<float>(), dy32.data<float>(),
                                   dy.numel() / h, h, activation);
      f32.finish();
    });
  });
}

namespace {

void softmax_forward_impl(const char* fn, const Tensor& x, Tensor& y, bool log) {
  detail::ArgCheck check(fn);
  check.floating("x", x).floating_output("y", y).min_ndim("x", x, 1);
  check.same_shape("x", x, "y", y).in_place_or_disjoint("y", y, "x", x);
  const int64_t cols = x.dim(-1);
  if (x.numel() == 0) return;
  check.run([&](detail::Backend& be) {
    detail::F32Stand f32;
    const Tensor& x32 = f32.in(x);
    Tensor& y32 = f32.out(y);
    be.softmax_forward(y32.data<float>(), x32.data<float>(), x.numel() / cols, cols, log);
    f32.finish();
  });
}

void softmax_backward_impl(const char* fn, const Tensor& y, const Tensor& dy, Tensor& dx,
                           bool log) {
  detail::ArgCheck check(fn);
  check.floating("y", y).floating("dy", dy).floating_output("dx", dx);
  check.min_ndim("y", y, 1).same_shape("y", y, "dy", dy).same_shape("y", y, "dx", dx);
  check.no_alias("dx", &dx, "y", y).in_place_or_disjoint("dx", dx, "dy", dy);
  const int64_t cols = y.dim(-1);
  if (y.numel() == 0) return;
  check.run([&](detail::Backend& be) {
    detail::F32Stand f32;
    const Tensor& y32 = f32.in(y);
    const Tensor& dy32 = f32.in(dy);
    Tensor& dx32 = f32.out(dx);
    be.softmax_backward(dx32.data<float>(), y32.data<float>(), dy32.data<float>(), y.numel() / cols,
                        cols, log);
    f32.finish();
  });
}

}  // namespace

void softmax_forward(const Tensor& x, Tensor& y) {
  softmax_forward_impl("nnops::softmax_forward", x, y, false);
}
void softmax_backward(const Tensor& y, const Tensor& dy, Tensor& dx) {
  softmax_backward_impl("nnops::softmax_backward", y, dy, dx, false);
}
void log_softmax_forward(const Tensor& x, Tensor& y) {
  softmax_forward_impl("nnops::log_softmax_forward", x, y, true);
}
void log_softmax_backward(const Tensor& y, const Tensor& dy, Tensor& dx) {
  softmax_backward_impl("nnops::log_softmax_backward", y, dy, dx, true);
}

}  // namespace nnops
