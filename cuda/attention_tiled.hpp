// The tiled CUDA attention kernels (cuda/attention_tiled.cu), beside attention.cu's reference
// kernels: a block per query row (simple) against blocks of rows streaming key tiles (tiled).
#pragma once

#include <initializer_list>

#include "cuda_backend.hpp"

namespace nnops::detail {

// Whether the tiled kernels take this shape: head size 32, 64 or 128 and every pointer 16-byte
// aligned (null pointers are ignored); the others run attention.cu's kernels.
bool tiled_attention_fits(const AttentionShape& s, std::initializer_list<const void*> pointers);
void tiled_attention_forward(float* out, float* lse, const float* q, const float* k,
                             const float* v, const AttentionShape& s);
// delta: dout_i . out_i per query row, as attention.cu computes it.
void tiled_attention_backward(float* dq, float* dk, float* dv, const float* q, const float* k,
                              const float* v, const float* lse, const float* dout,
                              const float* delta, const AttentionShape& s);

}  // namespace nnops::detail
