// CUDA scaled dot-product attention with grouped-query heads: the simplest correct form of
// FlashAttention-2's algorithm, kept as the reference for the tiled kernels (attention_tiled.cu,
// chosen by NNOPS_CUDA_ATTENTION=tiled) and for the shapes they do not take.
// Forward: a block per query row streams the visible keys in chunks with an online softmax (the
// chunk's scores in shared memory, the running max and sum, the output accumulated per column).
// Backward: D_i = dout_i . out_i, then a block per query row for dq and a block per key row for
// dk and dv (over the query heads of its group and their queries in order), recomputing the
// probabilities from logsumexp. No Tq x Tk matrix, no floating-point atomics: the same bits on
// every run.
#include "attention_tiled.hpp"
#include "cuda_backend.hpp"
#include "nnops/cuda.hpp"
#include "nnops/detail/transformer_math.hpp"
#include "row_reduce.cuh"

namespace nnops::detail {

namespace {

constexpr int kAttnThreads = 128;
constexpr int64_t kChunk = 128;         // keys (or queries) whose scores share memory at once
constexpr int64_t kMaxHeadSize = 4096;  // keeps shared memory within the default 48 KiB

__device__ int64_t visible_keys(const AttentionShape& s, int64_t i) {
  return attention_visible_keys(s.causal, s.tk, i);
}

__device__ float dot(const float* a, const float* b, int64_t d) {
  float acc = 0.0f;
  for (int64_t c = 0; c < d; ++c) acc += a[c] * b[c];
  return acc;
}

// Row offsets: q-like [B, Hq, Tq, D], k-like [B, Hkv, Tk, D].
__device__ int64_t kv_row(const AttentionShape& s, int64_t b, int64_t g, int64_t j) {
  return ((b * s.kv_heads + g) * s.tk + j) * s.d;
}

__global__ void attention_forward_kernel(float* d_out, float* d_lse, const float* d_q,
                                         const float* d_k, const float* d_v, AttentionShape s) {
  extern __shared__ float smem[];
  float* acc = smem;           // [d]
  float* scores = smem + s.d;  // [kChunk]
  __shared__ float s_red[32];
  const int64_t rows = s.batch * s.q_heads * s.tq, group = s.q_heads / s.kv_heads;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {  // uniform across the block
    const int64_t b = row / (s.q_heads * s.tq), h = row / s.tq % s.q_heads, i = row % s.tq;
    const int64_t g = h / group;
    const float* qi = d_q + row * s.d;
    for (int64_t c = threadIdx.x; c < s.d; c += blockDim.x) acc[c] = 0.0f;
    float m = -INFINITY, l = 0.0f;
    const int64_t seen = visible_keys(s, i);
    for (int64_t j0 = 0; j0 < seen; j0 += kChunk) {
      const int64_t cols = seen - j0 < kChunk ? seen - j0 : kChunk;
      float local_max = -INFINITY;
      for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
        scores[c] = s.scale * dot(qi, d_k + kv_row(s, b, g, j0 + c), s.d);
        local_max = nan_max(local_max, scores[c]);
      }
      const float m_new = nan_max(m, block_reduce(local_max, MaxOp{}, s_red));
      const float correction = expf(m - m_new);  // 0 while m is -inf
      float local_sum = 0.0f;
      for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
        scores[c] = expf(scores[c] - m_new);
        local_sum += scores[c];
      }
      l = l * correction + block_reduce(local_sum, SumOp{}, s_red);  // also orders scores[]
      m = m_new;
      for (int64_t c = threadIdx.x; c < s.d; c += blockDim.x) {
        float a = acc[c] * correction;
        for (int64_t j = 0; j < cols; ++j) a += scores[j] * d_v[kv_row(s, b, g, j0 + j) + c];
        acc[c] = a;
      }
      __syncthreads();  // scores[] is refilled by the next chunk
    }
    if (d_out) {
      for (int64_t c = threadIdx.x; c < s.d; c += blockDim.x)
        d_out[row * s.d + c] = l > 0.0f ? acc[c] / l : NAN;  // no visible key: NaN, as PyTorch
    }
    if (d_lse && threadIdx.x == 0) d_lse[row] = m + logf(l);
    __syncthreads();  // acc[] is reset by the next row
  }
}

