// CPU backend: memory (64-byte aligned, so any SIMD width can use aligned loads) and the
// singleton.
#include <sys/mman.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "cpu_backend.hpp"

namespace nnops::detail {

namespace {
constexpr std::align_val_t kAlignment{64};

// Blocks from this size on ask the kernel for transparent huge pages (2 MiB) over the whole 2 MiB
// pages they contain, where its THP mode is "madvise" (the default of many distributions; under
// "always" they get them anyway). A product that reads a weight in place (the batch-64 input
// gradient dy w) takes each depth row of a panel from another 4 KiB page, and a row of 2000
// floats put every row on two: 64 x 2000 x 1000 NN ran at 259-275 GFLOP/s on 4 KiB pages and
// 303-326 on huge ones (Intel Xeon, two threads, alternating in one process).
// NNOPS_HUGE_PAGES=0 turns it off.
constexpr size_t kHugePage = size_t(2) << 20;
constexpr size_t kHugePageMinBytes = 2 * kHugePage;

bool huge_pages_wanted() {
  static const bool wanted = [] {
    const char* env = std::getenv("NNOPS_HUGE_PAGES");
    return env == nullptr || std::strcmp(env, "0") != 0;
  }();
  return wanted;
}

// Advice only: a failure (no THP in this kernel) leaves ordinary pages.
void advise_huge_pages(void* ptr, size_t bytes) noexcept {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(ptr) + kHugePage - 1) & ~(kHugePage - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(ptr) + bytes) & ~(kHugePage - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)ptr, (void)bytes;
#endif
}
}  // namespace

void* host_alloc(size_t bytes) noexcept {
  void* ptr = ::operator new(bytes, kAlignment, std::nothrow);
  if (ptr != nullptr && bytes >= kHugePageMinBytes && huge_pages_wanted())
    advise_huge_pages(ptr, bytes);
  return ptr;
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
