// Per-element activation formulas and derivatives, shared by the CPU and CUDA backends so both
// compute the same function (NaN handling included). Formulas: PyTorch's, see SEMANTICS.md.
#pragma once

#include <math.h>

#include "nnops/activation.hpp"
#include "nnops/detail/hd.hpp"

namespace nnops::detail {

constexpr float kSqrt2OverPi = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kInvSqrt2 = 0.7071067811865476f;     // 1/sqrt(2)
constexpr float kInvSqrt2Pi = 0.3989422804014327f;   // 1/sqrt(2*pi)
constexpr float kGeluTanhCoeff = 0.044715f;

// 1/(1+exp(-x)) without overflow: exp is only taken of a non-positive number.
NNOPS_HD inline float sigmoid(float x) {
  if (x >= 0.0f) return 1.0f / (1.0f + expf(-x));
  const float e = expf(x);
  return e / (1.0f + e);
}

// `x < 0 ? 0 : x` keeps NaN (a comparison with NaN is false), as torch.relu does.
NNOPS_HD inline float relu(float x) {
  return x < 0.0f ? 0.0f : x;
}
// PyTorch's threshold_backward zeroes where the input is <= 0, so a NaN input passes dy.
NNOPS_HD inline float relu_grad(float x, float dy) {
  return x <= 0.0f ? 0.0f : dy;
}

NNOPS_HD inline float leaky_relu(float x, float s) {
  return x > 0.0f ? x : s * x;
}
NNOPS_HD inline float leaky_relu_grad(float x, float dy, float s) {
  return x > 0.0f ? dy : s * dy;
}

NNOPS_HD inline float gelu(float x) {
  return 0.5f * x * (1.0f + erff(x * kInvSqrt2));
}
NNOPS_HD inline float gelu_grad(float x, float dy) {
  const float cdf = 0.5f * (1.0f + erff(x * kInvSqrt2));
  const float pdf = expf(-0.5f * x * x) * kInvSqrt2Pi;
  return dy * (cdf + x * pdf);
}

NNOPS_HD inline float gelu_tanh(float x) {
  const float u = kSqrt2OverPi * (x + kGeluTanhCoeff * x * x * x);
  return 0.5f * x * (1.0f + tanhf(u));
}
NNOPS_HD inline float gelu_tanh_grad(float x, float dy) {
  const float u = kSqrt2OverPi * (x + kGeluTanhCoeff * x * x * x);
  const float t = tanhf(u);
  const float du = kSqrt2OverPi * (1.0f + 3.0f * kGeluTanhCoeff * x * x);
  return dy * (0.5f * (1.0f + t) + 0.5f * x * (1.0f - t * t) * du);
}

NNOPS_HD inline float silu(float x) {
  return x * sigmoid(x);
}
NNOPS_HD inline float silu_grad(float x, float dy) {
  const float s = sigmoid(x);
  return dy * s * (1.0f + x * (1.0f - s));
}

NNOPS_HD inline float sigmoid_grad(float x, float dy) {
  const float s = sigmoid(x);
  return dy * s * (1.0f - s);
}

NNOPS_HD inline float tanh_grad(float x, float dy) {
  const float t = tanhf(x);
  return dy * (1.0f - t * t);
}

NNOPS_HD inline float activation_apply(Activation a, float x, float s) {
  switch (a) {
    case Activation::ReLU:
      return relu(x);
    case Activation::LeakyReLU:
      return leaky_relu(x, s);
    case Activation::GELU:
      return gelu(x);
    case Activation::GELUTanh:
      return gelu_tanh(x);
    case Activation::SiLU:
      return silu(x);
    case Activation::Sigmoid:
      return sigmoid(x);
    case Activation::Tanh:
      return tanhf(x);
  }
  return x;
}

NNOPS_HD inline float activation_grad(Activation a, float x, float dy, float s) {
  switch (a) {
    case Activation::ReLU:
      return relu_grad(x, dy);
    case Activation::LeakyReLU:
      return leaky_relu_grad(x, dy, s);
    case Activation::GELU:
      return gelu_grad(x, dy);
    case Activation::GELUTanh:
      return gelu_tanh_grad(x, dy);
    case Activation::SiLU:
      return silu_grad(x, dy);
    case Activation::Sigmoid:
      return sigmoid_grad(x, dy);
    case Activation::Tanh:
      return tanh_grad(x, dy);
  }
  return dy;
}

}  // namespace nnops::detail
