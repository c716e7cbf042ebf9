// Embedding lookup and its gradient: F.embedding. indices are I32 of any shape S, weight is
// [V, D] (F32 or BF16), out is S + [D].
#pragma once

#include "nnops/tensor.hpp"

namespace nnops {

// out[s, :] = weight[indices[s], :]. An index outside [0, V) is an nnops::Error on the CPU
// (nothing written); on CUDA the kernel makes that row NaN and the next synchronising call
// throws naming embedding_forward (as cross_entropy_loss's targets).
void embedding_forward(const Tensor& indices, const Tensor& weight, Tensor& out);
// dweight[v, :] = the sum of dout[s, :] over every s with indices[s] == v, added in the order of
// s (the same bits on every run and thread count); rows never indexed are 0. dweight is
// overwritten.
void embedding_backward(const Tensor& indices, const Tensor& dout, Tensor& dweight);

}  // namespace nnops
