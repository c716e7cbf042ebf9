// The CUDA backend's core: per-device probes (made lazily, on the device a thread first uses),
// the calling thread's stream per device, memory from the device's stream-ordered pool (or plain
// cudaMalloc where pools are missing), transfers, the per-thread per-stream error flags and the
// launch checks.
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "cuda_backend.hpp"
#include "nnops/cuda.hpp"

#ifndef NNOPS_CUDA_ARCHITECTURES
#define NNOPS_CUDA_ARCHITECTURES "unknown"
#endif

namespace nnops::detail {

thread_local cudaStream_t t_stream = cudaStreamPerThread;

namespace {

// set_current_stream's stream and the GPU it belongs to (-1: none set).
thread_local cudaStream_t t_user_stream = nullptr;
thread_local int t_user_stream_device = -1;

bool env_equals(const char* name, const char* value) {
  const char* env = std::getenv(name);
  return env != nullptr && std::strcmp(env, value) == 0;
}

bool sync_checks_enabled() {
  static const bool enabled = env_equals("NNOPS_CUDA_SYNC_CHECKS", "1");
  return enabled;
}

// The stream this thread's ops on `device` go to: its own stream when it belongs to that GPU.
void select_stream(int device) {
  t_stream = t_user_stream != nullptr && t_user_stream_device == device ? t_user_stream
                                                                        : cudaStreamPerThread;
}

// A kernel of this library's fatbin: if the device can run it, it can run the others.
__global__ void probe_kernel() {}

struct DeviceState {
  bool usable = false;
  bool pools = false;  // stream-ordered allocation (cudaMallocAsync) in use
  int major = 0;
  std::string reason;  // why not usable
};

// Probes `device`, which is the calling thread's current device (so probing makes a context
// only where the thread is about to work).
DeviceState probe_device(int device) {
  DeviceState st;
  int major = 0, minor = 0;
  cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device);
  cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device);
  cudaDeviceProp prop{};
  const std::string name =
      cudaGetDeviceProperties(&prop, device) == cudaSuccess ? prop.name : "unknown GPU";
  const std::string what = "CUDA device " + std::to_string(device) + " (" + name +
                           ", compute capability " + std::to_string(major) + "." +
                           std::to_string(minor) + ")";
  st.major = major;
  cudaError_t status = cudaFree(nullptr);  // creates the context
  if (status != cudaSuccess) {
    cudaGetLastError();
    st.reason = what + ": no context could be made (" + cudaGetErrorString(status) + ")";
    return st;
  }
  cudaFuncAttributes attributes{};
  status = cudaFuncGetAttributes(&attributes, probe_kernel);
  if (status != cudaSuccess) {
    cudaGetLastError();
    st.reason = what + " cannot run this build's kernels (" + cudaGetErrorString(status) +
                "): nnops was built for CUDA architectures " NNOPS_CUDA_ARCHITECTURES
                "; rebuild with -DCMAKE_CUDA_ARCHITECTURES=" +
                std::to_string(major * 10 + minor);
    return st;
  }
  int pools = 0;
  cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, device);
  st.pools = pools != 0 && !env_equals("NNOPS_CUDA_POOL", "off");
  if (st.pools) {
    // Keep freed blocks in the pool (no release to the driver at each synchronisation), so a
    // training loop's allocations are served without cudaMalloc after its first step;
    // nnops::cuda::empty_cache() gives them back.
    cudaMemPool_t pool;
    if (cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess) {
      uint64_t threshold = UINT64_MAX;
      cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold);
    }
  }
  cudaGetLastError();
  st.usable = true;
  return st;
}

// cudaGetDeviceCount's answer, once (it creates no context).
struct Visible {
  int count = 0;
  std::string reason;
};
const Visible& visible_devices() {
  // Never destroyed (nor the states below): tensors with static storage duration free their
  // memory through them during exit.
  static const Visible& visible = *[] {
    auto* v_ptr = new Visible;
    Visible& v = *v_ptr;
    const cudaError_t status = cudaGetDeviceCount(&v.count);
    if (status != cudaSuccess) {
      cudaGetLastError();
      v.count = 0;
      v.reason = std::string("no CUDA driver or device (cudaGetDeviceCount: ") +
                 cudaGetErrorString(status) + ")";
    } else if (v.count == 0) {
      v.reason = "no CUDA device is visible";
    }
    return v_ptr;
  }();
  return visible;
}

