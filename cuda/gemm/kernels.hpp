// The CUDA GEMM kernels, one family per file, each launched for a transpose case and an output
// type: c = alpha * op(a) * op(b) + beta * c (+ bias per column), op(a) [m, k], op(b) [k, n],
// c [m, n] row-major. Every family tiles the output in 128 x 128 blocks; a caller checks the
// grid fits one launch (gemm.cu) before calling any of them.
#pragma once

#include <cstdint>
#include <type_traits>

#include "../cuda_backend.hpp"

namespace nnops::detail::gemm {

constexpr int kTileM = 128, kTileN = 128;

// The SIMT FP32 kernel (simt.cu): FP32 products and sums, every element summed over k in order.
template <class TOut>
void launch_simt(bool trans_a, bool trans_b, TOut* c, const float* a, const float* b,
                 const float* bias, int64_t m, int64_t n, int64_t k, float alpha, float beta);

// The WMMA tensor-core kernels (wmma.cu): one k-slice at a time through registers. TF32 takes F32
// operands (rounded to TF32 as fragments load), BF16 takes BF16 bits; FP32 sums. sm_80+.
template <class TOut>
void launch_wmma_tf32(bool trans_a, bool trans_b, TOut* c, const float* a, const float* b,
                      const float* bias, int64_t m, int64_t n, int64_t k, float alpha, float beta);
template <class TOut>
void launch_wmma_bf16(bool trans_a, bool trans_b, TOut* c, const uint16_t* a, const uint16_t* b,
                      const float* bias, int64_t m, int64_t n, int64_t k, float alpha, float beta);

// The multistage mma.sync kernels (mma.cu): cp.async into a 4-stage shared-memory ring, ldmatrix
// (BF16), mma.sync m16n8k16 (BF16) and m16n8k8 (TF32), FP32 sums. sm_80+.
template <class TOut>
void launch_mma_tf32(bool trans_a, bool trans_b, TOut* c, const float* a, const float* b,
                     const float* bias, int64_t m, int64_t n, int64_t k, float alpha, float beta);
template <class TOut>
void launch_mma_bf16(bool trans_a, bool trans_b, TOut* c, const uint16_t* a, const uint16_t* b,
                     const float* bias, int64_t m, int64_t n, int64_t k, float alpha, float beta);

// The sm_90a warpgroup-MMA kernel (wgmma.cu): BF16 operands staged K-major in a 3-stage
// cp.async ring, wgmma.mma_async m64n128k16, FP32 sums. Built only when sm_90 is among the CUDA
// architectures (NNOPS_WITH_WGMMA) and launched only on compute capability 9.0.
template <class TOut>
void launch_wgmma_bf16(bool trans_a, bool trans_b, TOut* c, const uint16_t* a, const uint16_t* b,
                       const float* bias, int64_t m, int64_t n, int64_t k, float alpha, float beta);

// The sm_90a warp-specialized kernel (wgmma_tma.cu): a producer warpgroup's TMA copies into a
// 5-stage ring of 128-byte swizzled tiles under mbarriers, two consumer warpgroups on wgmma.
// K-major operands only (a not transposed, b transposed, k a multiple of 8, 16-byte aligned):
// returns false, launching nothing, for any other product (the caller takes another kernel).
template <class TOut>
bool launch_wgmma_tma_bf16(bool trans_a, bool trans_b, TOut* c, const uint16_t* a,
                           const uint16_t* b, const float* bias, int64_t m, int64_t n, int64_t k,
                           float alpha, float beta);

// The launch grid: row tiles in x (up to 2^31 - 1), column tiles in y (up to 65535).
inline dim3 output_grid(int64_t m, int64_t n) {
  return dim3(static_cast<unsigned>((m + kTileM - 1) / kTileM),
              static_cast<unsigned>((n + kTileN - 1) / kTileN));
}

// Calls launch(integral_constant trans_a, integral_constant trans_b) for the runtime pair.
template <class Launch>
void by_transpose(bool trans_a, bool trans_b, Launch launch) {
  using F = std::false_type;
  using T = std::true_type;
  if (!trans_a && !trans_b)
    launch(F{}, F{});
  else if (!trans_a && trans_b)
    launch(F{}, T{});
  else if (trans_a && !trans_b)
    launch(T{}, F{});
  else
    launch(T{}, T{});
}

}  // namespace nnops::detail::gemm
