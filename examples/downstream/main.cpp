// A downstream program: fits y = x * w_true^T with one linear layer, MSE and Adam on mini-batch
// views of the data, then prunes half the weights, using only the installed nnops package.
// Exits non-zero unless the loss falls by 10x.
#include <cstdio>
#include <nnops/nnops.hpp>
#include <vector>

int main() {
  using namespace nnops;
  const Device dev = default_device();
  const int64_t n = 256, in = 16, out = 4, batch = 64;
  Tensor x = Tensor::empty({n, in}, DType::F32, dev),
         w_true = Tensor::empty({out, in}, DType::F32, dev);
  fill_normal(x, 0.0f, 1.0f, 1);
  fill_normal(w_true, 0.0f, 1.0f, 2);
  Tensor target = Tensor::empty({n, out}, DType::F32, dev);
  linear_forward(x, w_true, nullptr, target);

  Tensor w = Tensor::zeros({out, in}, DType::F32, dev),
         y = Tensor::empty({batch, out}, DType::F32, dev);
  Tensor dy = Tensor::empty({batch, out}, DType::F32, dev),
         dw = Tensor::empty({out, in}, DType::F32, dev);
  Tensor loss = Tensor::empty({1}, DType::F32, dev),
         epoch_loss = Tensor::zeros({1}, DType::F32, dev);
  AdamState state;
  float first = 0.0f, last = 0.0f;
  for (int epoch = 0; epoch < 75; ++epoch) {
    fill(epoch_loss, 0.0f);
    for (int64_t start = 0; start < n; start += batch) {
      const Tensor xb = x.narrow(start, batch), tb = target.narrow(start, batch);
      linear_forward(xb, w, nullptr, y);
      mse_loss(y, tb, loss, &dy);
      add_scaled(epoch_loss, loss, 1.0f / (n / batch));  // summed on the device: no waiting
      linear_backward(xb, w, dy, nullptr, dw, nullptr);
      adam_step(AdamOptions{0.05f}, w, dw, state);
    }
    last = epoch_loss.item();  // one read per epoch
    if (epoch == 0) first = last;
  }
  Tensor mask = Tensor::from_vector(std::vector<uint8_t>(out * in, 1), {out, in}, dev);
  l1_unstructured(w, PruneAmount::fraction(0.5), mask);
  apply_mask(w, mask);
  Tensor w_host = Tensor::empty({out, in});
  copy(w_host, w);
  std::printf("nnops %s on %s: loss %.5f -> %.5f, %lld of %lld weights kept, w[0] = %.4f\n",
              NNOPS_VERSION_STRING, to_string(dev), first, last,
              static_cast<long long>(count_nonzero(mask)), static_cast<long long>(w.numel()),
              w_host.data<float>()[0]);
  return last < 0.1f * first && count_nonzero(mask) == out * in / 2 ? 0 : 1;
}
