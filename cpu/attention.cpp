// CPU scaled dot-product attention with grouped-query heads, FlashAttention-2's algorithm at CPU
// tile sizes: the forward runs an online softmax over blocks of keys for each block of queries
// (memory per thread O(block x D), never Tq x Tk) and keeps the row logsumexp; the backward
// recomputes the probabilities from it, once per query block for dq and once per key block for
// dk and dv (summed over the query heads of the group in a fixed order), so nothing is added
// by two threads and every run gives the same bits.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>

#include "cpu_backend.hpp"

namespace nnops::detail {

namespace {

constexpr int64_t kQueryBlock = 32;
constexpr int64_t kKeyBlock = 64;

float dot(const float* a, const float* b, int64_t d) {
  float acc = 0.0f;
#pragma omp simd reduction(+ : acc)
  for (int64_t c = 0; c < d; ++c) acc += a[c] * b[c];
  return acc;
}

void axpy(float* y, float alpha, const float* x, int64_t d) {
#pragma omp simd
  for (int64_t c = 0; c < d; ++c) y[c] += alpha * x[c];
}

// The keys query i sees: all, or j <= i when causal (top-left aligned).
int64_t visible_keys(const AttentionShape& s, int64_t i) {
  return s.causal ? std::min(s.tk, i + 1) : s.tk;
}

// A max that keeps NaN (a NaN score makes its row NaN, as PyTorch).
float nan_max(float a, float b) {
  return (b != b || b > a) ? b : a;
}

// Offsets of head rows: q-like tensors are [B, Hq, T, D], k-like [B, Hkv, T, D].
struct Heads {
  const AttentionShape& s;
  int64_t group() const { return s.q_heads / s.kv_heads; }
  int64_t q_row(int64_t b, int64_t h, int64_t i) const {
    return ((b * s.q_heads + h) * s.tq + i) * s.d;
  }
  int64_t kv_row(int64_t b, int64_t g, int64_t j) const {
    return ((b * s.kv_heads + g) * s.tk + j) * s.d;
  }
  int64_t lse_index(int64_t b, int64_t h, int64_t i) const {
    return (b * s.q_heads + h) * s.tq + i;
  }
};

// Per-thread scratch, allocated before the parallel region (nothing may throw inside it).
struct ThreadScratch {
  std::vector<float> data;
  int64_t per_thread;
  ThreadScratch(int threads, int64_t floats)
      : data(scratch_vector<float>(static_cast<size_t>(threads * floats))), per_thread(floats) {}
  float* mine() { return data.data() + omp_get_thread_num() * per_thread; }
};

}  // namespace

void CpuBackend::attention_forward(float* out, float* lse, const float* q, const float* k,
                                   const float* v, const AttentionShape& s) {
  const Heads at{s};
  const int64_t d = s.d, q_blocks = (s.tq + kQueryBlock - 1) / kQueryBlock;
  const int64_t tasks = s.batch * s.q_heads * q_blocks;
  const bool parallel = tasks > 1 && s.tq * s.tk * d * s.batch * s.q_heads >= kParallelThreshold;
  const int threads = parallel ? omp_get_max_threads() : 1;
  // acc [block, d], scores [block, key block], running max and sum [block] each.
  ThreadScratch scratch(threads, kQueryBlock * (d + kKeyBlock + 2));
#pragma omp parallel for schedule(dynamic) num_threads(threads) if (parallel)
  for (int64_t task = 0; task < tasks; ++task) {
    const int64_t b = task / (s.q_heads * q_blocks), h = task / q_blocks % s.q_heads;
    const int64_t i0 = task % q_blocks * kQueryBlock, rows = std::min(kQueryBlock, s.tq - i0);
    const int64_t g = h / at.group();
    float* acc = scratch.mine();
    float* scores = acc + kQueryBlock * d;
    float* m = scores + kQueryBlock * kKeyBlock;
    float* l = m + kQueryBlock;
    std::fill(acc, acc + rows * d, 0.0f);
    std::fill(m, m + rows, -std::numeric_limits<float>::infinity());
    std::fill(l, l + rows, 0.0f);
    const int64_t key_end = visible_keys(s, i0 + rows - 1);
    for (int64_t j0 = 0; j0 < key_end; j0 += kKeyBlock) {
      const int64_t cols = std::min(kKeyBlock, key_end - j0);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t i = i0 + r, seen = std::min(cols, visible_keys(s, i) - j0);
        if (seen <= 0) continue;  // every key of this block is in query i's future
        const float* qi = q + at.q_row(b, h, i);
        float* sr = scores + r * kKeyBlock;
        float row_max = -std::numeric_limits<float>::infinity();
        for (int64_t c = 0; c < seen; ++c) {
          sr[c] = s.scale * dot(qi, k + at.kv_row(b, g, j0 + c), d);
          row_max = nan_max(row_max, sr[c]);
        }
        const float m_new = nan_max(m[r], row_max);
        const float correction = std::exp(m[r] - m_new);  // 0 while m[r] is -inf
        float* ar = acc + r * d;
        if (correction != 1.0f) {
          for (int64_t c = 0; c < d; ++c) ar[c] *= correction;
        }
        float sum = 0.0f;
        for (int64_t c = 0; c < seen; ++c) {
          const float p = std::exp(sr[c] - m_new);
          sum += p;
          axpy(ar, p, v + at.kv_row(b, g, j0 + c), d);
        }
        l[r] = l[r] * correction + sum;
        m[r] = m_new;
      }
    }
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = i0 + r;
      if (out) {
        float* o = out + at.q_row(b, h, i);
        const float inv = 1.0f / l[r];  // no visible key: 0 / 0, NaN as PyTorch
        for (int64_t c = 0; c < d; ++c) o[c] = l[r] > 0.0f ? acc[r * d + c] * inv : NAN;
      }
      if (lse) lse[at.lse_index(b, h, i)] = m[r] + std::log(l[r]);
    }
  }
}

