// Tensor utilities a training loop needs between ops: copies between tensors on any devices
// and argmax over the last dimension (class predictions).
#pragma once

#include <vector>

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
// y = x with its dimensions reordered: y.dim(i) == x.dim(dims[i]), like
// torch.permute(x, dims).contiguous() (e.g. [B, T, H, D] -> [B, H, T, D] with dims {0, 2, 1, 3}
// to split attention heads). Any dtype, rank up to 8; y must be x's dtype and device, of the
// permuted shape, and share no byte with x. The inverse permutation undoes it (the backward).
void permute(const Tensor& x, const std::vector<int>& dims, Tensor& y);

}  // namespace nnops
