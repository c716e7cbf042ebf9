// CPU benchmarks of the transformer ops beside their ceilings: LayerNorm/RMSNorm, rotary
// embeddings and the embedding lookup against a memcpy of the same bytes, and attention
// (forward + backward) with its FLOP rate; bench/torch_attention.py times PyTorch's
// F.scaled_dot_product_attention on the same shapes, and tools/bench-report shows the ratio.
#include <benchmark/benchmark.h>

#include <nnops/nnops.hpp>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include "bench_util.hpp"

namespace {

using namespace nnops;
using nnops::bench::copy_bytes;
using nnops::bench::random_tensor;

// LayerNorm forward reads x and writes y (8 bytes per element); the backward reads x and dy and
// writes dx (12 bytes; the statistics and dweight/dbias are O(rows + D)).
void layer_norm_fwd_nnops(benchmark::State& state) {
  const int64_t rows = state.range(0), d = state.range(1);
  Tensor x = random_tensor({rows, d}, 1), w = random_tensor({d}, 2), b = random_tensor({d}, 3);
  Tensor y = Tensor::empty({rows, d}), mean = Tensor::empty({rows}), rstd = Tensor::empty({rows});
  for (auto _ : state) {
    layer_norm_forward(x, &w, &b, 1e-5f, y, &mean, &rstd);
    benchmark::DoNotOptimize(y.raw_data());
  }
  state.counters["bytes/s"] =
      benchmark::Counter(8.0 * rows * d, benchmark::Counter::kIsIterationInvariantRate);
}
void layer_norm_fwd_ceiling(benchmark::State& state) {
  copy_bytes(state, 4 * state.range(0) * state.range(1));
}
void layer_norm_bwd_nnops(benchmark::State& state) {
  const int64_t rows = state.range(0), d = state.range(1);
  Tensor x = random_tensor({rows, d}, 1), w = random_tensor({d}, 2), b = random_tensor({d}, 3);
  Tensor y = Tensor::empty({rows, d}), mean = Tensor::empty({rows}), rstd = Tensor::empty({rows});
  layer_norm_forward(x, &w, &b, 1e-5f, y, &mean, &rstd);
  Tensor dy = random_tensor({rows, d}, 4), dx = Tensor::empty({rows, d});
  Tensor dw = Tensor::empty({d}), db = Tensor::empty({d});
  for (auto _ : state) {
    layer_norm_backward(x, &w, mean, rstd, dy, &dx, &dw, &db);
    benchmark::DoNotOptimize(dx.raw_data());
  }
  state.counters["bytes/s"] =
      benchmark::Counter(12.0 * rows * d, benchmark::Counter::kIsIterationInvariantRate);
}
void layer_norm_bwd_ceiling(benchmark::State& state) {
  copy_bytes(state, 6 * state.range(0) * state.range(1));
}
void rms_norm_fwd_nnops(benchmark::State& state) {
  const int64_t rows = state.range(0), d = state.range(1);
  Tensor x = random_tensor({rows, d}, 1), w = random_tensor({d}, 2);
  Tensor y = Tensor::empty({rows, d}), rstd = Tensor::empty({rows});
  for (auto _ : state) {
    rms_norm_forward(x, &w, 1e-5f, y, &rstd);
    benchmark::DoNotOptimize(y.raw_data());
  }
  state.counters["bytes/s"] =
      benchmark::Counter(8.0 * rows * d, benchmark::Counter::kIsIterationInvariantRate);
}
void rms_norm_fwd_ceiling(benchmark::State& state) {
  copy_bytes(state, 4 * state.range(0) * state.range(1));
}
#define NORM_ARGS \
  Args({8192, 4096})->Args({4096, 768})->Unit(benchmark::kMillisecond)->UseRealTime()
BENCHMARK(layer_norm_fwd_nnops)->NORM_ARGS;
BENCHMARK(layer_norm_fwd_ceiling)->NORM_ARGS;
BENCHMARK(layer_norm_bwd_nnops)->NORM_ARGS;
BENCHMARK(layer_norm_bwd_ceiling)->NORM_ARGS;
BENCHMARK(rms_norm_fwd_nnops)->NORM_ARGS;
BENCHMARK(rms_norm_fwd_ceiling)->NORM_ARGS;

// RoPE over q of [B, H, T, D] = [4, 12, 1024, 64]: 8 bytes per element.
void rope_nnops(benchmark::State& state) {
  const int64_t b = state.range(0), h = state.range(1), t = state.range(2), d = 64;
  Tensor x = random_tensor({b, h, t, d}, 1), y = Tensor::empty({b, h, t, d});
  for (auto _ : state) {
    rope_forward(x, 0, 10000.0f, y);
    benchmark::DoNotOptimize(y.raw_data());
  }
  state.counters["bytes/s"] =
      benchmark::Counter(8.0 * b * h * t * d, benchmark::Counter::kIsIterationInvariantRate);
}
void rope_ceiling(benchmark::State& state) {
  copy_bytes(state, 4 * state.range(0) * state.range(1) * state.range(2) * 64);
}
BENCHMARK(rope_nnops)->Args({4, 12, 1024})->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(rope_ceiling)->Args({4, 12, 1024})->Unit(benchmark::kMillisecond)->UseRealTime();

// Embedding lookup of 8192 tokens of width 768 from a 50257-row table (GPT-2's): each row read
// once and written once.
void embedding_fwd_nnops(benchmark::State& state) {
  const int64_t n = state.range(0), vocab = 50257, d = 768;
  Tensor w = random_tensor({vocab, d}, 1), out = Tensor::empty({n, d});
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((i * 7919) % vocab);
  Tensor idx = Tensor::from_vector(ids, {n});
  for (auto _ : state) {
    embedding_forward(idx, w, out);
    benchmark::DoNotOptimize(out.raw_data());
  }
  state.counters["bytes/s"] =
      benchmark::Counter(8.0 * n * d, benchmark::Counter::kIsIterationInvariantRate);
}
void embedding_fwd_ceiling(benchmark::State& state) {
  copy_bytes(state, 4 * state.range(0) * 768);
}
BENCHMARK(embedding_fwd_nnops)->Arg(8192)->Unit(benchmark::kMillisecond)->UseRealTime();
BENCHMARK(embedding_fwd_ceiling)->Arg(8192)->Unit(benchmark::kMillisecond)->UseRealTime();

// Causal attention forward + backward at [B, H, T, D] = [4, 12, 1024, 64] (GPT-2 small's
// heads), F32. FLOP counted as PyTorch's and FlashAttention's papers count them: 4 B H T^2 D
// for the forward and 2.5 times that for the backward, halved by the causal mask.
void attention_nnops(benchmark::State& state) {
  const int64_t b = state.range(0), h = state.range(1), t = state.range(2), d = 64;
  Tensor q = random_tensor({b, h, t, d}, 1), k = random_tensor({b, h, t, d}, 2),
         v = random_tensor({b, h, t, d}, 3), dout = random_tensor({b, h, t, d}, 4);
  Tensor out = Tensor::empty({b, h, t, d}), lse = Tensor::empty({b, h, t});
  Tensor dq = Tensor::empty({b, h, t, d}), dk = Tensor::empty({b, h, t, d}),
         dv = Tensor::empty({b, h, t, d});
  AttentionOptions causal;
  causal.causal = true;
  for (auto _ : state) {
    attention_forward(q, k, v, out, &lse, causal);
    attention_backward(q, k, v, out, lse, dout, dq, dk, dv, causal);
    benchmark::DoNotOptimize(dq.raw_data());
  }
  state.counters["FLOP/s"] = benchmark::Counter(3.5 * 4.0 * b * h * t * t * d / 2,
                                                benchmark::Counter::kIsIterationInvariantRate);
}
BENCHMARK(attention_nnops)->Args({4, 12, 1024})->Args({8, 4, 256})->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

// The FMA peak of this machine on the threads nnops uses: independent chains of vector FMAs
// held in registers (12 chains hide the 4-cycle latency), the roof the GEMM chart draws.
namespace {

#if defined(__x86_64__) && defined(__GNUC__)
typedef float V16 __attribute__((vector_size(64)));
typedef float V8 __attribute__((vector_size(32)));

template <class V, int kLanes>
__attribute__((always_inline)) inline double fma_loop(int64_t iters) {
  V acc[12];
  const V a = V{} + 1.0000001f, b = V{} + 0.9999999f;
  for (auto& x : acc) x = V{} + 1.0f;
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (auto& x : acc) x = x * a + b;
  }
  float sum = 0.0f;
  for (auto& x : acc) sum += x[0];
  benchmark::DoNotOptimize(sum);
  return 2.0 * kLanes * 12 * iters;
}
__attribute__((target("avx512f"))) double fma_avx512(int64_t iters) {
  return fma_loop<V16, 16>(iters);
}
__attribute__((target("avx2,fma"))) double fma_avx2(int64_t iters) {
  return fma_loop<V8, 8>(iters);
}
// The same with VDPBF16PS (two BF16 products per FP32 lane and instruction): on a CPU that
// issues it from as many ports as FMA this is twice fma_peak; where it has one port, the same.
__attribute__((target("avx512f,avx512bf16"))) double dpbf16_avx512(int64_t iters) {
  __m512 acc[12];
  const __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80), b = a;  // pairs of 1.0 in BF16
  for (auto& x : acc) x = _mm512_setzero_ps();
  for (int64_t i = 0; i < iters; ++i) {
#pragma GCC unroll 12
    for (auto& x : acc) x = _mm512_dpbf16_ps(x, a, b);
  }
  float sum = 0.0f;
  for (auto& x : acc) sum += _mm512_reduce_add_ps(x);
  benchmark::DoNotOptimize(sum);
  return 4.0 * 16 * 12 * iters;
}
#endif

