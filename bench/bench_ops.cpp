// CPU benchmarks of nnops beside the baselines a user would pick instead, in one run:
// GEMM against OpenBLAS (and oneDNN when found), BF16 GEMM against oneDNN's BF16 matmul and
// nnops' own FP32 (baseline "f32"), memory-bound ops against a memcpy that moves
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

#include "bench_util.hpp"
#include "ratio_reporter.hpp"

namespace {

using namespace nnops;
using nnops::bench::copy_bytes;
using nnops::bench::random_tensor;

// Times c[m, n] = op(a) op(b) for state.range() = (m, n, k) on random operands laid out as
// the transpose flags say, with `product(a, b, c, m, n, k, ta, tb)` from the library under test.
template <class Product>
void time_gemm(benchmark::State& state, bool ta, bool tb, Product product) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  Tensor a = random_tensor(ta ? Shape{k, m} : Shape{m, k}, 1);
  Tensor b = random_tensor(tb ? Shape{n, k} : Shape{k, n}, 2);
  Tensor c = Tensor::empty({m, n});
  for (auto _ : state) {
    product(a, b, c, m, n, k, ta, tb);
    benchmark::DoNotOptimize(c.raw_data());
  }
  state.counters["FLOP/s"] =
      benchmark::Counter(2.0 * m * n * k, benchmark::Counter::kIsIterationInvariantRate);
}

void nnops_product(const Tensor& a, const Tensor& b, Tensor& c, int64_t, int64_t, int64_t, bool ta,
                   bool tb) {
  matmul(a, b, c, GemmOptions{ta, tb});
}

void openblas_product(Tensor& a, Tensor& b, Tensor& c, int64_t m, int64_t n, int64_t k, bool ta,
                      bool tb) {
  cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans, m, n,
              k, 1.0f, a.data<float>(), ta ? m : k, b.data<float>(), tb ? k : n, 0.0f,
              c.data<float>(), n);
}

#ifdef NNOPS_BENCH_ONEDNN
void onednn_product(Tensor& a, Tensor& b, Tensor& c, int64_t m, int64_t n, int64_t k, bool ta,
                    bool tb) {
  dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', m, n, k, 1.0f, a.data<float>(), ta ? m : k,
             b.data<float>(), tb ? k : n, 0.0f, c.data<float>(), n);
}
#endif

// Plain products: the reference MLP's layers at batch 64, squares, and the input gradients of
// nnops-gpt's default transformer (2048 tokens a step, width 256, MLP 1024).
#define GEMM_ARGS                \
  Args({64, 2000, 1000})         \
      ->Args({64, 1000, 2000})   \
      ->Args({512, 512, 512})    \
      ->Args({1024, 1024, 1024}) \
      ->Args({2048, 2048, 2048}) \
      ->Args({4096, 4096, 4096}) \
      ->Args({2048, 256, 1024})  \
      ->Args({2048, 1024, 256})
// The linear layer's forward product x[m, k] * w[n, k]^T (nn.Linear's layout): the MLP's, then
// the transformer's MLP, attention projections and output.
#define NT_ARGS                 \
  Args({64, 2000, 1000})        \
      ->Args({64, 1000, 2000})  \
      ->Args({2048, 1024, 256}) \
      ->Args({2048, 256, 1024}) \
      ->Args({2048, 256, 256})
// The linear layer's weight gradient dy[k, m]^T * x[k, n], depth k = the batch (or tokens).
#define TN_ARGS                 \
  Args({2000, 1000, 64})        \
      ->Args({1000, 2000, 64})  \
      ->Args({1024, 256, 2048}) \
      ->Args({256, 1024, 2048}) \
      ->Args({256, 256, 2048})
#define GEMM_BENCH(name, ta, tb, product, ARGS) \
  void name(benchmark::State& state) {          \
    time_gemm(state, ta, tb, product);          \
  }                                             \
  BENCHMARK(name)->ARGS->Unit(benchmark::kMillisecond)->UseRealTime()

