// cp.async and ldmatrix (sm_80+) for the multistage kernels (gemm/mma.cu, gemm/wgmma.cu,
// sparse_mma_staged.cu): global -> shared copies that run while the block computes, committed and
// waited for in groups, and 8 x 8 BF16 matrices from shared memory into mma fragments.
#pragma once

#include <cstdint>

namespace nnops::detail::gemm {

__device__ inline uint32_t shared_address(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// 16 bytes global -> shared, or 16 zero bytes when !inside (src-size 0 reads nothing).
__device__ inline void cp_async_16(void* dst, const void* src, bool inside) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(shared_address(dst)),
               "l"(src), "r"(inside ? 16 : 0));
}
// 8 bytes global -> shared (through L1: .cg takes 16 only), or 8 zero bytes when !inside.
__device__ inline void cp_async_8(void* dst, const void* src, bool inside) {
  asm volatile("cp.async.ca.shared.global [%0], [%1], 8, %2;\n" ::"r"(shared_address(dst)),
               "l"(src), "r"(inside ? 8 : 0));
}
__device__ inline void cp_async_commit() {
  asm volatile("cp.async.commit_group;\n" ::);
}
// Waits until at most kPending of this thread's groups are still in flight.
template <int kPending>
__device__ inline void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// The ring's prologue: slices 0 .. kStages - 2 in flight through load_stage(stage, slice), a
// group each, empty past the last slice (the waits count groups).
template <int kStages, class LoadStage>
__device__ inline void cp_async_prologue(int64_t slices, LoadStage&& load_stage) {
#pragma unroll
  for (int s = 0; s < kStages - 1; ++s) {
    if (s < slices) load_stage(s, int64_t(s));
    cp_async_commit();
  }
}

// Four 8 x 8 16-bit matrices: lanes 8q .. 8q + 7 give the row addresses of matrix q, register q
// of lane 4g + t receives row g, elements 2t and 2t + 1 of matrix q (trans: column g's).
__device__ inline void ldmatrix_x4(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(p)));
}
__device__ inline void ldmatrix_x4_trans(uint32_t (&r)[4], const void* p) {
  asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0, %1, %2, %3}, [%4];\n"
               : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
               : "r"(shared_address(p)));
}

inline bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15) == 0;
}

}  // namespace nnops::detail::gemm
