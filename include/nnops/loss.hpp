// Losses: each writes the loss to a 1-element F32 tensor on the inputs' device and, when grad is
// given, the gradient of that loss with respect to the prediction, in one pass.
#pragma once

#include <cstdint>

#include "nnops/tensor.hpp"

namespace nnops {

enum class Reduction { Mean, Sum };

// torch.nn.functional.mse_loss: sum((pred - target)^2), divided by numel for Mean.
void mse_loss(const Tensor& pred, const Tensor& target, Tensor& loss, Tensor* grad,
              Reduction reduction = Reduction::Mean);

// torch.nn.functional.cross_entropy on logits [N, C] and I32 targets [N]. Mean divides by the
// number of rows whose target is not ignore_index (NaN when there are none, as PyTorch).
void cross_entropy_loss(const Tensor& logits, const Tensor& targets, Tensor& loss, Tensor* grad,
                        Reduction reduction = Reduction::Mean, float label_smoothing = 0.0f,
                        int32_t ignore_index = -100);

// Knowledge distillation (Hinton et al.): T^2 * KL(softmax(t/T) || softmax(s/T)) averaged over
// the N rows, i.e. F.kl_div(log_softmax(s/T), softmax(t/T), reduction='batchmean') * T^2.
// grad is with respect to the student logits.
void kd_loss(const Tensor& student_logits, const Tensor& teacher_logits, float temperature,
             Tensor& loss, Tensor* grad);

}  // namespace nnops