GEMM_BENCH(gemm_nnops, false, false, nnops_product, GEMM_ARGS);
GEMM_BENCH(gemm_openblas, false, false, openblas_product, GEMM_ARGS);
#ifdef NNOPS_BENCH_ONEDNN
GEMM_BENCH(gemm_onednn, false, false, onednn_product, GEMM_ARGS);
#endif
GEMM_BENCH(gemm_nt_nnops, false, true, nnops_product, NT_ARGS);
GEMM_BENCH(gemm_nt_openblas, false, true, openblas_product, NT_ARGS);
GEMM_BENCH(gemm_tn_nnops, true, false, nnops_product, TN_ARGS);
GEMM_BENCH(gemm_tn_openblas, true, false, openblas_product, TN_ARGS);
#ifdef NNOPS_BENCH_ONEDNN
GEMM_BENCH(gemm_nt_onednn, false, true, onednn_product, NT_ARGS);
GEMM_BENCH(gemm_tn_onednn, true, false, onednn_product, TN_ARGS);
#endif

// BF16 products with FP32 sums into an F32 c: nnops BF16 beside nnops FP32 on the same shapes
// (gemm_bf16_f32: the gain of BF16) and oneDNN's BF16 matmul primitive.
Tensor random_bf16(const Shape& shape, uint64_t seed) {
  Tensor wide = random_tensor(shape, seed), narrow = Tensor::empty(shape, DType::BF16);
  cast(narrow, wide);
  return narrow;
}

void gemm_bf16_nnops(benchmark::State& state, bool ta, bool tb) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  Tensor a = random_bf16(ta ? Shape{k, m} : Shape{m, k}, 1);
  Tensor b = random_bf16(tb ? Shape{n, k} : Shape{k, n}, 2);
  Tensor c = Tensor::empty({m, n});
  for (auto _ : state) {
    matmul(a, b, c, GemmOptions{ta, tb});
    benchmark::DoNotOptimize(c.raw_data());
  }
  state.counters["FLOP/s"] =
      benchmark::Counter(2.0 * m * n * k, benchmark::Counter::kIsIterationInvariantRate);
}

#ifdef NNOPS_BENCH_ONEDNN
// dnnl_matmul on BF16 a and b (strides give the transposes) into F32 c. Skipped where the CPU
// has no oneDNN BF16 kernel (oneDNN 2.x needs AVX-512).
void gemm_bf16_onednn(benchmark::State& state, bool ta, bool tb) {
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  Tensor a = random_bf16(ta ? Shape{k, m} : Shape{m, k}, 1);
  Tensor b = random_bf16(tb ? Shape{n, k} : Shape{k, n}, 2);
  Tensor c = Tensor::empty({m, n});
  dnnl_engine_t engine = nullptr;
  dnnl_stream_t stream = nullptr;
  dnnl_engine_create(&engine, dnnl_cpu, 0);
  dnnl_stream_create(&stream, engine, dnnl_stream_default_flags);
  dnnl_memory_desc_t a_md, b_md, c_md;
  const dnnl_dims_t a_dims = {m, k}, b_dims = {k, n}, c_dims = {m, n};
  const dnnl_dims_t a_strides = {ta ? 1 : k, ta ? m : 1}, b_strides = {tb ? 1 : n, tb ? k : 1};
  const dnnl_dims_t c_strides = {n, 1};
  dnnl_memory_desc_init_by_strides(&a_md, 2, a_dims, dnnl_bf16, a_strides);
  dnnl_memory_desc_init_by_strides(&b_md, 2, b_dims, dnnl_bf16, b_strides);
  dnnl_memory_desc_init_by_strides(&c_md, 2, c_dims, dnnl_f32, c_strides);
  dnnl_matmul_desc_t desc;
  dnnl_matmul_desc_init(&desc, &a_md, &b_md, nullptr, &c_md);
  dnnl_primitive_desc_t pd = nullptr;
  if (dnnl_primitive_desc_create(&pd, &desc, nullptr, engine, nullptr) != dnnl_success) {
    state.SkipWithError("oneDNN has no BF16 matmul for this CPU");
    dnnl_stream_destroy(stream);
    dnnl_engine_destroy(engine);
    return;
  }
  dnnl_primitive_t matmul_prim = nullptr;
  dnnl_primitive_create(&matmul_prim, pd);
  dnnl_memory_t a_mem, b_mem, c_mem;
  dnnl_memory_create(&a_mem, &a_md, engine, a.raw_data());
  dnnl_memory_create(&b_mem, &b_md, engine, b.raw_data());
  dnnl_memory_create(&c_mem, &c_md, engine, c.raw_data());
  const dnnl_exec_arg_t args[] = {
      {DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem}};
  for (auto _ : state) {
    dnnl_primitive_execute(matmul_prim, stream, 3, args);
    dnnl_stream_wait(stream);
  }
  state.counters["FLOP/s"] =
      benchmark::Counter(2.0 * m * n * k, benchmark::Counter::kIsIterationInvariantRate);
  for (dnnl_memory_t mem : {a_mem, b_mem, c_mem}) dnnl_memory_destroy(mem);
  dnnl_primitive_destroy(matmul_prim);
  dnnl_primitive_desc_destroy(pd);
  dnnl_stream_destroy(stream);
  dnnl_engine_destroy(engine);
}
#endif

