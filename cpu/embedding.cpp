// CPU embedding lookup and gradient (F.embedding). The gradient groups the positions of each
// index with a counting sort (positions in increasing order), then sums every vocabulary row's
// positions in that order: the same bits for any thread count, no atomics.
#include <cstring>

#include "cpu_backend.hpp"

namespace nnops::detail {

void CpuBackend::embedding_forward(float* out, const int32_t* idx, const float* weight, int64_t n,
                                   int64_t, int64_t dim) {
#pragma omp parallel for schedule(static) if (n * dim >= kParallelThreshold)
  for (int64_t s = 0; s < n; ++s) {
    std::memcpy(out + s * dim, weight + static_cast<int64_t>(idx[s]) * dim, sizeof(float) * dim);
  }
}

void CpuBackend::embedding_backward(float* dweight, const int32_t* idx, const float* dout,
                                    int64_t n, int64_t vocab, int64_t dim) {
  // start[v] .. start[v + 1]: where index v's positions sit in `order`.
  std::vector<int64_t> start = scratch_vector<int64_t>(static_cast<size_t>(vocab + 1), 0);
  std::vector<int64_t> order = scratch_vector<int64_t>(static_cast<size_t>(n), 0);
  for (int64_t s = 0; s < n; ++s) ++start[idx[s] + 1];
  for (int64_t v = 0; v < vocab; ++v) start[v + 1] += start[v];
  {
    std::vector<int64_t> next(start.begin(), start.end() - 1);
    for (int64_t s = 0; s < n; ++s) order[next[idx[s]]++] = s;
  }
#pragma omp parallel for schedule(dynamic, 64) if (vocab * dim >= kParallelThreshold)
  for (int64_t v = 0; v < vocab; ++v) {
    float* row = dweight + v * dim;
    std::memset(row, 0, sizeof(float) * dim);
    for (int64_t i = start[v]; i < start[v + 1]; ++i) {
      const float* g = dout + order[i] * dim;
#pragma omp simd
      for (int64_t c = 0; c < dim; ++c) row[c] += g[c];
    }
  }
}

}  // namespace nnops::detail
