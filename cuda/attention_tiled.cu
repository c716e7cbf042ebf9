// Tiled CUDA attention for head sizes 32, 64 and 128: FlashAttention-2's loop order on the SIMT
// cores. A block of 128 threads takes 128 / TPR query rows (TPR = D / 32 threads per row, each
// holding 32 of the row's D values as 8 float4, interleaved so that the row's threads read
// adjacent 16-byte words of shared memory) and streams tiles of 32 keys and values through
// shared memory: a score is the threads' partial dot products summed by shuffles, the softmax
// runs online per row in registers, and the row's output accumulates in registers. The backward
// recomputes the probabilities from the logsumexp: dq per block of query rows over the key tiles,
// dk and dv per block of key rows over the query heads of the group and their query tiles, in
// order. No atomics: the same bits on every run. Not yet run on a GPU, so opt-in
// (NNOPS_CUDA_ATTENTION=tiled); attention.cu's kernels are the reference.
#include "attention_tiled.hpp"

#include <cstdint>
#include <type_traits>

#include "nnops/detail/transformer_math.hpp"
#include "row_reduce.cuh"

namespace nnops::detail {

namespace {

constexpr int kThreads = 128;
constexpr int kTile = 32;     // keys (forward, dq) or queries (dk, dv) per shared-memory tile
constexpr int kPerThread = 8;  // float4 values of a row each thread holds

__device__ inline float4 zero4() {
  return make_float4(0.0f, 0.0f, 0.0f, 0.0f);
}

__device__ inline float dot4(const float4& a, const float4& b) {
  return a.x * b.x + a.y * b.y + a.z * b.z + a.w * b.w;
}

__device__ inline void add_scaled4(float4& acc, float s, const float4& x) {
  acc.x += s * x.x;
  acc.y += s * x.y;
  acc.z += s * x.z;
  acc.w += s * x.w;
}

// The full dot product of a row from its TPR threads' partial sums (adjacent lanes of a warp;
// every lane of the warp calls this together).
template <int TPR>
__device__ inline float row_sum(float part) {
#pragma unroll
  for (int offset = 1; offset < TPR; offset <<= 1)
    part += __shfl_xor_sync(0xffffffffu, part, offset);
  return part;
}

// This thread's 8 float4 of a row of D = 32 TPR floats: words lane, lane + TPR, ...
template <int TPR>
__device__ inline void load_row(float4 (&dst)[kPerThread], const float* row, int lane, bool live) {
  const float4* r = reinterpret_cast<const float4*>(row);
#pragma unroll
  for (int c = 0; c < kPerThread; ++c) dst[c] = live ? r[lane + TPR * c] : zero4();
}

// Rows [first, first + count) of a [rows, D] matrix (count <= kTile) into a shared tile, zeros
// past `count`.
template <int TPR>
__device__ inline void load_tile(float4 (*tile)[kPerThread * TPR], const float* rows, int64_t first,
                                 int64_t count) {
  constexpr int kWords = kPerThread * TPR;  // float4 per row
  const float4* src = reinterpret_cast<const float4*>(rows);
  for (int idx = threadIdx.x; idx < kTile * kWords; idx += kThreads) {
    const int r = idx / kWords, w = idx % kWords;
    tile[r][w] = r < count ? src[(first + r) * kWords + w] : zero4();
  }
}

struct Rows {
  const AttentionShape& s;
  __device__ int64_t q(int64_t b, int64_t h, int64_t i) const {
    return ((b * s.q_heads + h) * s.tq + i) * s.d;
  }
  __device__ int64_t kv(int64_t b, int64_t g, int64_t j) const {
    return ((b * s.kv_heads + g) * s.tk + j) * s.d;
  }
  __device__ int64_t visible(int64_t i) const { return attention_visible_keys(s.causal, s.tk, i); }
};

// A block's task in the forward and dq kernels: query rows [i0, i0 + 128 / TPR) of head h of
// batch b (key head g), this thread's row i (live when i < Tq) and the keys it sees, and the
// keys any row of the block sees (the same for the whole block).
template <int TPR>
struct QueryRows {
  static constexpr int kRows = kThreads / TPR;
  int64_t b, h, g, i, row, seen, key_end;
  bool live;
  __device__ static int64_t tasks(const AttentionShape& s) {
    return s.batch * s.q_heads * ((s.tq + kRows - 1) / kRows);
  }
  __device__ QueryRows(const AttentionShape& s, int64_t task) {
    const Rows at{s};
    const int64_t q_tiles = (s.tq + kRows - 1) / kRows;
    b = task / (s.q_heads * q_tiles);
    h = task / q_tiles % s.q_heads;
    g = h / (s.q_heads / s.kv_heads);
    const int64_t i0 = task % q_tiles * kRows;
    i = i0 + threadIdx.x / TPR;
    live = i < s.tq;
    row = (b * s.q_heads + h) * s.tq + (live ? i : 0);  // a live row of the head otherwise
    seen = live ? at.visible(i) : 0;
    key_end = at.visible((i0 + kRows < s.tq ? i0 + kRows : s.tq) - 1);
  }
};

// Keys [j0, j0 + 32) of key head g (zeros past key_end) and their values into the block's tiles,
// after every thread is done with the previous ones.
template <int TPR>
__device__ void load_key_tiles(float4 (*k_tile)[kPerThread * TPR],
                                  float4 (*v_tile)[kPerThread * TPR], const float* d_k,
                                  const float* d_v, const AttentionShape& s, int64_t b, int64_t g,
                                  int64_t j0, int64_t key_end) {
  const Rows at{s};
  __syncthreads();  // the previous tile's readers are done
  const int64_t count = key_end - j0 < kTile ? key_end - j0 : kTile;
  load_tile<TPR>(k_tile, d_k + at.kv(b, g, 0), j0, count);
  load_tile<TPR>(v_tile, d_v + at.kv(b, g, 0), j0, count);
  __syncthreads();
}

template <int TPR>
__global__ void __launch_bounds__(kThreads)
    tiled_forward_kernel(float* d_out, float* d_lse, const float* d_q, const float* d_k,
                         const float* d_v, AttentionShape s) {
  __shared__ float4 k_tile[kTile][kPerThread * TPR];
  __shared__ float4 v_tile[kTile][kPerThread * TPR];
  const int lane = threadIdx.x % TPR;
  for (int64_t task = blockIdx.x; task < QueryRows<TPR>::tasks(s); task += gridDim.x) {
    const QueryRows<TPR> t(s, task);
    float4 q[kPerThread], acc[kPerThread];
    load_row<TPR>(q, d_q + t.row * s.d, lane, t.live);
#pragma unroll
    for (int c = 0; c < kPerThread; ++c) acc[c] = zero4();
    float m = -INFINITY, l = 0.0f;
    for (int64_t j0 = 0; j0 < t.key_end; j0 += kTile) {
      load_key_tiles<TPR>(k_tile, v_tile, d_k, d_v, s, t.b, t.g, j0, t.key_end);
      float score[kTile];
      float tile_max = -INFINITY;
#pragma unroll
      for (int j = 0; j < kTile; ++j) {
        float part = 0.0f;
#pragma unroll
        for (int c = 0; c < kPerThread; ++c) part += dot4(q[c], k_tile[j][lane + TPR * c]);
        const float full = row_sum<TPR>(part);
        score[j] = j0 + j < t.seen ? s.scale * full : -INFINITY;
        tile_max = nan_max(tile_max, score[j]);
      }
      const float m_new = nan_max(m, tile_max);
      if (m_new == -INFINITY) continue;  // no key of this row seen yet (no shuffles below)
      const float correction = expf(m - m_new);  // 0 while m is -inf
      l *= correction;
#pragma unroll
      for (int c = 0; c < kPerThread; ++c) {
        acc[c].x *= correction;
        acc[c].y *= correction;
        acc[c].z *= correction;
        acc[c].w *= correction;
      }
#pragma unroll
      for (int j = 0; j < kTile; ++j) {
        const float p = expf(score[j] - m_new);  // 0 for the keys the row does not see
        l += p;
#pragma unroll
        for (int c = 0; c < kPerThread; ++c) add_scaled4(acc[c], p, v_tile[j][lane + TPR * c]);
      }
      m = m_new;
    }
    if (!t.live) continue;
    if (d_out) {
      float4* o = reinterpret_cast<float4*>(d_out + t.row * s.d);
      const float inv = 1.0f / l;
#pragma unroll
      for (int c = 0; c < kPerThread; ++c) {
        // No visible key: NaN, as PyTorch (0 / 0).
        o[lane + TPR * c] = l > 0.0f ? make_float4(acc[c].x * inv, acc[c].y * inv, acc[c].z * inv,
                                                   acc[c].w * inv)
                                     : make_float4(NAN, NAN, NAN, NAN);
      }
    }
    if (d_lse && lane == 0) d_lse[t.row] = m + logf(l);
  }
}

// dq_i = scale * sum_j ds_ij k_j with ds_ij = p_ij (dout_i . v_j - D_i), per block of query rows.
template <int TPR>
__global__ void __launch_bounds__(kThreads)
    tiled_dq_kernel(float* d_dq, const float* d_q, const float* d_k, const float* d_v,
                    const float* d_lse, const float* d_dout, const float* d_delta,
                    AttentionShape s) {
  __shared__ float4 k_tile[kTile][kPerThread * TPR];
  __shared__ float4 v_tile[kTile][kPerThread * TPR];
  const int lane = threadIdx.x % TPR;
  for (int64_t task = blockIdx.x; task < QueryRows<TPR>::tasks(s); task += gridDim.x) {
    const QueryRows<TPR> t(s, task);
    float4 q[kPerThread], dout[kPerThread], acc[kPerThread];
    load_row<TPR>(q, d_q + t.row * s.d, lane, t.live);
    load_row<TPR>(dout, d_dout + t.row * s.d, lane, t.live);
#pragma unroll
    for (int c = 0; c < kPerThread; ++c) acc[c] = zero4();
    const float lse = t.live ? d_lse[t.row] : 0.0f, delta = t.live ? d_delta[t.row] : 0.0f;
    for (int64_t j0 = 0; j0 < t.key_end; j0 += kTile) {
      load_key_tiles<TPR>(k_tile, v_tile, d_k, d_v, s, t.b, t.g, j0, t.key_end);
#pragma unroll 2
      for (int j = 0; j < kTile; ++j) {
        float qk = 0.0f, dv = 0.0f;
#pragma unroll
        for (int c = 0; c < kPerThread; ++c) {
          qk += dot4(q[c], k_tile[j][lane + TPR * c]);
          dv += dot4(dout[c], v_tile[j][lane + TPR * c]);
        }
        qk = row_sum<TPR>(qk);
        dv = row_sum<TPR>(dv);
        const bool seen_j = j0 + j < t.seen;
        const float p = seen_j ? expf(s.scale * qk - lse) : 0.0f;
        const float ds = seen_j ? p * (dv - delta) : 0.0f;
#pragma unroll
        for (int c = 0; c < kPerThread; ++c)
          add_scaled4(acc[c], s.scale * ds, k_tile[j][lane + TPR * c]);
      }
    }
    if (!t.live) continue;
    float4* o = reinterpret_cast<float4*>(d_dq + t.row * s.d);
#pragma unroll
    for (int c = 0; c < kPerThread; ++c) o[lane + TPR * c] = acc[c];
  }
}

// dv_j = sum_i p_ij dout_i and dk_j = scale * sum_i ds_ij q_i, per block of key rows, over the
// query heads of the group and, within each, the queries in order (causal: from the block's
// first key on; earlier queries see none of its keys).
template <int TPR>
__global__ void __launch_bounds__(kThreads)
    tiled_dkdv_kernel(float* d_dk, float* d_dv, const float* d_q, const float* d_k,
                      const float* d_v, const float* d_lse, const float* d_dout,
                      const float* d_delta, AttentionShape s) {
  constexpr int kRows = kThreads / TPR;
  __shared__ float4 q_tile[kTile][kPerThread * TPR];
  __shared__ float4 dout_tile[kTile][kPerThread * TPR];
  __shared__ float lse_tile[kTile], delta_tile[kTile];
  const Rows at{s};
  const int lane = threadIdx.x % TPR, r = threadIdx.x / TPR;
  const int64_t k_tiles = (s.tk + kRows - 1) / kRows, group = s.q_heads / s.kv_heads;
  for (int64_t task = blockIdx.x; task < s.batch * s.kv_heads * k_tiles; task += gridDim.x) {
    const int64_t b = task / (s.kv_heads * k_tiles), g = task / k_tiles % s.kv_heads;
    const int64_t j0 = task % k_tiles * kRows, j = j0 + r;
    const bool live = j < s.tk;
    const int64_t row = (b * s.kv_heads + g) * s.tk + (live ? j : 0);
    float4 k[kPerThread], v[kPerThread], acc_k[kPerThread], acc_v[kPerThread];
    load_row<TPR>(k, d_k + row * s.d, lane, live);
    load_row<TPR>(v, d_v + row * s.d, lane, live);
#pragma unroll
    for (int c = 0; c < kPerThread; ++c) acc_k[c] = acc_v[c] = zero4();
    const int64_t first_query = s.causal ? (j0 < s.tq ? j0 : s.tq) : 0;
    for (int64_t h = g * group; h < (g + 1) * group; ++h) {
      for (int64_t i0 = first_query; i0 < s.tq; i0 += kTile) {
        __syncthreads();
        const int64_t count = s.tq - i0 < kTile ? s.tq - i0 : kTile;
        load_tile<TPR>(q_tile, d_q + at.q(b, h, 0), i0, count);
        load_tile<TPR>(dout_tile, d_dout + at.q(b, h, 0), i0, count);
        for (int t = threadIdx.x; t < kTile; t += kThreads) {
          const int64_t qr = (b * s.q_heads + h) * s.tq + i0 + t;
          lse_tile[t] = t < count ? d_lse[qr] : 0.0f;
          delta_tile[t] = t < count ? d_delta[qr] : 0.0f;
        }
        __syncthreads();
#pragma unroll 1  // four row-sized accumulators already hold 128 registers
        for (int t = 0; t < kTile; ++t) {
          float qk = 0.0f, dv = 0.0f;
#pragma unroll
          for (int c = 0; c < kPerThread; ++c) {
            qk += dot4(k[c], q_tile[t][lane + TPR * c]);
            dv += dot4(v[c], dout_tile[t][lane + TPR * c]);
          }
          qk = row_sum<TPR>(qk);
          dv = row_sum<TPR>(dv);
          const bool seen = live && t < count && j < at.visible(i0 + t);
          const float p = seen ? expf(s.scale * qk - lse_tile[t]) : 0.0f;
          const float ds = seen ? p * (dv - delta_tile[t]) : 0.0f;
#pragma unroll
          for (int c = 0; c < kPerThread; ++c) {
            add_scaled4(acc_v[c], p, dout_tile[t][lane + TPR * c]);
            add_scaled4(acc_k[c], s.scale * ds, q_tile[t][lane + TPR * c]);
          }
        }
      }
    }
    if (!live) continue;
    float4* ok = reinterpret_cast<float4*>(d_dk + row * s.d);
    float4* ov = reinterpret_cast<float4*>(d_dv + row * s.d);
#pragma unroll
    for (int c = 0; c < kPerThread; ++c) {
      ok[lane + TPR * c] = acc_k[c];
      ov[lane + TPR * c] = acc_v[c];
    }
  }
}

bool aligned16(const void* p) {
  return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0;
}

// Runs f with TPR as a compile-time constant for the head size.
template <class F>
void with_threads_per_row(int64_t d, F&& f) {
  if (d == 32) return f(std::integral_constant<int, 1>{});
  if (d == 64) return f(std::integral_constant<int, 2>{});
  f(std::integral_constant<int, 4>{});
}

}  // namespace

bool tiled_attention_fits(const AttentionShape& s, std::initializer_list<const void*> pointers) {
  if (s.d != 32 && s.d != 64 && s.d != 128) return false;
  for (const void* p : pointers)
    if (!aligned16(p)) return false;  // float4 loads
  return true;
}

void tiled_attention_forward(float* out, float* lse, const float* q, const float* k,
                             const float* v, const AttentionShape& s) {
  with_threads_per_row(s.d, [&](auto tpr) {
    constexpr int TPR = decltype(tpr)::value, kRows = kThreads / TPR;
    // A block per task (grid-stride beyond 2^30 of them).
    const int64_t tasks = s.batch * s.q_heads * ((s.tq + kRows - 1) / kRows);
    tiled_forward_kernel<TPR>
        <<<grid_for(tasks, 1, 1u << 30), kThreads, 0, t_stream>>>(out, lse, q, k, v, s);
    check_launch("tiled_forward_kernel");
  });
}

void tiled_attention_backward(float* dq, float* dk, float* dv, const float* q, const float* k,
                              const float* v, const float* lse, const float* dout,
                              const float* delta, const AttentionShape& s) {
  with_threads_per_row(s.d, [&](auto tpr) {
    constexpr int TPR = decltype(tpr)::value, kRows = kThreads / TPR;
    const int64_t q_tasks = s.batch * s.q_heads * ((s.tq + kRows - 1) / kRows);
    const int64_t k_tasks = s.batch * s.kv_heads * ((s.tk + kRows - 1) / kRows);
    tiled_dq_kernel<TPR><<<grid_for(q_tasks, 1, 1u << 30), kThreads, 0, t_stream>>>(
        dq, q, k, v, lse, dout, delta, s);
    check_launch("tiled_dq_kernel");
    tiled_dkdv_kernel<TPR><<<grid_for(k_tasks, 1, 1u << 30), kThreads, 0, t_stream>>>(
        dk, dv, q, k, v, lse, dout, delta, s);
    check_launch("tiled_dkdv_kernel");
  });
}

}  // namespace nnops::detail
