// The backend interface: one entry per op, taking raw pointers and sizes that dispatch/ has
// already validated. The CPU backend overrides every entry; a backend that lacks an op inherits
// the default, which throws "not implemented on <device>".
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <utility>

#include "nnops/activation.hpp"
#include "nnops/detail/optim_math.hpp"
#include "nnops/gemm.hpp"
#include "nnops/loss.hpp"

namespace nnops::detail {

// Thrown by a backend when an allocation fails; the message ("out of host memory allocating N
// bytes") lacks the function name, which guarded() below puts in front.
class OutOfMemory : public Error {
 public:
  OutOfMemory(const char* memory, size_t bytes)
      : Error(std::string("out of ") + memory + " memory allocating " + std::to_string(bytes) +
              " bytes") {}
};

// How many guarded() calls this thread is inside: only the outermost names the function, so
// a tensor that adam_step allocates fails as adam_step, not as Tensor::zeros.
inline int& guarded_depth() {
  static thread_local int depth = 0;
  return depth;
}

// Runs `body` on behalf of the public function `fn`: an allocation failure inside becomes an
// nnops::Error that names fn (and the byte count where the allocation site knew it).
template <class Body>
decltype(auto) guarded(const char* fn, Body&& body) {
  if (guarded_depth() > 0) return std::forward<Body>(body)();
  struct Depth {
    Depth() { ++guarded_depth(); }
    ~Depth() { --guarded_depth(); }
  };
  try {
    const Depth depth;
    return std::forward<Body>(body)();
  } catch (const OutOfMemory& e) {
    throw Error(std::string(fn) + ": " + e.what());
  } catch (const std::bad_alloc&) {
    throw Error(std::string(fn) + ": out of host memory (std::bad_alloc)");
  }
}

// One parameter tensor of a (multi-tensor) Adam step; pointers live on the backend's device.
struct AdamTensor {
  float* param;  // FP32 (the master copy in mixed precision)
  const void* grad;
  DType grad_dtype;   // F32 or BF16
  uint16_t* working;  // null, or a BF16 copy that receives the updated param rounded
  float* exp_avg;
  float* exp_avg_sq;
  float* max_exp_avg_sq;  // null unless amsgrad
  const uint8_t* mask;    // null: no mask
  int64_t n;
  AdamScalars scalars;  // per tensor: each parameter has its own step count
};

// One tensor's elements as a backend entry sees them, for the entries that take F32 or BF16
// (computing in FP32 inside): the dtype travels with the pointer instead of one entry per dtype.
struct PermutePlan {
  static constexpr int kMaxDims = 8;
  int ndim = 0;
  int64_t out_shape[kMaxDims] = {};
  int64_t in_stride[kMaxDims] = {};  // elements of x per step of each dimension of y
};

struct View {
  void* data;
  DType dtype;
};
struct ConstView {
  const void* data;
  DType dtype;
};
inline View view_of(Tensor& t) {
  return View{t.raw_data(), t.dtype()};
}
inline ConstView view_of(const Tensor& t) {
  return ConstView{t.raw_data(), t.dtype()};
}
// An optional tensor's view: data null when absent.
inline View view_of(Tensor* t) {
  return t ? view_of(*t) : View{nullptr, DType::F32};
}
inline ConstView view_of(const Tensor* t) {
  return t ? view_of(*t) : ConstView{nullptr, DType::F32};
}

// One attention call's sizes: q [batch, q_heads, tq, d], k and v [batch, kv_heads, tk, d].
struct AttentionShape {
  int64_t batch, q_heads, kv_heads, tq, tk, d;
  float scale;
  bool causal;
};

// A compressed [rows, cols] weight as a backend entry sees it (nnops/sparse.hpp's layouts), F32
// values. nm24: values [rows, cols/2] and 4 bits of positions per group in metadata; otherwise
// CSR.
struct SparseView {
  bool nm24;
  int64_t rows, cols;
  int64_t slots;  // stored values (NM24: rows * cols / 2; CSR: the entries)
  const float* values;
  const uint8_t* metadata;
  const int64_t* row_ptr;
  const int32_t* col;
  bool nm24_unused = false;  // NM24: some group keeps fewer than 2 values (unused slots exist)
  // CSR: the kept entries by column (CPU matrices, for the backward; null when not given): column
  // c's entries are [col_ptr[c], col_ptr[c + 1]), rows increasing, entry e at row col_rows[e] and
  // stored slot col_slots[e].
  const int64_t* col_ptr = nullptr;
  const int32_t* col_rows = nullptr;
  const int32_t* col_slots = nullptr;
  // NM24 (CPU matrices, for the backward): each group q of four columns lists its rows
  // (group_rows[q * rows + i]) by block of kNm24RowBlock rows, then by 4-bit code, rows
  // increasing; block b's rows with code k are i in [start[b * 16 + k], start[b * 16 + k + 1]),
  // start = group_start + q * (16 * blocks + 1).
  const int32_t* group_rows = nullptr;
  const int32_t* group_start = nullptr;
};

// Rows per block of NM24's backward index: a block of dy^T's batch chunk stays in L1.
constexpr int64_t kNm24RowBlock = 128;

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;

