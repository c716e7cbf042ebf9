// The GEMM's code-path choices shared between its files (see cpu/gemm/isa.cpp).
#pragma once

namespace nnops::detail {

// Whether BF16 products on AVX512_BF16 take the VDPBF16PS pair kernel (measured once, unless
// NNOPS_CPU_BF16 or set_cpu_bf16_pairs decided it).
bool bf16_pairs_chosen();

}  // namespace nnops::detail
