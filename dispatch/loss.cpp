// Validation and dispatch for the losses.
#include "nnops/loss.hpp"

#include <cmath>
#include <string>

#include "backend.hpp"
#include "check.hpp"
#include "widen.hpp"

namespace nnops {

namespace {

// The loss and the gradient are written while both inputs are read: no overlap anywhere.
void check_loss_outputs(detail::ArgCheck& check, const Tensor& pred, const Tensor& other,
                        Tensor& loss, Tensor* grad, const char* pred_name, const char* other_name) {
  check.output("loss", loss, DType::F32).optional_floating_output("grad", grad);
  if (loss.numel() != 1) {
    check.fail_with("loss is ", shape_to_string(loss.shape()), " but must hold exactly 1 element");
  }
  if (grad) check.same_shape(pred_name, pred, "grad", *grad);
  check.no_alias("grad", grad, pred_name, pred).no_alias("grad", grad, other_name, other);
  check.no_alias("loss", &loss, pred_name, pred).no_alias("loss", &loss, other_name, other);
  check.no_alias("loss", &loss, "grad", grad);
}

void check_reduction(detail::ArgCheck& check, Reduction reduction) {
  if (reduction != Reduction::Mean && reduction != Reduction::Sum) {
    check.fail_with("reduction ", static_cast<int>(reduction), " is not Mean or Sum");
  }
}

}  // namespace

void mse_loss(const Tensor& pred, const Tensor& target, Tensor& loss, Tensor* grad,
              Reduction reduction) {
  detail::ArgCheck check("nnops::mse_loss");
  check.floating("pred", pred).floating("target", target);
  check.same_shape("pred", pred, "target", target);
  check_loss_outputs(check, pred, target, loss, grad, "pred", "target");
  check_reduction(check, reduction);
  check.run([&](detail::Backend& be) {
    detail::F32Stand f32;
    const Tensor& pred32 = f32.in(pred);
    const Tensor& target32 = f32.in(target);
    Tensor* grad32 = f32.out(grad);
    be.mse_loss(loss.data<float>(), grad32 ? grad32->data<float>() : nullptr, pred32.data<float>(),
                target32.data<float>(), pred.numel(), reduction);
    f32.finish();
  });
}

void cross_entropy_loss(const Tensor& logits, const Tensor& targets, Tensor& loss, Tensor* grad,
                        Reduction reduction, float label_smoothing, int32_t ignore_index) {
  detail::ArgCheck check("nnops::cross_entropy_loss");
  check.floating("logits", logits).tensor("targets", targets, DType::I32);
  check.ndim("logits", logits, 2).ndim("targets", targets, 1);
  const int64_t rows = logits.dim(0), classes = logits.dim(1);
  if (targets.dim(0) != rows) {
    check.fail_with("logits is ", shape_to_string(logits.shape()), " but targets is ",
                    shape_to_string(targets.shape()), " (one target per row)");
  }
  check_loss_outputs(check, logits, targets, loss, grad, "logits", "targets");
  check_reduction(check, reduction);
  check.option_in("label_smoothing", label_smoothing, 0.0, 1.0);
  // Targets are data, but an out-of-range class would index out of bounds. On the CPU they are
  // checked here; on CUDA the kernel checks them without a round trip to the host, makes the
  // loss and that row's gradient NaN, and the next synchronising call throws.
  if (check.device() == Device::CPU) {
    const int32_t* t = targets.data<int32_t>();
    for (int64_t i = 0; i < rows; ++i) {
      if (t[i] != ignore_index && (t[i] < 0 || t[i] >= classes)) {
        check.fail_with("targets[", i, "] is ", t[i], " but must be in [0, ", classes,
                        ") or equal ignore_index (", ignore_index, ")");
      }
    }
  }
  check.run([&](detail::Backend& be) {
    detail::F32Stand f32;
    const Tensor& logits32 = f32.in(logits);
    Tensor* grad32 = f32.out(grad);
    be.cross_entropy_loss(loss.data<float>(), grad32 ? grad32->data<float>() : nullptr,
                          logits32.data<float>(), targets.data<int32_t>(), rows, classes, reduction,
                          label_smoothing, ignore_index);
    f32.finish();
  });
}

void kd_loss(const Tensor& student_logits, const Tensor& teacher_logits, float temperature,
             Tensor& loss, Tensor* grad) {
  detail::ArgCheck check("nnops::kd_loss");
  check.floating("student_logits", student_logits).floating("teacher_logits", teacher_logits);
  check.ndim("student_logits", student_logits, 2);
  check.same_shape("student_logits", student_logits, "teacher_logits", teacher_logits);
  check_loss_outputs(check, student_logits, teacher_logits, loss, grad, "student_logits",
                     "teacher_logits");
  if (!(temperature > 0.0f) || !std::isfinite(temperature)) {
    check.fail_with("temperature is ", temperature, " but must be a finite number > 0");
  }
  check.run([&](detail::Backend& be) {
    detail::F32Stand f32;
    const Tensor& student32 = f32.in(student_logits);
    const Tensor& teacher32 = f32.in(teacher_logits);
    Tensor* grad32 = f32.out(grad);
    be.kd_loss(loss.data<float>(), grad32 ? grad32->data<float>() : nullptr,
               student32.data<float>(), teacher32.data<float>(), student_logits.dim(0),
               student_logits.dim(1), temperature);
    f32.finish();
  });
}

}  // namespace nnops
