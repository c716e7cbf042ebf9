// CPU losses: MSE, cross-entropy (label smoothing, ignore_index) and knowledge distillation,
// each writing the loss and its gradient in one pass. Sums are taken in double.
#include <cmath>
#include <limits>

#include "cpu_backend.hpp"
#include "nnops/detail/loss_math.hpp"
#include "reduce.hpp"

namespace nnops::detail {

void CpuBackend::mse_loss(float* loss, float* grad, const float* pred, const float* target,
                          int64_t n, Reduction reduction) {
  const double denom = reduction == Reduction::Mean ? static_cast<double>(n) : 1.0;
  const float grad_scale = static_cast<float>(2.0 / denom);
  const double sum = deterministic_sum(n, 1, [&](int64_t i) {
    const float d = pred[i] - target[i];
    if (grad) grad[i] = grad_scale * d;
    return static_cast<double>(d) * d;
  });
  *loss = static_cast<float>(sum / denom);  // Mean of nothing is NaN, as in PyTorch
}

void CpuBackend::cross_entropy_loss(float* loss, float* grad, const float* logits,
                                    const int32_t* targets, int64_t rows, int64_t classes,
                                    Reduction reduction, float label_smoothing,
                                    int32_t ignore_index) {
  int64_t kept = 0;
  for (int64_t r = 0; r < rows; ++r) kept += targets[r] != ignore_index;
  const double denom = reduction == Reduction::Mean ? static_cast<double>(kept) : 1.0;
  const float scale = static_cast<float>(1.0 / denom);
  const float e = label_smoothing;
  const float smooth = e / static_cast<float>(classes);
  const double total = deterministic_sum<16>(rows, classes, [&](int64_t r) {
    const float* x = logits + r * classes;
    float* g = grad ? grad + r * classes : nullptr;
    const int32_t y = targets[r];
    if (y == ignore_index) {
      if (g)
        for (int64_t c = 0; c < classes; ++c) g[c] = 0.0f;
      return 0.0;
    }
    float mx, log_sum;
    row_logsumexp(x, classes, 1.0f, mx, log_sum);
    // -log p[c] = log_sum - (x[c] - max); its mean over c is log_sum - mean(x - max).
    double row = (1.0 - e) * (static_cast<double>(log_sum) - (x[y] - mx));
    if (e != 0.0f) {
      double sum_shifted = 0.0;
      for (int64_t c = 0; c < classes; ++c) sum_shifted += x[c] - mx;
      row += e * (static_cast<double>(log_sum) - sum_shifted / static_cast<double>(classes));
    }
    if (g) {
      // g = scale * (softmax - target distribution); softmax first, in place.
      row_softmax(g, x, classes, mx, std::exp(-log_sum));
      const float p_y = g[y];
      for (int64_t c = 0; c < classes; ++c) g[c] = scale * (g[c] - smooth);
      g[y] = scale * (p_y - ((1.0f - e) + smooth));
    }
    return row;
  });
  *loss = kept == 0 && reduction == Reduction::Mean ? std::numeric_limits<float>::quiet_NaN()
                                                    : static_cast<float>(total / denom);
}

void CpuBackend::kd_loss(float* loss, float* grad, const float* student, const float* teacher,
                         int64_t rows, int64_t classes, float temperature) {
  // Double throughout a row (logits over T, both log-sum-exps, every log p): see kd_pointwise.
  const double inv_t = 1.0 / static_cast<double>(temperature);
  const double grad_scale = static_cast<double>(temperature) / static_cast<double>(rows);
  const double total = deterministic_sum<16>(rows, 4 * classes, [&](int64_t r) {
    const float* s = student + r * classes;
    const float* t = teacher + r * classes;
    double mx_s = -INFINITY, mx_t = -INFINITY;
    for (int64_t c = 0; c < classes; ++c) {
      mx_s = nan_max_double(mx_s, s[c] * inv_t);
      mx_t = nan_max_double(mx_t, t[c] * inv_t);
    }
    double sum_s = 0.0, sum_t = 0.0;
    for (int64_t c = 0; c < classes; ++c) {
      sum_s += std::exp(s[c] * inv_t - mx_s);
      sum_t += std::exp(t[c] * inv_t - mx_t);
    }
    const double log_sum_s = std::log(sum_s), log_sum_t = std::log(sum_t);
    double row = 0.0;
    for (int64_t c = 0; c < classes; ++c) {
      const double log_pt = (t[c] * inv_t - mx_t) - log_sum_t;
      const double log_ps = (s[c] * inv_t - mx_s) - log_sum_s;
      const double pt = std::exp(log_pt);
      row += kd_pointwise(pt, log_pt, log_ps);
      if (grad) grad[r * classes + c] = static_cast<float>(grad_scale * (std::exp(log_ps) - pt));
    }
    return row;
  });
  const double t2 = static_cast<double>(temperature) * temperature;
  *loss = static_cast<float>(t2 * total / static_cast<double>(rows));
}

}  // namespace nnops::detail
