// CPU linear layer on compressed weights (nnops/sparse.hpp): x is transposed once so the batch
// is the contiguous, vector dimension; each output row then adds `value * x^T[column]` over its
// kept entries into a batch-wide accumulator held in registers (4 vectors: 64 batch rows on
// AVX-512, 32 on AVX2), in the entries' stored order: the same bits for any thread count. Half
// the multiply-adds of the dense product at 2:4. A portable scalar loop is the reference.
#include <algorithm>
#include <cstring>

#include "cpu_backend.hpp"
#include "isa_variants.hpp"

namespace nnops::detail {

namespace {

// The kept entries of output row o, as (value, column) pairs in stored order, fed to `add`.
#define NNOPS_FOR_EACH_ENTRY(w, o, ADD)                                  \
  if ((w).nm24) {                                                        \
    const int64_t groups_ = (w).cols / 4;                                \
    const float* v_ = (w).values + (o) * ((w).cols / 2);                 \
    const uint8_t* meta_ = (w).metadata + (o) * ((groups_ + 1) / 2);     \
    for (int64_t g_ = 0; g_ < groups_; ++g_) {                           \
      const unsigned nibble_ = (meta_[g_ / 2] >> (4 * (g_ % 2))) & 0xFu; \
      ADD(v_[2 * g_], 4 * g_ + (nibble_ & 3u));                          \
      ADD(v_[2 * g_ + 1], 4 * g_ + (nibble_ >> 2));                      \
    }                                                                    \
  } else {                                                               \
    for (int64_t e_ = (w).row_ptr[o]; e_ < (w).row_ptr[(o) + 1]; ++e_)   \
      ADD((w).values[e_], static_cast<int64_t>((w).col[e_]));            \
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
  std::vector<float> xt = scratch_vector<float>(static_cast<size_t>(w.cols * n));
#pragma omp parallel for schedule(static) if (w.cols * n >= kParallelThreshold)
  for (int64_t c = 0; c < w.cols; ++c)
    for (int64_t r = 0; r < n; ++r) xt[c * n + r] = x[r * w.cols + c];
  const SparseRow row = sparse_row_for_active_isa();
#pragma omp parallel for schedule(static) if (w.rows * w.cols * n >= kParallelThreshold)
  for (int64_t o = 0; o < w.rows; ++o) row(y, xt.data(), w, bias, n, o);
}

}  // namespace nnops::detail
