// Deterministic parallel sums: fixed-size chunks are summed in index order (in parallel), then
// the chunk sums in chunk order. The result is the same bits for any number of threads,
// unlike an OpenMP reduction, whose combining order depends on the thread count and timing.
#pragma once

#include <vector>

#include "cpu_backend.hpp"

namespace nnops::detail {

// Sums term(i) for i in [0, n) in double; term may also write outputs for index i.
template <int64_t kChunk = 4096, class Term>
double deterministic_sum(int64_t n, int64_t work_per_term, Term term) {
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  std::vector<double> partial(static_cast<size_t>(chunks), 0.0);
#pragma omp parallel for schedule(static) if (n * work_per_term >= kParallelThreshold && chunks > 1)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t end = (c + 1) * kChunk < n ? (c + 1) * kChunk : n;
    double s = 0.0;
    for (int64_t i = c * kChunk; i < end; ++i) s += term(i);
    partial[static_cast<size_t>(c)] = s;
  }
  double total = 0.0;
  for (double p : partial) total += p;
  return total;
}

}  // namespace nnops::detail
