// Validation and dispatch for the embedding lookup and its gradient (F.embedding).
#include "nnops/embedding.hpp"

#include "backend.hpp"
#include "check.hpp"
#include "widen.hpp"

namespace nnops {

namespace {

// On the CPU the indices are read here, before anything is written; on CUDA the kernels check
// them on the device (the error flag, like cross_entropy_loss's targets).
void check_indices(detail::ArgCheck& check, const Tensor& indices, int64_t vocab) {
  if (check.device() != Device::CPU) return;
  const int32_t* idx = indices.data<int32_t>();
  for (int64_t i = 0; i < indices.numel(); ++i) {
    if (idx[i] < 0 || idx[i] >= vocab) {
      check.fail_with("indices[", i, "] (flat) is ", idx[i], " but must be in [0, ", vocab, ")");
    }
  }
}

// indices.shape() + [dim]
Shape rows_of(const Tensor& indices, int64_t dim) {
  Shape s = indices.shape();
  s.push_back(dim);
  return s;
}

}  // namespace

void embedding_forward(const Tensor& indices, const Tensor& weight, Tensor& out) {
  // Validation allocates too (names, shapes): running out of memory anywhere is an Error.
  detail::guarded("nnops::embedding_forward", [&] {
    detail::ArgCheck check("nnops::embedding_forward");
    check.tensor("indices", indices, DType::I32)
        .floating("weight", weight)
        .ndim("weight", weight, 2);
    check.floating_output("out", out).shape_is("out", out, rows_of(indices, weight.dim(1)));
    check.no_alias("out", &out, "weight", weight).no_alias("out", &out, "indices", indices);
    const int64_t vocab = weight.dim(0), dim = weight.dim(1);
    check_indices(check, indices, vocab);
    if (out.numel() == 0) return;
    check.run([&](detail::Backend& be) {
      detail::F32Stand f32;
      const Tensor& w32 = f32.in(weight);
      Tensor& out32 = f32.out(out);
      be.embedding_forward(out32.data<float>(), indices.data<int32_t>(), w32.data<float>(),
                           indices.numel(), vocab, dim);
      f32.finish();
    });
  });
}

void embedding_backward(const Tensor& indices, const Tensor& dout, Tensor& dweight) {
  // Validation allocates too (names, shapes): running out of memory anywhere is an Error.
  detail::guarded("nnops::embedding_backward", [&] {
    detail::ArgCheck check("nnops::embedding_backward");
    check.tensor("indices", indices, DType::I32).floating("dout", dout);
    check.floating_output("dweight", dweight).ndim("dweight", dweight, 2);
    const int64_t vocab = dweight.dim(0), dim = dweight.dim(1);
    check.shape_is("dout", dout, rows_of(indices, dim));
    check.no_alias("dweight", &dweight, "dout", dout)
        .no_alias("dweight", &dweight, "indices", indices);
    check_indices(check, indices, vocab);
    if (dweight.numel() == 0) return;
    check.run([&](detail::Backend& be) {
      detail::F32Stand f32;
      const Tensor& dout32 = f32.in(dout);
      Tensor& dw32 = f32.out(dweight);
      be.embedding_backward(dw32.data<float>(), indices.numel() ? indices.data<int32_t>() : nullptr,
                            dout32.numel() ? dout32.data<float>() : nullptr, indices.numel(), vocab,
                            dim);
      f32.finish();
    });
  });
}

}  // namespace nnops