// The training step's three products at batch 64 (forward NT, dX NN, dW TN) and squares.
#define BF16_BENCH(name, ta, tb, ARGS, fn) \
  void name(benchmark::State& state) {     \
    fn(state, ta, tb);                     \
  }                                        \
  BENCHMARK(name)->ARGS->Unit(benchmark::kMillisecond)->UseRealTime()
#define BF16_SQUARES Args({1024, 1024, 1024})->Args({2048, 2048, 2048})
void f32_product(benchmark::State& state, bool ta, bool tb) {
  time_gemm(state, ta, tb, nnops_product);
}
BF16_BENCH(gemm_bf16_nnops, false, false, BF16_SQUARES, gemm_bf16_nnops);
BF16_BENCH(gemm_bf16_f32, false, false, BF16_SQUARES, f32_product);
BF16_BENCH(gemm_bf16_nt_nnops, false, true, NT_ARGS, gemm_bf16_nnops);
BF16_BENCH(gemm_bf16_nt_f32, false, true, NT_ARGS, f32_product);
BF16_BENCH(gemm_bf16_nn_nnops, false, false, Args({64, 1000, 2000}), gemm_bf16_nnops);
BF16_BENCH(gemm_bf16_nn_f32, false, false, Args({64, 1000, 2000}), f32_product);
BF16_BENCH(gemm_bf16_tn_nnops, true, false, TN_ARGS, gemm_bf16_nnops);
BF16_BENCH(gemm_bf16_tn_f32, true, false, TN_ARGS, f32_product);
#ifdef NNOPS_BENCH_ONEDNN
BF16_BENCH(gemm_bf16_onednn, false, false, BF16_SQUARES, gemm_bf16_onednn);
BF16_BENCH(gemm_bf16_nt_onednn, false, true, NT_ARGS, gemm_bf16_onednn);
BF16_BENCH(gemm_bf16_nn_onednn, false, false, Args({64, 1000, 2000}), gemm_bf16_onednn);
BF16_BENCH(gemm_bf16_tn_onednn, true, false, TN_ARGS, gemm_bf16_onednn);
#endif

// One size that lives in cache and one far beyond the 32 MiB L3, where DRAM bandwidth rules.
#define SIZES Arg(65536)->Arg(1 << 20)->Arg(1 << 24)

