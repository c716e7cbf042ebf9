// CUDA optimizer steps with the shared per-element updates of include/nnops/detail/optim_math.hpp.
// The multi-tensor Adam passes up to kTensorsPerLaunch tensors by value in the kernel parameters
// (as a multi-tensor apply does), one launch for all of them over a flat list of chunks: every
// tensor gets as many blocks as its own size needs, and a block finds its tensor from the
// tensors' first-block offsets (a grid sized for the largest tensor would idle on the others).
#include <vector>

#include "cuda_backend.hpp"
#include "elementwise.cuh"
#include "nnops/detail/optim_math.hpp"
#include "row_reduce.cuh"

namespace nnops::detail {

namespace {

constexpr int kTensorsPerLaunch = 24;  // 24 AdamTensors (~120 bytes each) fit 4 KiB of parameters

// Element i of an F32 or BF16 gradient (the dtype is the same for a whole tensor: no divergence).
__device__ inline float grad_at(const void* grad, DType dtype, int64_t i) {
  return dtype == DType::BF16 ? load_elem(static_cast<const uint16_t*>(grad), i)
                              : load_elem(static_cast<const float*>(grad), i);
}

constexpr int kAdamThreads = 256;
constexpr int64_t kAdamChunk = kAdamThreads * 8;  // elements per block

struct AdamBatch {
  AdamTensor t[kTensorsPerLaunch];
  int64_t first_block[kTensorsPerLaunch + 1];  // tensor i's blocks: [first_block[i], [i + 1])
  int count;
};
static_assert(sizeof(AdamBatch) <= 4096, "kernel parameters are limited to 4 KiB");

// __grid_constant__: the batch is read in place from the parameter space, though indexed by a
// run-time value (without it, that indexing may copy the whole batch per thread).
__global__ void __launch_bounds__(kAdamThreads) adam_kernel(const __grid_constant__ AdamBatch batch) {
  int t = 0;
  while (t + 1 < batch.count && int64_t(blockIdx.x) >= batch.first_block[t + 1]) ++t;
  const AdamTensor& a = batch.t[t];
  const int64_t begin = (int64_t(blockIdx.x) - batch.first_block[t]) * kAdamChunk;
  const int64_t end = begin + kAdamChunk < a.n ? begin + kAdamChunk : a.n;
  for (int64_t i = begin + threadIdx.x; i < end; i += kAdamThreads) {
    const float m0 = a.exp_avg[i], v0 = a.exp_avg_sq[i];
    const float vmax0 = a.max_exp_avg_sq ? a.max_exp_avg_sq[i] : 0.0f;
    float p = a.param[i], m = m0, v = v0, vmax = vmax0;
    adam_update(p, grad_at(a.grad, a.grad_dtype, i), m, v, vmax, a.scalars);
    // Pruned entries: the weight stays exactly 0 and the moments keep their old values.
    const bool keep = a.mask == nullptr || a.mask[i] != 0;
    a.param[i] = keep ? p : 0.0f;
    if (a.working) store_elem(a.working, i, keep ? p : 0.0f);
    a.exp_avg[i] = keep ? m : m0;
    a.exp_avg_sq[i] = keep ? v : v0;
    if (a.max_exp_avg_sq) a.max_exp_avg_sq[i] = keep ? vmax : vmax0;
  }
}

__global__ void sgd_kernel(float* d_param, const void* d_grad, DType grad_dtype, float* d_buf,
                           const uint8_t* d_mask, uint16_t* d_working, int64_t n,
                           const SgdScalars s) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    if (d_mask && d_mask[i] == 0) {
      d_param[i] = 0.0f;
    } else {
      sgd_update(d_param[i], grad_at(d_grad, grad_dtype, i), d_buf ? d_buf + i : nullptr, s);
    }
    if (d_working) store_elem(d_working, i, d_param[i]);
  }
}

template <class T>
__global__ void sum_squares_kernel(double* d_partial, const T* d_x, int64_t n) {
  __shared__ double s_sum[32];
  double s = 0.0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const double v = load_elem(d_x, i);
    s += v * v;
  }
  s = block_reduce(s, SumOp{}, s_sum);
  if (threadIdx.x == 0) d_partial[blockIdx.x] = s;
}

__global__ void sum_partials_kernel(double* d_out, const double* d_partial, int n) {
  __shared__ double s_sum[32];
  double s = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += d_partial[i];
  s = block_reduce(s, SumOp{}, s_sum);
  if (threadIdx.x == 0) *d_out = s;
}

// One block: the total of every tensor's partial sums in a fixed order, the norm and the
// clipping coefficient, kept on the device.
__global__ void clip_coefficient_kernel(float* d_norm_out, double* d_coef, const double* d_partial,
                                        int n, double max_norm) {
  __shared__ double s_sum[32];
  double s = 0.0;
  for (int i = threadIdx.x; i < n; i += blockDim.x) s += d_partial[i];
  s = block_reduce(s, SumOp{}, s_sum);
  if (threadIdx.x == 0) {
    const double total = sqrt(s);
    *d_norm_out = static_cast<float>(total);
    *d_coef = max_norm / (total + 1e-6);
  }
}

