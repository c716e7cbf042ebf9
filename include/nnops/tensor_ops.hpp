// Tensor utilities a training loop needs between ops: copies between tensors on any devices
// and argmax over the last dimension (class predictions).
#pragma once

#include "nnops/tensor.hpp"

namespace nnops {

// dst = src, element by element; same dtype and shape, any devices. dst may be src itself (a
// no-op) but must not partly overlap it.
void copy(Tensor& dst, const Tensor& src);

// dst = src converted between F32 and BF16 (round to nearest even, as torch.bfloat16; NaN
// becomes 0xFFFF) or copied when the dtypes match; same shape, any devices. dst must not
// overlap src unless it is src itself with the same dtype.
void cast(Tensor& dst, const Tensor& src);

// out (I32, x's shape without its last dimension) = the index of the largest entry of each row
// of x (F32, last dimension >= 1). Ties give the first index; NaN counts as the largest, as
// torch.argmax does.
void argmax(const Tensor& x, Tensor& out);

}  // namespace nnops
