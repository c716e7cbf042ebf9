// CPU linear layer on compressed weights (nnops/sparse.hpp): x is transposed once so the batch
// is the contiguous, vector dimension; each output row then adds `value * x^T[column]` over its
// kept entries into a batch-wide accumulator held in registers (4 vectors: 64 batch rows on
// AVX-512, 32 on AVX2), in the entries' stored order: the same bits for any thread count. Half
// the multiply-adds of the dense product at 2:4. A portable scalar loop is the reference.
// The backward pass works on the transposes too: dx^T gets `value * dy^T[row]` added at each
// entry's column (threads own blocks of batch rows, so every dx element sums its entries in
// one fixed order), and each stored value's gradient is the dot product of dy^T[row] and
// x^T[column] (AVX-512: 16 entries at a time, reduced together).
#include <algorithm>
#include <cstring>

#include "cpu_backend.hpp"
#include "isa_variants.hpp"
#include "nnops/detail/sparse_layout.hpp"
#include "transpose.hpp"

namespace nnops::detail {

namespace {

// The kept entries of output row o, as (value, column) pairs in stored order, fed to `add`.
#define NNOPS_FOR_EACH_ENTRY(w, o, ADD)                                     \
  if ((w).nm24) {                                                           \
    const int64_t groups_ = (w).cols / 4;                                   \
    const float* v_ = (w).values + (o) * ((w).cols / 2);                    \
    const uint8_t* meta_ = (w).metadata + (o)*nm24_metadata_cols((w).cols); \
    for (int64_t g_ = 0; g_ < groups_; ++g_) {                              \
      const Nm24Group grp_ = nm24_group(meta_, g_); /* unused slots: 0 */   \
      ADD(v_[2 * g_], 4 * g_ + grp_.p0);                                    \
      ADD(v_[2 * g_ + 1], 4 * g_ + grp_.p1);                                \
    }                                                                       \
  } else {                                                                  \
    for (int64_t e_ = (w).row_ptr[o]; e_ < (w).row_ptr[(o) + 1]; ++e_)      \
      ADD((w).values[e_], static_cast<int64_t>((w).col[e_]));               \
  }

// Batch rows [r0, n) of output row o, one at a time (the reference, and every path's tail).
NNOPS_ALWAYS_INLINE void scalar_rows(float* y, const float* xt, const SparseView& w, float b,
                                     int64_t n, int64_t o, int64_t r0) {
  for (int64_t r = r0; r < n; ++r) {
    float acc = 0.0f;
#define NNOPS_SCALAR_ADD(value, column) acc += (value)*xt[(column)*n + r]
    NNOPS_FOR_EACH_ENTRY(w, o, NNOPS_SCALAR_ADD)
#undef NNOPS_SCALAR_ADD
    y[r * w.rows + o] = acc + b;
  }
}

void sparse_row_generic(float* y, const float* xt, const SparseView& w, const float* bias,
                        int64_t n, int64_t o) {
  scalar_rows(y, xt, w, bias ? bias[o] : 0.0f, n, o, 0);
}

#if defined(__x86_64__) && defined(__GNUC__)
typedef float V16 __attribute__((vector_size(64)));
typedef float V8 __attribute__((vector_size(32)));

// Blocks of 4 vectors of batch rows in registers, then the scalar tail.
template <class V, int kLanes>
NNOPS_ALWAYS_INLINE void vector_rows(float* y, const float* xt, const SparseView& w,
                                     const float* bias, int64_t n, int64_t o) {
  const float b = bias ? bias[o] : 0.0f;
  int64_t r0 = 0;
  for (; r0 + 4 * kLanes <= n; r0 += 4 * kLanes) {
    V a0 = {}, a1 = {}, a2 = {}, a3 = {};
#define NNOPS_VECTOR_ADD(value, column)                     \
  {                                                         \
    const V v = V{} + (value);                              \
    const float* xc = xt + (column)*n + r0;                 \
    V x0, x1, x2, x3; /* unaligned loads, through memcpy */ \
    std::memcpy(&x0, xc, sizeof(V));                        \
    std::memcpy(&x1, xc + kLanes, sizeof(V));               \
    std::memcpy(&x2, xc + 2 * kLanes, sizeof(V));           \
    std::memcpy(&x3, xc + 3 * kLanes, sizeof(V));           \
    a0 += v * x0;                                           \
    a1 += v * x1;                                           \
    a2 += v * x2;                                           \
    a3 += v * x3;                                           \
  }
    NNOPS_FOR_EACH_ENTRY(w, o, NNOPS_VECTOR_ADD)
#undef NNOPS_VECTOR_ADD
    for (int l = 0; l < kLanes; ++l) {
      y[(r0 + l) * w.rows + o] = a0[l] + b;
      y[(r0 + kLanes + l) * w.rows + o] = a1[l] + b;
      y[(r0 + 2 * kLanes + l) * w.rows + o] = a2[l] + b;
      y[(r0 + 3 * kLanes + l) * w.rows + o] = a3[l] + b;
    }
  }
  scalar_rows(y, xt, w, b, n, o, r0);
}

__attribute__((target("avx512f"))) void sparse_row_avx512(float* y, const float* xt,
                                                          const SparseView& w, const float* bias,
                                                          int64_t n, int64_t o) {
  vector_rows<V16, 16>(y, xt, w, bias, n, o);
}
__attribute__((target("avx2,fma"))) void sparse_row_avx2(float* y, const float* xt,
                                                         const SparseView& w, const float* bias,
                                                         int64_t n, int64_t o) {
  vector_rows<V8, 8>(y, xt, w, bias, n, o);
}
#endif

using SparseRow = void (*)(float*, const float*, const SparseView&, const float*, int64_t, int64_t);

SparseRow sparse_row_for_active_isa() {
#if defined(__x86_64__) && defined(__GNUC__)
  switch (active_cpu_isa()) {
    case CpuIsa::AVX512:
      return sparse_row_avx512;
    case CpuIsa::AVX2:
    case CpuIsa::AVX2WideTiles:
      return sparse_row_avx2;
    default:
      break;
  }
#endif
  return sparse_row_generic;
}

}  // namespace

void CpuBackend::sparse_linear_forward(float* y, const float* x, const SparseView& w,
                                       const float* bias, int64_t n) {
  // x^T [in, n], allocated before y is written.
  thread_local ScratchBuffer xt_buffer;
  float* const xt = xt_buffer.get(w.cols * n);
  transpose(xt, x, n, w.cols, cpu_isa_has_avx2());
  const SparseRow row = sparse_row_for_active_isa();
#pragma omp parallel for schedule(static) if (w.rows * w.cols * n >= kParallelThreshold)
  for (int64_t o = 0; o < w.rows; ++o) row(y, xt, w, bias, n, o);
}

namespace {

// dx^T is summed in blocks of kRowBlock batch rows, [in, kRowBlock] each: a column's partial
// sums are one 64-byte line. (With the batch's full width as the stride, 256 bytes at batch 64,
// every 16th column fell on the same 4 KiB offset and the read-modify-writes stalled on false
// store-to-load dependencies.)
constexpr int64_t kRowBlock = 16;

// The stored slots of output row o: [begin, end) into values.
NNOPS_ALWAYS_INLINE std::pair<int64_t, int64_t> row_slots(const SparseView& w, int64_t o) {
  if (w.nm24) return {o * (w.cols / 2), (o + 1) * (w.cols / 2)};
  return {w.row_ptr[o], w.row_ptr[o + 1]};
}

// The column of slot s of row o, and whether it holds a kept entry (NM24's unused slots do
// not: p1 <= p0, see nnops/sparse.hpp).
NNOPS_ALWAYS_INLINE int64_t slot_column(const SparseView& w, int64_t o, int64_t s, bool& used) {
  if (!w.nm24) {
    used = true;
    return w.col[s];
  }
  const int64_t local = s - o * (w.cols / 2), g = local / 2;
  const unsigned nibble = (w.metadata[o * ((w.cols / 4 + 1) / 2) + g / 2] >> (4 * (g % 2))) & 0xFu;
  const unsigned p0 = nibble & 3u, p1 = nibble >> 2;
  used = local % 2 == 0 ? p0 <= p1 : p0 < p1;
  return 4 * g + (local % 2 == 0 ? p0 : p1);
}

// block[:, lane0 .. lane0 + lanes) += value * dy^T[o, r0 + lane0 ..] over every entry, rows o
// in order: every element adds its entries in one order, whatever the thread.
template <class V, int kLanes>
NNOPS_ALWAYS_INLINE void scatter_lanes(float* block, const float* dyt, const SparseView& w,
                                       int64_t n, int64_t r0, int64_t lane0) {
  for (int64_t o = 0; o < w.rows; ++o) {
    V d;
    std::memcpy(&d, dyt + o * n + r0 + lane0, sizeof(V));
#define NNOPS_SCATTER_ADD(value, column)             \
  {                                                  \
    float* out = block + (column)*kRowBlock + lane0; \
    V acc;                                           \
    std::memcpy(&acc, out, sizeof(V));               \
    acc += (V{} + (value)) * d;                      \
    std::memcpy(out, &acc, sizeof(V));               \
  }
    NNOPS_FOR_EACH_ENTRY(w, o, NNOPS_SCATTER_ADD)
#undef NNOPS_SCATTER_ADD
  }
}

// The same for one batch row (the reference, and any path's tail). Unused NM24 slots hold 0
// and add nothing.
void scatter_lane_scalar(float* block, const float* dyt, const SparseView& w, int64_t n, int64_t r0,
                         int64_t lane) {
  for (int64_t o = 0; o < w.rows; ++o) {
    const float d = dyt[o * n + r0 + lane];
#define NNOPS_SCATTER_ADD(value, column) block[(column)*kRowBlock + lane] += (value)*d
    NNOPS_FOR_EACH_ENTRY(w, o, NNOPS_SCATTER_ADD)
#undef NNOPS_SCATTER_ADD
  }
}

// Batch rows [r0, r0 + rows) (rows <= kRowBlock) into their block of dx^T.
void scatter_block_generic(float* block, const float* dyt, const SparseView& w, int64_t n,
                           int64_t r0, int64_t rows) {
  for (int64_t l = 0; l < rows; ++l) scatter_lane_scalar(block, dyt, w, n, r0, l);
}

// dvalues of row o's slots [s0, s1): dot(dy^T[o], x^T[column]) each, 0 for unused slots.
void slot_grads_generic(float* dvalues, const float* xt, const float* dyt, const SparseView& w,
                        int64_t n, int64_t o, int64_t s0, int64_t s1) {
  const float* d = dyt + o * n;
  for (int64_t s = s0; s < s1; ++s) {
    bool used;
    const int64_t c = slot_column(w, o, s, used);
    float acc = 0.0f;
    if (used)
      for (int64_t r = 0; r < n; ++r) acc += d[r] * xt[c * n + r];
    dvalues[s] = acc;
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
__attribute__((target("avx512f"))) void scatter_block_avx512(float* block, const float* dyt,
                                                             const SparseView& w, int64_t n,
                                                             int64_t r0, int64_t rows) {
  if (rows == kRowBlock) return scatter_lanes<V16, 16>(block, dyt, w, n, r0, 0);
  for (int64_t l = 0; l < rows; ++l) scatter_lane_scalar(block, dyt, w, n, r0, l);
}
__attribute__((target("avx2,fma"))) void scatter_block_avx2(float* block, const float* dyt,
                                                            const SparseView& w, int64_t n,
                                                            int64_t r0, int64_t rows) {
  int64_t l = 0;
  for (; l + 8 <= rows; l += 8) scatter_lanes<V8, 8>(block, dyt, w, n, r0, l);
  for (; l < rows; ++l) scatter_lane_scalar(block, dyt, w, n, r0, l);
}

// The 16 lane sums of a[0..15], as one vector (entry j in lane j): adjacent lanes added in
// pairs, four times over, each step halving the lanes per entry (one fixed order).
__attribute__((target("avx512f"))) NNOPS_ALWAYS_INLINE V16 halve(V16 a, V16 b) {
  return __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
         __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}
__attribute__((target("avx512f"))) V16 sum16(const V16* a) {
  V16 s1[8], s2[4], s3[2];
  for (int i = 0; i < 8; ++i) s1[i] = halve(a[2 * i], a[2 * i + 1]);
  for (int i = 0; i < 4; ++i) s2[i] = halve(s1[2 * i], s1[2 * i + 1]);
  for (int i = 0; i < 2; ++i) s3[i] = halve(s2[2 * i], s2[2 * i + 1]);
  return halve(s3[0], s3[1]);
}

// Sixteen consecutive slots of row o: a 16-lane accumulator each over the batch's whole
// vectors, reduced together, then the batch's last n % 16 rows one by one.
__attribute__((target("avx512f"))) void sixteen_slot_grads(float* dvalues, const float* xt,
                                                           const float* d, int64_t n,
                                                           const int64_t* cols, const bool* used) {
  const int64_t whole = n / 16 * 16;
  V16 acc[16] = {};
  for (int64_t r = 0; r < whole; r += 16) {
    V16 dv;
    std::memcpy(&dv, d + r, sizeof(V16));
    for (int j = 0; j < 16; ++j) {
      V16 xv;
      std::memcpy(&xv, xt + cols[j] * n + r, sizeof(V16));
      acc[j] += dv * xv;
    }
  }
  float sums[16];
  const V16 total = sum16(acc);
  std::memcpy(sums, &total, sizeof(sums));
  for (int j = 0; j < 16; ++j) {
    float s = sums[j];
    for (int64_t r = whole; r < n; ++r) s += d[r] * xt[cols[j] * n + r];
    dvalues[j] = used[j] ? s : 0.0f;
  }
}

__attribute__((target("avx512f"))) void slot_grads_avx512(float* dvalues, const float* xt,
                                                          const float* dyt, const SparseView& w,
                                                          int64_t n, int64_t o, int64_t s0,
                                                          int64_t s1) {
  int64_t cols[16];
  bool used[16];
  int64_t s = s0;
  for (; s + 16 <= s1; s += 16) {
    for (int j = 0; j < 16; ++j) cols[j] = slot_column(w, o, s + j, used[j]);
    sixteen_slot_grads(dvalues + s, xt, dyt + o * n, n, cols, used);
  }
  slot_grads_generic(dvalues, xt, dyt, w, n, o, s, s1);
}
#endif

using ScatterBlock = void (*)(float*, const float*, const SparseView&, int64_t, int64_t, int64_t);
using SlotGrads = void (*)(float*, const float*, const float*, const SparseView&, int64_t, int64_t,
                           int64_t, int64_t);

std::pair<ScatterBlock, SlotGrads> backward_kernels_for_active_isa() {
#if defined(__x86_64__) && defined(__GNUC__)
  switch (active_cpu_isa()) {
    case CpuIsa::AVX512:
      return {scatter_block_avx512, slot_grads_avx512};
    case CpuIsa::AVX2:
    case CpuIsa::AVX2WideTiles:
      return {scatter_block_avx2, slot_grads_generic};
    default:
      break;
  }
#endif
  return {scatter_block_generic, slot_grads_generic};
}

}  // namespace

void CpuBackend::sparse_linear_backward(float* dx, float* dvalues, float* db, const float* x,
                                        const SparseView& w, const float* dy, int64_t n) {
  const int64_t in = w.cols, out = w.rows;
  const int64_t blocks = (n + kRowBlock - 1) / kRowBlock;
  // Every scratch array before the first output is written.
  thread_local ScratchBuffer dyt_buffer, xt_buffer, dxt_buffer;
  float* const dyt = dyt_buffer.get(out * n);
  float* const xt = dvalues ? xt_buffer.get(in * n) : nullptr;
  float* const dxt = dx ? dxt_buffer.get(blocks * in * kRowBlock) : nullptr;
  const bool parallel = in * out * n >= kParallelThreshold;
  transpose(dyt, dy, n, out, cpu_isa_has_avx2());
  if (dvalues) transpose(xt, x, n, in, cpu_isa_has_avx2());
  // Plain variables: OpenMP regions may not capture structured bindings (clang refuses).
  const auto kernels = backward_kernels_for_active_isa();
  const ScatterBlock scatter = kernels.first;
  const SlotGrads slot_grads = kernels.second;
  if (dx) {
    std::fill(dxt, dxt + blocks * in * kRowBlock, 0.0f);
    // Threads own blocks of 16 batch rows (a vector's worth on AVX-512).
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t b = 0; b < blocks; ++b) {
      scatter(dxt + b * in * kRowBlock, dyt, w, n, b * kRowBlock,
              std::min(kRowBlock, n - b * kRowBlock));
    }
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t r = 0; r < n; ++r) {
      const float* block = dxt + (r / kRowBlock) * in * kRowBlock + r % kRowBlock;
      for (int64_t c = 0; c < in; ++c) dx[r * in + c] = block[c * kRowBlock];
    }
  }
  if (dvalues) {
    // Every slot is one dot product, whatever the thread.
#pragma omp parallel for schedule(dynamic, 16) if (parallel)
    for (int64_t o = 0; o < out; ++o) {
      const auto [s0, s1] = row_slots(w, o);
      slot_grads(dvalues, xt, dyt, w, n, o, s0, s1);
    }
  }
  if (db) {
    // Column sums of dy in double, rows in order (as linear_backward's db).
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t o = 0; o < out; ++o) {
      double sum = 0.0;
      for (int64_t r = 0; r < n; ++r) sum += dyt[o * n + r];
      db[o] = static_cast<float>(sum);
    }
  }
}

}  // namespace nnops::detail