// Adam reads p, g, m, v and writes p, m, v: 28 bytes per element.
void adam_nnops(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor p = random_tensor({n}, 1), g = random_tensor({n}, 2);
  AdamState st;
  // The first step allocates and zeroes the moments (128 MiB at 16M elements, page faults
  // included): outside the timing, which at a short --benchmark_min_time it had tripled.
  adam_step(AdamOptions{}, p, g, st);
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

// An activation reads x and writes y: 8 bytes per element, against a copy of the same bytes.
// GELU (erf), and SiLU (the gate of llama's MLP).
void time_activation(benchmark::State& state, Activation activation) {
  const int64_t n = state.range(0);
  Tensor x = random_tensor({n}, 1), y = Tensor::empty({n});
  for (auto _ : state) {
    activation_forward(activation, x, y);
    benchmark::DoNotOptimize(y.raw_data());
  }
  state.counters["bytes/s"] =
      benchmark::Counter(8.0 * n, benchmark::Counter::kIsIterationInvariantRate);
}
void gelu_nnops(benchmark::State& state) {
  time_activation(state, Activation::GELU);
}
BENCHMARK(gelu_nnops)->SIZES->UseRealTime();
void gelu_ceiling(benchmark::State& state) {
  copy_bytes(state, 4 * state.range(0));
}
BENCHMARK(gelu_ceiling)->SIZES->UseRealTime();
void silu_nnops(benchmark::State& state) {
  time_activation(state, Activation::SiLU);
}
BENCHMARK(silu_nnops)->SIZES->UseRealTime();
void silu_ceiling(benchmark::State& state) {
  copy_bytes(state, 4 * state.range(0));
}
BENCHMARK(silu_ceiling)->SIZES->UseRealTime();

// Softmax and cross-entropy over [4096, 1000] rows (the reference model's output layer at a
// large batch): read x, write y or the gradient, 8 bytes per element at the least.
void softmax_nnops(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1);
  Tensor x = random_tensor({rows, cols}, 1), y = Tensor::empty({rows, cols});
  for (auto _ : state) {
    softmax_forward(x, y);
    benchmark::DoNotOptimize(y.raw_data());
  }
  state.counters["bytes/s"] =
      benchmark::Counter(8.0 * rows * cols, benchmark::Counter::kIsIterationInvariantRate);
}
void softmax_ceiling(benchmark::State& state) {
  copy_bytes(state, 4 * state.range(0) * state.range(1));
}
BENCHMARK(softmax_nnops)->Args({4096, 1000})->UseRealTime();
BENCHMARK(softmax_ceiling)->Args({4096, 1000})->UseRealTime();

void cross_entropy_nnops(benchmark::State& state) {
  const int64_t rows = state.range(0), cols = state.range(1);
  Tensor x = random_tensor({rows, cols}, 1), grad = Tensor::empty({rows, cols});
  std::vector<int32_t> y(rows);
  for (int64_t i = 0; i < rows; ++i) y[i] = static_cast<int32_t>((i * 7919) % cols);
  Tensor labels = Tensor::from_vector(y, {rows}), loss = Tensor::empty({1});
  for (auto _ : state) {
    cross_entropy_loss(x, labels, loss, &grad);
    benchmark::DoNotOptimize(grad.raw_data());
  }
  state.counters["bytes/s"] =
      benchmark::Counter(8.0 * rows * cols, benchmark::Counter::kIsIterationInvariantRate);
}
void cross_entropy_ceiling(benchmark::State& state) {
  copy_bytes(state, 4 * state.range(0) * state.range(1));
}
BENCHMARK(cross_entropy_nnops)->Args({4096, 1000})->UseRealTime();
BENCHMARK(cross_entropy_ceiling)->Args({4096, 1000})->UseRealTime();

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

}  // namespace

int main(int argc, char** argv) {
  return nnops::bench::run_with_ratio_table(argc, argv);
}
