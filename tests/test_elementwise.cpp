// add_scaled and fill against double-precision references.
#include "test_util.hpp"

namespace nnops::test {
namespace {

class ElementwiseTest : public DeviceTest {};

TEST_P(ElementwiseTest, AddScaled) {
  for (int64_t n : {1, 7, 33, 1023, 100003}) {
    const auto x = random_floats(n, 1 + n), y0 = random_floats(n, 2 + n);
    for (auto [alpha, beta] :
         std::vector<std::pair<float, float>>{{0.3f, 1.0f}, {-2.0f, 0.7f}, {1.5f, 0.0f}}) {
      Tensor y = beta == 0.0f ? poisoned({n}, device()) : on(device(), y0, {n});
      add_scaled(y, on(device(), x, {n}), alpha, beta);
      std::vector<double> ref(n);
      for (int64_t i = 0; i < n; ++i)
        ref[i] = double(alpha) * x[i] + (beta == 0.0f ? 0.0 : double(beta) * y0[i]);
      // Two products and one sum, each rounded once: 3u of the larger term.
      EXPECT_TRUE(all_close(y, ref, 3 * kEps32 * (std::fabs(alpha) + std::fabs(beta)), 0)) << n;
    }
  }
}

TEST_P(ElementwiseTest, AddScaledMayAliasAndFill) {
  const auto x = random_floats(33, 3);
  Tensor t = on(device(), x, {33});
  add_scaled(t, t, 1.0f, 1.0f);  // doubling is exact
  std::vector<double> ref(x.begin(), x.end());
  for (auto& v : ref) v *= 2;
  EXPECT_TRUE(all_close(t, ref, 0, 0));
  fill(t, -0.25f);
  EXPECT_TRUE(all_close(t, std::vector<double>(33, -0.25), 0, 0));
}

TEST(ElementwiseErrors, BadArguments) {
  Tensor y = on(Device::CPU, random_floats(4, 1), {4}),
         x = on(Device::CPU, random_floats(5, 2), {5});
  const auto before = y.to_vector<float>();
  EXPECT_TRUE(
      throws_error([&] { add_scaled(y, x, 1.0f); }, "nnops::add_scaled", "shapes must match"));
  Tensor x4 = on(Device::CPU, random_floats(4, 2), {4});
  EXPECT_TRUE(throws_error([&] { add_scaled(y, x4, NAN); }, "nnops::add_scaled", "alpha"));
  Tensor i = Tensor::zeros({4}, DType::I32);
  EXPECT_TRUE(throws_error([&] { fill(i, 1.0f); }, "nnops::fill", "dtype I32"));
  EXPECT_EQ(y.to_vector<float>(), before);
}

NNOPS_INSTANTIATE_DEVICES(ElementwiseTest);

}  // namespace
}  // namespace nnops::test
