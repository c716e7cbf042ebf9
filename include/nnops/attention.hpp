// Scaled dot-product attention, forward and backward, with grouped-query heads:
// F.scaled_dot_product_attention(q, k, v, is_causal=causal, scale=scale, enable_gqa=Hq != Hkv).
// q is [B, Hq, Tq, D]; k and v are [B, Hkv, Tk, D] with Hq a multiple of Hkv (query head h uses
// key/value head h / (Hq / Hkv)); out is [B, Hq, Tq, D]; logsumexp is F32 [B, Hq, Tq]. q, k, v,
// out and the gradients are F32 or BF16 each, computed in FP32. Neither pass stores a Tq x Tk
// matrix (FlashAttention-2: an online softmax forward, a backward that recomputes the
// probabilities from logsumexp).
#pragma once

#include "nnops/tensor.hpp"

namespace nnops {

struct AttentionOptions {
  bool causal = false;  // query i sees keys j <= i (top-left aligned, also when Tq != Tk)
  float scale = 0.0f;   // 0: 1 / sqrt(D)
};

// logsumexp[b, h, i] = log sum_j exp(scale * q_i . k_j) over the keys query i sees (nullptr: not
// written; the backward pass needs it). Outputs may share no byte with the inputs.
void attention_forward(const Tensor& q, const Tensor& k, const Tensor& v, Tensor& out,
                       Tensor* logsumexp, const AttentionOptions& options = {});
// dq, dk, dv (the shapes of q, k, v) from the forward's out and logsumexp; dk and dv sum over the
// query heads that share a key head.
void attention_backward(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& out,
                        const Tensor& logsumexp, const Tensor& dout, Tensor& dq, Tensor& dk,
                        Tensor& dv, const AttentionOptions& options = {});

}  // namespace nnops
