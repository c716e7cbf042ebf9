// Helpers of the CPU benchmark files: random inputs and the copy-bandwidth ceiling.
#pragma once

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstring>
#include <nnops/nnops.hpp>
#include <vector>

namespace nnops::bench {

inline Tensor random_tensor(const Shape& shape, uint64_t seed) {
  Tensor t = Tensor::empty(shape);
  fill_uniform(t, -1.0f, 1.0f, seed);
  return t;
}

// A copy of `bytes` bytes moves 2*bytes through memory (read + write): the bandwidth ceiling
// for an op that moves the same traffic. It runs on as many threads as nnops' ops (OpenMP,
// static chunks), so the ratio compares like with like.
inline void copy_bytes(benchmark::State& state, int64_t bytes) {
  std::vector<char> src(bytes, 1), dst(bytes);
  constexpr int64_t kChunk = 1 << 16;
  const int64_t chunks = (bytes + kChunk - 1) / kChunk;
  for (auto _ : state) {
#pragma omp parallel for schedule(static)
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t n = std::min(kChunk, bytes - c * kChunk);
      std::memcpy(dst.data() + c * kChunk, src.data() + c * kChunk, n);
    }
    benchmark::DoNotOptimize(dst.data());
    benchmark::ClobberMemory();
  }
  state.counters["bytes/s"] =
      benchmark::Counter(2.0 * bytes, benchmark::Counter::kIsIterationInvariantRate);
}

}  // namespace nnops::bench