// One lazily probed state per visible device.
const DeviceState& device_state(int device) {
  struct Slot {
    std::once_flag once;
    DeviceState state;
  };
  static std::vector<Slot>& slots =
      *new std::vector<Slot>(static_cast<size_t>(visible_devices().count));
  Slot& slot = slots.at(static_cast<size_t>(device));
  std::call_once(slot.once, [&] { slot.state = probe_device(device); });
  return slot.state;
}

int current_device_or_zero() {
  int device = 0;
  if (cudaGetDevice(&device) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return device;
}

// Errors only kernels see are recorded in a flag word per (thread, device, stream): each thread
// learns of the errors of its own calls, on the stream it waits for, and no other.
struct FlagSlot {
  int device;
  cudaStream_t stream;
  unsigned* d_flags;
};
struct FlagTable {
  std::vector<FlagSlot> slots;
  FlagSlot* find(int device, cudaStream_t stream) {
    for (FlagSlot& s : slots)
      if (s.device == device && s.stream == stream) return &s;
    return nullptr;
  }
  ~FlagTable() {
    for (const FlagSlot& s : slots) NNOPS_CUDA_CHECK_NOTHROW(cudaFree(s.d_flags));
  }
};
thread_local FlagTable t_flags;

[[noreturn]] void throw_device_errors(unsigned flags) {
  std::string ops;
  if (flags & kTargetOutOfRange) {
    ops +=
        "nnops::cross_entropy_loss: a target was outside [0, classes) and not ignore_index "
        "(found on the device; that call's loss and gradient rows are NaN)";
  }
  if (flags & kEmbeddingIndexOutOfRange) {
    ops += std::string(ops.empty() ? "" : "; ") +
           "nnops::embedding_forward: an index was outside [0, V) (found on the device; that "
           "call's output rows are NaN)";
  }
  if (flags & kEmbeddingGradIndexOutOfRange) {
    ops += std::string(ops.empty() ? "" : "; ") +
           "nnops::embedding_backward: an index was outside [0, V) (found on the device; that "
           "call's gradient left those positions out)";
  }
  if (ops.empty()) ops = "nnops: a kernel reported error flags " + std::to_string(flags);
  throw Error(ops);
}

// Reads and clears one flag word, ordered after `stream`'s work (waits for it).
unsigned read_and_clear(FlagSlot& slot, cudaStream_t stream) {
  unsigned flags = 0;
  NNOPS_CUDA_CHECK(
      cudaMemcpyAsync(&flags, slot.d_flags, sizeof flags, cudaMemcpyDeviceToHost, stream));
  NNOPS_CUDA_CHECK(cudaStreamSynchronize(stream));
  if (flags != 0) NNOPS_CUDA_CHECK(cudaMemsetAsync(slot.d_flags, 0, sizeof flags, stream));
  return flags;
}

}  // namespace

int current_compute_major() {
  return device_state(current_device_or_zero()).major;
}

unsigned* CudaBackend::error_flags() {
  const int device = current_device_or_zero();
  if (FlagSlot* slot = t_flags.find(device, t_stream)) return slot->d_flags;
  unsigned* d_flags = nullptr;
  const cudaError_t status = cudaMalloc(&d_flags, sizeof(unsigned));
  if (status != cudaSuccess) {
    cudaGetLastError();
    if (status == cudaErrorMemoryAllocation) throw OutOfMemory("CUDA device", sizeof(unsigned));
    throw_cuda_error(status, "cudaMalloc (error flags)", __FILE__, __LINE__);
  }
  t_flags.slots.push_back(FlagSlot{device, t_stream, d_flags});
  NNOPS_CUDA_CHECK(cudaMemsetAsync(d_flags, 0, sizeof(unsigned), t_stream));
  return d_flags;
}

int CudaBackend::current_device_index() const {
  return current_device_or_zero();
}

