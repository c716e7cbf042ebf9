// Optimizer steps following torch.optim (single-tensor algorithms): Adam/AdamW/AMSGrad, SGD with
// momentum/Nesterov, and torch.nn.utils.clip_grad_norm_. Optional U8 masks keep pruned entries
// at exactly 0 and leave their optimizer state untouched.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "nnops/tensor.hpp"

namespace nnops {

struct AdamOptions {
  float lr = 1e-3f, beta1 = 0.9f, beta2 = 0.999f, eps = 1e-8f, weight_decay = 0.0f;
  bool decoupled_weight_decay = false;  // AdamW
  bool amsgrad = false, maximize = false;
};

// Undefined moment tensors are created (zeros, the parameter's shape and device) on first use,
// as PyTorch creates its state lazily.
// Moving leaves the source as a fresh state (undefined tensors, step 0).
struct AdamState {
  Tensor exp_avg, exp_avg_sq, max_exp_avg_sq;
  int64_t step = 0;

  AdamState() = default;
  AdamState(AdamState&& other) noexcept
      : exp_avg(std::move(other.exp_avg)),
        exp_avg_sq(std::move(other.exp_avg_sq)),
        max_exp_avg_sq(std::move(other.max_exp_avg_sq)),
        step(std::exchange(other.step, 0)) {}
  AdamState& operator=(AdamState&& other) noexcept {
    if (this != &other) {
      exp_avg = std::move(other.exp_avg);
      exp_avg_sq = std::move(other.exp_avg_sq);
      max_exp_avg_sq = std::move(other.max_exp_avg_sq);
      step = std::exchange(other.step, 0);
    }
    return *this;
  }
};

void adam_step(const AdamOptions& options, Tensor& param, const Tensor& grad, AdamState& state,
               const Tensor* mask = nullptr);

// Steps every parameter in one pass; masks is empty or has one (nullable) entry per parameter.
void adam_step(const AdamOptions& options, const std::vector<Tensor*>& params,
               const std::vector<const Tensor*>& grads, const std::vector<AdamState*>& states,
               const std::vector<const Tensor*>& masks = {});

struct SgdOptions {
  float lr = 1e-3f, momentum = 0.0f, dampening = 0.0f, weight_decay = 0.0f;
  bool nesterov = false, maximize = false;
};

// Moving leaves the source undefined (a moved-from Tensor is undefined).
struct SgdState {
  Tensor momentum_buffer;  // created on the first step with momentum != 0
};

void sgd_step(const SgdOptions& options, Tensor& param, const Tensor& grad, SgdState& state,
              const Tensor* mask = nullptr);

// Returns the total L2 norm of all gradients and scales them by max_norm / (norm + 1e-6) when
// that factor is below 1 (or NaN, as PyTorch propagates a non-finite norm). max_norm may be
// +inf (nothing is scaled).
double clip_grad_norm(const std::vector<Tensor*>& grads, float max_norm);

// The same, without waiting for the device: the total norm is written to total_norm (an F32
// tensor of one element on the gradients' device) and the scaling is decided on the device.
void clip_grad_norm(const std::vector<Tensor*>& grads, float max_norm, Tensor& total_norm);

}  // namespace nnops
