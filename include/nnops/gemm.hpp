// Matrix products: matmul (BLAS sgemm semantics) and the fully connected layer of
// torch.nn.Linear (weight laid out [out, in]).
#pragma once

#include "nnops/tensor.hpp"

namespace nnops {

struct GemmOptions {
  bool trans_a = false, trans_b = false;
  float alpha = 1.0f, beta = 0.0f;
  // Opt-in TF32 tensor cores on CUDA (sm_80+): inputs rounded to 10 mantissa bits, products
  // summed in FP32, so |error| <= (2^-10 + k * 2^-24) * sum_p |a_ip b_pj| (about 1e-3 relative,
  // like torch.backends.cuda.matmul.allow_tf32). The CPU computes exact FP32 either way.
  bool allow_tf32 = false;
};

// c = alpha * op(a) * op(b) + beta * c for 2-D F32 tensors; op(a) is [M, K], op(b) is [K, N],
// c is [M, N]. With beta == 0, c is never read (it may hold NaN).
void matmul(const Tensor& a, const Tensor& b, Tensor& c, GemmOptions options = {});

// y[N, out] = x[N, in] * w[out, in]^T + bias[out]; bias may be null.
void linear_forward(const Tensor& x, const Tensor& w, const Tensor* bias, Tensor& y);

// dx[N, in] = dy * w; dw[out, in] = dy^T * x; db[out] = sum over rows of dy.
// dx and db may be null; every given output is overwritten (not accumulated).
void linear_backward(const Tensor& x, const Tensor& w, const Tensor& dy, Tensor* dx, Tensor& dw,
                     Tensor* db);

}  // namespace nnops
