// CUDA losses: one warp (short rows) or one block (long rows) per row writes the gradient row and
// the row's loss (in double) to a scratch array; one block then adds the rows in a fixed order. No
// floating-point atomics, so every run gives the same bits. Formulas as cpu/loss.cpp.
#include <cmath>

#include "cuda_backend.hpp"
#include "nnops/detail/loss_math.hpp"
#include "row_reduce.cuh"

namespace nnops::detail {

namespace {

// One block: out = scale * sum(d_terms[0, n)) in a fixed order; `nan_if_zero`: the Mean of no
// rows is NaN.
__global__ void finish_sum_kernel(float* d_loss, const double* d_terms, int64_t n, double scale,
                                  const int64_t* d_count, bool mean_over_count) {
  __shared__ double s_sum[32];
  double s = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) s += d_terms[i];
  s = block_reduce(s, SumOp{}, s_sum);
  if (threadIdx.x == 0) {
    if (mean_over_count) scale = 1.0 / static_cast<double>(*d_count);  // 0 rows: NaN (0/0)
    *d_loss = static_cast<float>(s * scale);
  }
}

// Per-block partial sums over a fixed grid (its size depends on n only).
__global__ void mse_kernel(double* d_partial, float* d_grad, const float* d_pred,
                           const float* d_target, int64_t n, float grad_scale) {
  __shared__ double s_sum[32];
  double s = 0.0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const float d = d_pred[i] - d_target[i];
    if (d_grad) d_grad[i] = grad_scale * d;
    s += static_cast<double>(d) * d;
  }
  s = block_reduce(s, SumOp{}, s_sum);
  if (threadIdx.x == 0) d_partial[blockIdx.x] = s;
}

// The rows whose target is not ignore_index, over as many blocks as the rows need: block
// counts meet in one zeroed counter by integer atomics (exact in any order).
__global__ void count_kept_kernel(int64_t* d_count, const int32_t* d_targets, int64_t rows,
                                  int32_t ignore_index) {
  __shared__ int64_t s_sum[32];
  int64_t c = 0;
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < rows;
       r += int64_t(gridDim.x) * blockDim.x)
    c += d_targets[r] != ignore_index;
  c = block_reduce(c, SumOp{}, s_sum);
  if (threadIdx.x == 0 && c != 0)
    atomicAdd(reinterpret_cast<unsigned long long*>(d_count), static_cast<unsigned long long>(c));
}

template <int kT>
__global__ void cross_entropy_kernel(double* d_row_loss, float* d_grad, const float* d_logits,
                                     const int32_t* d_targets, const int64_t* d_kept, int64_t rows,
                                     int64_t classes, bool mean, float e, int32_t ignore_index,
                                     unsigned* d_error_flags) {
  __shared__ double s_sum[32];
  const auto team = RowTeam<kT>::here();
  if (team.row >= rows) return;
  const int64_t r = team.row;
  const float* x = d_logits + r * classes;
  float* g = d_grad ? d_grad + r * classes : nullptr;
  const int32_t y = d_targets[r];
  if (y == ignore_index) {
    if (g)
      for (int64_t c = team.lane; c < classes; c += kT) g[c] = 0.0f;
    if (team.lane == 0) d_row_loss[r] = 0.0;
    return;
  }
  if (y < 0 || y >= classes) {  // only the device sees the targets: flag it, poison the row
    if (g)
      for (int64_t c = team.lane; c < classes; c += kT) g[c] = NAN;
    if (team.lane == 0) {
      d_row_loss[r] = NAN;
      atomicOr(d_error_flags, kTargetOutOfRange);
    }
    return;
  }
  const float scale = mean ? static_cast<float>(1.0 / static_cast<double>(*d_kept)) : 1.0f;
  float mx, log_sum;
  team.logsumexp(x, classes, 1.0f, mx, log_sum);
  double row = (1.0 - e) * (static_cast<double>(log_sum) - (x[y] - mx));
  if (e != 0.0f) {
    double shifted = 0.0;
    for (int64_t c = team.lane; c < classes; c += kT) shifted += x[c] - mx;
    shifted = team.reduce(shifted, SumOp{}, s_sum);
    row += e * (static_cast<double>(log_sum) - shifted / static_cast<double>(classes));
  }
  if (g) {
    const float smooth = e / static_cast<float>(classes);
    const float inv_sum = expf(-log_sum);
    for (int64_t c = team.lane; c < classes; c += kT) {
      const float target_prob = (c == y ? 1.0f - e : 0.0f) + smooth;
      g[c] = scale * (expf(x[c] - mx) * inv_sum - target_prob);
    }
  }
  if (team.lane == 0) d_row_loss[r] = row;
}

