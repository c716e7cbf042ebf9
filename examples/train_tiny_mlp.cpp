// A small MLP (32 -> 64 -> 8, ReLU) fitted to a fixed random teacher with MSE and Adam on the
// default device; prints the loss as it falls.
#include <cstdio>
#include <nnops/nnops.hpp>

int main() {
  using namespace nnops;
  const Device dev = default_device();
  const int64_t batch = 128, in = 32, hidden = 64, out = 8;
  auto make = [&](Shape s) { return Tensor::empty(s, DType::F32, dev); };
  Tensor x = make({batch, in}), teacher_w = make({out, in}), target = make({batch, out});
  fill_normal(x, 0.0f, 1.0f, 1);
  fill_normal(teacher_w, 0.0f, 0.3f, 2);
  linear_forward(x, teacher_w, nullptr, target);

  Tensor w1 = make({hidden, in}), b1 = make({hidden}), w2 = make({out, hidden}), b2 = make({out});
  fill_uniform(w1, -0.177f, 0.177f, 3);  // +-1/sqrt(fan_in), as torch.nn.Linear
  fill_uniform(b1, -0.177f, 0.177f, 4);
  fill_uniform(w2, -0.125f, 0.125f, 5);
  fill_uniform(b2, -0.125f, 0.125f, 6);
  Tensor h = make({batch, hidden}), a = make({batch, hidden}), y = make({batch, out});
  Tensor dy = make({batch, out}), da = make({batch, hidden}), dh = make({batch, hidden});
  Tensor dw1 = make({hidden, in}), db1 = make({hidden}), dw2 = make({out, hidden}),
         db2 = make({out});
  Tensor loss = make({1});
  AdamState s1, s2, s3, s4;
  const AdamOptions adam{1e-2f};
  for (int step = 0; step <= 200; ++step) {
    linear_forward(x, w1, &b1, h);
    activation_forward(Activation::ReLU, h, a);
    linear_forward(a, w2, &b2, y);
    mse_loss(y, target, loss, &dy);
    linear_backward(a, w2, dy, &da, dw2, &db2);
    activation_backward(Activation::ReLU, h, da, dh);
    linear_backward(x, w1, dh, nullptr, dw1, &db1);
    adam_step(adam, {&w1, &b1, &w2, &b2}, {&dw1, &db1, &dw2, &db2}, {&s1, &s2, &s3, &s4});
    if (step % 25 == 0) std::printf("step %3d  loss %.6f\n", step, loss.item());
  }
  std::printf("trained on %s\n", to_string(dev));
  return 0;
}