// Scales by the device-side coefficient when it is below 1, or NaN (PyTorch's clamp keeps NaN).
template <class T>
__global__ void clip_scale_kernel(T* d_x, int64_t n, const double* d_coef) {
  const double coef = *d_coef;
  if (coef >= 1.0) return;
  const float factor = static_cast<float>(coef);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    store_elem(d_x, i, load_elem(d_x, i) * factor);
}

template <class T>
__global__ void scale_kernel(T* d_x, int64_t n, float factor) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    store_elem(d_x, i, load_elem(d_x, i) * factor);
}

}  // namespace

void CudaBackend::adam_step(const AdamTensor* tensors, int64_t count) {
  for (int64_t first = 0; first < count; first += kTensorsPerLaunch) {
    AdamBatch batch{};
    batch.count = static_cast<int>(std::min<int64_t>(kTensorsPerLaunch, count - first));
    int64_t blocks = 0;
    for (int i = 0; i < batch.count; ++i) {
      batch.t[i] = tensors[first + i];
      batch.first_block[i] = blocks;
      blocks += (batch.t[i].n + kAdamChunk - 1) / kAdamChunk;
    }
    batch.first_block[batch.count] = blocks;
    if (blocks == 0) continue;
    if (blocks > 2147483647) throw Error("nnops::adam_step: tensors too large for one launch");
    adam_kernel<<<static_cast<unsigned>(blocks), kAdamThreads, 0, t_stream>>>(batch);
    check_launch("adam_kernel");
  }
}

void CudaBackend::sgd_step(float* param, ConstView grad, float* momentum_buffer,
                           const uint8_t* mask, uint16_t* working, int64_t n,
                           const SgdScalars& scalars) {
  sgd_kernel<<<grid_for(n, 256), 256, 0, t_stream>>>(param, grad.data, grad.dtype, momentum_buffer,
                                                     mask, working, n, scalars);
  check_launch("sgd_kernel");
}

double CudaBackend::sum_squares(ConstView x, int64_t n) {
  const unsigned blocks = grid_for(n, 256, 1024);  // depends on n only: deterministic
  DeviceScratch partial(blocks * sizeof(double)), total(sizeof(double));
  with_type(x, [&](const auto* typed) {
    sum_squares_kernel<<<blocks, 256, 0, t_stream>>>(partial.as<double>(), typed, n);
  });
  check_launch("sum_squares_kernel");
  sum_partials_kernel<<<1, 256, 0, t_stream>>>(total.as<double>(), partial.as<double>(),
                                               static_cast<int>(blocks));
  check_launch("sum_partials_kernel");
  double host = 0.0;
  copy_to_host(&host, total.as<void>(), sizeof host);
  return host;
}

void CudaBackend::clip_grad_norm(float* norm_out, const View* grads, const int64_t* sizes,
                                 int64_t count, double max_norm) {
  // Each tensor's partial sums land in its own segment; the grid per tensor depends on its size
  // only, so the order of every addition is fixed.
  std::vector<unsigned> blocks(static_cast<size_t>(count));
  int64_t total_blocks = 0;
  for (int64_t i = 0; i < count; ++i) total_blocks += blocks[i] = grid_for(sizes[i], 256, 1024);
  DeviceScratch partial(total_blocks * sizeof(double)), coef(sizeof(double));
  int64_t offset = 0;
  for (int64_t i = 0; i < count; ++i) {
    with_type(ConstView{grads[i].data, grads[i].dtype}, [&](const auto* typed) {
      sum_squares_kernel<<<blocks[i], 256, 0, t_stream>>>(partial.as<double>() + offset, typed,
                                                          sizes[i]);
    });
    check_launch("sum_squares_kernel");
    offset += blocks[i];
  }
  clip_coefficient_kernel<<<1, 256, 0, t_stream>>>(
      norm_out, coef.as<double>(), partial.as<double>(), static_cast<int>(total_blocks), max_norm);
  check_launch("clip_coefficient_kernel");
  for (int64_t i = 0; i < count; ++i) {
    if (sizes[i] == 0) continue;
    with_type(grads[i], [&](auto* typed) {
      clip_scale_kernel<<<grid_for(sizes[i], 256), 256, 0, t_stream>>>(typed, sizes[i],
                                                                       coef.as<double>());
    });
    check_launch("clip_scale_kernel");
  }
}

void CudaBackend::scale(View x, int64_t n, float factor) {
  with_type(x, [&](auto* typed) {
    scale_kernel<<<grid_for(n, 256), 256, 0, t_stream>>>(typed, n, factor);
  });
  check_launch("scale_kernel");
}

}  // namespace nnops::detail
