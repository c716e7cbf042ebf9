// LayerNorm and RMSNorm over the last dimension, forward and backward: F.layer_norm and
// F.rms_norm. x is [..., D]; weight and bias are [D] and optional (nullptr: 1 and 0). mean and
// rstd are F32 of shape x.shape()[:-1] ([1] when x is 1-D), saved for the backward pass
// (nullptr: not written). Every other tensor is F32 or BF16, computed in FP32; y may be x.
#pragma once

#include "nnops/tensor.hpp"

namespace nnops {

// y = (x - mean) * rstd * weight + bias, rstd = 1 / sqrt(var + eps), var biased, from centred
// values (a row of 1e4 + N(0, 1) keeps its variance).
void layer_norm_forward(const Tensor& x, const Tensor* weight, const Tensor* bias, float eps,
                        Tensor& y, Tensor* mean, Tensor* rstd);
// From the forward's mean and rstd. Any of dx, dweight, dbias may be null; each given one is
// overwritten.
void layer_norm_backward(const Tensor& x, const Tensor* weight, const Tensor& mean,
                         const Tensor& rstd, const Tensor& dy, Tensor* dx, Tensor* dweight,
                         Tensor* dbias);

// y = x * rstd * weight, rstd = 1 / sqrt(mean(x^2) + eps).
void rms_norm_forward(const Tensor& x, const Tensor* weight, float eps, Tensor& y, Tensor* rstd);
void rms_norm_backward(const Tensor& x, const Tensor* weight, const Tensor& rstd, const Tensor& dy,
                       Tensor* dx, Tensor* dweight);

}  // namespace nnops
