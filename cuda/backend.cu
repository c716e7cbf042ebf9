// The CUDA backend's core: device probe, the calling thread's stream, stream-ordered memory from
// the device's default pool, transfers, the device error flag and the launch checks.
#include <cstdlib>
#include <cstring>
#include <string>

#include "cuda_backend.hpp"
#include "nnops/cuda.hpp"

namespace nnops::detail {

thread_local cudaStream_t t_stream = cudaStreamPerThread;

namespace {

bool sync_checks_enabled() {
  static const bool enabled = [] {
    const char* env = std::getenv("NNOPS_CUDA_SYNC_CHECKS");
    return env != nullptr && std::strcmp(env, "1") == 0;
  }();
  return enabled;
}

}  // namespace

// Keeps freed blocks in the pool (no release back to the driver), so a training loop's
// allocations are served without cudaMalloc after the first step.
void keep_pool_memory(int device) {
  cudaMemPool_t pool;
  if (cudaDeviceGetDefaultMemPool(&pool, device) == cudaSuccess) {
    uint64_t threshold = UINT64_MAX;
    cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold);
  }
  cudaGetLastError();
}

namespace {

// The first probe catches every failure (no driver, no device, a driver too old for the
// statically linked runtime) and answers "no GPU" instead.
Backend* probe() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess || count <= 0) {
    cudaGetLastError();
    return nullptr;
  }
  if (cudaFree(nullptr) != cudaSuccess) {  // creates the context: fails if the device is unusable
    cudaGetLastError();
    return nullptr;
  }
  int device = 0;
  cudaGetDevice(&device);
  keep_pool_memory(device);
  unsigned* flags = nullptr;
  if (cudaMalloc(&flags, sizeof(unsigned)) != cudaSuccess ||
      cudaMemset(flags, 0, sizeof(unsigned)) != cudaSuccess) {
    cudaGetLastError();
    return nullptr;
  }
  // Never destroyed: tensors with static storage duration may free memory through it at exit.
  static CudaBackend* const backend = new CudaBackend(flags);
  return backend;
}

}  // namespace

void* CudaBackend::allocate(size_t bytes) {
  void* ptr = nullptr;
  const cudaError_t status = cudaMallocAsync(&ptr, bytes, t_stream);
  if (status == cudaErrorMemoryAllocation) {
    cudaGetLastError();  // clear the error so the library stays usable
    throw OutOfMemory("CUDA device", bytes);
  }
  NNOPS_CUDA_CHECK(status);
  return ptr;
}

void CudaBackend::deallocate(void* ptr) noexcept {
  NNOPS_CUDA_CHECK_NOTHROW(cudaFreeAsync(ptr, t_stream));
}

void CudaBackend::copy_from_host(void* dst, const void* host_src, size_t bytes) {
  // From pageable memory the call returns once the source has been staged: the caller may free it.
  NNOPS_CUDA_CHECK(cudaMemcpyAsync(dst, host_src, bytes, cudaMemcpyHostToDevice, t_stream));
}

void CudaBackend::copy_to_host(void* host_dst, const void* src, size_t bytes) {
  NNOPS_CUDA_CHECK(cudaMemcpyAsync(host_dst, src, bytes, cudaMemcpyDeviceToHost, t_stream));
  wait_and_check();
}

void CudaBackend::copy_within(void* dst, const void* src, size_t bytes) {
  NNOPS_CUDA_CHECK(cudaMemcpyAsync(dst, src, bytes, cudaMemcpyDeviceToDevice, t_stream));
}

void CudaBackend::fill_zero(void* dst, size_t bytes) {
  NNOPS_CUDA_CHECK(cudaMemsetAsync(dst, 0, bytes, t_stream));
}

void CudaBackend::synchronize() {
  wait_and_check();
}

void CudaBackend::wait_and_check() {
  unsigned flags = 0;
  NNOPS_CUDA_CHECK(
      cudaMemcpyAsync(&flags, d_error_flags_, sizeof flags, cudaMemcpyDeviceToHost, t_stream));
  NNOPS_CUDA_CHECK(cudaStreamSynchronize(t_stream));
  if (flags != 0) {
    NNOPS_CUDA_CHECK(cudaMemsetAsync(d_error_flags_, 0, sizeof(unsigned), t_stream));
    if (flags & kTargetOutOfRange) {
      throw Error(
          "nnops::cross_entropy_loss: a target was outside [0, classes) and not ignore_index "
          "(found on the device; that call's loss and gradient rows are NaN)");
    }
    throw Error("nnops: a kernel reported error flags " + std::to_string(flags));
  }
}

void check_launch(const char* kernel) {
  const cudaError_t status = cudaGetLastError();
  if (status != cudaSuccess) throw_cuda_error(status, kernel, __FILE__, __LINE__);
  if (sync_checks_enabled()) {
    static_cast<CudaBackend&>(cuda_backend()).wait_and_check();
  }
}

DeviceScratch::DeviceScratch(size_t bytes) {
  if (bytes > 0) ptr_ = cuda_backend().allocate(bytes);
}

DeviceScratch::~DeviceScratch() {
  if (ptr_) NNOPS_CUDA_CHECK_NOTHROW(cudaFreeAsync(ptr_, t_stream));
}

Backend* cuda_backend_or_null() {
  static Backend* const backend = probe();
  return backend;
}

}  // namespace nnops::detail

namespace nnops::cuda {

Stream current_stream() {
  const cudaStream_t s = detail::t_stream;
  return s == cudaStreamPerThread ? nullptr : static_cast<Stream>(s);
}

void set_current_stream(Stream stream) {
  detail::t_stream = stream == nullptr ? cudaStreamPerThread : static_cast<cudaStream_t>(stream);
}

int device_count() {
  if (detail::cuda_backend_or_null() == nullptr) return 0;
  int count = 0;
  NNOPS_CUDA_CHECK(cudaGetDeviceCount(&count));
  return count;
}

void set_device(int device) {
  const int count = device_count();
  if (device < 0 || device >= count) {
    throw Error("nnops::cuda::set_device: device " + std::to_string(device) + " but " +
                std::to_string(count) + " usable CUDA devices");
  }
  NNOPS_CUDA_CHECK(cudaSetDevice(device));
  detail::keep_pool_memory(device);
}

}  // namespace nnops::cuda
