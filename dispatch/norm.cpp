// Validation and dispatch for LayerNorm and RMSNorm (F.layer_norm, F.rms_norm).
#include "nnops/norm.hpp"

#include <cmath>

#include "backend.hpp"
#include "check.hpp"
#include "widen.hpp"

namespace nnops {

namespace {

// x.shape()[:-1], or [1] for a 1-D x: the shape of mean and rstd.
Shape stats_shape(const Tensor& x) {
  if (x.ndim() <= 1) return {1};
  return Shape(x.shape().begin(), x.shape().end() - 1);
}

// The number of rows normalised (1 for a 1-D x).
int64_t row_count(const Tensor& x) {
  int64_t rows = 1;
  for (int i = 0; i + 1 < x.ndim(); ++i) rows *= x.dim(i);
  return rows;
}

float* data_or_null(Tensor* t) {
  return t ? t->data<float>() : nullptr;
}
const float* data_or_null(const Tensor* t) {
  return t ? t->data<float>() : nullptr;
}

void check_affine(detail::ArgCheck& check, const Tensor& x, const Tensor* weight,
                  const Tensor* bias) {
  check.floating("x", x).min_ndim("x", x, 1);
  if (weight) check.floating("weight", *weight).shape_is("weight", *weight, {x.dim(-1)});
  if (bias) check.floating("bias", *bias).shape_is("bias", *bias, {x.dim(-1)});
}

void check_stats(detail::ArgCheck& check, const char* name, const Tensor* t, const Tensor& x,
                 bool output) {
  if (t == nullptr) return;
  if (output) {
    check.output(name, const_cast<Tensor*>(t), DType::F32);
  } else {
    check.tensor(name, t, DType::F32);
  }
  check.shape_is(name, *t, stats_shape(x));
}

void norm_forward_impl(const char* fn, const Tensor& x, const Tensor* weight, const Tensor* bias,
                       float eps, Tensor& y, Tensor* mean, Tensor* rstd, bool rms) {
  // Validation allocates too (names, shapes): running out of memory anywhere is an Error.
  detail::guarded(fn, [&] {
    detail::ArgCheck check(fn);
    check_affine(check, x, weight, bias);
    check.floating_output("y", y).same_shape("x", x, "y", y).in_place_or_disjoint("y", y, "x", x);
    check_stats(check, "mean", mean, x, true);
    check_stats(check, "rstd", rstd, x, true);
    if (!(eps >= 0.0f) || !std::isfinite(eps)) check.fail_with("eps is ", eps, " but must be >= 0");
    check.no_alias("y", &y, "weight", weight).no_alias("y", &y, "bias", bias);
    for (Tensor* s : {mean, rstd}) {
      const char* name = s == mean ? "mean" : "rstd";
      check.no_alias(name, s, "x", x).no_alias(name, s, "y", y);
      check.no_alias(name, s, "weight", weight).no_alias(name, s, "bias", bias);
    }
    check.no_alias("rstd", rstd, "mean", mean);
    const int64_t d = x.dim(-1);
    const int64_t rows = row_count(x);
    if (rows == 0) return;
    check.run([&](detail::Backend& be) {
      if (d == 0) {  // statistics of empty rows: NaN, as 0 / 0
        for (Tensor* s : {mean, rstd})
          if (s) be.fill(s->data<float>(), s->numel(), NAN);
        return;
      }
      detail::F32Stand f32;
      const Tensor& x32 = f32.in(x);
      const Tensor* w32 = weight ? &f32.in(*weight) : nullptr;
      const Tensor* b32 = bias ? &f32.in(*bias) : nullptr;
      Tensor& y32 = f32.out(y);
      be.norm_forward(y32.numel() ? y32.data<float>() : nullptr, data_or_null(mean),
                      data_or_null(rstd), x32.numel() ? x32.data<float>() : nullptr,
                      data_or_null(w32), data_or_null(b32), rows, d, eps, rms);
      f32.finish();
    });
  });
}

void norm_backward_impl(const char* fn, const Tensor& x, const Tensor* weight, const Tensor* mean,
                        const Tensor& rstd, const Tensor& dy, Tensor* dx, Tensor* dweight,
                        Tensor* dbias, bool rms) {
  // Validation allocates too (names, shapes): running out of memory anywhere is an Error.
  detail::guarded(fn, [&] {
    detail::ArgCheck check(fn);
    check_affine(check, x, weight, nullptr);
    check.floating("dy", dy).same_shape("x", x, "dy", dy);
    check_stats(check, "mean", mean, x, false);
    check_stats(check, "rstd", &rstd, x, false);
    check.optional_floating_output("dx", dx);
    if (dx) check.same_shape("x", x, "dx", *dx);
    const int64_t d = x.dim(-1);
    for (auto [name, out] :
         {std::pair<const char*, Tensor*>{"dweight", dweight}, {"dbias", dbias}}) {
      check.optional_floating_output(name, out);
      if (out) check.shape_is(name, *out, {d});
    }
    // Every output is written while every input is still read: no overlap anywhere.
    for (auto [name, out] :
         {std::pair<const char*, Tensor*>{"dx", dx}, {"dweight", dweight}, {"dbias", dbias}}) {
      check.no_alias(name, out, "x", x).no_alias(name, out, "dy", dy);
      check.no_alias(name, out, "weight", weight).no_alias(name, out, "rstd", rstd);
      check.no_alias(name, out, "mean", mean);
    }
    check.no_alias("dweight", dweight, "dx", dx).no_alias("dbias", dbias, "dx", dx);
    check.no_alias("dbias", dbias, "dweight", dweight);
    const int64_t rows = row_count(x);
    if (d == 0) return;  // every output is empty
    check.run([&](detail::Backend& be) {
      detail::F32Stand f32;
      const Tensor& x32 = f32.in(x);
      const Tensor& dy32 = f32.in(dy);
      const Tensor* w32 = weight ? &f32.in(*weight) : nullptr;
      Tensor* dx32 = f32.out(dx);
      Tensor* dw32 = f32.out(dweight);
      Tensor* db32 = f32.out(dbias);
      be.norm_backward(dx32 && dx32->numel() ? dx32->data<float>() : nullptr,
                       dw32 && dw32->numel() ? dw32->data<float>() : nullptr,
                       db32 && db32->numel() ? db32->data<float>() : nullptr,
                       x32.numel() ? x32.data<float>() : nullptr, data_or_null(w32),
                       mean && mean->numel() ? mean->data<float>() : nullptr,
                       rstd.numel() ? rstd.data<float>() : nullptr,
                       dy32.numel() ? dy32.data<float>() : nullptr, rows, d, rms);
      f32.finish();
    });
  });
}

}  // namespace

void layer_norm_forward(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps,
                        Tensor& y, Tensor* mean, Tensor* rstd) {
  norm_forward_impl("nnops::layer_norm_forward", x, weight, bias, eps, y, mean, rstd, false);
}

void layer_norm_backward(const Tensor& x, const Tensor* weight, const Tensor& mean,
                         const Tensor& rstd, const Tensor& dy, Tensor* dx, Tensor* dweight,
                         Tensor* dbias) {
  norm_backward_impl("nnops::layer_norm_backward", x, weight, &mean, rstd, dy, dx, dweight, dbias,
                     false);
}

void rms_norm_forward(const Tensor& x, const Tensor* weight, float eps, Tensor& y, Tensor* rstd) {
  norm_forward_impl("nnops::rms_norm_forward", x, weight, nullptr, eps, y, nullptr, rstd, true);
}

void rms_norm_backward(const Tensor& x, const Tensor* weight, const Tensor& rstd, const Tensor& dy,
                       Tensor* dx, Tensor* dweight) {
  norm_backward_impl("nnops::rms_norm_backward", x, weight, nullptr, rstd, dy, dx, dweight, nullptr,
                     true);
}

}  // namespace nnops
