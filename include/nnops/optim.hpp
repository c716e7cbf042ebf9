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

// param and the state are F32; grad is F32 or BF16 (read as FP32). Mixed precision: param is
// the FP32 master copy and `working` (BF16, param's shape, or null) receives the updated
// master rounded to nearest even in the same pass, so the working copy always equals
// bf16(master). Masked entries are 0 in both.
void adam_step(const AdamOptions& options, Tensor& param, const Tensor& grad, AdamState& state,
               const Tensor* mask = nullptr, Tensor* working = nullptr);

// Steps every parameter in one pass; masks and working are empty or have one (nullable) entry
// per parameter.
void adam_step(const AdamOptions& options, const std::vector<Tensor*>& params,
               const std::vector<const Tensor*>& grads, const std::vector<AdamState*>& states,
               const std::vector<const Tensor*>& masks = {},
               const std::vector<Tensor*>& working = {});

struct SgdOptions {
  float lr = 1e-3f, momentum = 0.0f, dampening = 0.0f, weight_decay = 0.0f;
  bool nesterov = false, maximize = false;
};

// Moving leaves the source undefined (a moved-from Tensor is undefined).
struct SgdState {
  Tensor momentum_buffer;  // created on the first step with momentum != 0
};

// The same mixed-precision contract as adam_step: grad F32 or BF16, an optional BF16 working
// copy written from the FP32 param.
void sgd_step(const SgdOptions& options, Tensor& param, const Tensor& grad, SgdState& state,
              const Tensor* mask = nullptr, Tensor* working = nullptr);

// Returns the total L2 norm of all gradients and scales them by max_norm / (norm + 1e-6) when
// that factor is below 1 (or NaN, as PyTorch propagates a non-finite norm). max_norm may be
// +inf (nothing is scaled). Gradients are F32 or BF16; squares are summed in double, and a
// scaled BF16 gradient is rounded once.
double clip_grad_norm(const std::vector<Tensor*>& grads, float max_norm);

// The same, without waiting for the device: the total norm is written to total_norm (an F32
// tensor of one element on the gradients' device) and the scaling is decided on the device.
void clip_grad_norm(const std::vector<Tensor*>& grads, float max_norm, Tensor& total_norm);

}  // namespace nnops
