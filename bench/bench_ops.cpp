// CPU benchmarks of nnops beside the baselines a user would pick instead, in one run:
// GEMM against OpenBLAS (and oneDNN when found), memory-bound ops against a memcpy that moves
// the same bytes (the bandwidth ceiling), pruning against std::nth_element. After the
// Google Benchmark output a table gives baseline_time / nnops_time for each pair.
#include <benchmark/benchmark.h>
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <map>
#include <nnops/nnops.hpp>
#include <string>
#include <vector>
#ifdef NNOPS_BENCH_ONEDNN
#include <oneapi/dnnl/dnnl.h>
#endif

namespace {

using namespace nnops;

Tensor random_tensor(const Shape& shape, uint64_t seed) {
  Tensor t = Tensor::empty(shape);
  fill_uniform(t, -1.0f, 1.0f, seed);
  return t;
}

void set_gemm_counters(benchmark::State& state, int64_t m, int64_t n, int64_t k) {
  state.counters["FLOP/s"] =
      benchmark::Counter(2.0 * m * n * k, benchmark::Counter::kIsIterationInvariantRate);
}

// Shapes: the reference MLP's layers at batch 64 (forward [64,1000]x[1000,2000]) and squares.
#define GEMM_ARGS \
  Args({64, 2000, 1000})->Args({64, 1000, 2000})->Args({512, 512, 512})->Args({1024, 1024, 1024})

void gemm_nnops(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  Tensor a = random_tensor({m, k}, 1), b = random_tensor({k, n}, 2), c = Tensor::empty({m, n});
  for (auto _ : state) {
    matmul(a, b, c);
    benchmark::DoNotOptimize(c.raw_data());
  }
  set_gemm_counters(state, m, n, k);
}
BENCHMARK(gemm_nnops)->GEMM_ARGS->Unit(benchmark::kMillisecond)->UseRealTime();

void gemm_openblas(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  Tensor a = random_tensor({m, k}, 1), b = random_tensor({k, n}, 2), c = Tensor::empty({m, n});
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a.data<float>(), k,
                b.data<float>(), n, 0.0f, c.data<float>(), n);
    benchmark::DoNotOptimize(c.raw_data());
  }
  set_gemm_counters(state, m, n, k);
}
BENCHMARK(gemm_openblas)->GEMM_ARGS->Unit(benchmark::kMillisecond)->UseRealTime();

// The linear layer's forward product: x[m, k] * w[n, k]^T (B transposed, as nn.Linear stores it).
void gemm_nt_nnops(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  Tensor a = random_tensor({m, k}, 1), b = random_tensor({n, k}, 2), c = Tensor::empty({m, n});
  for (auto _ : state) {
    matmul(a, b, c, GemmOptions{false, true});
    benchmark::DoNotOptimize(c.raw_data());
  }
  set_gemm_counters(state, m, n, k);
}
BENCHMARK(gemm_nt_nnops)
    ->Args({64, 2000, 1000})
    ->Args({64, 1000, 2000})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void gemm_nt_openblas(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  Tensor a = random_tensor({m, k}, 1), b = random_tensor({n, k}, 2), c = Tensor::empty({m, n});
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a.data<float>(), k,
                b.data<float>(), k, 0.0f, c.data<float>(), n);
    benchmark::DoNotOptimize(c.raw_data());
  }
  set_gemm_counters(state, m, n, k);
}
BENCHMARK(gemm_nt_openblas)
    ->Args({64, 2000, 1000})
    ->Args({64, 1000, 2000})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

// The linear layer's weight gradient: dy[k, m]^T * x[k, n] with a small depth k (the batch).
void gemm_tn_nnops(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  Tensor a = random_tensor({k, m}, 1), b = random_tensor({k, n}, 2), c = Tensor::empty({m, n});
  for (auto _ : state) {
    matmul(a, b, c, GemmOptions{true, false});
    benchmark::DoNotOptimize(c.raw_data());
  }
  set_gemm_counters(state, m, n, k);
}
BENCHMARK(gemm_tn_nnops)
    ->Args({2000, 1000, 64})
    ->Args({1000, 2000, 64})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

void gemm_tn_openblas(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  Tensor a = random_tensor({k, m}, 1), b = random_tensor({k, n}, 2), c = Tensor::empty({m, n});
  for (auto _ : state) {
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, m, n, k, 1.0f, a.data<float>(), m,
                b.data<float>(), n, 0.0f, c.data<float>(), n);
    benchmark::DoNotOptimize(c.raw_data());
  }
  set_gemm_counters(state, m, n, k);
}
BENCHMARK(gemm_tn_openblas)
    ->Args({2000, 1000, 64})
    ->Args({1000, 2000, 64})
    ->Unit(benchmark::kMillisecond)
    ->UseRealTime();

