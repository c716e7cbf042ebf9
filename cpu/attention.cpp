// CPU scaled dot-product attention with grouped-query heads, FlashAttention-2's algorithm at CPU
// tile sizes: the forward runs an online softmax over blocks of keys for each block of queries
// (memory per thread O(block x D), never Tq x Tk) and keeps the row logsumexp; the backward
// recomputes the probabilities from it, once per query block for dq and once per key block for
// dk and dv (summed over the query heads of the group in a fixed order), so nothing is added
// by two threads and every run gives the same bits. The block products go through the GEMM
// micro-kernels (cpu_sgemm), the exponentials through the vectorized exp of the CPU level.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "activation_fast.hpp"
#include "cpu_backend.hpp"
#include "nnops/detail/transformer_math.hpp"

namespace nnops::detail {

namespace {

constexpr int64_t kQueryBlock = 128;
constexpr int64_t kKeyBlock = 128;
constexpr float kInf = std::numeric_limits<float>::infinity();

float dot(const float* a, const float* b, int64_t d) {
  float acc = 0.0f;
  for (int64_t c = 0; c < d; ++c) acc += a[c] * b[c];
  return acc;
}

int64_t visible_keys(const AttentionShape& s, int64_t i) {
  return attention_visible_keys(s.causal, s.tk, i);
}

// A max that keeps NaN (a NaN score makes its row NaN, as PyTorch).
float nan_max(float a, float b) {
  return (b != b || b > a) ? b : a;
}

float row_max(const float* x, int64_t n) {
  if (const VecKernels* vk = vector_kernels()) return n > 0 ? vk->row_max(x, n, 1.0f) : -kInf;
  float m = -kInf;
  for (int64_t c = 0; c < n; ++c) m = nan_max(m, x[c]);
  return m;
}

// x[c] = exp(x[c] - shift) for c < seen and 0 beyond (the keys a causal row does not see).
void exp_row(float* x, int64_t seen, int64_t n, float shift) {
  if (const VecKernels* vk = vector_kernels()) {
    if (seen > 0) vk->softmax_row(x, x, seen, shift, 1.0f);
  } else {
    for (int64_t c = 0; c < seen; ++c) x[c] = std::exp(x[c] - shift);
  }
  std::fill(x + std::max<int64_t>(seen, 0), x + n, 0.0f);
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

// The parts of a (query block, key block) pair that causal masking leaves, in order: the whole
// pair, or, where the block's first query row does not see all of the block's keys, its two
// halves of keys, each with only the query rows that see any of its keys (row r sees key j
// from r = j - i0 on). The diagonal pair of equal blocks so computes three quarters of its
// scores and products instead of all of them. f(i0, rows, j0, cols) per part.
template <class F>
void for_each_part(const AttentionShape& s, int64_t i0, int64_t rows, int64_t j0, int64_t cols,
                   F&& f) {
  constexpr int64_t kMinSplit = 64;  // narrower halves cost more in tile edges than they save
  if (!s.causal || j0 + cols <= i0 + 1 || cols < kMinSplit) {
    f(i0, rows, j0, cols);
    return;
  }
  const int64_t half = cols / 2;
  for (const auto& [j, width] : {std::pair{j0, half}, std::pair{j0 + half, cols - half}}) {
    const int64_t skip = std::clamp<int64_t>(j - i0, 0, rows);
    if (skip < rows) f(i0 + skip, rows - skip, j, width);
  }
}

// The sum of x[0, n) in eight interleaved partial sums, combined in a fixed order: the
// compiler keeps them in one vector register (a single running float sum is one add latency
// per element).
float lane_sum(const float* x, int64_t n) {
  float part[8] = {};
  int64_t c = 0;
  for (; c + 8 <= n; c += 8)
    for (int j = 0; j < 8; ++j) part[j] += x[c + j];
  for (; c < n; ++c) part[c % 8] += x[c];
  return ((part[0] + part[4]) + (part[1] + part[5])) + ((part[2] + part[6]) + (part[3] + part[7]));
}

bool worth_threads(const AttentionShape& s) {
  return s.tq * s.tk * s.d * s.batch * s.q_heads >= kParallelThreshold;
}

}  // namespace

void CpuBackend::attention_forward(float* out, float* lse, const float* q, const float* k,
                                   const float* v, const AttentionShape& s) {
  const Heads at{s};
  const int64_t d = s.d, q_blocks = (s.tq + kQueryBlock - 1) / kQueryBlock;
  const int64_t tasks = s.batch * s.q_heads * q_blocks;
  const int threads = tasks > 1 && worth_threads(s) ? omp_get_max_threads() : 1;
  // acc [block, d], scores [block, key block], running max and sum [block] each.
  ThreadScratch scratch(threads, kQueryBlock * (d + kKeyBlock + 2));
  // The GEMM packing buffers of every thread that will run a block product, grown here: a
  // product inside the region below must not allocate.
  reserve_thread_gemm_buffers(threads, kQueryBlock, std::max(kKeyBlock, d), std::max(kKeyBlock, d));
  parallel_tasks(tasks, threads, [&](int64_t task) {
    const int64_t b = task / (s.q_heads * q_blocks), h = task / q_blocks % s.q_heads;
    const int64_t i0 = task % q_blocks * kQueryBlock, rows = std::min(kQueryBlock, s.tq - i0);
    const int64_t g = h / at.group();
    float* acc = scratch.mine();
    float* scores = acc + kQueryBlock * d;
    float* m = scores + kQueryBlock * kKeyBlock;
    float* l = m + kQueryBlock;
    std::fill(acc, acc + rows * d, 0.0f);
    std::fill(m, m + rows, -kInf);
    std::fill(l, l + rows, 0.0f);
    const float* qb = q + at.q_row(b, h, i0);
    const int64_t key_end = visible_keys(s, i0 + rows - 1);
    // One block of keys (or one part of it: for_each_part) into the running softmax of the rows
    // [i1, i1 + part_rows) that see any of its keys; the rows above see none of them.
    auto add_keys = [&](int64_t i1, int64_t part_rows, int64_t j0, int64_t cols) {
      const int64_t r0 = i1 - i0;
      // scores[part_rows, cols] = scale * q_rows k_block^T
      cpu_sgemm(false, true, part_rows, cols, d, s.scale, qb + r0 * d, k + at.kv_row(b, g, j0),
                0.0f, scores);
      for (int64_t r = r0; r < rows; ++r) {
        float* sr = scores + (r - r0) * cols;
        const int64_t seen = std::min(cols, visible_keys(s, i0 + r) - j0);
        const float m_new = nan_max(m[r], row_max(sr, std::max<int64_t>(seen, 0)));
        if (m_new == -kInf) {  // no key of this row seen yet
          std::fill(sr, sr + cols, 0.0f);
          continue;
        }
        exp_row(sr, seen, cols, m_new);
        const float correction = std::exp(m[r] - m_new);  // 0 while m[r] is -inf
        l[r] = l[r] * correction + lane_sum(sr, std::max<int64_t>(seen, 0));
        m[r] = m_new;
        if (correction != 1.0f) {
          for (int64_t c = 0; c < d; ++c) acc[r * d + c] *= correction;
        }
      }
      // acc += p v_block
      cpu_sgemm(false, false, part_rows, d, cols, 1.0f, scores, v + at.kv_row(b, g, j0), 1.0f,
                acc + r0 * d);
    };
    for (int64_t j0 = 0; j0 < key_end; j0 += kKeyBlock)
      for_each_part(s, i0, rows, j0, std::min(kKeyBlock, key_end - j0), add_keys);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = i0 + r;
      if (out) {
        float* o = out + at.q_row(b, h, i);
        const float inv = 1.0f / l[r];  // no visible key: NaN, as PyTorch (0 / 0)
        for (int64_t c = 0; c < d; ++c) o[c] = l[r] > 0.0f ? acc[r * d + c] * inv : NAN;
      }
      if (lse) lse[at.lse_index(b, h, i)] = m[r] + std::log(l[r]);
    }
  });
}

void CpuBackend::attention_backward(float* dq, float* dk, float* dv, const float* q, const float* k,
                                    const float* v, const float* out, const float* lse,
                                    const float* dout, const AttentionShape& s) {
  const Heads at{s};
  const int64_t d = s.d, rows_total = s.batch * s.q_heads * s.tq;
  const bool parallel = worth_threads(s);
  const int threads = parallel ? omp_get_max_threads() : 1;
  // D_i = dout_i . out_i once per query row; per thread: the probabilities, dP (then dS), and
  // two accumulators of [block, d].
  std::vector<float> delta = scratch_vector<float>(static_cast<size_t>(rows_total));
  const int64_t block = std::max(kQueryBlock, kKeyBlock);
  ThreadScratch scratch(threads, 2 * kQueryBlock * kKeyBlock + 2 * block * d);
  reserve_thread_gemm_buffers(threads, block, std::max(block, d), std::max(block, d));
#pragma omp parallel for schedule(static) num_threads(threads) if (parallel)
  for (int64_t row = 0; row < rows_total; ++row) {
    delta[row] = dot(dout + row * d, out + row * d, d);
  }

  // P and dS of one (query block, key block) pair: p = exp(scale q k^T - lse) where seen, and
  // ds = p * (dout v^T - D).
  auto probabilities = [&](float* p, float* ds, int64_t b, int64_t h, int64_t g, int64_t i0,
                           int64_t rows, int64_t j0, int64_t cols) {
    cpu_sgemm(false, true, rows, cols, d, s.scale, q + at.q_row(b, h, i0), k + at.kv_row(b, g, j0),
              0.0f, p);
    cpu_sgemm(false, true, rows, cols, d, 1.0f, dout + at.q_row(b, h, i0), v + at.kv_row(b, g, j0),
              0.0f, ds);
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t row = at.lse_index(b, h, i0 + r);
      exp_row(p + r * cols, std::min(cols, visible_keys(s, i0 + r) - j0), cols, lse[row]);
      for (int64_t c = 0; c < cols; ++c)
        ds[r * cols + c] = p[r * cols + c] * (ds[r * cols + c] - delta[row]);
    }
  };

