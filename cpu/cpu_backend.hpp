// The CPU backend: OpenMP over rows and blocks, loops the compiler vectorizes, and a packed
// GEMM whose micro-kernel is chosen at run time (AVX2+FMA when the CPU has it).
#pragma once

#include <exception>
#include <memory>
#include <new>
#include <optional>
#include <vector>

#include "../dispatch/backend.hpp"

namespace nnops::detail {

class CpuBackend final : public Backend {
 public:
  Device device() const override { return Device::CPU; }

  void* allocate(size_t bytes) override;
  void deallocate(void* ptr, int device_index) noexcept override;
  void copy_from_host(void* dst, const void* host_src, size_t bytes) override;
  void copy_to_host(void* host_dst, const void* src, size_t bytes) override;
  void copy_within(void* dst, const void* src, size_t bytes) override;
  void fill_zero(void* dst, size_t bytes) override;

  void gemm(View c, ConstView a, ConstView b, int64_t m, int64_t n, int64_t k,
            const GemmOptions& options) override;
  void linear_forward(View y, ConstView x, ConstView w, ConstView bias, int64_t rows, int64_t in,
                      int64_t out) override;
  void linear_backward(View dx, View dw, View db, ConstView x, ConstView w, ConstView dy,
                       int64_t rows, int64_t in, int64_t out) override;

  void activation_forward(View y, ConstView x, int64_t n, Activation activation,
                          float negative_slope) override;
  void activation_backward(View dx, ConstView x, ConstView dy, int64_t n, Activation activation,
                           float negative_slope) override;
  void softmax_forward(float* y, const float* x, int64_t rows, int64_t cols, bool log) override;
  void softmax_backward(float* dx, const float* y, const float* dy, int64_t rows, int64_t cols,
                        bool log) override;

  void mse_loss(float* loss, float* grad, const float* pred, const float* target, int64_t n,
                Reduction reduction) override;
  void cross_entropy_loss(float* loss, float* grad, const float* logits, const int32_t* targets,
                          int64_t rows, int64_t classes, Reduction reduction, float label_smoothing,
                          int32_t ignore_index) override;
  void kd_loss(float* loss, float* grad, const float* student, const float* teacher, int64_t rows,
               int64_t classes, float temperature) override;

  void adam_step(const AdamTensor* tensors, int64_t count) override;
  void sgd_step(float* param, ConstView grad, float* momentum_buffer, const uint8_t* mask,
                uint16_t* working, int64_t n, const SgdScalars& scalars) override;
  double sum_squares(ConstView x, int64_t n) override;
  void scale(View x, int64_t n, float factor) override;

  void prune_unstructured(uint8_t* const* masks, const float* const* ws, const int64_t* sizes,
                          int64_t tensor_count, int64_t k) override;
  int64_t count_kept_slices(const uint8_t* mask, int64_t outer, int64_t slices,
                            int64_t inner) override;
  void prune_ln_structured(uint8_t* mask, const float* w, int64_t outer, int64_t slices,
                           int64_t inner, int p, int64_t k) override;
  void prune_nm(uint8_t* mask, const float* w, int64_t groups, int n, int m) override;
  void apply_mask(float* w, const uint8_t* mask, int64_t n) override;
  int64_t count_nonzero(const uint8_t* mask, int64_t n) override;

  void add_scaled(View y, ConstView x, int64_t n, float alpha, float beta) override;
  void argmax(int32_t* out, const float* x, int64_t rows, int64_t cols) override;
  void fill(float* t, int64_t n, float value) override;
  void cast(void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t n) override;
  void permute(void* y, const void* x, size_t element_size, const PermutePlan& plan) override;

  void fill_uniform(float* t, int64_t n, float lo, float hi, uint64_t seed) override;
  void fill_normal(float* t, int64_t n, float mean, float std, uint64_t seed) override;

  void norm_forward(float* y, float* mean, float* rstd, const float* x, const float* w,
                    const float* b, int64_t rows, int64_t d, float eps, bool rms) override;
  void norm_backward(float* dx, float* dw, float* db, const float* x, const float* w,
                     const float* mean, const float* rstd, const float* dy, int64_t rows, int64_t d,
                     bool rms) override;
  void embedding_forward(float* out, const int32_t* idx, const float* weight, int64_t n,
                         int64_t vocab, int64_t dim) override;
  void embedding_backward(float* dweight, const int32_t* idx, const float* dout, int64_t n,
                          int64_t vocab, int64_t dim) override;
  void rope(float* y, const float* x, int64_t batch, int64_t t, int64_t d, int64_t offset,
            float theta, bool inverse) override;
  void gated_activation_forward(float* y, const float* x, int64_t rows, int64_t h,
                                Activation activation) override;
  void gated_activation_backward(float* dx, const float* x, const float* dy, int64_t rows,
                                 int64_t h, Activation activation) override;
  void dropout(float* y, const float* x, int64_t n, float p, uint64_t seed) override;
  void sparse_linear_forward(float* y, const float* x, const SparseView& w, const float* bias,
                             int64_t n) override;
  void sparse_linear_backward(float* dx, float* dvalues, float* db, const float* x,
                              const SparseView& w, const float* dy, int64_t n) override;
  void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                         const AttentionShape& s) override;
  void attention_backward(float* dq, float* dk, float* dv, const float* q, const float* k,
                          const float* v, const float* out, const float* lse, const float* dout,
                          const AttentionShape& s) override;
};

