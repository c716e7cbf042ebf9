// Hostile input: NaN and infinities propagate as in PyTorch, zero-size tensors are fine
// everywhere, element counts beyond 32 bits index correctly, and a failed allocation is an
// nnops::Error after which the library keeps working.
#include "test_util.hpp"

namespace nnops::test {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
constexpr float kInf = std::numeric_limits<float>::infinity();

TEST(Hostile, NaNPropagatesThroughActivations) {
  for (Activation a :
       {Activation::ReLU, Activation::LeakyReLU, Activation::GELU, Activation::GELUTanh,
        Activation::SiLU, Activation::Sigmoid, Activation::Tanh}) {
    Tensor x = on(Device::CPU, {kNaN, 1.0f}, {2}), y = poisoned({2}, Device::CPU);
    activation_forward(a, x, y);
    EXPECT_TRUE(std::isnan(y.to_vector<float>()[0])) << to_string(a) << "(NaN) must be NaN";
  }
}

TEST(Hostile, SoftmaxOfARowWithInfinity) {
  // PyTorch: softmax([inf, 1]) = [nan, nan] (inf - inf); a row with -inf entries is fine.
  Tensor x = on(Device::CPU, {kInf, 1.0f, -kInf, 0.0f}, {2, 2}), y = poisoned({2, 2}, Device::CPU);
  softmax_forward(x, y);
  const auto v = y.to_vector<float>();
  EXPECT_TRUE(std::isnan(v[0]) && std::isnan(v[1]));
  EXPECT_EQ(v[2], 0.0f);
  EXPECT_EQ(v[3], 1.0f);
  log_softmax_forward(x, y);
  EXPECT_EQ(y.to_vector<float>()[2], -kInf);
}

TEST(Hostile, LossesWithNaNInputs) {
  Tensor loss = poisoned({1}, Device::CPU), grad = poisoned({2, 3}, Device::CPU);
  mse_loss(on(Device::CPU, {kNaN, 0, 0, 0, 0, 0}, {2, 3}), Tensor::zeros({2, 3}), loss, &grad);
  EXPECT_TRUE(std::isnan(loss.item()));
  cross_entropy_loss(on(Device::CPU, {kNaN, 0, 0, 1, 2, 3}, {2, 3}),
                     Tensor::from_vector(std::vector<int32_t>{0, 2}, {2}), loss, &grad);
  EXPECT_TRUE(std::isnan(loss.item()));
  // A NaN row that is ignored does not poison the loss.
  cross_entropy_loss(on(Device::CPU, {kNaN, 0, 0, 1, 2, 3}, {2, 3}),
                     Tensor::from_vector(std::vector<int32_t>{-100, 2}, {2}), loss, &grad);
  EXPECT_FALSE(std::isnan(loss.item()));
}

TEST(Hostile, ClipGradNormWithNaNPropagatesLikePyTorch) {
  Tensor g = on(Device::CPU, {kNaN, 1.0f}, {2});
  EXPECT_TRUE(std::isnan(clip_grad_norm({&g}, 1.0f)));
  EXPECT_TRUE(std::isnan(g.to_vector<float>()[1])) << "PyTorch multiplies by the NaN coefficient";
}

TEST(Hostile, ZeroSizeTensorsEverywhere) {
  Tensor e = Tensor::empty({0, 4}), e2 = Tensor::empty({0, 4}), w = Tensor::empty({3, 4});
  fill_uniform(w, -1, 1, 1);
  Tensor y = Tensor::empty({0, 3}), c = Tensor::empty({0, 0});
  matmul(e, Tensor::empty({4, 0}), c);
  linear_forward(e, w, nullptr, y);
  Tensor dw = poisoned({3, 4}, Device::CPU), db = poisoned({3}, Device::CPU);
  linear_backward(e, w, y, nullptr, dw, &db);
  for (float v : dw.to_vector<float>()) EXPECT_EQ(v, 0.0f) << "an empty batch has zero gradient";
  for (float v : db.to_vector<float>()) EXPECT_EQ(v, 0.0f);
  Tensor c2 = poisoned({2, 3}, Device::CPU);
  matmul(Tensor::empty({2, 0}), Tensor::empty({0, 3}), c2);  // k = 0: c = 0
  for (float v : c2.to_vector<float>()) EXPECT_EQ(v, 0.0f);
  activation_forward(Activation::GELU, e, e2);
  activation_backward(Activation::GELU, e, e, e2);
  softmax_forward(e, e2);
  softmax_backward(e, e, e2);
  Tensor loss = poisoned({1}, Device::CPU);
  mse_loss(e, e2, loss, nullptr, Reduction::Sum);
  EXPECT_EQ(loss.item(), 0.0f);
  mse_loss(e, e2, loss, nullptr, Reduction::Mean);
  EXPECT_TRUE(std::isnan(loss.item())) << "PyTorch: mean of nothing is NaN";
  AdamState st;
  Tensor p = Tensor::empty({0}), g = Tensor::empty({0});
  adam_step(AdamOptions{}, p, g, st);
  EXPECT_EQ(st.step, 1);
  Tensor mask = Tensor::empty({0}, DType::U8);
  l1_unstructured(p, PruneAmount::fraction(0.5), mask);
  EXPECT_EQ(sparsity(mask), 0.0);
  fill_normal(p, 0, 1, 1);
  EXPECT_EQ(clip_grad_norm({&g}, 1.0f), 0.0);
}

TEST(Hostile, ElementCountsBeyond32Bits) {
  // 2^31 + 9 bytes: every index past 2^31 must be reached (int32 arithmetic would wrap).
  const int64_t n = (int64_t(1) << 31) + 9;
  Tensor mask = Tensor::zeros({n}, DType::U8);
  uint8_t* m = mask.data<uint8_t>();
  m[0] = 1;
  m[n - 1] = 1;
  m[(int64_t(1) << 31) + 3] = 1;
  EXPECT_DOUBLE_EQ(sparsity(mask), 1.0 - 3.0 / static_cast<double>(n));
  EXPECT_EQ(mask.numel(), n);
  EXPECT_EQ(mask.nbytes(), static_cast<size_t>(n));
}

TEST(Hostile, FailedAllocationIsAnErrorAndTheLibraryGoesOn) {
  try {
    Tensor huge = Tensor::empty({int64_t(1) << 44});  // 64 TiB
    FAIL() << "allocating 64 TiB succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("70368744177664 bytes"), std::string::npos) << e.what();
  }
  Tensor ok = Tensor::zeros({1023});
  fill_uniform(ok, 0, 1, 3);
  EXPECT_EQ(ok.numel(), 1023);
}

TEST(Hostile, DeviceAllocationLargerThanTheDevice) {
  if (!cuda_available()) GTEST_SKIP() << "no usable CUDA device";
  try {
    Tensor huge = Tensor::empty({int64_t(1) << 42}, DType::F32, Device::CUDA);  // 16 TiB
    FAIL() << "allocating 16 TiB on the device succeeded";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("17592186044416 bytes"), std::string::npos) << e.what();
  }
  Tensor ok = Tensor::zeros({1023}, DType::F32, Device::CUDA);  // the device is still usable
  EXPECT_EQ(ok.to_vector<float>(), std::vector<float>(1023, 0.0f));
}

TEST(Hostile, AliasingRules) {
  // Allowed: element-wise outputs over their inputs. Refused: GEMM outputs over inputs.
  Tensor a = on(Device::CPU, random_floats(16, 1), {4, 4});
  const auto before = a.to_vector<float>();
  EXPECT_TRUE(throws_error([&] { matmul(a, a, a); }, "nnops::matmul", "alias"));
  EXPECT_EQ(a.to_vector<float>(), before);
  Tensor dy = on(Device::CPU, random_floats(16, 2), {4, 4});
  EXPECT_TRUE(throws_error([&] { linear_backward(a, a, dy, &dy, a, nullptr); },
                           "nnops::linear_backward", "alias"));
  add_scaled(a, a, 1.0f, 0.0f);  // y aliasing x is allowed
  EXPECT_EQ(a.to_vector<float>(), before);
}

}  // namespace
}  // namespace nnops::test
