// Validation and dispatch for Adam/AdamW, SGD and gradient clipping. Scalars that PyTorch
// computes in Python double (bias corrections, step size) are computed here in double.
#include "nnops/optim.hpp"

#include <charconv>
#include <cmath>
#include <string>
#include <vector>

#include "backend.hpp"
#include "check.hpp"

namespace nnops {

namespace {

// Options are floats, but PyTorch does its scalar arithmetic in double on the decimal the user
// wrote (0.9, not 0.89999997615814). The shortest decimal that round-trips the float recovers it.
double decimal_double(float value) {
  char buf[64];
  const auto result = std::to_chars(buf, buf + sizeof buf, value);
  *result.ptr = '\0';
  return std::strtod(buf, nullptr);
}

void check_adam_options(detail::ArgCheck& check, const AdamOptions& o) {
  check.option_in("lr", o.lr, 0.0, INFINITY, false, true);
  check.option_in("beta1", o.beta1, 0.0, 1.0, false, true);
  check.option_in("beta2", o.beta2, 0.0, 1.0, false, true);
  check.option_in("eps", o.eps, 0.0, INFINITY, false, true);
  check.option_in("weight_decay", o.weight_decay, 0.0, INFINITY, false, true);
}

// A state tensor must be undefined (created on first use) or match the parameter.
void check_state_tensor(detail::ArgCheck& check, const char* name, Tensor& state,
                        const Tensor& param) {
  if (!state.defined()) return;
  check.output(name, state, DType::F32).same_shape("param", param, name, state);
}

detail::AdamScalars adam_scalars(const AdamOptions& o, int64_t step) {
  const double lr = decimal_double(o.lr), beta1 = decimal_double(o.beta1),
               beta2 = decimal_double(o.beta2), wd = decimal_double(o.weight_decay);
  const double bias_correction1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bias_correction2 = 1.0 - std::pow(beta2, static_cast<double>(step));
  detail::AdamScalars s{};
  s.beta1 = o.beta1;
  s.beta2 = o.beta2;
  s.one_minus_beta1 = static_cast<float>(1.0 - beta1);
  s.one_minus_beta2 = static_cast<float>(1.0 - beta2);
  s.eps = o.eps;
  s.grad_sign = o.maximize ? -1.0f : 1.0f;
  const bool decoupled = o.decoupled_weight_decay && o.weight_decay != 0.0f;
  s.decay_factor = decoupled ? static_cast<float>(1.0 - lr * wd) : 1.0f;
  s.l2_weight_decay = decoupled ? 0.0f : o.weight_decay;
  s.neg_step_size = static_cast<float>(-(lr / bias_correction1));
  s.bias_correction2_sqrt = static_cast<float>(std::sqrt(bias_correction2));
  s.amsgrad = o.amsgrad;
  return s;
}

}  // namespace

namespace {

// A BF16 working copy of an FP32 master parameter: written, never read, by the step.
void check_working(detail::ArgCheck& check, Tensor* working, const Tensor& param,
                   const Tensor& grad, const Tensor* mask) {
  if (working == nullptr) return;
  check.output("working", working, DType::BF16).same_shape("param", param, "working", *working);
  check.no_alias("working", working, "param", param).no_alias("working", working, "grad", grad);
  check.no_alias("working", working, "mask", mask);
}

}  // namespace

void adam_step(const AdamOptions& options, const std::vector<Tensor*>& params,
               const std::vector<const Tensor*>& grads, const std::vector<AdamState*>& states,
               const std::vector<const Tensor*>& masks, const std::vector<Tensor*>& working) {
  // Validation allocates too (names, shapes): running out of memory anywhere is an Error.
  detail::guarded("nnops::adam_step", [&] {
    detail::ArgCheck check("nnops::adam_step");
    check_adam_options(check, options);
    if (grads.size() != params.size() || states.size() != params.size()) {
      check.fail_with(params.size(), " params but ", grads.size(), " grads and ", states.size(),
                      " states (one of each per parameter)");
    }
    if (!masks.empty() && masks.size() != params.size()) {
      check.fail_with(params.size(), " params but ", masks.size(),
                      " masks (none, or one per parameter)");
    }
    if (!working.empty() && working.size() != params.size()) {
      check.fail_with(params.size(), " params but ", working.size(),
                      " working copies (none, or one per parameter)");
    }
    for (size_t i = 0; i < params.size(); ++i) {
      check.output("param", params[i], DType::F32).floating("grad", grads[i]);
      check.same_shape("param", *params[i], "grad", *grads[i]);
      if (states[i] == nullptr) check.fail_with("states[", i, "] is null");
      AdamState& st = *states[i];
      check_state_tensor(check, "state.exp_avg", st.exp_avg, *params[i]);
      check_state_tensor(check, "state.exp_avg_sq", st.exp_avg_sq, *params[i]);
      if (options.amsgrad)
        check_state_tensor(check, "state.max_exp_avg_sq", st.max_exp_avg_sq, *params[i]);
      if (st.step < 0) check.fail_with("state.step is ", st.step, " but must be >= 0");
      const Tensor* mask = masks.empty() ? nullptr : masks[i];
      if (mask)
        check.tensor("mask", mask, DType::U8).same_shape("param", *params[i], "mask", *mask);
      Tensor* copy = working.empty() ? nullptr : working[i];
      check_working(check, copy, *params[i], *grads[i], mask);
      // Every tensor the step writes must be disjoint from every other it touches.
      const Tensor* written[] = {params[i], &st.exp_avg, &st.exp_avg_sq,
                                 options.amsgrad ? &st.max_exp_avg_sq : nullptr, copy};
      const Tensor* read[] = {grads[i], mask};
      for (const Tensor* w : written) {
        if (w == nullptr || !w->defined()) continue;
        for (const Tensor* r : read) {
          if (r != nullptr && detail::overlaps(*w, *r))
            check.fail_with("params[", i, "]: a written tensor overlaps its grad or mask");
        }
        for (const Tensor* w2 : written) {
          if (w2 != nullptr && w2 != w && w2->defined() && detail::overlaps(*w, *w2))
            check.fail_with("params[", i, "]: the parameter and its state tensors overlap");
        }
      }
      for (size_t j = 0; j < i; ++j) {
        if (detail::overlaps(*params[j], *params[i])) {
          check.fail_with("params[", j, "] and params[", i, "] are the same tensor or overlap");
        }
        if (!working.empty() && working[i] && working[j] &&
            detail::overlaps(*working[j], *working[i]))
          check.fail_with("working[", j, "] and working[", i, "] are the same tensor or overlap");
        if (states[j] == states[i])
          check.fail_with("states[", j, "] and states[", i, "] are the same");
      }
    }
    if (params.empty()) return;

    check.run([&](detail::Backend& backend) {
      // State tensors a first step needs are made aside and committed only after the step ran, so
      // a failure (out of memory, a device error) leaves every AdamState as it was.
      std::vector<Tensor> fresh;
      fresh.reserve(3 * params.size());
      auto state_data = [&](Tensor& state, const Tensor& param) {
        if (state.defined()) return state.data<float>();
        fresh.push_back(Tensor::zeros(param.shape(), DType::F32, param.device()));
        return fresh.back().data<float>();
      };
      std::vector<detail::AdamTensor> work;
      work.reserve(params.size());
      for (size_t i = 0; i < params.size(); ++i) {
        AdamState& st = *states[i];
        const Tensor* mask = masks.empty() ? nullptr : masks[i];
        float* m = state_data(st.exp_avg, *params[i]);
        float* v = state_data(st.exp_avg_sq, *params[i]);
        float* vmax = options.amsgrad ? state_data(st.max_exp_avg_sq, *params[i]) : nullptr;
        // PyTorch increments the step before using it.
        Tensor* copy = working.empty() ? nullptr : working[i];
        work.push_back(detail::AdamTensor{params[i]->data<float>(), grads[i]->raw_data(),
                                          grads[i]->dtype(),
                                          copy ? static_cast<uint16_t*>(copy->raw_data()) : nullptr,
                                          m, v, vmax, mask ? mask->data<uint8_t>() : nullptr,
                                          params[i]->numel(), adam_scalars(options, st.step + 1)});
      }
      backend.adam_step(work.data(), static_cast<int64_t>(work.size()));
      size_t next = 0;
      for (size_t i = 0; i < params.size(); ++i) {
        AdamState& st = *states[i];
        if (!st.exp_avg.defined()) st.exp_avg = std::move(fresh[next++]);
        if (!st.exp_avg_sq.defined()) st.exp_avg_sq = std::move(fresh[next++]);
        if (options.amsgrad && !st.max_exp_avg_sq.defined())
          st.max_exp_avg_sq = std::move(fresh[next++]);
        st.step += 1;
      }
    });
  });
}

void adam_step(const AdamOptions& options, Tensor& param, const Tensor& grad, AdamState& state,
               const Tensor* mask, Tensor* working) {
  detail::guarded("nnops::adam_step", [&] {
    adam_step(options, std::vector<Tensor*>{&param}, std::vector<const Tensor*>{&grad},
              std::vector<AdamState*>{&state}, std::vector<const Tensor*>{mask},
              std::vector<Tensor*>{working});
  });
}

void sgd_step(const SgdOptions& options, Tensor& param, const Tensor& grad, SgdState& state,
              const Tensor* mask, Tensor* working) {
  // Validation allocates too (names, shapes): running out of memory anywhere is an Error.
  detail::guarded("nnops::sgd_step", [&] {
    detail::ArgCheck check("nnops::sgd_step");
    check.option_in("lr", options.lr, 0.0, INFINITY, false, true);
    check.option_in("momentum", options.momentum, 0.0, INFINITY, false, true);
    check.option_in("dampening", options.dampening, -INFINITY, INFINITY, true, true);
    check.option_in("weight_decay", options.weight_decay, 0.0, INFINITY, false, true);
    if (options.nesterov && (options.momentum <= 0.0f || options.dampening != 0.0f)) {
      check.fail("nesterov requires momentum > 0 and dampening == 0");
    }
    check.output("param", param, DType::F32).floating("grad", grad);
    check.same_shape("param", param, "grad", grad);
    check.optional("mask", mask, DType::U8);
    if (mask) check.same_shape("param", param, "mask", *mask);
    check_working(check, working, param, grad, mask);
    check_state_tensor(check, "state.momentum_buffer", state.momentum_buffer, param);
    check.no_alias("param", &param, "grad", grad).no_alias("param", &param, "mask", mask);
    if (state.momentum_buffer.defined()) {
      const Tensor& buf = state.momentum_buffer;
      check.no_alias("state.momentum_buffer", &buf, "param", param);
      check.no_alias("state.momentum_buffer", &buf, "grad", grad);
      check.no_alias("state.momentum_buffer", &buf, "mask", mask);
      check.no_alias("state.momentum_buffer", &buf, "working", working);
    }

    detail::SgdScalars s{};
    s.lr = options.lr;
    s.momentum = options.momentum;
    s.one_minus_dampening = static_cast<float>(1.0 - decimal_double(options.dampening));
    s.weight_decay = options.weight_decay;
    s.nesterov = options.nesterov;
    s.maximize = options.maximize;
    s.first_step = false;
    check.run([&](detail::Backend& backend) {
      // A new momentum buffer is committed only once the step has run (see adam_step).
      Tensor fresh;
      float* buf = nullptr;
      if (options.momentum != 0.0f) {
        if (!state.momentum_buffer.defined()) {
          fresh = Tensor::zeros(param.shape(), DType::F32, param.device());
          s.first_step = true;
          buf = fresh.data<float>();
        } else {
          buf = state.momentum_buffer.data<float>();
        }
      }
      if (param.numel() > 0) {
        backend.sgd_step(
            param.data<float>(), detail::view_of(grad), buf, mask ? mask->data<uint8_t>() : nullptr,
            working ? static_cast<uint16_t*>(working->raw_data()) : nullptr, param.numel(), s);
      }
      if (fresh.defined()) state.momentum_buffer = std::move(fresh);
    });
  });
}

namespace {

void check_clip(detail::ArgCheck& check, const std::vector<Tensor*>& grads, float max_norm) {
  // +inf is allowed, as in PyTorch: the norm is measured and nothing is scaled.
  if (!(max_norm >= 0.0f)) check.fail_with("max_norm is ", max_norm, " but must be >= 0");
  for (size_t i = 0; i < grads.size(); ++i) {
    if (grads[i] == nullptr) check.fail_with("grads[", i, "] is null");
    check.floating_output("grad", *grads[i]);
    for (size_t j = 0; j < i; ++j) {
      if (detail::overlaps(*grads[j], *grads[i]))
        check.fail_with("grads[", j, "] and grads[", i, "] are the same tensor or overlap");
    }
  }
}

// Data pointers and sizes of the gradients, for the backend entries.
void flatten_grads(const std::vector<Tensor*>& grads, std::vector<detail::View>& views,
                   std::vector<int64_t>& sizes) {
  for (Tensor* g : grads) {
    views.push_back(detail::view_of(*g));
    sizes.push_back(g->numel());
  }
}

}  // namespace

double clip_grad_norm(const std::vector<Tensor*>& grads, float max_norm) {
  // Validation allocates too (names, shapes): running out of memory anywhere is an Error.
  return detail::guarded("nnops::clip_grad_norm", [&]() -> double {
    detail::ArgCheck check("nnops::clip_grad_norm");
    check_clip(check, grads, max_norm);
    if (grads.empty()) return 0.0;
    std::vector<detail::View> ptrs;
    std::vector<int64_t> sizes;
    flatten_grads(grads, ptrs, sizes);
    double total = 0.0;
    check.run([&](detail::Backend& backend) {
      backend.raise_device_errors();  // a synchronising call: before any gradient is scaled
      total = backend.clip_grad_norm_on_host(
          ptrs.data(), sizes.data(), static_cast<int64_t>(ptrs.size()), decimal_double(max_norm));
    });
    return total;
  });
}

void clip_grad_norm(const std::vector<Tensor*>& grads, float max_norm, Tensor& total_norm) {
  // Validation allocates too (names, shapes): running out of memory anywhere is an Error.
  detail::guarded("nnops::clip_grad_norm", [&] {
    detail::ArgCheck check("nnops::clip_grad_norm");
    check_clip(check, grads, max_norm);
    check.output("total_norm", total_norm, DType::F32);
    if (total_norm.numel() != 1) {
      check.fail_with("total_norm is ", shape_to_string(total_norm.shape()),
                      " but must hold exactly 1 element");
    }
    for (Tensor* g : grads) check.no_alias("total_norm", &total_norm, "a grad", *g);
    std::vector<detail::View> ptrs;
    std::vector<int64_t> sizes;
    flatten_grads(grads, ptrs, sizes);
    check.run([&](detail::Backend& backend) {
      backend.clip_grad_norm(total_norm.data<float>(), ptrs.data(), sizes.data(),
                             static_cast<int64_t>(ptrs.size()), decimal_double(max_norm));
    });
  });
}

}  // namespace nnops