int CudaBackend::pointer_device_index(const void* ptr) const {
  cudaPointerAttributes attributes{};
  if (cudaPointerGetAttributes(&attributes, ptr) == cudaSuccess &&
      (attributes.type == cudaMemoryTypeDevice || attributes.type == cudaMemoryTypeManaged)) {
    return attributes.device;
  }
  cudaGetLastError();
  return current_device_or_zero();
}

int CudaBackend::enter_device(int index) {
  const int previous = current_device_or_zero();
  if (index != previous) NNOPS_CUDA_CHECK(cudaSetDevice(index));
  const DeviceState& st = device_state(index);
  if (!st.usable) {
    if (index != previous) NNOPS_CUDA_CHECK_NOTHROW(cudaSetDevice(previous));
    throw Error("no usable CUDA device (" + st.reason + ")");
  }
  select_stream(index);
  return previous;
}

void CudaBackend::leave_device(int previous) {
  if (previous != current_device_or_zero()) NNOPS_CUDA_CHECK_NOTHROW(cudaSetDevice(previous));
  select_stream(previous);
}

void* CudaBackend::allocate(size_t bytes) {
  const bool pools = device_state(current_device_or_zero()).pools;
  void* ptr = nullptr;
  const cudaError_t status =
      pools ? cudaMallocAsync(&ptr, bytes, t_stream) : cudaMalloc(&ptr, bytes);
  if (status != cudaSuccess) {
    cudaGetLastError();  // clear the error so the next launch check does not report it
    if (status == cudaErrorMemoryAllocation) throw OutOfMemory("CUDA device", bytes);
    throw_cuda_error(status, pools ? "cudaMallocAsync" : "cudaMalloc", __FILE__, __LINE__);
  }
  return ptr;
}

void CudaBackend::deallocate(void* ptr, int device_index) noexcept {
  // Freed on the calling thread's stream for that device: work queued there before the free
  // has finished with the memory; other streams are the caller's to order (as in PyTorch).
  const int previous = current_device_or_zero();
  if (previous != device_index) NNOPS_CUDA_CHECK_NOTHROW(cudaSetDevice(device_index));
  const cudaStream_t stream = t_user_stream != nullptr && t_user_stream_device == device_index
                                  ? t_user_stream
                                  : cudaStreamPerThread;
  if (device_state(device_index).pools) {
    NNOPS_CUDA_CHECK_NOTHROW(cudaFreeAsync(ptr, stream));
  } else {
    NNOPS_CUDA_CHECK_NOTHROW(cudaStreamSynchronize(stream));  // the stream's work comes first
    NNOPS_CUDA_CHECK_NOTHROW(cudaFree(ptr));
  }
  if (previous != device_index) NNOPS_CUDA_CHECK_NOTHROW(cudaSetDevice(previous));
}

void CudaBackend::copy_from_host(void* dst, const void* host_src, size_t bytes) {
  // From pageable memory the call returns once the source has been staged: the caller may free
  // it (which can make the call wait for the stream).
  NNOPS_CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, t_stream));
}

void CudaBackend::copy_to_host(void* host_dst, const void* src, size_t bytes) {
  NNOPS_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, t_stream));
  NNOPS_CUDA_CHECK(cudaStreamSynchronize(t_stream));
}

void CudaBackend::copy_within(void* dst, const void* src, size_t bytes) {
  // cudaMemcpyDefault: the addresses tell the devices, so a copy between two GPUs works too.
  NNOPS_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDefault, t_stream));
}

void CudaBackend::fill_zero(void* dst, size_t bytes) {
  NNOPS_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, t_stream));
}

void CudaBackend::synchronize() {
  const int device = current_device_or_zero();
  NNOPS_CUDA_CHECK(cudaDeviceSynchronize());
  // The device is idle: read every flag this thread has there (a user stream may be gone by now,
  // so the reads go through the thread's default stream).
  unsigned flags = 0;
  for (FlagSlot& slot : t_flags.slots)
    if (slot.device == device) flags |= read_and_clear(slot, cudaStreamPerThread);
  if (flags != 0) throw_device_errors(flags);
}

