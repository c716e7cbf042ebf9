// Backend selection and device queries. The CPU backend always exists; the CUDA backend is
// present when the library is built with CUDA and the first probe finds a usable GPU.
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>

#include "backend.hpp"
#include "nnops/cuda.hpp"
#include "nnops/device.hpp"

namespace nnops {

const char* to_string(Device device) {
  return device == Device::CPU ? "CPU" : "CUDA";
}

const char* to_string(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return "F32";
    case DType::I32:
      return "I32";
    case DType::U8:
      return "U8";
    case DType::BF16:
      return "BF16";
    case DType::I64:
      return "I64";
  }
  return "?";
}

std::size_t dtype_size(DType dtype) {
  switch (dtype) {
    case DType::F32:
      return 4;
    case DType::I32:
      return 4;
    case DType::U8:
      return 1;
    case DType::BF16:
      return 2;
    case DType::I64:
      return 8;
  }
  return 0;
}

bool cuda_available() {
#ifdef NNOPS_WITH_CUDA
  return detail::cuda_backend_or_null() != nullptr;
#else
  return false;
#endif
}

Device default_device() {
  const char* env = std::getenv("NNOPS_DEVICE");
  if (env != nullptr && *env != '\0') {
    if (std::strcmp(env, "cpu") == 0) return Device::CPU;
    if (std::strcmp(env, "cuda") == 0) {
#ifdef NNOPS_WITH_CUDA
      const char* why = "no usable CUDA device";
#else
      const char* why = "nnops was built without CUDA";
#endif
      if (!cuda_available()) {
        throw Error(std::string("nnops::default_device: NNOPS_DEVICE=cuda but ") + why);
      }
      return Device::CUDA;
    }
    throw Error(std::string("nnops::default_device: NNOPS_DEVICE is '") + env +
                "' but must be 'cpu' or 'cuda'");
  }
  return cuda_available() ? Device::CUDA : Device::CPU;
}

namespace cuda {

namespace {

// What set_gemm_kernel last chose (Default: none).
std::atomic<GemmKernel> g_gemm_kernel{GemmKernel::Default};

GemmKernel gemm_kernel_from_env() {
  const char* env = std::getenv("NNOPS_CUDA_GEMM");
  if (env == nullptr || *env == '\0') return GemmKernel::Default;
  if (std::strcmp(env, "simt") == 0) return GemmKernel::Simt;
  if (std::strcmp(env, "wmma") == 0) return GemmKernel::Wmma;
  if (std::strcmp(env, "mma") == 0) return GemmKernel::Mma;
  if (std::strcmp(env, "wgmma") == 0) return GemmKernel::Wgmma;
  if (std::strcmp(env, "wgmma_tma") == 0) return GemmKernel::WgmmaTma;
  throw Error(std::string("nnops::matmul: NNOPS_CUDA_GEMM is '") + env +
              "' but must be 'simt', 'wmma', 'mma', 'wgmma' or 'wgmma_tma'");
}

// What set_attention_kernel last chose (Default: none).
std::atomic<AttentionKernel> g_attention_kernel{AttentionKernel::Default};

AttentionKernel attention_kernel_from_env() {
  const char* env = std::getenv("NNOPS_CUDA_ATTENTION");
  if (env == nullptr || *env == '\0') return AttentionKernel::Default;
  if (std::strcmp(env, "simple") == 0) return AttentionKernel::Simple;
  if (std::strcmp(env, "tiled") == 0) return AttentionKernel::Tiled;
  throw Error(std::string("nnops::attention_forward/backward: NNOPS_CUDA_ATTENTION is '") + env +
              "' but must be 'simple' or 'tiled'");
}

}  // namespace

void set_attention_kernel(AttentionKernel kernel) {
  g_attention_kernel.store(kernel);
}

AttentionKernel attention_kernel() {
  const AttentionKernel set = g_attention_kernel.load();
  return set != AttentionKernel::Default ? set : attention_kernel_from_env();
}

void set_gemm_kernel(GemmKernel kernel) {
  g_gemm_kernel.store(kernel);
}

GemmKernel gemm_kernel() {
  const GemmKernel set = g_gemm_kernel.load();
  return set != GemmKernel::Default ? set : gemm_kernel_from_env();
}

}  // namespace cuda

