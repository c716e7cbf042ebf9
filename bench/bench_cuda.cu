// CUDA benchmarks of nnops beside what a user would pick instead, in one run: GEMM against
// cuBLAS (FP32, TF32 and BF16), streaming ops against a device-to-device copy of the same bytes
// (the bandwidth ceiling), cross-entropy against the bytes it must move, pruning's radix select
// against one CUB radix sort of the same magnitudes, and the sparse layer against cuSPARSE's SpMM
// and the dense product. Timed with CUDA events on the per-thread
// default stream, where nnops enqueues its work; the ratio table closes the output.
#include <benchmark/benchmark.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <cusparse.h>

#include <cstdio>
#include <cstdlib>
#include <cub/device/device_radix_sort.cuh>
#include <nnops/cuda.hpp>
#include <nnops/nnops.hpp>
#include <nnops/sparse.hpp>
#include <vector>

#include "ratio_reporter.hpp"

namespace {

using namespace nnops;

#define BENCH_CUDA_CHECK(expr)                                              \
  do {                                                                      \
    const cudaError_t status_ = (expr);                                     \
    if (status_ != cudaSuccess) {                                           \
      std::fprintf(stderr, "%s: %s\n", #expr, cudaGetErrorString(status_)); \
      std::exit(1);                                                         \
    }                                                                       \
  } while (0)

// RAII event pair: times the work enqueued on the per-thread default stream between start()
// and stop().
class EventTimer {
 public:
  EventTimer() {
    BENCH_CUDA_CHECK(cudaEventCreate(&start_));
    BENCH_CUDA_CHECK(cudaEventCreate(&stop_));
  }
  ~EventTimer() {
    cudaEventDestroy(start_);
    cudaEventDestroy(stop_);
  }
  void start() { BENCH_CUDA_CHECK(cudaEventRecord(start_, cudaStreamPerThread)); }
  double stop_seconds() {
    BENCH_CUDA_CHECK(cudaEventRecord(stop_, cudaStreamPerThread));
    BENCH_CUDA_CHECK(cudaEventSynchronize(stop_));
    float ms = 0.0f;
    BENCH_CUDA_CHECK(cudaEventElapsedTime(&ms, start_, stop_));
    return ms * 1e-3;
  }

 private:
  cudaEvent_t start_, stop_;
};

template <class Body>
void time_on_device(benchmark::State& state, Body body) {
  body();  // warm-up: module load, pool growth
  synchronize(Device::CUDA);
  EventTimer timer;
  for (auto _ : state) {
    timer.start();
    body();
    state.SetIterationTime(timer.stop_seconds());
  }
}

Tensor device_random(const Shape& shape, uint64_t seed) {
  Tensor t = Tensor::empty(shape, DType::F32, Device::CUDA);
  fill_uniform(t, -1.0f, 1.0f, seed);
  return t;
}

cublasHandle_t cublas(bool tf32) {
  static cublasHandle_t handle = [] {
    cublasHandle_t h;
    if (cublasCreate(&h) != CUBLAS_STATUS_SUCCESS) std::exit(1);
    cublasSetStream(h, cudaStreamPerThread);
    return h;
  }();
  cublasSetMathMode(handle, tf32 ? CUBLAS_TF32_TENSOR_OP_MATH : CUBLAS_DEFAULT_MATH);
  return handle;
}

// Row-major c[m, n] = op(a) op(b) as cuBLAS's column-major c^T = op(b)^T op(a)^T.
void cublas_product(const Tensor& a, const Tensor& b, Tensor& c, int64_t m, int64_t n, int64_t k,
                    bool ta, bool tb, bool tf32) {
  const float one = 1.0f, zero = 0.0f;
  cublasSgemm(cublas(tf32), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
              static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &one, b.data<float>(),
              tb ? static_cast<int>(k) : static_cast<int>(n), a.data<float>(),
              ta ? static_cast<int>(m) : static_cast<int>(k), &zero, c.data<float>(),
              static_cast<int>(n));
}

// `kernel` picks nnops' tensor-core family for the run (the cuBLAS side ignores it).
void time_gemm(benchmark::State& state, bool ta, bool tb, bool tf32, bool use_cublas,
               nnops::cuda::GemmKernel kernel = nnops::cuda::GemmKernel::Default) {
  nnops::cuda::set_gemm_kernel(kernel);
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  Tensor a = device_random(ta ? Shape{k, m} : Shape{m, k}, 1);
  Tensor b = device_random(tb ? Shape{n, k} : Shape{k, n}, 2);
  Tensor c = Tensor::empty({m, n}, DType::F32, Device::CUDA);
  GemmOptions o{ta, tb};
  o.allow_tf32 = tf32;
  time_on_device(state, [&] {
    if (use_cublas)
      cublas_product(a, b, c, m, n, k, ta, tb, tf32);
    else
      matmul(a, b, c, o);
  });
  nnops::cuda::set_gemm_kernel(nnops::cuda::GemmKernel::Default);
  state.counters["FLOP/s"] =
      benchmark::Counter(2.0 * m * n * k * state.iterations(), benchmark::Counter::kIsRate);
}

#define SQUARES                  \
  Args({1024, 1024, 1024})       \
      ->Args({2048, 2048, 2048}) \
      ->Args({4096, 4096, 4096}) \
      ->Args({8192, 8192, 8192})
#define GEMM_PAIR_WITH(name, ta, tb, tf32, kernel, ARGS)                         \
  void name##_nnops(benchmark::State& s) {                                       \
    time_gemm(s, ta, tb, tf32, false, kernel);                                   \
  }                                                                              \
  void name##_cublas(benchmark::State& s) {                                      \
    time_gemm(s, ta, tb, tf32, true);                                            \
  }                                                                              \
  BENCHMARK(name##_nnops)->ARGS->UseManualTime()->Unit(benchmark::kMillisecond); \
  BENCHMARK(name##_cublas)->ARGS->UseManualTime()->Unit(benchmark::kMillisecond)
#define GEMM_PAIR(name, ta, tb, tf32, ARGS) \
  GEMM_PAIR_WITH(name, ta, tb, tf32, nnops::cuda::GemmKernel::Default, ARGS)
// The multistage mma.sync kernels (NNOPS_CUDA_GEMM=mma) at the sizes the targets name.
#define LARGE_SQUARES Args({4096, 4096, 4096})->Args({8192, 8192, 8192})

GEMM_PAIR(gemm, false, false, false, SQUARES);
GEMM_PAIR(gemm_tf32, false, false, true, SQUARES);
GEMM_PAIR_WITH(gemm_tf32_mma, false, false, true, nnops::cuda::GemmKernel::Mma, LARGE_SQUARES);
// The reference MLP's products at batch 64: forward x w^T (NT), dx = dy w (NN), dw = dy^T x (TN).
GEMM_PAIR(linear_fwd, false, true, false, Args({64, 2000, 1000})->Args({64, 1000, 2000}));
GEMM_PAIR(linear_dx, false, false, false, Args({64, 1000, 2000})->Args({64, 2000, 1000}));
GEMM_PAIR(linear_dw, true, false, false, Args({2000, 1000, 64})->Args({1000, 2000, 64}));

// BF16 operands, FP32 sums, F32 c: nnops' tensor-core kernel beside cuBLAS's BF16 GemmEx
// (cuBLASLt's kernels underneath).
Tensor device_random_bf16(const Shape& shape, uint64_t seed) {
  Tensor narrow = Tensor::empty(shape, DType::BF16, Device::CUDA);
  cast(narrow, device_random(shape, seed));
  return narrow;
}

void time_gemm_bf16(benchmark::State& state, bool ta, bool tb, bool use_cublas,
                    nnops::cuda::GemmKernel kernel = nnops::cuda::GemmKernel::Default) {
  nnops::cuda::set_gemm_kernel(kernel);
  const int64_t m = state.range(0), n = state.range(1), k = state.range(2);
  Tensor a = device_random_bf16(ta ? Shape{k, m} : Shape{m, k}, 1);
  Tensor b = device_random_bf16(tb ? Shape{n, k} : Shape{k, n}, 2);
  Tensor c = Tensor::empty({m, n}, DType::F32, Device::CUDA);
  const float one = 1.0f, zero = 0.0f;
  time_on_device(state, [&] {
    if (use_cublas) {
      cublasGemmEx(cublas(false), tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N,
                   static_cast<int>(n), static_cast<int>(m), static_cast<int>(k), &one,
                   b.raw_data(), CUDA_R_16BF, static_cast<int>(tb ? k : n), a.raw_data(),
                   CUDA_R_16BF, static_cast<int>(ta ? m : k), &zero, c.data<float>(), CUDA_R_32F,
                   static_cast<int>(n), CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
    } else {
      matmul(a, b, c, GemmOptions{ta, tb});
    }
  });
  nnops::cuda::set_gemm_kernel(nnops::cuda::GemmKernel::Default);
  state.counters["FLOP/s"] =
      benchmark::Counter(2.0 * m * n * k * state.iterations(), benchmark::Counter::kIsRate);
}
#define BF16_PAIR_WITH(name, ta, tb, kernel, ARGS)                               \
  void name##_nnops(benchmark::State& s) {                                       \
    time_gemm_bf16(s, ta, tb, false, kernel);                                    \
  }                                                                              \
  void name##_cublas(benchmark::State& s) {                                      \
    time_gemm_bf16(s, ta, tb, true);                                             \
  }                                                                              \
  BENCHMARK(name##_nnops)->ARGS->UseManualTime()->Unit(benchmark::kMillisecond); \
  BENCHMARK(name##_cublas)->ARGS->UseManualTime()->Unit(benchmark::kMillisecond)
#define BF16_PAIR(name, ta, tb, ARGS) \
  BF16_PAIR_WITH(name, ta, tb, nnops::cuda::GemmKernel::Default, ARGS)
BF16_PAIR(gemm_bf16, false, false, SQUARES);
BF16_PAIR(linear_fwd_bf16, false, true, Args({64, 2000, 1000})->Args({64, 1000, 2000}));
BF16_PAIR_WITH(gemm_bf16_mma, false, false, nnops::cuda::GemmKernel::Mma, LARGE_SQUARES);
BF16_PAIR_WITH(gemm_bf16_nt_mma, false, true, nnops::cuda::GemmKernel::Mma, LARGE_SQUARES);
BF16_PAIR_WITH(linear_fwd_bf16_mma, false, true, nnops::cuda::GemmKernel::Mma,
               Args({64, 2000, 1000})->Args({64, 1000, 2000}));
// The sm_90a warpgroup-MMA kernel (the mma.sync one on other GPUs): K-major operands (NT) take
// its cp.async path, NN its register gather for b.
BF16_PAIR_WITH(gemm_bf16_nt_wgmma, false, true, nnops::cuda::GemmKernel::Wgmma, LARGE_SQUARES);
BF16_PAIR_WITH(gemm_bf16_wgmma, false, false, nnops::cuda::GemmKernel::Wgmma, LARGE_SQUARES);
// Its TMA form (K-major operands only: NT, and the layer's forward x w^T).
BF16_PAIR_WITH(gemm_bf16_nt_wgmma_tma, false, true, nnops::cuda::GemmKernel::WgmmaTma,
               LARGE_SQUARES);
BF16_PAIR_WITH(linear_fwd_bf16_wgmma_tma, false, true, nnops::cuda::GemmKernel::WgmmaTma,
               Args({64, 2000, 1000})->Args({64, 1000, 2000}));

// The sparse layer's forward at batch 64 on the MLP's layers: nnops' kernels (2:4 as NM24, 90%
// unstructured as CSR) beside cuSPARSE's SpMM on the same weight as CSR, and beside the dense
// linear_forward of the decompressed weight. y^T [out, n] = W [out, in] x^T, with x^T and y^T
// the column-major views of the row-major x and y, so cuSPARSE reads and writes them in place.
enum class SparseSide { Nnops, Cusparse, Dense };

void sparse_forward_time(benchmark::State& state, SparseFormat format, double amount,
                         SparseSide side) {
  const int64_t n = state.range(0), in = state.range(1), out = state.range(2);
  Tensor w = Tensor::empty({out, in});
  fill_uniform(w, -1.0f, 1.0f, 1);
  Tensor mask = Tensor::from_vector(std::vector<uint8_t>(out * in, 1), {out, in});
  if (format == SparseFormat::NM24)
    nm_structured(w, 2, 4, mask);
  else
    l1_unstructured(w, PruneAmount::fraction(amount), mask);
  apply_mask(w, mask);
  Tensor wd = w.to(Device::CUDA), maskd = mask.to(Device::CUDA);
  SparseMatrix s = compress(wd, maskd, format);
  SparseMatrix csr = compress(wd, maskd, SparseFormat::CSR);
  Tensor x = device_random({n, in}, 2), y = Tensor::empty({n, out}, DType::F32, Device::CUDA);
  if (side == SparseSide::Nnops) {
    time_on_device(state, [&] { sparse_linear_forward(x, s, nullptr, y); });
  } else if (side == SparseSide::Dense) {
    time_on_device(state, [&] { linear_forward(x, wd, nullptr, y); });
  } else {
    // cuSPARSE wants one index type: the I64 row pointers narrowed to I32.
    std::vector<int32_t> rows32;
    for (int64_t v : csr.row_ptr().to_vector<int64_t>()) rows32.push_back(static_cast<int32_t>(v));
    Tensor row_ptr = Tensor::from_vector(rows32, {out + 1}, Device::CUDA);
    cusparseHandle_t handle;
    cusparseSpMatDescr_t a;
    cusparseDnMatDescr_t b, c;
    if (cusparseCreate(&handle) != CUSPARSE_STATUS_SUCCESS) std::exit(1);
    cusparseSetStream(handle, cudaStreamPerThread);
    cusparseCreateCsr(&a, out, in, csr.nnz(), row_ptr.raw_data(),
                      const_cast<void*>(csr.col().raw_data()),
                      const_cast<void*>(csr.values().raw_data()), CUSPARSE_INDEX_32I,
                      CUSPARSE_INDEX_32I, CUSPARSE_INDEX_BASE_ZERO, CUDA_R_32F);
    cusparseCreateDnMat(&b, in, n, in, x.raw_data(), CUDA_R_32F, CUSPARSE_ORDER_COL);
    cusparseCreateDnMat(&c, out, n, out, y.raw_data(), CUDA_R_32F, CUSPARSE_ORDER_COL);
    const float one = 1.0f, zero = 0.0f;
    size_t bytes = 0;
    cusparseSpMM_bufferSize(handle, CUSPARSE_OPERATION_NON_TRANSPOSE,
                            CUSPARSE_OPERATION_NON_TRANSPOSE, &one, a, b, &zero, c, CUDA_R_32F,
                            CUSPARSE_SPMM_ALG_DEFAULT, &bytes);
    void* buffer = nullptr;
    BENCH_CUDA_CHECK(cudaMalloc(&buffer, bytes ? bytes : 1));
    time_on_device(state, [&] {
      cusparseSpMM(handle, CUSPARSE_OPERATION_NON_TRANSPOSE, CUSPARSE_OPERATION_NON_TRANSPOSE, &one,
                   a, b, &zero, c, CUDA_R_32F, CUSPARSE_SPMM_ALG_DEFAULT, buffer);
    });
    cudaFree(buffer);
    cusparseDestroySpMat(a);
    cusparseDestroyDnMat(b);
    cusparseDestroyDnMat(c);
    cusparseDestroy(handle);
  }
}
#define SPARSE_TRIO(name, format, amount)                         \
  void name##_nnops(benchmark::State& s) {                        \
    sparse_forward_time(s, format, amount, SparseSide::Nnops);    \
  }                                                               \
  void name##_cusparse(benchmark::State& s) {                     \
    sparse_forward_time(s, format, amount, SparseSide::Cusparse); \
  }                                                               \
  void name##_dense(benchmark::State& s) {                        \
    sparse_forward_time(s, format, amount, SparseSide::Dense);    \
  }                                                               \
  BENCHMARK(name##_nnops)->SPARSE_SHAPES->UseManualTime();        \
  BENCHMARK(name##_cusparse)->SPARSE_SHAPES->UseManualTime();     \
  BENCHMARK(name##_dense)->SPARSE_SHAPES->UseManualTime()
#define SPARSE_SHAPES Args({64, 1000, 2000})->Args({64, 2000, 1000})
SPARSE_TRIO(sparse_fwd_nm24, SparseFormat::NM24, 0.5);
SPARSE_TRIO(sparse_fwd_csr90, SparseFormat::CSR, 0.9);

// The 2:4 forward on sparse tensor cores (NNOPS_CUDA_SPARSE=mma, BF16 x and values, F32 y: the
// staged kernel from 128 batch rows) beside the direct kernel (mma-direct) and the dense BF16
// tensor-core linear_forward of the decompressed weight: the MLP's layer at batch 64 and the
// 4096^3 product.
void sparse_bf16_time(benchmark::State& state, const char* kernel) {
  const bool dense = kernel == nullptr;
  const int64_t n = state.range(0), in = state.range(1), out = state.range(2);
  Tensor w = Tensor::empty({out, in});
  fill_uniform(w, -1.0f, 1.0f, 1);
  Tensor mask = Tensor::from_vector(std::vector<uint8_t>(out * in, 1), {out, in});
  nm_structured(w, 2, 4, mask);
  apply_mask(w, mask);
  Tensor wb = Tensor::empty({out, in}, DType::BF16);
  cast(wb, w);
  Tensor wd = wb.to(Device::CUDA);
  SparseMatrix s = compress(wd, mask.to(Device::CUDA), SparseFormat::NM24);
  Tensor x = device_random_bf16({n, in}, 2), y = Tensor::empty({n, out}, DType::F32, Device::CUDA);
  if (dense) {
    time_on_device(state, [&] { linear_forward(x, wd, nullptr, y); });
  } else {
    ::setenv("NNOPS_CUDA_SPARSE", kernel, 1);
    time_on_device(state, [&] { sparse_linear_forward(x, s, nullptr, y); });
    ::unsetenv("NNOPS_CUDA_SPARSE");
  }
  state.counters["FLOP/s"] = benchmark::Counter(2.0 * n * in * out,  // dense-equivalent
                                                benchmark::Counter::kIsIterationInvariantRate);
}
void sparse_nm24_bf16_nnops(benchmark::State& s) {
  sparse_bf16_time(s, "mma");
}
void sparse_nm24_bf16_direct(benchmark::State& s) {
  sparse_bf16_time(s, "mma-direct");
}
void sparse_nm24_bf16_dense(benchmark::State& s) {
  sparse_bf16_time(s, nullptr);
}
#define SPARSE_BF16_SHAPES Args({64, 1000, 2000})->Args({4096, 4096, 4096})
BENCHMARK(sparse_nm24_bf16_nnops)->SPARSE_BF16_SHAPES->UseManualTime();
BENCHMARK(sparse_nm24_bf16_direct)->SPARSE_BF16_SHAPES->UseManualTime();
BENCHMARK(sparse_nm24_bf16_dense)->SPARSE_BF16_SHAPES->UseManualTime();

// The ceiling: a device-to-device copy moving `bytes` read plus `bytes` written.
void copy_ceiling(benchmark::State& state, size_t bytes) {
  void *src, *dst;
  BENCH_CUDA_CHECK(cudaMalloc(&src, bytes));
  BENCH_CUDA_CHECK(cudaMalloc(&dst, bytes));
  BENCH_CUDA_CHECK(cudaMemset(src, 1, bytes));
  time_on_device(state, [&] {
    BENCH_CUDA_CHECK(
        cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, cudaStreamPerThread));
  });
  state.counters["bytes/s"] =
      benchmark::Counter(2.0 * bytes * state.iterations(), benchmark::Counter::kIsRate);
  cudaFree(src);
  cudaFree(dst);
}

// 2^26 floats = 256 MiB per tensor, far past the 50 MiB L2.
#define STREAM_SIZES Arg(1 << 26)

// Adam reads p, g, m, v and writes p, m, v: 28 bytes per element, a copy of 14.
void adam_nnops(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor p = device_random({n}, 1), g = device_random({n}, 2);
  AdamState st;
  time_on_device(state, [&] { adam_step(AdamOptions{}, p, g, st); });
  state.counters["bytes/s"] =
      benchmark::Counter(28.0 * n * state.iterations(), benchmark::Counter::kIsRate);
}
void adam_ceiling(benchmark::State& state) {
  copy_ceiling(state, 14 * state.range(0));
}
BENCHMARK(adam_nnops)->STREAM_SIZES->UseManualTime();
BENCHMARK(adam_ceiling)->STREAM_SIZES->UseManualTime();

void gelu_nnops(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor x = device_random({n}, 1), y = Tensor::empty({n}, DType::F32, Device::CUDA);
  time_on_device(state, [&] { activation_forward(Activation::GELU, x, y); });
  state.counters["bytes/s"] =
      benchmark::Counter(8.0 * n * state.iterations(), benchmark::Counter::kIsRate);
}
void gelu_ceiling(benchmark::State& state) {
  copy_ceiling(state, 4 * state.range(0));
}
BENCHMARK(gelu_nnops)->STREAM_SIZES->UseManualTime();
BENCHMARK(gelu_ceiling)->STREAM_SIZES->UseManualTime();

// apply_mask reads w (4) and the mask (1) and writes w (4): 9 bytes per element.
void mask_nnops(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor w = device_random({n}, 1);
  Tensor mask = Tensor::zeros({n}, DType::U8, Device::CUDA);
  time_on_device(state, [&] { apply_mask(w, mask); });
  state.counters["bytes/s"] =
      benchmark::Counter(9.0 * n * state.iterations(), benchmark::Counter::kIsRate);
}
void mask_ceiling(benchmark::State& state) {
  copy_ceiling(state, 9 * state.range(0) / 2);
}
BENCHMARK(mask_nnops)->STREAM_SIZES->UseManualTime();
BENCHMARK(mask_ceiling)->STREAM_SIZES->UseManualTime();

// Cross-entropy over [rows, classes] reads the logits and writes the gradient: 8 bytes per
// element at the least (LLM-sized rows of 50257 classes).
void cross_entropy_nnops(benchmark::State& state) {
  const int64_t rows = state.range(0), classes = state.range(1);
  Tensor x = device_random({rows, classes}, 1);
  std::vector<int32_t> y(rows);
  for (int64_t i = 0; i < rows; ++i) y[i] = static_cast<int32_t>((i * 7919) % classes);
  Tensor labels = Tensor::from_vector(y, {rows}, Device::CUDA);
  Tensor loss = Tensor::empty({1}, DType::F32, Device::CUDA);
  Tensor grad = Tensor::empty({rows, classes}, DType::F32, Device::CUDA);
  time_on_device(state, [&] { cross_entropy_loss(x, labels, loss, &grad); });
  state.counters["bytes/s"] =
      benchmark::Counter(8.0 * rows * classes * state.iterations(), benchmark::Counter::kIsRate);
}
void cross_entropy_ceiling(benchmark::State& state) {
  copy_ceiling(state, 4 * state.range(0) * state.range(1));
}
BENCHMARK(cross_entropy_nnops)->Args({1024, 50257})->Args({65536, 1000})->UseManualTime();
BENCHMARK(cross_entropy_ceiling)->Args({1024, 50257})->Args({65536, 1000})->UseManualTime();

// Pruning half of n weights (radix select, then the mask) against one CUB radix sort of the
// n magnitude bit patterns.
void prune_nnops(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor w = device_random({n}, 1);
  Tensor mask = Tensor::empty({n}, DType::U8, Device::CUDA);
  EventTimer timer;
  for (auto _ : state) {
    BENCH_CUDA_CHECK(cudaMemsetAsync(mask.raw_data(), 1, n, cudaStreamPerThread));
    timer.start();
    l1_unstructured(w, PruneAmount::fraction(0.5), mask);
    state.SetIterationTime(timer.stop_seconds());
  }
}
void prune_cub_sort(benchmark::State& state) {
  const int64_t n = state.range(0);
  Tensor w = device_random({n}, 1);
  Tensor sorted = Tensor::empty({n}, DType::F32, Device::CUDA);
  const auto* keys = reinterpret_cast<const uint32_t*>(w.data<float>());
  auto* out = reinterpret_cast<uint32_t*>(sorted.data<float>());
  size_t temp_bytes = 0;
  cub::DeviceRadixSort::SortKeys(nullptr, temp_bytes, keys, out, n, 0, 31, cudaStreamPerThread);
  void* temp;
  BENCH_CUDA_CHECK(cudaMalloc(&temp, temp_bytes));
  time_on_device(state, [&] {
    cub::DeviceRadixSort::SortKeys(temp, temp_bytes, keys, out, n, 0, 31, cudaStreamPerThread);
  });
  cudaFree(temp);
}
BENCHMARK(prune_nnops)->Arg(100000000)->UseManualTime()->Unit(benchmark::kMillisecond);
BENCHMARK(prune_cub_sort)->Arg(100000000)->UseManualTime()->Unit(benchmark::kMillisecond);

// LayerNorm forward at [8192, 4096]: reads x, writes y (8 bytes per element).
void layer_norm_fwd_nnops(benchmark::State& state) {
  const int64_t rows = state.range(0), d = state.range(1);
  Tensor x = device_random({rows, d}, 1), w = device_random({d}, 2), b = device_random({d}, 3);
  Tensor y = Tensor::empty({rows, d}, DType::F32, Device::CUDA);
  Tensor mean = Tensor::empty({rows}, DType::F32, Device::CUDA),
         rstd = Tensor::empty({rows}, DType::F32, Device::CUDA);
  time_on_device(state, [&] { layer_norm_forward(x, &w, &b, 1e-5f, y, &mean, &rstd); });
  state.counters["bytes/s"] =
      benchmark::Counter(8.0 * rows * d * state.iterations(), benchmark::Counter::kIsRate);
}
void layer_norm_fwd_ceiling(benchmark::State& state) {
  copy_ceiling(state, 4 * state.range(0) * state.range(1));
}
BENCHMARK(layer_norm_fwd_nnops)->Args({8192, 4096})->UseManualTime();
BENCHMARK(layer_norm_fwd_ceiling)->Args({8192, 4096})->UseManualTime();

// RoPE over [4, 12, 1024, 64] and the embedding lookup of 8192 tokens of width 768 from a
// 50257-row table: 8 bytes per element each.
void rope_nnops(benchmark::State& state) {
  Tensor x = device_random({4, 12, 1024, 64}, 1),
         y = Tensor::empty({4, 12, 1024, 64}, DType::F32, Device::CUDA);
  time_on_device(state, [&] { rope_forward(x, 0, 10000.0f, y); });
  state.counters["bytes/s"] =
      benchmark::Counter(8.0 * x.numel() * state.iterations(), benchmark::Counter::kIsRate);
}
void rope_ceiling(benchmark::State& state) {
  copy_ceiling(state, 4 * 4 * 12 * 1024 * 64);
}
BENCHMARK(rope_nnops)->UseManualTime();
BENCHMARK(rope_ceiling)->UseManualTime();

void embedding_fwd_nnops(benchmark::State& state) {
  const int64_t n = 8192, vocab = 50257, d = 768;
  Tensor w = device_random({vocab, d}, 1), out = Tensor::empty({n, d}, DType::F32, Device::CUDA);
  std::vector<int32_t> ids(n);
  for (int64_t i = 0; i < n; ++i) ids[i] = static_cast<int32_t>((i * 7919) % vocab);
  Tensor idx = Tensor::from_vector(ids, {n}, Device::CUDA);
  time_on_device(state, [&] { embedding_forward(idx, w, out); });
  state.counters["bytes/s"] =
      benchmark::Counter(8.0 * n * d * state.iterations(), benchmark::Counter::kIsRate);
}
void embedding_fwd_ceiling(benchmark::State& state) {
  copy_ceiling(state, 4 * 8192 * 768);
}
BENCHMARK(embedding_fwd_nnops)->UseManualTime();
BENCHMARK(embedding_fwd_ceiling)->UseManualTime();

// Causal attention forward, F32 and BF16 (through the F32 path for now), and forward +
// backward, at [B, H, T, D]; FLOP/s counted as FlashAttention's papers do (4 B H T^2 D / 2 for a
// causal forward, 2.5 times that for the backward). The `nnops` rows run the tiled kernels
// (NNOPS_CUDA_ATTENTION=tiled), the `simple` rows the default ones, a block per query or key row.
void attention_time(benchmark::State& state, DType dtype, bool backward,
                    nnops::cuda::AttentionKernel kernel) {
  const int64_t b = state.range(0), h = state.range(1), t = state.range(2), d = state.range(3);
  auto make = [&](uint64_t seed) {
    Tensor f = device_random({b, h, t, d}, seed);
    if (dtype == DType::F32) return f;
    Tensor c = Tensor::empty({b, h, t, d}, dtype, Device::CUDA);
    cast(c, f);
    return c;
  };
  Tensor q = make(1), k = make(2), v = make(3), dout = make(4);
  Tensor out = Tensor::empty({b, h, t, d}, dtype, Device::CUDA);
  Tensor lse = Tensor::empty({b, h, t}, DType::F32, Device::CUDA);
  Tensor dq = Tensor::empty({b, h, t, d}, dtype, Device::CUDA),
         dk = Tensor::empty({b, h, t, d}, dtype, Device::CUDA),
         dv = Tensor::empty({b, h, t, d}, dtype, Device::CUDA);
  AttentionOptions causal;
  causal.causal = true;
  nnops::cuda::set_attention_kernel(kernel);
  time_on_device(state, [&] {
    attention_forward(q, k, v, out, &lse, causal);
    if (backward) attention_backward(q, k, v, out, lse, dout, dq, dk, dv, causal);
  });
  nnops::cuda::set_attention_kernel(nnops::cuda::AttentionKernel::Default);
  const double fwd = 4.0 * b * h * t * t * d / 2;
  state.counters["FLOP/s"] = benchmark::Counter((backward ? 3.5 : 1.0) * fwd * state.iterations(),
                                                benchmark::Counter::kIsRate);
}
#define ATTENTION_PAIR(name, dtype, backward, ARGS)                              \
  void name##_nnops(benchmark::State& s) {                                       \
    attention_time(s, dtype, backward, nnops::cuda::AttentionKernel::Tiled);     \
  }                                                                              \
  void name##_simple(benchmark::State& s) {                                      \
    attention_time(s, dtype, backward, nnops::cuda::AttentionKernel::Simple);    \
  }                                                                              \
  BENCHMARK(name##_nnops)->ARGS->UseManualTime()->Unit(benchmark::kMillisecond); \
  BENCHMARK(name##_simple)->ARGS->UseManualTime()->Unit(benchmark::kMillisecond)
ATTENTION_PAIR(attention_fwd_f32, DType::F32, false, Args({4, 12, 1024, 64}));
ATTENTION_PAIR(attention_fwd_bf16, DType::BF16, false, Args({1, 16, 4096, 128}));
// nnops-gpt's default shape and GPT-2 small's heads at T = 1024.
ATTENTION_PAIR(attention_fwd_bwd_f32, DType::F32, true,
               Args({8, 4, 256, 64})->Args({4, 12, 1024, 64}));

}  // namespace

int main(int argc, char** argv) {
  if (!nnops::cuda_available()) {
    std::printf("bench_cuda: no usable CUDA device; nothing to measure\n");
    return 77;  // CTest reports this as skipped (SKIP_RETURN_CODE)
  }
  return nnops::bench::run_with_ratio_table(argc, argv);
}