void dpbf16_peak(benchmark::State& state) {
#if defined(__x86_64__) && defined(__GNUC__)
  if (!__builtin_cpu_supports("avx512bf16")) {
    state.SkipWithError("no AVX512_BF16 on this CPU");
    return;
  }
  double flops = 0.0;
  for (auto _ : state) {
    double total = 0.0;
#pragma omp parallel reduction(+ : total)
    total += dpbf16_avx512(1 << 20);
    flops = total;
  }
  state.counters["FLOP/s"] =
      benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
#else
  state.SkipWithError("x86-64 only");
#endif
}
BENCHMARK(dpbf16_peak)->Unit(benchmark::kMillisecond)->UseRealTime();

void fma_peak(benchmark::State& state) {
#if defined(__x86_64__) && defined(__GNUC__)
  const bool wide = __builtin_cpu_supports("avx512f");
  if (!wide && !__builtin_cpu_supports("fma")) {
    state.SkipWithError("no FMA on this CPU");
    return;
  }
  double flops = 0.0;
  for (auto _ : state) {
    double total = 0.0;
#pragma omp parallel reduction(+ : total)
    total += wide ? fma_avx512(1 << 20) : fma_avx2(1 << 20);
    flops = total;
  }
  state.counters["FLOP/s"] =
      benchmark::Counter(flops, benchmark::Counter::kIsIterationInvariantRate);
#else
  state.SkipWithError("x86-64 only");
#endif
}
BENCHMARK(fma_peak)->Unit(benchmark::kMillisecond)->UseRealTime();

}  // namespace

