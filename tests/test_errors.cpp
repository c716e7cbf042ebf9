// Bad input: every public function throws nnops::Error naming itself and the problem, and
// leaves its outputs exactly as they were.
#include <cstring>

#include "test_util.hpp"

namespace nnops::test {
namespace {

// Snapshot of an output's bytes, to prove a failing call did not write it.
template <class T>
struct Unchanged {
  const Tensor& t;
  std::vector<T> before;
  explicit Unchanged(const Tensor& tensor) : t(tensor), before(tensor.to_vector<T>()) {}
  bool holds() const {
    const auto after = t.template to_vector<T>();
    return after.size() == before.size() &&
           std::memcmp(after.data(), before.data(), after.size() * sizeof(T)) == 0;
  }
};

Tensor rnd(const Shape& s, uint32_t seed = 1) {
  return on(Device::CPU, random_floats(numel_of(s), seed), s);
}

TEST(Errors, Matmul) {
  Tensor a = rnd({64, 32}), b = rnd({31, 16}), c = rnd({64, 16});
  Unchanged<float> keep(c);
  EXPECT_TRUE(throws_error([&] { matmul(a, b, c); }, "nnops::matmul", "inner dimensions differ"));
  Tensor b2 = rnd({32, 16}), c_bad = rnd({64, 15});
  EXPECT_TRUE(throws_error([&] { matmul(a, b2, c_bad); }, "nnops::matmul",
                           "c is [64, 15] but must be [64, 16]"));
  Tensor i32 = Tensor::zeros({32, 16}, DType::I32);
  EXPECT_TRUE(throws_error([&] { matmul(a, i32, c); }, "nnops::matmul", "b has dtype I32"));
  Tensor v = rnd({32});
  EXPECT_TRUE(throws_error([&] { matmul(a, v, c); }, "nnops::matmul", "2 dimensions"));
  Tensor undefined;
  EXPECT_TRUE(throws_error([&] { matmul(a, undefined, c); }, "nnops::matmul", "undefined"));
  GemmOptions nan_alpha;
  nan_alpha.alpha = NAN;
  EXPECT_TRUE(throws_error([&] { matmul(a, b2, c, nan_alpha); }, "nnops::matmul", "alpha"));
  Tensor sq = rnd({16, 16});
  EXPECT_TRUE(throws_error([&] { matmul(sq, sq, sq); }, "nnops::matmul", "alias"));
  EXPECT_TRUE(keep.holds());
}

TEST(Errors, Linear) {
  Tensor x = rnd({4, 8}), w = rnd({5, 7}), y = rnd({4, 5}), bias = rnd({6});
  Unchanged<float> keep(y);
  EXPECT_TRUE(throws_error([&] { linear_forward(x, w, nullptr, y); }, "nnops::linear_forward",
                           "w must be [out, 8]"));
  Tensor w2 = rnd({5, 8});
  EXPECT_TRUE(throws_error([&] { linear_forward(x, w2, &bias, y); }, "nnops::linear_forward",
                           "bias is [6]"));
  EXPECT_TRUE(keep.holds());
  Tensor dy = rnd({4, 5}), dw = rnd({5, 8}), dx = rnd({4, 9});
  Unchanged<float> keep_dw(dw);
  EXPECT_TRUE(throws_error([&] { linear_backward(x, w2, dy, &dx, dw, nullptr); },
                           "nnops::linear_backward", "dx is [4, 9]"));
  Tensor dy_bad = rnd({3, 5});
  EXPECT_TRUE(throws_error([&] { linear_backward(x, w2, dy_bad, nullptr, dw, nullptr); },
                           "nnops::linear_backward", "dy"));
  EXPECT_TRUE(keep_dw.holds());
}

TEST(Errors, Activations) {
  Tensor x = rnd({7}), y = rnd({8}), dy = rnd({7});
  Unchanged<float> keep(y);
  EXPECT_TRUE(throws_error([&] { activation_forward(Activation::ReLU, x, y); },
                           "nnops::activation_forward", "shapes must match"));
  EXPECT_TRUE(throws_error([&] { activation_forward(static_cast<Activation>(99), x, x); },
                           "nnops::activation_forward", "not a valid"));
  EXPECT_TRUE(throws_error([&] { activation_forward(Activation::LeakyReLU, x, x, INFINITY); },
                           "nnops::activation_forward", "negative_slope"));
  EXPECT_TRUE(throws_error([&] { activation_backward(Activation::GELU, x, dy, y); },
                           "nnops::activation_backward", "dx"));
  EXPECT_TRUE(keep.holds());
  Tensor s = rnd({3, 4}), s_bad = rnd({4, 3});
  Unchanged<float> keep_s(s_bad);
  EXPECT_TRUE(throws_error([&] { softmax_forward(s, s_bad); }, "nnops::softmax_forward",
                           "shapes must match"));
  EXPECT_TRUE(
      throws_error([&] { log_softmax_backward(s, s, s_bad); }, "nnops::log_softmax_backward"));
  EXPECT_TRUE(throws_error([&] { softmax_backward(s, s, s); }, "nnops::softmax_backward", "alias"));
  EXPECT_TRUE(keep_s.holds());
}

TEST(Errors, Losses) {
  Tensor p = rnd({4, 3}), t = rnd({4, 3}), loss = rnd({1}), grad = rnd({4, 3});
  Unchanged<float> keep_loss(loss), keep_grad(grad);
  Tensor t_bad = rnd({3, 4}), loss_bad = rnd({2}), grad_bad = rnd({12});
  EXPECT_TRUE(throws_error([&] { mse_loss(p, t_bad, loss, &grad); }, "nnops::mse_loss", "target"));
  EXPECT_TRUE(throws_error([&] { mse_loss(p, t, loss_bad, &grad); }, "nnops::mse_loss",
                           "exactly 1 element"));
  EXPECT_TRUE(throws_error([&] { mse_loss(p, t, loss, &grad_bad); }, "nnops::mse_loss", "grad"));
  EXPECT_TRUE(throws_error([&] { mse_loss(p, t, loss, &grad, static_cast<Reduction>(7)); },
                           "nnops::mse_loss", "reduction"));
  Tensor y = Tensor::from_vector(std::vector<int32_t>{0, 1, 2, 3}, {4});
  EXPECT_TRUE(throws_error([&] { cross_entropy_loss(p, y, loss, &grad); },
                           "nnops::cross_entropy_loss", "targets[3] is 3"));
  Tensor yf = rnd({4});
  EXPECT_TRUE(throws_error([&] { cross_entropy_loss(p, yf, loss, &grad); },
                           "nnops::cross_entropy_loss", "targets has dtype F32"));
  Tensor y_ok = Tensor::from_vector(std::vector<int32_t>{0, 1, 2, -100}, {4});
  EXPECT_TRUE(throws_error([&] { cross_entropy_loss(p, y_ok, loss, &grad, Reduction::Mean, 1.5f); },
                           "nnops::cross_entropy_loss", "label_smoothing"));
  EXPECT_TRUE(
      throws_error([&] { cross_entropy_loss(p, y_ok, loss, &grad, Reduction::Mean, -0.1f); },
                   "nnops::cross_entropy_loss", "label_smoothing"));
  Tensor y_short = Tensor::from_vector(std::vector<int32_t>{0, 1}, {2});
  EXPECT_TRUE(throws_error([&] { cross_entropy_loss(p, y_short, loss, &grad); },
                           "nnops::cross_entropy_loss", "one target per row"));
  EXPECT_TRUE(
      throws_error([&] { kd_loss(p, t, 0.0f, loss, &grad); }, "nnops::kd_loss", "temperature"));
  EXPECT_TRUE(
      throws_error([&] { kd_loss(p, t, -1.0f, loss, &grad); }, "nnops::kd_loss", "temperature"));
  EXPECT_TRUE(throws_error([&] { kd_loss(p, t_bad, 1.0f, loss, &grad); }, "nnops::kd_loss",
                           "teacher_logits"));
  EXPECT_TRUE(throws_error([&] { mse_loss(p, t, loss, &p); }, "nnops::mse_loss", "alias"));
  EXPECT_TRUE(keep_loss.holds());
  EXPECT_TRUE(keep_grad.holds());
}

TEST(Errors, Adam) {
  Tensor p = rnd({5}), g = rnd({5}), g_bad = rnd({6});
  Unchanged<float> keep(p);
  AdamState st;
  EXPECT_TRUE(
      throws_error([&] { adam_step(AdamOptions{}, p, g_bad, st); }, "nnops::adam_step", "grad"));
  for (auto [opts, needle] : std::vector<std::pair<AdamOptions, std::string>>{
           {AdamOptions{-1e-3f}, "lr"},
           {AdamOptions{1e-3f, 1.0f}, "beta1"},
           {AdamOptions{1e-3f, 0.9f, -0.1f}, "beta2"},
           {AdamOptions{1e-3f, 0.9f, 0.999f, -1e-8f}, "eps"},
           {AdamOptions{1e-3f, 0.9f, 0.999f, 1e-8f, -0.1f}, "weight_decay"},
           {AdamOptions{NAN}, "lr"}}) {
    EXPECT_TRUE(throws_error([&] { adam_step(opts, p, g, st); }, "nnops::adam_step", needle));
  }
  Tensor mask_bad = Tensor::zeros({5}, DType::F32);
  EXPECT_TRUE(throws_error([&] { adam_step(AdamOptions{}, p, g, st, &mask_bad); },
                           "nnops::adam_step", "mask has dtype F32"));
  // A failing multi-tensor step writes no parameter, even those validated before the bad one.
  Tensor p2 = rnd({3});
  AdamState st2;
  Unchanged<float> keep2(p2);
  EXPECT_TRUE(throws_error(
      [&] {
        adam_step(AdamOptions{}, {&p2, &p}, {&g, &g}, {&st2, &st});
      },
      "nnops::adam_step", "param is [3]"));
  EXPECT_TRUE(throws_error(
      [&] {
        adam_step(AdamOptions{}, {&p}, {&g, &g}, {&st});
      },
      "nnops::adam_step", "one of each"));
  EXPECT_TRUE(throws_error(
      [&] {
        adam_step(AdamOptions{}, {&p, &p}, {&g, &g}, {&st, &st2});
      },
      "nnops::adam_step", "same tensor"));
  EXPECT_TRUE(throws_error([&] { adam_step(AdamOptions{}, {&p}, {&g}, {nullptr}); },
                           "nnops::adam_step", "null"));
  EXPECT_TRUE(throws_error([&] { adam_step(AdamOptions{}, {nullptr}, {&g}, {&st}); },
                           "nnops::adam_step", "param is null"));
  EXPECT_TRUE(keep.holds());
  EXPECT_TRUE(keep2.holds());
  EXPECT_EQ(st.step, 0);
  EXPECT_EQ(st2.step, 0);
  EXPECT_FALSE(st.exp_avg.defined()) << "no state is created by a failing call";
}

TEST(Errors, SgdAndClip) {
  Tensor p = rnd({5}), g = rnd({5});
  Unchanged<float> keep(p);
  SgdState st;
  EXPECT_TRUE(
      throws_error([&] { sgd_step(SgdOptions{-1.0f}, p, g, st); }, "nnops::sgd_step", "lr"));
  EXPECT_TRUE(throws_error(
      [&] {
        sgd_step(SgdOptions{0.1f, -0.9f}, p, g, st);
      },
      "nnops::sgd_step", "momentum"));
  EXPECT_TRUE(throws_error(
      [&] {
        sgd_step(SgdOptions{0.1f, 0.0f, 0.0f, 0.0f, true}, p, g, st);
      },
      "nnops::sgd_step", "nesterov"));
  EXPECT_TRUE(keep.holds());
  EXPECT_TRUE(
      throws_error([&] { clip_grad_norm({&p}, -1.0f); }, "nnops::clip_grad_norm", "max_norm"));
  EXPECT_TRUE(
      throws_error([&] { clip_grad_norm({nullptr}, 1.0f); }, "nnops::clip_grad_norm", "null"));
  EXPECT_TRUE(keep.holds());
}

TEST(Errors, Pruning) {
  Tensor w = rnd({4, 8});
  Tensor mask = Tensor::from_vector(std::vector<uint8_t>(32, 1), {4, 8});
  Unchanged<uint8_t> keep(mask);
  for (double a : {-0.1, 1.5, double(NAN)}) {
    EXPECT_TRUE(throws_error([&] { l1_unstructured(w, PruneAmount::fraction(a), mask); },
                             "nnops::l1_unstructured", "amount"));
  }
  EXPECT_TRUE(throws_error([&] { l1_unstructured(w, PruneAmount::count(33), mask); },
                           "nnops::l1_unstructured", "[0, 32]"));
  EXPECT_TRUE(throws_error([&] { l1_unstructured(w, PruneAmount::count(-1), mask); },
                           "nnops::l1_unstructured", "count"));
  Tensor mask_f = Tensor::zeros({4, 8});
  EXPECT_TRUE(throws_error([&] { l1_unstructured(w, PruneAmount::fraction(0.5), mask_f); },
                           "nnops::l1_unstructured", "mask has dtype F32"));
  Tensor mask_shape = Tensor::zeros({8, 4}, DType::U8);
  EXPECT_TRUE(throws_error([&] { l1_unstructured(w, PruneAmount::fraction(0.5), mask_shape); },
                           "nnops::l1_unstructured", "shapes must match"));
  EXPECT_TRUE(throws_error([&] { global_unstructured({&w}, PruneAmount::fraction(0.5), {}); },
                           "nnops::global_unstructured", "one mask per weight"));
  EXPECT_TRUE(throws_error([&] { ln_structured(w, PruneAmount::fraction(0.5), 3, 0, mask); },
                           "nnops::ln_structured", "p is 3"));
  EXPECT_TRUE(throws_error([&] { ln_structured(w, PruneAmount::fraction(0.5), 2, 2, mask); },
                           "nnops::ln_structured", "dim is 2"));
  EXPECT_TRUE(throws_error([&] { ln_structured(w, PruneAmount::count(5), 2, 0, mask); },
                           "nnops::ln_structured", "[0, 4]"));
  EXPECT_TRUE(
      throws_error([&] { nm_structured(w, 3, 2, mask); }, "nnops::nm_structured", "n is 3"));
  EXPECT_TRUE(
      throws_error([&] { nm_structured(w, 2, 0, mask); }, "nnops::nm_structured", "m is 0"));
  EXPECT_TRUE(throws_error([&] { nm_structured(w, 2, 3, mask); }, "nnops::nm_structured",
                           "not a multiple of m = 3"));
  EXPECT_TRUE(keep.holds());
  Unchanged<float> keep_w(w);
  EXPECT_TRUE(
      throws_error([&] { apply_mask(w, mask_shape); }, "nnops::apply_mask", "shapes must match"));
  EXPECT_TRUE(keep_w.holds());
  EXPECT_TRUE(throws_error([&] { sparsity(w); }, "nnops::sparsity", "mask has dtype F32"));
}

TEST(Errors, RandomFills) {
  Tensor t = rnd({9});
  Unchanged<float> keep(t);
  EXPECT_TRUE(
      throws_error([&] { fill_uniform(t, 1.0f, 0.0f, 1); }, "nnops::fill_uniform", "lo is 1"));
  EXPECT_TRUE(
      throws_error([&] { fill_uniform(t, -INFINITY, 0.0f, 1); }, "nnops::fill_uniform", "finite"));
  EXPECT_TRUE(throws_error([&] { fill_normal(t, 0.0f, -1.0f, 1); }, "nnops::fill_normal", "std"));
  Tensor i = Tensor::zeros({3}, DType::I32);
  EXPECT_TRUE(
      throws_error([&] { fill_normal(i, 0.0f, 1.0f, 1); }, "nnops::fill_normal", "dtype I32"));
  EXPECT_TRUE(keep.holds());
}

TEST(Errors, PartialOverlapsAreRefused) {
  // Views of one buffer: c starts one row into a.
  std::vector<float> buf = random_floats(129 * 128, 5);
  Tensor a = Tensor::wrap(buf.data(), {128, 128});
  Tensor c = Tensor::wrap(buf.data() + 128, {128, 128});
  Tensor eye = Tensor::zeros({128, 128});
  const auto before = buf;
  EXPECT_TRUE(throws_error([&] { matmul(a, eye, c); }, "nnops::matmul", "c must not alias a"));
  std::vector<float> pbuf = random_floats(10, 6);
  Tensor pred = Tensor::wrap(pbuf.data(), {8}), grad = Tensor::wrap(pbuf.data() + 2, {8});
  Tensor target = Tensor::zeros({8}), loss = Tensor::zeros({1});
  EXPECT_TRUE(throws_error([&] { mse_loss(pred, target, loss, &grad); }, "nnops::mse_loss",
                           "grad must not alias pred"));
  Tensor logits = Tensor::wrap(pbuf.data(), {2, 4}), lgrad = Tensor::wrap(pbuf.data() + 1, {2, 4});
  Tensor labels = Tensor::from_vector(std::vector<int32_t>{0, 1}, {2});
  EXPECT_TRUE(throws_error([&] { cross_entropy_loss(logits, labels, loss, &lgrad); },
                           "nnops::cross_entropy_loss", "grad must not alias logits"));
  Tensor loss_in_pred = Tensor::wrap(pbuf.data() + 3, {1});
  EXPECT_TRUE(throws_error([&] { mse_loss(pred, target, loss_in_pred, nullptr); },
                           "nnops::mse_loss", "loss must not alias pred"));
  // Element-wise ops allow exact in-place but not a shifted overlap.
  Tensor x = Tensor::wrap(pbuf.data(), {8}), y = Tensor::wrap(pbuf.data() + 1, {8});
  EXPECT_TRUE(throws_error([&] { activation_forward(Activation::ReLU, x, y); },
                           "nnops::activation_forward", "partly overlaps"));
  EXPECT_TRUE(
      throws_error([&] { add_scaled(y, x, 1.0f); }, "nnops::add_scaled", "partly overlaps"));
  EXPECT_EQ(buf, before);
  EXPECT_EQ(pbuf, random_floats(10, 6));
}

TEST(Errors, MessagesNameTheFunctionCalled) {
  Tensor w = rnd({4, 8}), w2 = rnd({3});
  Tensor mask = Tensor::zeros({4, 8}, DType::U8), mask2 = Tensor::zeros({3}, DType::U8);
  EXPECT_TRUE(throws_error(
      [&] {
        global_unstructured({&w, &w2}, PruneAmount::fraction(2.0), {&mask, &mask2});
      },
      "nnops::global_unstructured", "amount"));
  EXPECT_TRUE(throws_error([&] { global_unstructured({&w}, PruneAmount::fraction(2.0), {&mask}); },
                           "nnops::global_unstructured", "amount"));
  EXPECT_TRUE(throws_error([&] { l1_unstructured(w, PruneAmount::fraction(2.0), mask); },
                           "nnops::l1_unstructured", "amount"));
  Tensor t = rnd({9});
  Unchanged<float> keep(t);
  EXPECT_TRUE(throws_error([&] { fill_uniform(t, -2e38f, 2e38f, 1); }, "nnops::fill_uniform",
                           "float maximum"));
  EXPECT_TRUE(keep.holds());
  fill_uniform(t, -1e38f, 1e38f, 1);  // a range of 2e38 still fits a float
  for (float v : t.to_vector<float>()) EXPECT_TRUE(v >= -1e38f && v < 1e38f);
}

TEST(Errors, MixedDevicesAreRejected) {
  if (!cuda_available()) GTEST_SKIP() << "needs a usable CUDA device to hold the second tensor";
  Tensor a = rnd({4, 4});
  Tensor b = rnd({4, 4}).to(Device::CUDA);
  Tensor c = rnd({4, 4});
  Unchanged<float> keep(c);
  EXPECT_TRUE(
      throws_error([&] { matmul(a, b, c); }, "nnops::matmul", "b is on CUDA but a is on CPU"));
  EXPECT_TRUE(keep.holds());
}

}  // namespace
}  // namespace nnops::test