  // Memory. allocate throws nnops::Error (with the byte count) when memory runs out.
  virtual void* allocate(size_t bytes) = 0;
  // Frees memory allocate() returned on the device `device_index` (whichever is current).
  virtual void deallocate(void* ptr, int device_index) noexcept = 0;
  virtual void copy_from_host(void* dst, const void* host_src, size_t bytes) = 0;
  virtual void copy_to_host(void* host_dst, const void* src, size_t bytes) = 0;
  virtual void copy_within(void* dst, const void* src, size_t bytes) = 0;
  virtual void fill_zero(void* dst, size_t bytes) = 0;
  // Waits for all queued work on the current device and raises the errors kernels recorded for
  // the calling thread (a no-op on the CPU).
  virtual void synchronize() {}
  // Raises the errors kernels recorded for the calling thread's current stream (waiting for it).
  // Called by the synchronising public functions only, never in the middle of an op.
  virtual void raise_device_errors() {}

  // Device ordinals (CUDA: the GPU; always 0 on the CPU). enter_device makes `index` the
  // calling thread's device and returns the previous one, which leave_device restores.
  virtual int current_device_index() const { return 0; }
  virtual int pointer_device_index(const void*) const { return current_device_index(); }
  virtual int enter_device(int) { return 0; }
  virtual void leave_device(int) {}

  // GEMM on contiguous row-major matrices: c[m, n] = alpha * op(a)[m, k] * op(b)[k, n] + beta * c.
  // With beta == 0, c is not read. a and b are both F32 or both BF16; the sums are FP32 and c
  // (F32 or BF16) is rounded once.
  virtual void gemm(View c, ConstView a, ConstView b, int64_t m, int64_t n, int64_t k,
                    const GemmOptions& options);
  // y[rows, out] = x[rows, in] * w[out, in]^T + bias (bias.data null: none). x and w share a
  // dtype; bias and y are F32 or BF16 each.
  virtual void linear_forward(View y, ConstView x, ConstView w, ConstView bias, int64_t rows,
                              int64_t in, int64_t out);
  // x, w and dy share a dtype; dx (optional), dw and db (optional) are F32 or BF16 each.
  virtual void linear_backward(View dx, View dw, View db, ConstView x, ConstView w, ConstView dy,
                               int64_t rows, int64_t in, int64_t out);

  // Element-wise over n elements; each tensor F32 or BF16, computed in FP32.
  virtual void activation_forward(View y, ConstView x, int64_t n, Activation activation,
                                  float negative_slope);
  virtual void activation_backward(View dx, ConstView x, ConstView dy, int64_t n,
                                   Activation activation, float negative_slope);

