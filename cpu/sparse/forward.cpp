// CPU linear layer on compressed weights (nnops/sparse.hpp), forward: x is transposed once so the
// batch is the contiguous, vector dimension; each output row then adds `value * x^T[column]`
// over its kept entries into a batch-wide accumulator (4 vectors: 64 batch rows on AVX-512, 32
// on AVX2), in the entries' stored order: the same bits for any thread count. Half the
// multiply-adds of the dense product at 2:4, but one vector load per multiply-add (a dense
// micro-kernel reuses each load across its register tile), so the source must come from L1:
// blocks of x^T rows (layout.hpp) are the outer loop, and the accumulators wait in a scratch
// [out, n] between blocks. A portable scalar loop is the reference, and the path for the batch
// rows that do not fill a vector chunk.
#include <omp.h>

#include <cstring>
#include <vector>

#include "../cpu_backend.hpp"
#include "../transpose.hpp"
#include "layout.hpp"

namespace nnops::detail {

namespace {

using namespace sparse;

// Batch rows [r0, n) of output row o, one at a time.
void scalar_rows(float* y, const float* xt, const SparseView& w, float b, int64_t n, int64_t o,
                 int64_t r0) {
  for (int64_t r = r0; r < n; ++r) {
    float acc = 0.0f;
#define NNOPS_SCALAR_ADD(value, column) acc += (value)*xt[(column)*n + r]
    NNOPS_FOR_EACH_ENTRY(w, o, NNOPS_SCALAR_ADD)
#undef NNOPS_SCALAR_ADD
    y[r * w.rows + o] = acc + b;
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// acc[o, r0 .. r0 + 4 * kLanes) = the sum of value * x^T[column, r0 ..] over row o's entries,
// for rows [o0, o1), blocks of x^T rows outermost. Each sum adds its entries in stored order,
// the partial sums parked in acc between blocks: the same bits as one pass.
template <class V, int kLanes>
NNOPS_ALWAYS_INLINE void blocked_rows(float* acc, const float* xt, const SparseView& w, int64_t n,
                                      int64_t r0, int64_t o0, int64_t o1, int64_t* cursor) {
  const int64_t block = block_rows(4 * kLanes);
  if (!w.nm24)
    for (int64_t o = o0; o < o1; ++o) cursor[o - o0] = w.row_ptr[o];
  for (int64_t c0 = 0; c0 < w.cols; c0 += block) {
    const int64_t c1 = std::min(c0 + block, w.cols);
    for (int64_t o = o0; o < o1; ++o) {
      float* out = acc + o * n + r0;
      V a0 = {}, a1 = {}, a2 = {}, a3 = {};
      if (c0 > 0) {
        std::memcpy(&a0, out, sizeof(V));
        std::memcpy(&a1, out + kLanes, sizeof(V));
        std::memcpy(&a2, out + 2 * kLanes, sizeof(V));
        std::memcpy(&a3, out + 3 * kLanes, sizeof(V));
      }
#define NNOPS_VECTOR_ADD(value, column)                     \
  {                                                         \
    const V v = (value)-V{}; /* a broadcast: x - 0 == x */  \
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
      NNOPS_FOR_EACH_ENTRY_IN(w, o, c0, c1, cursor + (o - o0), NNOPS_VECTOR_ADD)
#undef NNOPS_VECTOR_ADD
      std::memcpy(out, &a0, sizeof(V));
      std::memcpy(out + kLanes, &a1, sizeof(V));
      std::memcpy(out + 2 * kLanes, &a2, sizeof(V));
      std::memcpy(out + 3 * kLanes, &a3, sizeof(V));
    }
  }
}

__attribute__((target("avx512f"))) void blocked_rows_avx512(float* acc, const float* xt,
                                                            const SparseView& w, int64_t n,
                                                            int64_t r0, int64_t o0, int64_t o1,
                                                            int64_t* cursor) {
  blocked_rows<V16, 16>(acc, xt, w, n, r0, o0, o1, cursor);
}
__attribute__((target("avx2,fma"))) void blocked_rows_avx2(float* acc, const float* xt,
                                                           const SparseView& w, int64_t n,
                                                           int64_t r0, int64_t o0, int64_t o1,
                                                           int64_t* cursor) {
  blocked_rows<V8, 8>(acc, xt, w, n, r0, o0, o1, cursor);
}
#endif

using BlockedRows = void (*)(float*, const float*, const SparseView&, int64_t, int64_t, int64_t,
                             int64_t, int64_t*);

// The vector kernel and its chunk of batch rows, or {nullptr, 0} (the scalar loop only).
std::pair<BlockedRows, int64_t> forward_kernel_for_active_isa() {
#if defined(__x86_64__) && defined(__GNUC__)
  switch (active_cpu_isa()) {
    case CpuIsa::AVX512:
      return {blocked_rows_avx512, 64};
    case CpuIsa::AVX2:
    case CpuIsa::AVX2WideTiles:
      return {blocked_rows_avx2, 32};
    default:
      break;
  }
#endif
  return {nullptr, 0};
}

}  // namespace

void CpuBackend::sparse_linear_forward(float* y, const float* x, const SparseView& w,
                                       const float* bias, int64_t n) {
  // x^T [in, n] and the accumulators [out, n], allocated before y is written.
  thread_local ScratchBuffer xt_buffer, acc_buffer;
  float* const xt = xt_buffer.get(w.cols * n);
  const auto [kernel_found, chunk_found] = forward_kernel_for_active_isa();
  // Plain variables: OpenMP regions may not capture structured bindings (clang refuses).
  const BlockedRows kernel = kernel_found;
  const int64_t whole = chunk_found ? n / chunk_found * chunk_found : 0, chunk = chunk_found;
  float* const acc = whole ? acc_buffer.get(w.rows * n) : nullptr;
  transpose(xt, x, n, w.cols, cpu_isa_has_avx2());
#pragma omp parallel if (w.rows * w.cols * n >= kParallelThreshold)
  {
    // Each thread its own output rows, every batch chunk of them.
    const int threads = omp_get_num_threads(), t = omp_get_thread_num();
    const int64_t o0 = w.rows * t / threads, o1 = w.rows * (t + 1) / threads;
    thread_local std::vector<int64_t> cursor;  // CSR: each row's next entry
    cursor.resize(static_cast<size_t>(o1 - o0));
    for (int64_t r0 = 0; r0 < whole; r0 += chunk) kernel(acc, xt, w, n, r0, o0, o1, cursor.data());
    for (int64_t r = 0; r < whole; ++r)
      for (int64_t o = o0; o < o1; ++o)
        y[r * w.rows + o] = acc[o * n + r] + (bias ? bias[o] : 0.0f);
    for (int64_t o = o0; o < o1; ++o) scalar_rows(y, xt, w, bias ? bias[o] : 0.0f, n, o, whole);
  }
}

}  // namespace nnops::detail