// Double throughout a row, as the CPU (see kd_pointwise).
template <int kT>
__global__ void kd_kernel(double* d_row_loss, float* d_grad, const float* d_student,
                          const float* d_teacher, int64_t rows, int64_t classes, double inv_t,
                          double grad_scale) {
  __shared__ double s_reduce[32];
  const auto team = RowTeam<kT>::here();
  if (team.row >= rows) return;
  const int64_t r = team.row;
  const float* s = d_student + r * classes;
  const float* t = d_teacher + r * classes;
  double mx_s = -INFINITY, mx_t = -INFINITY;
  for (int64_t c = team.lane; c < classes; c += kT) {
    mx_s = nan_max_double(mx_s, s[c] * inv_t);
    mx_t = nan_max_double(mx_t, t[c] * inv_t);
  }
  mx_s = team.reduce(mx_s, MaxOp{}, s_reduce);
  mx_t = team.reduce(mx_t, MaxOp{}, s_reduce);
  double sum_s = 0.0, sum_t = 0.0;
  for (int64_t c = team.lane; c < classes; c += kT) {
    sum_s += exp(s[c] * inv_t - mx_s);
    sum_t += exp(t[c] * inv_t - mx_t);
  }
  const double log_sum_s = log(team.reduce(sum_s, SumOp{}, s_reduce));
  const double log_sum_t = log(team.reduce(sum_t, SumOp{}, s_reduce));
  double row = 0.0;
  for (int64_t c = team.lane; c < classes; c += kT) {
    const double log_pt = (t[c] * inv_t - mx_t) - log_sum_t;
    const double log_ps = (s[c] * inv_t - mx_s) - log_sum_s;
    const double pt = exp(log_pt);
    row += kd_pointwise(pt, log_pt, log_ps);
    if (d_grad) d_grad[r * classes + c] = static_cast<float>(grad_scale * (exp(log_ps) - pt));
  }
  row = team.reduce(row, SumOp{}, s_reduce);
  if (team.lane == 0) d_row_loss[r] = row;
}

}  // namespace

void CudaBackend::mse_loss(float* loss, float* grad, const float* pred, const float* target,
                           int64_t n, Reduction reduction) {
  const double denom = reduction == Reduction::Mean ? static_cast<double>(n) : 1.0;
  const unsigned blocks = grid_for(n, 256, 1024);
  DeviceScratch partial(blocks * sizeof(double));
  mse_kernel<<<blocks, 256, 0, t_stream>>>(partial.as<double>(), grad, pred, target, n,
                                           static_cast<float>(2.0 / denom));
  check_launch("mse_kernel");
  finish_sum_kernel<<<1, 256, 0, t_stream>>>(loss, partial.as<double>(), blocks, 1.0 / denom,
                                             nullptr, false);
  check_launch("finish_sum_kernel");
}

void CudaBackend::cross_entropy_loss(float* loss, float* grad, const float* logits,
                                     const int32_t* targets, int64_t rows, int64_t classes,
                                     Reduction reduction, float label_smoothing,
                                     int32_t ignore_index) {
  unsigned* d_error_flags = error_flags();  // before any launch: getting it may allocate
  DeviceScratch kept(sizeof(int64_t)), row_loss(static_cast<size_t>(rows) * sizeof(double));
  const bool mean = reduction == Reduction::Mean;
  NNOPS_CUDA_CHECK(cudaMemsetAsync(kept.as<void>(), 0, sizeof(int64_t), t_stream));
  count_kept_kernel<<<grid_for(rows, 256, 1024), 256, 0, t_stream>>>(kept.as<int64_t>(), targets,
                                                                     rows, ignore_index);
  check_launch("count_kept_kernel");
  if (rows > 0) {
    launch_rows(rows, classes, "cross_entropy_loss", [&](auto t, unsigned blocks) {
      cross_entropy_kernel<decltype(t)::value><<<blocks, kBlockThreads, 0, t_stream>>>(
          row_loss.as<double>(), grad, logits, targets, kept.as<int64_t>(), rows, classes, mean,
          label_smoothing, ignore_index, d_error_flags);
      check_launch("cross_entropy_kernel");
    });
  }
  finish_sum_kernel<<<1, 256, 0, t_stream>>>(loss, row_loss.as<double>(), rows, 1.0,
                                             kept.as<int64_t>(), mean);
  check_launch("finish_sum_kernel");
}

void CudaBackend::kd_loss(float* loss, float* grad, const float* student, const float* teacher,
                          int64_t rows, int64_t classes, float temperature) {
  DeviceScratch row_loss(static_cast<size_t>(rows) * sizeof(double));
  if (rows > 0) {
    launch_rows(rows, classes, "kd_loss", [&](auto t, unsigned blocks) {
      kd_kernel<decltype(t)::value><<<blocks, kBlockThreads, 0, t_stream>>>(
          row_loss.as<double>(), grad, student, teacher, rows, classes,
          1.0 / static_cast<double>(temperature),
          static_cast<double>(temperature) / static_cast<double>(rows));
      check_launch("kd_kernel");
    });
  }
  const double t2 = static_cast<double>(temperature) * temperature;
  finish_sum_kernel<<<1, 256, 0, t_stream>>>(loss, row_loss.as<double>(), rows,
                                             t2 / static_cast<double>(rows), nullptr, false);
  check_launch("finish_sum_kernel");
}

}  // namespace nnops::detail