  // Row-wise over [rows, cols].
  virtual void softmax_forward(float* y, const float* x, int64_t rows, int64_t cols, bool log);
  virtual void softmax_backward(float* dx, const float* y, const float* dy, int64_t rows,
                                int64_t cols, bool log);

  // Losses write the scalar loss to *loss (device memory) and, if grad is not null, the gradient.
  virtual void mse_loss(float* loss, float* grad, const float* pred, const float* target, int64_t n,
                        Reduction reduction);
  virtual void cross_entropy_loss(float* loss, float* grad, const float* logits,
                                  const int32_t* targets, int64_t rows, int64_t classes,
                                  Reduction reduction, float label_smoothing, int32_t ignore_index);
  virtual void kd_loss(float* loss, float* grad, const float* student, const float* teacher,
                       int64_t rows, int64_t classes, float temperature);

  virtual void adam_step(const AdamTensor* tensors, int64_t count);
  // grad F32 or BF16; working (null or BF16) receives the updated param rounded.
  virtual void sgd_step(float* param, ConstView grad, float* momentum_buffer, const uint8_t* mask,
                        uint16_t* working, int64_t n, const SgdScalars& scalars);
  // Over F32 or BF16 elements; sums in double, scaling rounds once to the element's dtype.
  virtual double sum_squares(ConstView x, int64_t n);
  virtual void scale(View x, int64_t n, float factor);
  // clip_grad_norm without a host round trip: writes the total norm to *norm_out (device
  // memory) and scales every gradient by max_norm / (norm + 1e-6) when that is below 1 or NaN.
  // The default computes on the host through clip_grad_norm_on_host.
  virtual void clip_grad_norm(float* norm_out, const View* grads, const int64_t* sizes,
                              int64_t count, double max_norm);
  // The same through sum_squares and scale, returning the norm to the host (waits).
  double clip_grad_norm_on_host(const View* grads, const int64_t* sizes, int64_t count,
                                double max_norm);

  // Pruning. Each returns the mask updated in place; `k` entries among those kept are pruned.
  // Unstructured, possibly over several tensors ranked together (global pruning).
  virtual void prune_unstructured(uint8_t* const* masks, const float* const* ws,
                                  const int64_t* sizes, int64_t tensor_count, int64_t k);
  // Structured: w viewed as [outer, slices, inner] along the pruned dim. A slice is kept while
  // any of its mask entries is 1; prune k of the kept slices (those with the smallest norms).
  virtual int64_t count_kept_slices(const uint8_t* mask, int64_t outer, int64_t slices,
                                    int64_t inner);
  virtual void prune_ln_structured(uint8_t* mask, const float* w, int64_t outer, int64_t slices,
                                   int64_t inner, int p, int64_t k);
  virtual void prune_nm(uint8_t* mask, const float* w, int64_t groups, int n, int m);
  virtual void apply_mask(float* w, const uint8_t* mask, int64_t n);
  virtual int64_t count_nonzero(const uint8_t* mask, int64_t n);

  virtual void add_scaled(View y, ConstView x, int64_t n, float alpha, float beta);
  // out[r] = the first index of the largest x[r, :] (NaN counts as largest, like PyTorch).
  virtual void argmax(int32_t* out, const float* x, int64_t rows, int64_t cols);
  virtual void fill(float* t, int64_t n, float value);
  // dst = src converted, element by element, between F32 and BF16 (either way or the same).
  virtual void cast(void* dst, DType dst_dtype, const void* src, DType src_dtype, int64_t n);
  // y[i0, ..., i(n-1)] = x[sum_d i_d * in_stride[d]] over y's shape (row-major, contiguous):
  // a permutation of x's dimensions with adjacent ones already merged (ndim >= 1).
  virtual void permute(void* y, const void* x, size_t element_size, const PermutePlan& plan);

