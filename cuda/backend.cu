// The CUDA backend: device probe, memory and transfers. Ops it does not implement yet inherit
// the Backend default, which throws "not implemented on CUDA".
#include <string>

#include "../dispatch/backend.hpp"
#include "cuda_check.hpp"

namespace nnops::detail {

namespace {

class CudaBackend final : public Backend {
 public:
  Device device() const override { return Device::CUDA; }

  void* allocate(size_t bytes) override {
    void* ptr = nullptr;
    const cudaError_t status = cudaMalloc(&ptr, bytes);
    if (status == cudaErrorMemoryAllocation) {
      cudaGetLastError();  // clear the error so the library stays usable
      throw OutOfMemory("CUDA device", bytes);
    }
    NNOPS_CUDA_CHECK(status);
    return ptr;
  }
  void deallocate(void* ptr) noexcept override { NNOPS_CUDA_CHECK_NOTHROW(cudaFree(ptr)); }
  void copy_from_host(void* dst, const void* host_src, size_t bytes) override {
    NNOPS_CUDA_CHECK(cudaMemcpy(dst, host_src, bytes, cudaMemcpyHostToDevice));
  }
  void copy_to_host(void* host_dst, const void* src, size_t bytes) override {
    NNOPS_CUDA_CHECK(cudaMemcpy(host_dst, src, bytes, cudaMemcpyDeviceToHost));
  }
  void copy_within(void* dst, const void* src, size_t bytes) override {
    NNOPS_CUDA_CHECK(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToDevice));
  }
  void fill_zero(void* dst, size_t bytes) override { NNOPS_CUDA_CHECK(cudaMemset(dst, 0, bytes)); }
  void synchronize() override { NNOPS_CUDA_CHECK(cudaDeviceSynchronize()); }
};

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
  // Never destroyed: tensors with static storage duration may free memory through it at exit.
  static CudaBackend* const backend = new CudaBackend;
  return backend;
}

}  // namespace

Backend* cuda_backend_or_null() {
  static Backend* const backend = probe();
  return backend;
}

}  // namespace nnops::detail
