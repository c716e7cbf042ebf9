// The CUDA backend: every op runs on the GPU of its tensors (dispatch enters that device), enqueued
// on the calling thread's stream for it; memory from CUDA's stream-ordered pool (cudaMalloc where
// pools are missing); errors only the device can see recorded in a flag word of the calling
// thread and stream, which the next synchronising call turns into an nnops::Error.
#pragma once

#include <cuda_runtime.h>

#include "../dispatch/backend.hpp"
#include "cuda_check.hpp"

namespace nnops::detail {

// Bits of the device error flag.
enum DeviceError : unsigned {
  kTargetOutOfRange = 1u,             // cross_entropy_loss
  kEmbeddingIndexOutOfRange = 2u,     // embedding_forward
  kEmbeddingGradIndexOutOfRange = 4u  // embedding_backward
};

// The stream of the calling thread's ops on its current device.
extern thread_local cudaStream_t t_stream;
// The compute capability's major number of the calling thread's device.
int current_compute_major();

class CudaBackend final : public Backend {
 public:
  Device device() const override { return Device::CUDA; }

  void* allocate(size_t bytes) override;
  void deallocate(void* ptr, int device_index) noexcept override;
  void copy_from_host(void* dst, const void* host_src, size_t bytes) override;
  void copy_to_host(void* host_dst, const void* src, size_t bytes) override;
  void copy_within(void* dst, const void* src, size_t bytes) override;
  void fill_zero(void* dst, size_t bytes) override;
  void synchronize() override;
  void raise_device_errors() override;
  void synchronize_stream();
  int current_device_index() const override;
  int pointer_device_index(const void* ptr) const override;
  int enter_device(int index) override;
  void leave_device(int previous) override;

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
  void clip_grad_norm(float* norm_out, const View* grads, const int64_t* sizes, int64_t count,
                      double max_norm) override;

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
  void attention_forward(float* out, float* lse, const float* q, const float* k, const float* v,
                         const AttentionShape& s) override;
  void attention_backward(float* dq, float* dk, float* dv, const float* q, const float* k,
                          const float* v, const float* out, const float* lse, const float* dout,
                          const AttentionShape& s) override;
  bool sparse_forward_nm24_bf16(float* y, const uint16_t* x, const uint16_t* values,
                                const uint8_t* metadata, int64_t rows, int64_t cols,
                                const float* bias, int64_t n) override;
  void sparse_linear_forward(float* y, const float* x, const SparseView& w, const float* bias,
                             int64_t n) override;
  void sparse_linear_backward(float* dx, float* dvalues, float* db, const float* x,
                              const SparseView& w, const float* dy, int64_t n) override;

  // The flag word kernels of this call set (bits of DeviceError), for this thread and stream.
  unsigned* error_flags();
};

// After every launch: the launch status, and with NNOPS_CUDA_SYNC_CHECKS=1 a wait and a check.
void check_launch(const char* kernel);

// Scratch device memory from the stream-ordered pool, freed on the current stream.
class DeviceScratch {
 public:
  explicit DeviceScratch(size_t bytes);
  ~DeviceScratch();
  DeviceScratch(const DeviceScratch&) = delete;
  DeviceScratch& operator=(const DeviceScratch&) = delete;
  template <class T>
  T* as() const {
    return static_cast<T*>(ptr_);
  }

 private:
  void* ptr_ = nullptr;
  int device_ = 0;
};

// Grid size for a grid-stride loop over n items with `threads` per block.
inline unsigned grid_for(int64_t n, int threads, unsigned max_blocks = 65535u * 8) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > max_blocks ? max_blocks : blocks));
}

}  // namespace nnops::detail