// The linear layer on pruned weights at batch 64, beside the dense linear_forward (and
// linear_backward: dx and the weight gradient) of the same (decompressed) weight: the MLP's two
// layers at 2:4 (NM24), and at 90% unstructured (CSR).
namespace {

// Forward (y = x w^T + b), or backward (dx and the weight gradient: dense dW, or dvalues).
void sparse_time(benchmark::State& state, SparseFormat format, double amount, bool dense,
                 bool backward = false) {
  const int64_t n = state.range(0), in = state.range(1), out = state.range(2);
  Tensor w = random_tensor({out, in}, 1), x = random_tensor({n, in}, 2),
         b = random_tensor({out}, 3);
  Tensor mask = Tensor::from_vector(std::vector<uint8_t>(out * in, 1), {out, in});
  if (format == SparseFormat::NM24) {
    nm_structured(w, 2, 4, mask);
  } else {
    l1_unstructured(w, PruneAmount::fraction(amount), mask);
  }
  apply_mask(w, mask);
  SparseMatrix s = compress(w, mask, format);
  Tensor y = Tensor::empty({n, out});
  Tensor dy = random_tensor({n, out}, 4), dx = Tensor::empty({n, in});
  Tensor dw = Tensor::empty({out, in}), dvalues = Tensor::empty(s.values().shape());
  for (auto _ : state) {
    if (backward && dense) {
      linear_backward(x, w, dy, &dx, dw, nullptr);
    } else if (backward) {
      sparse_linear_backward(x, s, dy, &dx, &dvalues, nullptr);
    } else if (dense) {
      linear_forward(x, w, &b, y);
    } else {
      sparse_linear_forward(x, s, &b, y);
    }
    benchmark::DoNotOptimize(y.raw_data());
    benchmark::DoNotOptimize(dx.raw_data());
  }
}
void sparse_bwd_nm24_nnops(benchmark::State& state) {
  sparse_time(state, SparseFormat::NM24, 0.5, false, true);
}
void sparse_bwd_nm24_dense(benchmark::State& state) {
  sparse_time(state, SparseFormat::NM24, 0.5, true, true);
}
void sparse_bwd_csr90_nnops(benchmark::State& state) {
  sparse_time(state, SparseFormat::CSR, 0.9, false, true);
}
void sparse_bwd_csr90_dense(benchmark::State& state) {
  sparse_time(state, SparseFormat::CSR, 0.9, true, true);
}
void sparse_nm24_nnops(benchmark::State& state) {
  sparse_time(state, SparseFormat::NM24, 0.5, false);
}
void sparse_nm24_dense(benchmark::State& state) {
  sparse_time(state, SparseFormat::NM24, 0.5, true);
}
void sparse_csr90_nnops(benchmark::State& state) {
  sparse_time(state, SparseFormat::CSR, 0.9, false);
}
void sparse_csr90_dense(benchmark::State& state) {
  sparse_time(state, SparseFormat::CSR, 0.9, true);
}
void sparse_csr50_nnops(benchmark::State& state) {
  sparse_time(state, SparseFormat::CSR, 0.5, false);
}
void sparse_csr50_dense(benchmark::State& state) {
  sparse_time(state, SparseFormat::CSR, 0.5, true);
}
// The crossover: CSR at pruned fractions from 20% to 90% (state.range(3) percent), forward and
// backward, beside the dense layer on the same arguments.
void sparse_csr_density_nnops(benchmark::State& state) {
  sparse_time(state, SparseFormat::CSR, state.range(3) / 100.0, false);
}
void sparse_csr_density_dense(benchmark::State& state) {
  sparse_time(state, SparseFormat::CSR, state.range(3) / 100.0, true);
}
void sparse_bwd_csr_density_nnops(benchmark::State& state) {
  sparse_time(state, SparseFormat::CSR, state.range(3) / 100.0, false, true);
}
void sparse_bwd_csr_density_dense(benchmark::State& state) {
  sparse_time(state, SparseFormat::CSR, state.range(3) / 100.0, true, true);
}
void density_args(benchmark::internal::Benchmark* b) {
  for (int64_t pct : {20, 30, 40, 50, 60, 70, 80, 85, 90}) {
    b->Args({64, 1000, 2000, pct});
    b->Args({64, 2000, 1000, pct});
  }
}
#define SPARSE_DENSITY_ARGS Apply(density_args)->Unit(benchmark::kMillisecond)->UseRealTime()
#define SPARSE_ARGS \
  Args({64, 1000, 2000})->Args({64, 2000, 1000})->Unit(benchmark::kMillisecond)->UseRealTime()
BENCHMARK(sparse_nm24_nnops)->SPARSE_ARGS;
BENCHMARK(sparse_nm24_dense)->SPARSE_ARGS;
BENCHMARK(sparse_csr90_nnops)->SPARSE_ARGS;
BENCHMARK(sparse_csr90_dense)->SPARSE_ARGS;
BENCHMARK(sparse_csr50_nnops)->SPARSE_ARGS;
BENCHMARK(sparse_csr50_dense)->SPARSE_ARGS;
BENCHMARK(sparse_bwd_nm24_nnops)->SPARSE_ARGS;
BENCHMARK(sparse_bwd_nm24_dense)->SPARSE_ARGS;
BENCHMARK(sparse_bwd_csr90_nnops)->SPARSE_ARGS;
BENCHMARK(sparse_bwd_csr90_dense)->SPARSE_ARGS;
BENCHMARK(sparse_csr_density_nnops)->SPARSE_DENSITY_ARGS;
BENCHMARK(sparse_csr_density_dense)->SPARSE_DENSITY_ARGS;
BENCHMARK(sparse_bwd_csr_density_nnops)->SPARSE_DENSITY_ARGS;
BENCHMARK(sparse_bwd_csr_density_dense)->SPARSE_DENSITY_ARGS;

}  // namespace
