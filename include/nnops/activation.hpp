// Element-wise activations and softmax / log_softmax over the last dimension, with their
// backward passes; formulas are PyTorch's (see SEMANTICS in the docs).
#pragma once

#include "nnops/tensor.hpp"

namespace nnops {

enum class Activation { ReLU, LeakyReLU, GELU, GELUTanh, SiLU, Sigmoid, Tanh };

const char* to_string(Activation activation);

// y = f(x); y may alias x. negative_slope is used by LeakyReLU only. x, y (and dy, dx below)
// are each F32 or BF16; the formula runs in FP32 and a BF16 output is rounded to nearest even.
void activation_forward(Activation activation, const Tensor& x, Tensor& y,
                        float negative_slope = 0.01f);
// dx = f'(x) * dy; dx may alias dy.
void activation_backward(Activation activation, const Tensor& x, const Tensor& dy, Tensor& dx,
                         float negative_slope = 0.01f);

// Gated activations (SwiGLU with Activation::SiLU, GeGLU with GELU): x is [..., 2H], y is
// [..., H], y = act(x[..., :H]) * x[..., H:]. The backward writes dx [..., 2H]:
// dx[..., :H] = dy * x[..., H:] * act'(x[..., :H]), dx[..., H:] = dy * act(x[..., :H]).
// Each tensor F32 or BF16; outputs share no byte with the inputs.
void gated_activation_forward(Activation activation, const Tensor& x, Tensor& y);
void gated_activation_backward(Activation activation, const Tensor& x, const Tensor& dy,
                               Tensor& dx);

// Over the last dimension of x (any rank >= 1). y may alias x; dx may alias dy.
void softmax_forward(const Tensor& x, Tensor& y);
void softmax_backward(const Tensor& y, const Tensor& dy, Tensor& dx);  // y: the forward output
void log_softmax_forward(const Tensor& x, Tensor& y);
void log_softmax_backward(const Tensor& y, const Tensor& dy, Tensor& dx);

}  // namespace nnops