__global__ void attention_delta_kernel(float* d_delta, const float* d_out, const float* d_dout,
                                       int64_t rows, int64_t d) {
  for (int64_t r = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; r < rows;
       r += int64_t(gridDim.x) * blockDim.x)
    d_delta[r] = dot(d_dout + r * d, d_out + r * d, d);
}

// dq_i = scale * sum_j p_ij (dout_i . v_j - D_i) k_j, a block per query row.
__global__ void attention_dq_kernel(float* d_dq, const float* d_q, const float* d_k,
                                    const float* d_v, const float* d_lse, const float* d_dout,
                                    const float* d_delta, AttentionShape s) {
  extern __shared__ float smem[];
  float* acc = smem;       // [d]
  float* ds = smem + s.d;  // [kChunk]
  const int64_t rows = s.batch * s.q_heads * s.tq, group = s.q_heads / s.kv_heads;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t b = row / (s.q_heads * s.tq), h = row / s.tq % s.q_heads, i = row % s.tq;
    const int64_t g = h / group;
    const float* qi = d_q + row * s.d;
    const float* gi = d_dout + row * s.d;
    for (int64_t c = threadIdx.x; c < s.d; c += blockDim.x) acc[c] = 0.0f;
    const int64_t seen = visible_keys(s, i);
    for (int64_t j0 = 0; j0 < seen; j0 += kChunk) {
      const int64_t cols = seen - j0 < kChunk ? seen - j0 : kChunk;
      for (int64_t c = threadIdx.x; c < cols; c += blockDim.x) {
        const int64_t kj = kv_row(s, b, g, j0 + c);
        const float p = expf(s.scale * dot(qi, d_k + kj, s.d) - d_lse[row]);
        ds[c] = p * (dot(gi, d_v + kj, s.d) - d_delta[row]);
      }
      __syncthreads();
      for (int64_t c = threadIdx.x; c < s.d; c += blockDim.x) {
        float a = acc[c];
        for (int64_t j = 0; j < cols; ++j) a += s.scale * ds[j] * d_k[kv_row(s, b, g, j0 + j) + c];
        acc[c] = a;
      }
      __syncthreads();
    }
    for (int64_t c = threadIdx.x; c < s.d; c += blockDim.x) d_dq[row * s.d + c] = acc[c];
    __syncthreads();
  }
}

// dv_j = sum_i p_ij dout_i and dk_j = scale * sum_i ds_ij q_i, a block per key row, over the
// query heads of its group and their queries in order.
__global__ void attention_dkdv_kernel(float* d_dk, float* d_dv, const float* d_q, const float* d_k,
                                      const float* d_v, const float* d_lse, const float* d_dout,
                                      const float* d_delta, AttentionShape s) {
  extern __shared__ float smem[];
  float* acc_k = smem;        // [d]
  float* acc_v = smem + s.d;  // [d]
  float* p = smem + 2 * s.d;  // [kChunk]
  float* ds = p + kChunk;     // [kChunk]
  const int64_t rows = s.batch * s.kv_heads * s.tk, group = s.q_heads / s.kv_heads;
  for (int64_t row = blockIdx.x; row < rows; row += gridDim.x) {
    const int64_t b = row / (s.kv_heads * s.tk), g = row / s.tk % s.kv_heads, j = row % s.tk;
    const float* kj = d_k + row * s.d;
    const float* vj = d_v + row * s.d;
    for (int64_t c = threadIdx.x; c < s.d; c += blockDim.x) acc_k[c] = acc_v[c] = 0.0f;
    for (int64_t h = g * group; h < (g + 1) * group; ++h) {
      const int64_t base = (b * s.q_heads + h) * s.tq;  // row index of query 0 of head h
      for (int64_t i0 = s.causal ? j : 0; i0 < s.tq; i0 += kChunk) {
        const int64_t n = s.tq - i0 < kChunk ? s.tq - i0 : kChunk;
        for (int64_t c = threadIdx.x; c < n; c += blockDim.x) {
          const int64_t qr = base + i0 + c;
          const float pc = expf(s.scale * dot(d_q + qr * s.d, kj, s.d) - d_lse[qr]);
          p[c] = pc;
          ds[c] = pc * (dot(d_dout + qr * s.d, vj, s.d) - d_delta[qr]);
        }
        __syncthreads();
        for (int64_t c = threadIdx.x; c < s.d; c += blockDim.x) {
          float ak = acc_k[c], av = acc_v[c];
          for (int64_t t = 0; t < n; ++t) {
            const int64_t qr = base + i0 + t;
            av += p[t] * d_dout[qr * s.d + c];
            ak += s.scale * ds[t] * d_q[qr * s.d + c];
          }
          acc_k[c] = ak;
          acc_v[c] = av;
        }
        __syncthreads();
      }
    }
    for (int64_t c = threadIdx.x; c < s.d; c += blockDim.x) {
      d_dk[row * s.d + c] = acc_k[c];
      d_dv[row * s.d + c] = acc_v[c];
    }
    __syncthreads();
  }
}

