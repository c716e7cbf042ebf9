// The warpgroup MMAs of the sm_90a GEMM kernels (wgmma.cu, wgmma_tma.cu): BF16 operands from
// shared-memory descriptors, FP32 sums in registers.
#pragma once

#include <cstdint>

namespace nnops::detail::gemm {

// Keeps the compiler from moving accumulator reads or writes across the asynchronous MMAs.
template <int kRegs>
__device__ inline void pin(float (&d)[kRegs]) {
#pragma unroll
  for (int i = 0; i < kRegs; ++i) asm volatile("" : "+f"(d[i])::"memory");
}

// The accumulator operands of an instruction, 64 at a time.
#define NNOPS_WGMMA_REGS_0 \
  "%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14, %15, " \
  "%16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27, %28, %29, %30, %31, " \
  "%32, %33, %34, %35, %36, %37, %38, %39, %40, %41, %42, %43, %44, %45, %46, %47, " \
  "%48, %49, %50, %51, %52, %53, %54, %55, %56, %57, %58, %59, %60, %61, %62, %63"
#define NNOPS_WGMMA_REGS_64 \
  "%64, %65, %66, %67, %68, %69, %70, %71, %72, %73, %74, %75, %76, %77, %78, %79, " \
  "%80, %81, %82, %83, %84, %85, %86, %87, %88, %89, %90, %91, %92, %93, %94, %95, " \
  "%96, %97, %98, %99, %100, %101, %102, %103, %104, %105, %106, %107, %108, %109, %110, %111, " \
  "%112, %113, %114, %115, %116, %117, %118, %119, %120, %121, %122, %123, %124, %125, %126, %127"
#define NNOPS_WGMMA_OUTS(b) \
  "+f"(d[b + 0]), "+f"(d[b + 1]), "+f"(d[b + 2]), "+f"(d[b + 3]), "+f"(d[b + 4]), "+f"(d[b + 5]), "+f"(d[b + 6]), "+f"(d[b + 7]), \
  "+f"(d[b + 8]), "+f"(d[b + 9]), "+f"(d[b + 10]), "+f"(d[b + 11]), "+f"(d[b + 12]), "+f"(d[b + 13]), "+f"(d[b + 14]), "+f"(d[b + 15]), \
  "+f"(d[b + 16]), "+f"(d[b + 17]), "+f"(d[b + 18]), "+f"(d[b + 19]), "+f"(d[b + 20]), "+f"(d[b + 21]), "+f"(d[b + 22]), "+f"(d[b + 23]), \
  "+f"(d[b + 24]), "+f"(d[b + 25]), "+f"(d[b + 26]), "+f"(d[b + 27]), "+f"(d[b + 28]), "+f"(d[b + 29]), "+f"(d[b + 30]), "+f"(d[b + 31]), \
  "+f"(d[b + 32]), "+f"(d[b + 33]), "+f"(d[b + 34]), "+f"(d[b + 35]), "+f"(d[b + 36]), "+f"(d[b + 37]), "+f"(d[b + 38]), "+f"(d[b + 39]), \
  "+f"(d[b + 40]), "+f"(d[b + 41]), "+f"(d[b + 42]), "+f"(d[b + 43]), "+f"(d[b + 44]), "+f"(d[b + 45]), "+f"(d[b + 46]), "+f"(d[b + 47]), \
  "+f"(d[b + 48]), "+f"(d[b + 49]), "+f"(d[b + 50]), "+f"(d[b + 51]), "+f"(d[b + 52]), "+f"(d[b + 53]), "+f"(d[b + 54]), "+f"(d[b + 55]), \
  "+f"(d[b + 56]), "+f"(d[b + 57]), "+f"(d[b + 58]), "+f"(d[b + 59]), "+f"(d[b + 60]), "+f"(d[b + 61]), "+f"(d[b + 62]), "+f"(d[b + 63])

// d += a_tile (64 x 16, K-major) * b_tile (16 x 128 or 256, K-major), issued for the warpgroup;
// accumulate 0 overwrites d instead.
__device__ inline void wgmma_m64n128k16(float (&d)[64], uint64_t desc_a, uint64_t desc_b,
                                        int accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %66, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n128k16.f32.bf16.bf16 {" NNOPS_WGMMA_REGS_0
      "}, %64, %65, p, 1, 1, 0, 0;\n"
      "}\n"
      : NNOPS_WGMMA_OUTS(0)
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
#else
  (void)d, (void)desc_a, (void)desc_b, (void)accumulate;
  __trap();  // built for sm_90a only; never launched elsewhere
#endif
}

__device__ inline void wgmma_m64n256k16(float (&d)[128], uint64_t desc_a, uint64_t desc_b,
                                        int accumulate) {
#if defined(__CUDA_ARCH_FEAT_SM90_ALL)
  asm volatile(
      "{\n"
      ".reg .pred p;\n"
      "setp.ne.b32 p, %130, 0;\n"
      "wgmma.mma_async.sync.aligned.m64n256k16.f32.bf16.bf16 {" NNOPS_WGMMA_REGS_0
      ", " NNOPS_WGMMA_REGS_64 "}, %128, %129, p, 1, 1, 0, 0;\n"
      "}\n"
      : NNOPS_WGMMA_OUTS(0), NNOPS_WGMMA_OUTS(64)
      : "l"(desc_a), "l"(desc_b), "r"(accumulate));
#else
  (void)d, (void)desc_a, (void)desc_b, (void)accumulate;
  __trap();  // built for sm_90a only; never launched elsewhere
#endif
}

#undef NNOPS_WGMMA_REGS_0
#undef NNOPS_WGMMA_REGS_64
#undef NNOPS_WGMMA_OUTS

}  // namespace nnops::detail::gemm
