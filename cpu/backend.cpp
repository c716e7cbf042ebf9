// CPU backend: memory (64-byte aligned, so any SIMD width can use aligned loads) and the
// singleton.
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "cpu_backend.hpp"

namespace nnops::detail {

namespace {
constexpr std::align_val_t kAlignment{64};
}

void* host_alloc(size_t bytes) noexcept {
  return ::operator new(bytes, kAlignment, std::nothrow);
}

void host_free(void* ptr) noexcept {
  ::operator delete(ptr, kAlignment);
}

void* CpuBackend::allocate(size_t bytes) {
  void* ptr = host_alloc(bytes);
  if (ptr == nullptr) throw OutOfMemory("host", bytes);
  return ptr;
}

void CpuBackend::deallocate(void* ptr, int) noexcept {
  host_free(ptr);
}

void CpuBackend::copy_from_host(void* dst, const void* host_src, size_t bytes) {
  std::memcpy(dst, host_src, bytes);
}
void CpuBackend::copy_to_host(void* host_dst, const void* src, size_t bytes) {
  std::memcpy(host_dst, src, bytes);
}
void CpuBackend::copy_within(void* dst, const void* src, size_t bytes) {
  std::memmove(dst, src, bytes);
}
void CpuBackend::fill_zero(void* dst, size_t bytes) {
  std::memset(dst, 0, bytes);
}

Backend& cpu_backend() {
  // Never destroyed: tensors with static storage duration may free memory through it at exit.
  static CpuBackend* const backend = new CpuBackend;
  return *backend;
}

}  // namespace nnops::detail