void CpuBackend::attention_backward(float* dq, float* dk, float* dv, const float* q, const float* k,
                                    const float* v, const float* out, const float* lse,
                                    const float* dout, const AttentionShape& s) {
  const Heads at{s};
  const int64_t d = s.d, rows_total = s.batch * s.q_heads * s.tq;
  const bool parallel = s.tq * s.tk * d * s.batch * s.q_heads >= kParallelThreshold;
  const int threads = parallel ? omp_get_max_threads() : 1;
  // D_i = dout_i . out_i, once per query row; and each thread's accumulators.
  std::vector<float> delta = scratch_vector<float>(static_cast<size_t>(rows_total));
  ThreadScratch scratch(threads, std::max(kQueryBlock, kKeyBlock) * 2 * d);
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
  for (int64_t row = 0; row < rows_total; ++row) {
    delta[row] = dot(dout + row * d, out + row * d, d);
  }

  // dq_i = scale * sum_j ds_ij k_j, ds_ij = p_ij (dout_i . v_j - D_i): per block of queries.
  const int64_t q_blocks = (s.tq + kQueryBlock - 1) / kQueryBlock;
#pragma omp parallel for schedule(dynamic) num_threads(threads) if (parallel)
  for (int64_t task = 0; task < s.batch * s.q_heads * q_blocks; ++task) {
    const int64_t b = task / (s.q_heads * q_blocks), h = task / q_blocks % s.q_heads;
    const int64_t i0 = task % q_blocks * kQueryBlock, rows = std::min(kQueryBlock, s.tq - i0);
    const int64_t g = h / at.group();
    float* acc = scratch.mine();
    std::fill(acc, acc + rows * d, 0.0f);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = i0 + r, row = at.lse_index(b, h, i);
      const float* qi = q + at.q_row(b, h, i);
      const float* gi = dout + at.q_row(b, h, i);
      for (int64_t j = 0; j < visible_keys(s, i); ++j) {
        const float* kj = k + at.kv_row(b, g, j);
        const float p = std::exp(s.scale * dot(qi, kj, d) - lse[row]);
        const float ds = p * (dot(gi, v + at.kv_row(b, g, j), d) - delta[row]);
        axpy(acc + r * d, s.scale * ds, kj, d);
      }
    }
    std::copy(acc, acc + rows * d, dq + at.q_row(b, h, i0));
  }

  // dv_j = sum_i p_ij dout_i and dk_j = scale * sum_i ds_ij q_i: per block of keys, over the
  // query heads of its group and their queries in order.
  const int64_t k_blocks = (s.tk + kKeyBlock - 1) / kKeyBlock;
#pragma omp parallel for schedule(dynamic) num_threads(threads) if (parallel)
  for (int64_t task = 0; task < s.batch * s.kv_heads * k_blocks; ++task) {
    const int64_t b = task / (s.kv_heads * k_blocks), g = task / k_blocks % s.kv_heads;
    const int64_t j0 = task % k_blocks * kKeyBlock, cols = std::min(kKeyBlock, s.tk - j0);
    float* acc_k = scratch.mine();
    float* acc_v = acc_k + kKeyBlock * d;
    std::fill(acc_k, acc_k + cols * d, 0.0f);
    std::fill(acc_v, acc_v + cols * d, 0.0f);
    for (int64_t h = g * at.group(); h < (g + 1) * at.group(); ++h) {
      for (int64_t i = s.causal ? j0 : 0; i < s.tq; ++i) {
        const int64_t row = at.lse_index(b, h, i), seen = std::min(cols, visible_keys(s, i) - j0);
        const float* qi = q + at.q_row(b, h, i);
        const float* gi = dout + at.q_row(b, h, i);
        for (int64_t c = 0; c < seen; ++c) {
          const int64_t j = j0 + c;
          const float p = std::exp(s.scale * dot(qi, k + at.kv_row(b, g, j), d) - lse[row]);
          const float ds = p * (dot(gi, v + at.kv_row(b, g, j), d) - delta[row]);
          axpy(acc_v + c * d, p, gi, d);
          axpy(acc_k + c * d, s.scale * ds, qi, d);
        }
      }
    }
    std::copy(acc_k, acc_k + cols * d, dk + at.kv_row(b, g, j0));
    std::copy(acc_v, acc_v + cols * d, dv + at.kv_row(b, g, j0));
  }
}

}  // namespace nnops::detail