  const int64_t q_blocks = (s.tq + kQueryBlock - 1) / kQueryBlock;
  const int64_t k_blocks = (s.tk + kKeyBlock - 1) / kKeyBlock;
  // dv_j = P^T dout and dk_j = scale * dS^T q for one block of keys, over the query heads of its
  // group and their query blocks in order (causal: from the block holding query j0); with_dq
  // also adds each pair's scale * dS k to dq.
  auto key_block = [&](float* p, float* ds, float* acc_k, float* acc_v, int64_t b, int64_t g,
                       int64_t j0, bool with_dq) {
    const int64_t cols = std::min(kKeyBlock, s.tk - j0);
    std::fill(acc_k, acc_k + cols * d, 0.0f);
    std::fill(acc_v, acc_v + cols * d, 0.0f);
    const int64_t first = s.causal ? j0 / kQueryBlock * kQueryBlock : 0;
    for (int64_t h = g * at.group(); h < (g + 1) * at.group(); ++h) {
      for (int64_t i0 = first; i0 < s.tq; i0 += kQueryBlock) {
        for_each_part(s, i0, std::min(kQueryBlock, s.tq - i0), j0, cols,
                      [&](int64_t i1, int64_t rows, int64_t j1, int64_t width) {
                        const int64_t key = (j1 - j0) * d;  // the part's first key's row in acc
                        probabilities(p, ds, b, h, g, i1, rows, j1, width);
                        cpu_sgemm(true, false, width, d, rows, 1.0f, p, dout + at.q_row(b, h, i1),
                                  1.0f, acc_v + key);
                        cpu_sgemm(true, false, width, d, rows, s.scale, ds, q + at.q_row(b, h, i1),
                                  1.0f, acc_k + key);
                        if (with_dq) {
                          cpu_sgemm(false, false, rows, d, width, s.scale, ds,
                                    k + at.kv_row(b, g, j1), 1.0f, dq + at.q_row(b, h, i1));
                        }
                      });
      }
    }
    std::copy(acc_k, acc_k + cols * d, dk + at.kv_row(b, g, j0));
    std::copy(acc_v, acc_v + cols * d, dv + at.kv_row(b, g, j0));
  };
  auto buffers = [&](float*& p, float*& ds, float*& acc_a, float*& acc_b) {
    p = scratch.mine();
    ds = p + kQueryBlock * kKeyBlock;
    acc_a = ds + kQueryBlock * kKeyBlock;
    acc_b = acc_a + block * d;
  };

