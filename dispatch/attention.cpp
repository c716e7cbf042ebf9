// Validation and dispatch for scaled dot-product attention (F.scaled_dot_product_attention).
#include "nnops/attention.hpp"

#include <cmath>

#include "backend.hpp"
#include "check.hpp"
#include "widen.hpp"

namespace nnops {

namespace {

detail::AttentionShape check_qkv(detail::ArgCheck& check, const Tensor& q, const Tensor& k,
                                 const Tensor& v, const AttentionOptions& options) {
  check.floating("q", q).floating("k", k).floating("v", v);
  check.ndim("q", q, 4).ndim("k", k, 4).same_shape("k", k, "v", v);
  const int64_t b = q.dim(0), hq = q.dim(1), tq = q.dim(2), d = q.dim(3);
  const int64_t hkv = k.dim(1), tk = k.dim(2);
  if (k.dim(0) != b || k.dim(3) != d) {
    check.fail_with("q is ", shape_to_string(q.shape()), " but k is ", shape_to_string(k.shape()),
                    " (batch and head size must match)");
  }
  if (hkv == 0 ? hq != 0 : hq % hkv != 0) {
    check.fail_with("q has ", hq, " heads but k and v have ", hkv,
                    " (the query heads must be a multiple of the key/value heads)");
  }
  if (!std::isfinite(options.scale) || options.scale < 0.0f) {
    check.fail_with("scale is ", options.scale, " but must be finite and >= 0 (0: 1/sqrt(D))");
  }
  const float scale =
      options.scale != 0.0f ? options.scale : static_cast<float>(1.0 / std::sqrt(double(d)));
  return {b, hq, hkv, tq, tk, d, scale, options.causal};
}

}  // namespace

void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
                       Tensor* logsumexp, const AttentionOptions& options) {
  // Validation allocates too (names, shapes): running out of memory anywhere is an Error.
  detail::guarded("nnops::attention_forward", [&] {
    detail::ArgCheck check("nnops::attention_forward");
    const detail::AttentionShape s = check_qkv(check, q, k, v, options);
    check.floating_output("out", out).same_shape("q", q, "out", out);
    check.optional_output("logsumexp", logsumexp, DType::F32);
    if (logsumexp) check.shape_is("logsumexp", *logsumexp, {s.batch, s.q_heads, s.tq});
    for (auto [name, o] :
         {std::pair<const char*, Tensor*>{"out", &out}, {"logsumexp", logsumexp}}) {
      check.no_alias(name, o, "q", q).no_alias(name, o, "k", k).no_alias(name, o, "v", v);
    }
    check.no_alias("logsumexp", logsumexp, "out", out);
    if (out.numel() == 0 && (logsumexp == nullptr || logsumexp->numel() == 0)) return;
    check.run([&](detail::Backend& be) {
      detail::F32Stand f32;
      const Tensor& q32 = f32.in(q);
      const Tensor& k32 = f32.in(k);
      const Tensor& v32 = f32.in(v);
      Tensor& out32 = f32.out(out);
      be.attention_forward(out32.numel() ? out32.data<float>() : nullptr,
                           logsumexp && logsumexp->numel() ? logsumexp->data<float>() : nullptr,
                           q32.numel() ? q32.data<float>() : nullptr,
                           k32.numel() ? k32.data<float>() : nullptr,
                           v32.numel() ? v32.data<float>() : nullptr, s);
      f32.finish();
    });
  });
}

void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& logsumexp, const Tensor& dout, Tensor& dq, Tensor& dk,
                        Tensor& dv, const AttentionOptions& options) {
  // Validation allocates too (names, shapes): running out of memory anywhere is an Error.
  detail::guarded("nnops::attention_backward", [&] {
    detail::ArgCheck check("nnops::attention_backward");
    const detail::AttentionShape s = check_qkv(check, q, k, v, options);
    check.floating("out", out).same_shape("q", q, "out", out);
    check.floating("dout", dout).same_shape("q", q, "dout", dout);
    check.tensor("logsumexp", logsumexp, DType::F32);
    check.shape_is("logsumexp", logsumexp, {s.batch, s.q_heads, s.tq});
    check.floating_output("dq", dq).same_shape("q", q, "dq", dq);
    check.floating_output("dk", dk).same_shape("k", k, "dk", dk);
    check.floating_output("dv", dv).same_shape("v", v, "dv", dv);
    for (auto [name, o] : {std::pair<const char*, Tensor*>{"dq", &dq}, {"dk", &dk}, {"dv", &dv}}) {
      check.no_alias(name, o, "q", q).no_alias(name, o, "k", k).no_alias(name, o, "v", v);
      check.no_alias(name, o, "out", out).no_alias(name, o, "dout", dout);
      check.no_alias(name, o, "logsumexp", logsumexp);
    }
    check.no_alias("dk", &dk, "dq", dq).no_alias("dv", &dv, "dq", dq).no_alias("dv", &dv, "dk", dk);
    if (dq.numel() == 0 && dk.numel() == 0) return;
    check.run([&](detail::Backend& be) {
      detail::F32Stand f32;
      auto ptr = [](const Tensor& t) { return t.numel() ? t.data<float>() : nullptr; };
      auto mut = [](Tensor& t) { return t.numel() ? t.data<float>() : nullptr; };
      const Tensor& q32 = f32.in(q);
      const Tensor& k32 = f32.in(k);
      const Tensor& v32 = f32.in(v);
      const Tensor& out32 = f32.in(out);
      const Tensor& dout32 = f32.in(dout);
      Tensor& dq32 = f32.out(dq);
      Tensor& dk32 = f32.out(dk);
      Tensor& dv32 = f32.out(dv);
      be.attention_backward(mut(dq32), mut(dk32), mut(dv32), ptr(q32), ptr(k32), ptr(v32),
                            ptr(out32), ptr(logsumexp), ptr(dout32), s);
      f32.finish();
    });
  });
}

}  // namespace nnops