#ifdef NNOPS_BENCH_ONEDNN
void gemm_onednn(benchmark::State& state) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  Tensor a = random_tensor({m, k}, 1), b = random_tensor({k, n}, 2), c = Tensor::empty({m, n});
  for (auto _ : state) {
    dnnl_sgemm('N', 'N', m, n, k, 1.0f, a.data<float>(), k, b.data<float>(), n, 0.0f,
               c.data<float>(), n);
    benchmark::DoNotOptimize(c.raw_data());
  }
  set_gemm_counters(state, m, n, k);
}
BENCHMARK(gemm_onednn)->GEMM_ARGS->Unit(benchmark::kMillisecond)->UseRealTime();
#endif

// A copy of `bytes` bytes moves 2*bytes through memory (read + write): the bandwidth ceiling
// for an op that moves the same traffic. It runs on as many threads as nnops' ops (OpenMP,
// static chunks), so the ratio compares like with like.
void copy_bytes(benchmark::State& state, int64_t bytes) {
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

// One size that lives in cache and one far beyond the 32 MiB L3, where DRAM bandwidth rules.
#define SIZES Arg(65536)->Arg(1 << 24)

// Adam reads p, g, m, v and writes p, m, v: 28 bytes per element.
void adam_nnops(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor p = random_tensor({n}, 1), g = random_tensor({n}, 2);
  AdamState st;
  for (auto _ : state) {
    adam_step(AdamOptions{}, p, g, st);
    benchmark::DoNotOptimize(p.raw_data());
  }
  state.counters["bytes/s"] =
      benchmark::Counter(28.0 * n, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(adam_nnops)->SIZES->UseRealTime();
void adam_ceiling(benchmark::State& state) {
  copy_bytes(state, 14 * state.range(0));
}
BENCHMARK(adam_ceiling)->SIZES->UseRealTime();

// GELU reads x and writes y: 8 bytes per element.
void gelu_nnops(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor x = random_tensor({n}, 1), y = Tensor::empty({n});
  for (auto _ : state) {
    activation_forward(Activation::GELU, x, y);
    benchmark::DoNotOptimize(y.raw_data());
  }
  state.counters["bytes/s"] =
      benchmark::Counter(8.0 * n, benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(gelu_nnops)->SIZES->UseRealTime();
void gelu_ceiling(benchmark::State& state) {
  copy_bytes(state, 4 * state.range(0));
}
BENCHMARK(gelu_ceiling)->SIZES->UseRealTime();

// L1 pruning of 50% against selecting the median magnitude with std::nth_element.
void prune_nnops(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor w = random_tensor({n}, 1);
  Tensor mask = Tensor::empty({n}, DType::U8);
  for (auto _ : state) {
    state.PauseTiming();
    std::memset(mask.raw_data(), 1, n);
    state.ResumeTiming();
    l1_unstructured(w, PruneAmount::fraction(0.5), mask);
  }
}
BENCHMARK(prune_nnops)->SIZES->Unit(benchmark::kMillisecond)->UseRealTime();
void prune_nth_element(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor w = random_tensor({n}, 1);
  std::vector<float> mags(n);
  for (auto _ : state) {
    const float* wp = w.data<float>();
    for (int64_t i = 0; i < n; ++i) mags[i] = std::fabs(wp[i]);
    std::nth_element(mags.begin(), mags.begin() + n / 2, mags.end());
    benchmark::DoNotOptimize(mags.data());
  }
}
BENCHMARK(prune_nth_element)->SIZES->Unit(benchmark::kMillisecond)->UseRealTime();

// Records seconds per iteration of every run (every repetition), then prints the ratio table
// from the medians. On a shared machine, run with --benchmark_repetitions=5
// --benchmark_enable_random_interleaving=true so both sides of a pair see the same conditions.
class RatioReporter : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      if (r.run_type == Run::RT_Iteration && r.iterations > 0) {
        samples_[r.run_name.str()].push_back(r.real_accumulated_time /
                                             static_cast<double>(r.iterations));
      }
    }
    ConsoleReporter::ReportRuns(runs);
  }
  void print_ratios() {
    for (auto& [name, times] : samples_) {
      std::sort(times.begin(), times.end());
      seconds_[name] = times[times.size() / 2];
    }
    print_table();
  }
  void print_table() const {
    const std::vector<std::string> baselines = {"openblas", "onednn", "ceiling", "nth_element"};
    std::printf(
        "\n%-40s %-14s %10s   (baseline time / nnops time; > 1 means nnops is faster;\n"
        "%-40s %-14s %10s    vs 'ceiling' it is the fraction of copy bandwidth reached)\n",
        "benchmark", "baseline", "ratio", "", "", "");
    for (const auto& [name, t] : seconds_) {
      const auto pos = name.find("_nnops");
      if (pos == std::string::npos) continue;
      for (const std::string& b : baselines) {
        std::string other = name;
        other.replace(pos, 6, "_" + b);
        const auto it = seconds_.find(other);
        if (it != seconds_.end())
          std::printf("%-40s %-14s %10.3f\n", name.c_str(), b.c_str(), it->second / t);
      }
    }
  }

 private:
  std::map<std::string, std::vector<double>> samples_;
  std::map<std::string, double> seconds_;
};

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  RatioReporter reporter;
  benchmark::RunSpecifiedBenchmarks(&reporter);
  reporter.print_ratios();
  benchmark::Shutdown();
  return 0;
}