  // One task per (batch, key head) when there are enough of them: it walks the key blocks in
  // order, and each (query block, key block) pair's P and dS, computed once, feed dv, dk and dq
  // (dq rows belong to the task, added to over the key blocks in order). Otherwise dq takes a
  // pass of its own per query block, recomputing P and dS, so short batches still use every
  // thread. Both add the same terms in the same order: the same bits either way.
  if (s.batch * s.kv_heads >= 2 * threads) {
    parallel_tasks(s.batch * s.kv_heads, threads, [&](int64_t task) {
      const int64_t b = task / s.kv_heads, g = task % s.kv_heads;
      float *p, *ds, *acc_k, *acc_v;
      buffers(p, ds, acc_k, acc_v);
      for (int64_t h = g * at.group(); h < (g + 1) * at.group(); ++h)
        std::fill(dq + at.q_row(b, h, 0), dq + at.q_row(b, h, s.tq), 0.0f);
      for (int64_t j0 = 0; j0 < s.tk; j0 += kKeyBlock)
        key_block(p, ds, acc_k, acc_v, b, g, j0, true);
    });
    return;
  }

  // dq = scale * dS k, per block of queries over its visible key blocks.
  parallel_tasks(s.batch * s.q_heads * q_blocks, threads, [&](int64_t task) {
    const int64_t b = task / (s.q_heads * q_blocks), h = task / q_blocks % s.q_heads;
    const int64_t i0 = task % q_blocks * kQueryBlock, rows = std::min(kQueryBlock, s.tq - i0);
    const int64_t g = h / at.group();
    float *p, *ds, *acc, *unused;
    buffers(p, ds, acc, unused);
    std::fill(acc, acc + rows * d, 0.0f);
    const int64_t key_end = visible_keys(s, i0 + rows - 1);
    for (int64_t j0 = 0; j0 < key_end; j0 += kKeyBlock) {
      // The key block's columns as key_block splits them (the same parts, the same bits).
      for_each_part(s, i0, rows, j0, std::min(kKeyBlock, s.tk - j0),
                    [&](int64_t i1, int64_t part_rows, int64_t j1, int64_t width) {
                      probabilities(p, ds, b, h, g, i1, part_rows, j1, width);
                      cpu_sgemm(false, false, part_rows, d, width, s.scale, ds,
                                k + at.kv_row(b, g, j1), 1.0f, acc + (i1 - i0) * d);
                    });
    }
    std::copy(acc, acc + rows * d, dq + at.q_row(b, h, i0));
  });
  // Then dk and dv per block of keys.
  parallel_tasks(s.batch * s.kv_heads * k_blocks, threads, [&](int64_t task) {
    float *p, *ds, *acc_k, *acc_v;
    buffers(p, ds, acc_k, acc_v);
    key_block(p, ds, acc_k, acc_v, task / (s.kv_heads * k_blocks), task / k_blocks % s.kv_heads,
              task % k_blocks * kKeyBlock, false);
  });
}

}  // namespace nnops::detail