void check_head_size(const AttentionShape& s, const char* fn) {
  if (s.d > kMaxHeadSize) {
    throw Error(std::string(fn) + ": head size " + std::to_string(s.d) + " exceeds " +
                std::to_string(kMaxHeadSize) + " on CUDA");
  }
}

// Whether NNOPS_CUDA_ATTENTION / set_attention_kernel chose the tiled kernels (an unknown
// value of the variable throws here, before anything runs).
bool tiled_chosen() {
  return cuda::attention_kernel() == cuda::AttentionKernel::Tiled;
}

}  // namespace

void CudaBackend::attention_forward(float* out, float* lse, const float* q, const float* k,
                                    const float* v, const AttentionShape& s) {
  check_head_size(s, "nnops::attention_forward");
  const int64_t rows = s.batch * s.q_heads * s.tq;
  if (tiled_chosen() && tiled_attention_fits(s, {out, q, k, v})) {
    if (rows > 0) tiled_attention_forward(out, lse, q, k, v, s);
    return;
  }
  const size_t smem = static_cast<size_t>(s.d + kChunk) * sizeof(float);
  attention_forward_kernel<<<grid_for(rows, 1, 1u << 30), kAttnThreads, smem, t_stream>>>(
      out, lse, q, k, v, s);
  check_launch("attention_forward_kernel");
}

void CudaBackend::attention_backward(float* dq, float* dk, float* dv, const float* q,
                                     const float* k, const float* v, const float* out,
                                     const float* lse, const float* dout, const AttentionShape& s) {
  check_head_size(s, "nnops::attention_backward");
  const int64_t q_rows = s.batch * s.q_heads * s.tq, kv_rows = s.batch * s.kv_heads * s.tk;
  DeviceScratch delta(q_rows * sizeof(float));
  if (q_rows > 0) {
    attention_delta_kernel<<<grid_for(q_rows, 256), 256, 0, t_stream>>>(delta.as<float>(), out,
                                                                        dout, q_rows, s.d);
    check_launch("attention_delta_kernel");
  }
  if (tiled_chosen() && tiled_attention_fits(s, {dq, dk, dv, q, k, v, dout})) {
    tiled_attention_backward(dq, dk, dv, q, k, v, lse, dout, delta.as<float>(), s);
    return;
  }
  if (q_rows > 0) {
    attention_dq_kernel<<<grid_for(q_rows, 1, 1u << 30), kAttnThreads,
                          static_cast<size_t>(s.d + kChunk) * sizeof(float), t_stream>>>(
        dq, q, k, v, lse, dout, delta.as<float>(), s);
    check_launch("attention_dq_kernel");
  }
  if (kv_rows > 0) {
    attention_dkdv_kernel<<<grid_for(kv_rows, 1, 1u << 30), kAttnThreads,
                            static_cast<size_t>(2 * s.d + 2 * kChunk) * sizeof(float), t_stream>>>(
        dk, dv, q, k, v, lse, dout, delta.as<float>(), s);
    check_launch("attention_dkdv_kernel");
  }
}

}  // namespace nnops::detail
