// F32 stand-ins for the BF16 tensors of one call, for ops whose backend entries compute on F32
// arrays (row-wise softmax, the losses, pruning): a BF16 input is widened (exactly) into a
// temporary, the op runs in FP32, and each BF16 output is rounded once from its F32 result. All-F32
// calls pass straight through. Used inside ArgCheck::run, after every check has passed.
#pragma once

#include <deque>
#include <utility>
#include <vector>

#include "nnops/tensor.hpp"
#include "nnops/tensor_ops.hpp"

namespace nnops::detail {

class F32Stand {
 public:
  const Tensor& in(const Tensor& t) {
    if (t.dtype() != DType::BF16) return t;
    Tensor& wide = temps_.emplace_back(Tensor::empty(t.shape(), DType::F32, t.device()));
    cast(wide, t);
    return wide;
  }
  // An output (null passes through). The F32 result is written back by finish().
  Tensor* out(Tensor* t) {
    if (t == nullptr || t->dtype() != DType::BF16) return t;
    Tensor& wide = temps_.emplace_back(Tensor::empty(t->shape(), DType::F32, t->device()));
    outputs_.emplace_back(t, &wide);
    return &wide;
  }
  Tensor& out(Tensor& t) { return *out(&t); }
  // An output whose old values the op reads (updated in place).
  Tensor& in_out(Tensor& t) {
    Tensor& wide = out(t);
    if (&wide != &t) cast(wide, t);
    return wide;
  }

  void finish() {
    for (auto& [narrow, wide] : outputs_) cast(*narrow, *wide);
  }

 private:
  std::deque<Tensor> temps_;  // a deque: references to its elements stay valid as it grows
  std::vector<std::pair<Tensor*, Tensor*>> outputs_;
};

}  // namespace nnops::detail
