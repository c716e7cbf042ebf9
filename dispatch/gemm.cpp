// Validation and dispatch for matmul and the linear layer.
#include "nnops/gemm.hpp"

#include <cmath>

#include "backend.hpp"
#include "check.hpp"

namespace nnops {

void matmul(const Tensor& a, const Tensor& b, Tensor& c, GemmOptions options) {
  detail::ArgCheck check("nnops::matmul");
  check.floating("a", a).floating("b", b).same_dtype("a", a, "b", b).floating_output("c", c);
  check.ndim("a", a, 2).ndim("b", b, 2).ndim("c", c, 2);
  check.option_finite("alpha", options.alpha).option_finite("beta", options.beta);
  const int64_t m = options.trans_a ? a.dim(1) : a.dim(0);
  const int64_t k = options.trans_a ? a.dim(0) : a.dim(1);
  const int64_t kb = options.trans_b ? b.dim(1) : b.dim(0);
  const int64_t n = options.trans_b ? b.dim(0) : b.dim(1);
  if (k != kb) {
    check.fail_with("op(a) is [", m, ", ", k, "] but op(b) is [", kb, ", ", n,
                    "] (inner dimensions differ; a is ", shape_to_string(a.shape()), ", b is ",
                    shape_to_string(b.shape()), ")");
  }
  check.shape_is("c", c, {m, n});
  check.no_alias("c", &c, "a", a).no_alias("c", &c, "b", b);
  if (m == 0 || n == 0) return;
  check.run([&](detail::Backend& be) {
    be.gemm(detail::view_of(c), detail::view_of(a), detail::view_of(b), m, n, k, options);
  });
}

void linear_forward(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y) {
  detail::ArgCheck check("nnops::linear_forward");
  check.floating("x", x).floating("w", w).same_dtype("x", x, "w", w);
  if (bias) check.floating("bias", *bias);
  check.floating_output("y", y);
  check.ndim("x", x, 2).ndim("w", w, 2);
  const int64_t rows = x.dim(0), in = x.dim(1), out = w.dim(0);
  if (w.dim(1) != in) {
    check.fail_with("x is ", shape_to_string(x.shape()), " but w is ", shape_to_string(w.shape()),
                    " (w must be [out, ", in, "])");
  }
  if (bias) check.shape_is("bias", *bias, {out});
  check.shape_is("y", y, {rows, out});
  check.no_alias("y", &y, "x", x).no_alias("y", &y, "w", w).no_alias("y", &y, "bias", bias);
  if (rows == 0 || out == 0) return;
  check.run([&](detail::Backend& be) {
    be.linear_forward(detail::view_of(y), detail::view_of(x), detail::view_of(w),
                      detail::view_of(bias), rows, in, out);
  });
}

void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw,
                     Tensor* db) {
  detail::ArgCheck check("nnops::linear_backward");
  check.floating("x", x).floating("w", w).floating("dy", dy);
  check.same_dtype("x", x, "w", w).same_dtype("x", x, "dy", dy);
  check.optional_floating_output("dx", dx).floating_output("dw", dw);
  check.optional_floating_output("db", db);
  check.ndim("x", x, 2).ndim("w", w, 2).ndim("dy", dy, 2);
  const int64_t rows = x.dim(0), in = x.dim(1), out = w.dim(0);
  if (w.dim(1) != in) {
    check.fail_with("x is ", shape_to_string(x.shape()), " but w is ", shape_to_string(w.shape()),
                    " (w must be [out, ", in, "])");
  }
  check.shape_is("dy", dy, {rows, out});
  if (dx) check.shape_is("dx", *dx, {rows, in});
  check.shape_is("dw", dw, {out, in});
  if (db) check.shape_is("db", *db, {out});
  // The products read x, w and dy while they write dx, dw and db, which must not overlap either.
  for (auto [name, out] :
       {std::pair<const char*, const Tensor*>{"dx", dx}, {"dw", &dw}, {"db", db}}) {
    check.no_alias(name, out, "x", x).no_alias(name, out, "w", w).no_alias(name, out, "dy", dy);
  }
  check.no_alias("dw", &dw, "dx", dx).no_alias("db", db, "dx", dx).no_alias("db", db, "dw", dw);
  check.run([&](detail::Backend& be) {
    be.linear_backward(detail::view_of(dx), detail::view_of(dw), detail::view_of(db),
                       detail::view_of(x), detail::view_of(w), detail::view_of(dy), rows, in, out);
  });
}

}  // namespace nnops