#ifndef NNOPS_WITH_CUDA
namespace cuda {
Stream current_stream() {
  return nullptr;
}
void set_current_stream(Stream stream) {
  // nullptr (the default stream) is accepted, so a StreamGuard can always restore it.
  if (stream != nullptr)
    throw Error("nnops::cuda::set_current_stream: nnops was built without CUDA");
}
int device_count() {
  return 0;
}
void set_device(int) {
  throw Error("nnops::cuda::set_device: nnops was built without CUDA");
}
int current_device() {
  return 0;
}
std::string unusable_reason() {
  return "nnops was built without CUDA";
}
void synchronize_stream() {
  throw Error("nnops::cuda::synchronize_stream: nnops was built without CUDA");
}
void empty_cache() {}
}  // namespace cuda
#endif

void synchronize(Device device) {
  detail::backend_for(device, "nnops::synchronize").synchronize();
}

namespace detail {

Backend& cuda_backend() {
#ifdef NNOPS_WITH_CUDA
  if (Backend* b = cuda_backend_or_null()) return *b;
  throw Error("no usable CUDA device (" + cuda::unusable_reason() + ")");
#else
  throw Error("nnops was built without CUDA");
#endif
}

Backend& backend_for(Device device, const char* fn) {
  if (device == Device::CPU) return cpu_backend();
  try {
    return cuda_backend();
  } catch (const Error& e) {
    throw Error(std::string(fn) + ": a tensor is on CUDA but " + e.what());
  }
}

void Backend::not_implemented(const char* op) const {
  throw Error(std::string("nnops::") + op + ": not implemented on " + to_string(device()) + " yet");
}

// Defaults for backends that lack an op (the CPU backend overrides all of them).
void Backend::gemm(View, ConstView, ConstView, int64_t, int64_t, int64_t, const GemmOptions&) {
  not_implemented("matmul");
}
void Backend::linear_forward(View, ConstView, ConstView, ConstView, int64_t, int64_t, int64_t) {
  not_implemented("linear_forward");
}
void Backend::linear_backward(View, View, View, ConstView, ConstView, ConstView, int64_t, int64_t,
                              int64_t) {
  not_implemented("linear_backward");
}
void Backend::activation_forward(View, ConstView, int64_t, Activation, float) {
  not_implemented("activation_forward");
}
void Backend::activation_backward(View, ConstView, ConstView, int64_t, Activation, float) {
  not_implemented("activation_backward");
}
void Backend::softmax_forward(float*, const float*, int64_t, int64_t, bool log) {
  not_implemented(log ? "log_softmax_forward" : "softmax_forward");
}
void Backend::softmax_backward(float*, const float*, const float*, int64_t, int64_t, bool log) {
  not_implemented(log ? "log_softmax_backward" : "softmax_backward");
}
void Backend::mse_loss(float*, float*, const float*, const float*, int64_t, Reduction) {
  not_implemented("mse_loss");
}
void Backend::cross_entropy_loss(float*, float*, const float*, const int32_t*, int64_t, int64_t,
                                 Reduction, float, int32_t) {
  not_implemented("cross_entropy_loss");
}
void Backend::kd_loss(float*, float*, const float*, const float*, int64_t, int64_t, float) {
  not_implemented("kd_loss");
}
void Backend::adam_step(const AdamTensor*, int64_t) {
  not_implemented("adam_step");
}
void Backend::sgd_step(float*, ConstView, float*, const uint8_t*, uint16_t*, int64_t,
                       const SgdScalars&) {
  not_implemented("sgd_step");
}
double Backend::sum_squares(ConstView, int64_t) {
  not_implemented("clip_grad_norm");
}
void Backend::scale(View, int64_t, float) {
  not_implemented("clip_grad_norm");
}
double Backend::clip_grad_norm_on_host(const View* grads, const int64_t* sizes, int64_t count,
                                       double max_norm) {
  double sum = 0.0;
  for (int64_t i = 0; i < count; ++i) {
    sum += sum_squares(ConstView{grads[i].data, grads[i].dtype}, sizes[i]);
  }
  const double total = std::sqrt(sum);
  const double coef = max_norm / (total + 1e-6);
  if (!(coef >= 1.0)) {  // also a NaN coefficient, as PyTorch's clamp
    for (int64_t i = 0; i < count; ++i)
      if (sizes[i] > 0) scale(grads[i], sizes[i], static_cast<float>(coef));
  }
  return total;
}
void Backend::clip_grad_norm(float* norm_out, const View* grads, const int64_t* sizes,
                             int64_t count, double max_norm) {
  const float norm = static_cast<float>(clip_grad_norm_on_host(grads, sizes, count, max_norm));
  copy_from_host(norm_out, &norm, sizeof norm);
}
void Backend::prune_unstructured(uint8_t* const*, const float* const*, const int64_t*, int64_t,
                                 int64_t) {
  not_implemented("l1_unstructured");
}
int64_t Backend::count_kept_slices(const uint8_t*, int64_t, int64_t, int64_t) {
  not_implemented("ln_structured");
}
void Backend::prune_ln_structured(uint8_t*, const float*, int64_t, int64_t, int64_t, int, int64_t) {
  not_implemented("ln_structured");
}
void Backend::prune_nm(uint8_t*, const float*, int64_t, int, int) {
  not_implemented("nm_structured");
}
void Backend::apply_mask(float*, const uint8_t*, int64_t) {
  not_implemented("apply_mask");
}
int64_t Backend::count_nonzero(const uint8_t*, int64_t) {
  not_implemented("sparsity");
}
void Backend::add_scaled(View, ConstView, int64_t, float, float) {
  not_implemented("add_scaled");
}
void Backend::argmax(int32_t*, const float*, int64_t, int64_t) {
  not_implemented("argmax");
}
void Backend::cast(void*, DType, const void*, DType, int64_t) {
  not_implemented("cast");
}
void Backend::permute(void*, const void*, size_t, const PermutePlan&) {
  not_implemented("permute");
}
void Backend::fill(float*, int64_t, float) {
  not_implemented("fill");
}
void Backend::norm_forward(float*, float*, float*, const float*, const float*, const float*,
                           int64_t, int64_t, float, bool rms) {
  not_implemented(rms ? "rms_norm_forward" : "layer_norm_forward");
}
void Backend::norm_backward(float*, float*, float*, const float*, const float*, const float*,
                            const float*, const float*, int64_t, int64_t, bool rms) {
  not_implemented(rms ? "rms_norm_backward" : "layer_norm_backward");
}
void Backend::embedding_forward(float*, const int32_t*, const float*, int64_t, int64_t, int64_t) {
  not_implemented("embedding_forward");
}
void Backend::embedding_backward(float*, const int32_t*, const float*, int64_t, int64_t, int64_t) {
  not_implemented("embedding_backward");
}
void Backend::rope(float*, const float*, int64_t, int64_t, int64_t, int64_t, float, bool inverse) {
  not_implemented(inverse ? "rope_backward" : "rope_forward");
}
void Backend::gated_activation_forward(float*, const float*, int64_t, int64_t, Activation) {
  not_implemented("gated_activation_forward");
}
void Backend::gated_activation_backward(float*, const float*, const float*, int64_t, int64_t,
                                        Activation) {
  not_implemented("gated_activation_backward");
}
void Backend::dropout(float*, const float*, int64_t, float, uint64_t) {
  not_implemented("dropout_forward");
}
void Backend::attention_forward(float*, float*, const float*, const float*, const float*,
                                const AttentionShape&) {
  not_implemented("attention_forward");
}
void Backend::attention_backward(float*, float*, float*, const float*, const float*, const float*,
                                 const float*, const float*, const float*, const AttentionShape&) {
  not_implemented("attention_backward");
}
void Backend::sparse_linear_forward(float*, const float*, const SparseView&, const float*,
                                    int64_t) {
  not_implemented("sparse_linear_forward");
}
void Backend::sparse_linear_backward(float*, float*, float*, const float*, const SparseView&,
                                     const float*, int64_t) {
  not_implemented("sparse_linear_backward");
}
void Backend::fill_uniform(float*, int64_t, float, float, uint64_t) {
  not_implemented("fill_uniform");
}
void Backend::fill_normal(float*, int64_t, float, float, uint64_t) {
  not_implemented("fill_normal");
}

}  // namespace detail
}  // namespace nnops
