// A downstream program: fits y = x * w_true^T with one linear layer, MSE and Adam, using only
// the installed nnops package. Exits non-zero unless the loss falls by 10x.
#include <cstdio>
#include <nnops/nnops.hpp>

int main() {
  using namespace nnops;
  const Device dev = default_device();
  const int64_t n = 256, in = 16, out = 4;
  Tensor x = Tensor::empty({n, in}, DType::F32, dev),
         w_true = Tensor::empty({out, in}, DType::F32, dev);
  fill_normal(x, 0.0f, 1.0f, 1);
  fill_normal(w_true, 0.0f, 1.0f, 2);
  Tensor target = Tensor::empty({n, out}, DType::F32, dev);
  linear_forward(x, w_true, nullptr, target);

  Tensor w = Tensor::zeros({out, in}, DType::F32, dev),
         y = Tensor::empty({n, out}, DType::F32, dev);
  Tensor dy = Tensor::empty({n, out}, DType::F32, dev),
         dw = Tensor::empty({out, in}, DType::F32, dev);
  Tensor loss = Tensor::empty({1}, DType::F32, dev);
  AdamState state;
  float first = 0.0f, last = 0.0f;
  for (int step = 0; step < 300; ++step) {
    linear_forward(x, w, nullptr, y);
    mse_loss(y, target, loss, &dy);
    linear_backward(x, w, dy, nullptr, dw, nullptr);
    adam_step(AdamOptions{0.05f}, w, dw, state);
    last = loss.item();
    if (step == 0) first = last;
  }
  std::printf("nnops %s on %s: loss %.5f -> %.5f\n", NNOPS_VERSION_STRING, to_string(dev), first,
              last);
  return last < 0.1f * first ? 0 : 1;
}