void CudaBackend::synchronize_stream() {
  NNOPS_CUDA_CHECK(cudaStreamSynchronize(t_stream));
  raise_device_errors();
}

void CudaBackend::raise_device_errors() {
  FlagSlot* slot = t_flags.find(current_device_or_zero(), t_stream);
  if (slot == nullptr) return;  // no kernel of this thread could record an error on this stream
  const unsigned flags = read_and_clear(*slot, t_stream);
  if (flags != 0) throw_device_errors(flags);
}

void check_launch(const char* kernel) {
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) throw_cuda_error(status, kernel, __FILE__, __LINE__);
  if (sync_checks_enabled()) {
    // Debugging aid (like CUDA_LAUNCH_BLOCKING): a failing kernel is named at its launch. The
    // error flags stay for the synchronising calls, so an op's documented behaviour is unchanged.
    const cudaError_t done = cudaStreamSynchronize(t_stream);
    if (done != cudaSuccess) throw_cuda_error(done, kernel, __FILE__, __LINE__);
  }
}

DeviceScratch::DeviceScratch(size_t bytes) {
  if (bytes > 0) {
    ptr_ = cuda_backend().allocate(bytes);
    device_ = current_device_or_zero();
  }
}

DeviceScratch::~DeviceScratch() {
  if (ptr_) cuda_backend().deallocate(ptr_, device_);
}

Backend* cuda_backend_or_null() {
  if (visible_devices().count == 0) return nullptr;
  static CudaBackend* const backend = new CudaBackend;  // never destroyed (see visible_devices)
  return device_state(current_device_or_zero()).usable ? backend : nullptr;
}

}  // namespace nnops::detail

namespace nnops::cuda {

using detail::current_device_or_zero;

Stream current_stream() {
  return detail::t_user_stream;
}

void set_current_stream(Stream stream) {
  if (stream == nullptr) {
    detail::t_user_stream = nullptr;
    detail::t_user_stream_device = -1;
  } else {
    if (detail::cuda_backend_or_null() == nullptr) {
      throw Error("nnops::cuda::set_current_stream: no usable CUDA device (" + unusable_reason() +
                  ")");
    }
    int device = 0;
    NNOPS_CUDA_CHECK(cudaStreamGetDevice(static_cast<cudaStream_t>(stream), &device));
    detail::t_user_stream = static_cast<cudaStream_t>(stream);
    detail::t_user_stream_device = device;
  }
  detail::select_stream(current_device_or_zero());
}

int device_count() {
  return detail::visible_devices().count;
}

int current_device() {
  return current_device_or_zero();
}

void set_device(int device) {
  const int count = device_count();
  if (device < 0 || device >= count) {
    throw Error("nnops::cuda::set_device: device " + std::to_string(device) + " but " +
                std::to_string(count) + " visible CUDA devices");
  }
  NNOPS_CUDA_CHECK(cudaSetDevice(device));
  const detail::DeviceState& st = detail::device_state(device);
  detail::select_stream(device);
  if (!st.usable) throw Error("nnops::cuda::set_device: " + st.reason);
}

std::string unusable_reason() {
  const detail::Visible& visible = detail::visible_devices();
  if (visible.count == 0) return visible.reason;
  return detail::device_state(current_device_or_zero()).reason;
}

void synchronize_stream() {
  detail::Backend* backend = detail::cuda_backend_or_null();
  if (backend == nullptr) {
    throw Error("nnops::cuda::synchronize_stream: no usable CUDA device (" + unusable_reason() +
                ")");
  }
  static_cast<detail::CudaBackend*>(backend)->synchronize_stream();
}

void empty_cache() {
  if (detail::cuda_backend_or_null() == nullptr) return;
  const int device = current_device_or_zero();
  NNOPS_CUDA_CHECK(cudaDeviceSynchronize());  // blocks freed on any stream are back in the pool
  if (!detail::device_state(device).pools) return;
  cudaMemPool_t pool;
  NNOPS_CUDA_CHECK(cudaDeviceGetDefaultMemPool(&pool, device));
  NNOPS_CUDA_CHECK(cudaMemPoolTrimTo(pool, 0));
}

}  // namespace nnops::cuda