// For a row x[0, cols) scaled by `scale`: its max and log(sum(exp(scale*x - max))), the sum
// taken in double. log p[c] = (scale*x[c] - max) - log_sum stays accurate for logits of any
// magnitude. Shared by softmax and the losses.
void row_logsumexp(const float* x, int64_t cols, float scale, float& max_out, float& log_sum_out);
// y[c] = exp(x[c] - mx) * inv_sum: a softmax row once its max and sum are known.
void row_softmax(float* y, const float* x, int64_t cols, float mx, float inv_sum);

// Which CPU code paths run. Auto picks the best the CPU supports: AVX512 (the AVX-512 GEMM
// kernel, the AVX512_BF16 one for BF16 products where the CPU has it, 16-lane element-wise
// kernels, AVX2 Adam), else AVX2 (AVX2+FMA), else Generic. AVX2WideTiles is for tests: the
// AVX-512 code compiled for AVX2 (12 x 32 GEMM tiles with the BF16 pair products emulated,
// 16-lane element-wise kernels), so machines without AVX-512 check it too.
// NNOPS_CPU_ISA=generic|avx2|avx512 sets the initial choice (a level the CPU lacks falls back
// to the best it has).
enum class CpuIsa { Auto, Generic, AVX2, AVX512, AVX2WideTiles };
void set_cpu_isa(CpuIsa isa);
CpuIsa active_cpu_isa();  // after resolving Auto against the CPU
bool cpu_supports_avx2();
bool cpu_supports_avx512();
bool cpu_supports_avx512bf16();  // VDPBF16PS: the pair kernel can run
// Whether BF16 products on AVX512_BF16 take the VDPBF16PS pair kernel (true) or widen into the
// FP32 kernel (false); nullopt: measured once against the FMA (the default; NNOPS_CPU_BF16=pairs
// or widen sets it at start-up).
void set_cpu_bf16_pairs(std::optional<bool> pairs);
bool cpu_isa_has_avx2();  // the active level runs the AVX2 paths (all but Generic)

// c[m, n] = alpha * op(a) * op(b) + beta * c on contiguous row-major F32 matrices, through the
// GEMM micro-kernels of the active CPU level (with beta == 0, c is not read). Inside a parallel
// region it runs on the calling thread alone; its packing buffers are the calling thread's.
void cpu_sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
               const float* a, const float* b, float beta, float* c);

// Grows the GEMM packing buffers of each thread of a parallel region of `threads` threads for
// products of at most m x n x k, so that cpu_sgemm calls inside such a region do not allocate
// (the region's threads are the ones this one ran on, as OpenMP runtimes keep their pool).
void reserve_thread_gemm_buffers(int threads, int64_t m, int64_t n, int64_t k);

// Runs `task(i)` for i in [0, count) on `threads` threads (dynamic schedule); an exception inside
// a task cannot leave the OpenMP region, so the first one is kept and rethrown after it.
template <class Task>
void parallel_tasks(int64_t count, int threads, Task task) {
  std::exception_ptr error;
#pragma omp parallel for schedule(dynamic) num_threads(threads) if (threads > 1)
  for (int64_t i = 0; i < count; ++i) {
    try {
      task(i);
    } catch (...) {
#pragma omp critical(nnops_parallel_tasks)
      if (!error) error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

// 64-byte aligned host memory (null when out of memory), through the global aligned operator new
// like every other host allocation of the library, so one allocation hook sees them all.
void* host_alloc(size_t bytes) noexcept;
void host_free(void* ptr) noexcept;

// A float buffer that grows and is kept (thread_local at the caller) between calls, not
// initialised: a fresh allocation per call is an mmap plus page faults, and zeroing it a pass
// over memory, in the hottest calls (GEMM packing and staging, the sparse transposes). get()
// throws OutOfMemory when it cannot grow, before the caller writes anything.
struct ScratchBuffer {
  struct Free {
    void operator()(float* p) const { host_free(p); }
  };
  std::unique_ptr<float, Free> data;
  int64_t capacity = 0;
  float* get(int64_t count) {
    if (count > capacity) {
      const size_t bytes = static_cast<size_t>(count) * sizeof(float);
      data.reset(static_cast<float*>(host_alloc(bytes)));
      capacity = data ? count : 0;
      if (!data) throw OutOfMemory("host", bytes);
    }
    return data.get();
  }
};

// A scratch vector of n elements; running out of memory is an OutOfMemory with the byte count.
template <class T>
std::vector<T> scratch_vector(size_t n, const T& value = T()) {
  try {
    return std::vector<T>(n, value);
  } catch (const std::bad_alloc&) {
    throw OutOfMemory("host", n * sizeof(T));
  }
}
template <class T>
void reserve_scratch(std::vector<T>& v, size_t n) {
  try {
    v.reserve(n);
  } catch (const std::bad_alloc&) {
    throw OutOfMemory("host", n * sizeof(T));
  }
}

// Work below this many operations stays on one thread (OpenMP start-up costs more).
constexpr int64_t kParallelThreshold = 1 << 15;

// Splits [0, n) into fixed chunks across threads (one thread below the threshold):
// range(begin, end) per chunk, for element-wise loops over long arrays.
template <class Range>
void for_chunks(int64_t n, Range range) {
  constexpr int64_t kChunk = 16384;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
#pragma omp parallel for schedule(static) if (n >= kParallelThreshold)
  for (int64_t c = 0; c < chunks; ++c) {
    const int64_t begin = c * kChunk, end = begin + kChunk < n ? begin + kChunk : n;
    range(begin, end);
  }
}

}  // namespace nnops::detail