  // Transformer ops, on F32 arrays (BF16 tensors reach them through F32 stand-ins).
  // Norms over `rows` rows of length d: LayerNorm, or RMSNorm when rms (mean unused). w and b may
  // be null (1 and 0); mean and rstd (forward) may be null (not stored).
  virtual void norm_forward(float* y, float* mean, float* rstd, const float* x, const float* w,
                            const float* b, int64_t rows, int64_t d, float eps, bool rms);
  // dx, dw, db may be null (not computed).
  virtual void norm_backward(float* dx, float* dw, float* db, const float* x, const float* w,
                             const float* mean, const float* rstd, const float* dy, int64_t rows,
                             int64_t d, bool rms);
  // out[n, dim] = weight[idx[s], :]; indices are known to be in range on the CPU only.
  virtual void embedding_forward(float* out, const int32_t* idx, const float* weight, int64_t n,
                                 int64_t vocab, int64_t dim);
  virtual void embedding_backward(float* dweight, const int32_t* idx, const float* dout, int64_t n,
                                  int64_t vocab, int64_t dim);
  // x viewed as [batch, t, d]: the pair rotations of positions offset .. offset + t - 1 (inverse:
  // the opposite angles). y may be x.
  virtual void rope(float* y, const float* x, int64_t batch, int64_t t, int64_t d, int64_t offset,
                    float theta, bool inverse);
  // x [rows, 2h] -> y [rows, h]; backward: dx [rows, 2h].
  virtual void gated_activation_forward(float* y, const float* x, int64_t rows, int64_t h,
                                        Activation activation);
  virtual void gated_activation_backward(float* dx, const float* x, const float* dy, int64_t rows,
                                         int64_t h, Activation activation);
  // y = x * keep * 1 / (1 - p) over n elements (forward and backward alike); y may be x.
  virtual void dropout(float* y, const float* x, int64_t n, float p, uint64_t seed);
  virtual void attention_forward(float* out, float* lse, const float* q, const float* k,
                                 const float* v, const AttentionShape& s);
  virtual void attention_backward(float* dq, float* dk, float* dv, const float* q, const float* k,
                                  const float* v, const float* out, const float* lse,
                                  const float* dout, const AttentionShape& s);

  // y[n, out] = x[n, in] w^T + bias for a compressed w (SparseView; bias may be null).
  virtual void sparse_linear_forward(float* y, const float* x, const SparseView& w,
                                     const float* bias, int64_t n);
  // The same for an NM24 w with BF16 values and a BF16 x (F32 y and bias), where the backend has
  // a kernel for it and selects it; false (nothing written) otherwise, and the caller widens.
  virtual bool sparse_forward_nm24_bf16(float*, const uint16_t*, const uint16_t*, const uint8_t*,
                                        int64_t, int64_t, const float*, int64_t) {
    return false;
  }
  // dx[n, in] = dy w, dvalues (the stored values' layout) = dy^T x at the stored entries (0 at
  // unused NM24 slots), db[out] = column sums of dy; each may be null.
  virtual void sparse_linear_backward(float* dx, float* dvalues, float* db, const float* x,
                                      const SparseView& w, const float* dy, int64_t n);

  virtual void fill_uniform(float* t, int64_t n, float lo, float hi, uint64_t seed);
  virtual void fill_normal(float* t, int64_t n, float mean, float std, uint64_t seed);

 protected:
  [[noreturn]] void not_implemented(const char* op) const;
};

// Runs a scope on one device of a backend (CUDA: cudaSetDevice there, restored after).
class DeviceGuard {
 public:
  DeviceGuard(Backend& backend, int index)
      : backend_(backend), previous_(backend.enter_device(index)) {}
  ~DeviceGuard() { backend_.leave_device(previous_); }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

 private:
  Backend& backend_;
  int previous_;
};

Backend& cpu_backend();
// The CUDA backend; throws nnops::Error when CUDA is not built in or no GPU is usable.
Backend& cuda_backend();
Backend& backend_for(Device device, const char* fn);

#ifdef NNOPS_WITH_CUDA
// Defined in cuda/: probes the device once (catching every failure) and returns the backend,
// or null when no GPU is usable.
Backend* cuda_backend_or_null();
#endif

}  // namespace nnops::detail
