// The element-wise transformer ops against their definitions: rotary embeddings (rotate half,
// positions near 1e5, inverse = transpose), gated activations (SwiGLU, GeGLU, finite
// differences), dropout (the fill_uniform bits, scale, p = 0 and 1, forward = backward mask).
#include "test_util.hpp"

namespace nnops::test {
namespace {

class TransformerOpsTest : public DeviceTest {};

// "rotate half" at positions offset + t, in long double: the exact rotation of the float inputs.
std::vector<double> rope_ref(const std::vector<float>& x, int64_t batch, int64_t t, int64_t d,
                             int64_t offset, double theta, bool inverse) {
  std::vector<double> y(x.size());
  for (int64_t b = 0; b < batch; ++b)
    for (int64_t p = 0; p < t; ++p)
      for (int64_t i = 0; i < d / 2; ++i) {
        const long double a = static_cast<long double>(offset + p) *
                              std::pow(static_cast<long double>(theta), -2.0L * i / d);
        const long double c = std::cos(a), s = inverse ? -std::sin(a) : std::sin(a);
        const int64_t r = (b * t + p) * d;
        y[r + i] = static_cast<double>(x[r + i] * c - x[r + i + d / 2] * s);
        y[r + i + d / 2] = static_cast<double>(x[r + i + d / 2] * c + x[r + i] * s);
      }
  return y;
}

TEST_P(TransformerOpsTest, RopeAgainstTheRotationAtAnyPosition) {
  for_each_cpu_isa(device(), [&] {
    for (auto [t, d, offset] : std::vector<std::tuple<int64_t, int64_t, int64_t>>{
             {1, 2, 0}, {7, 64, 3}, {127, 80, 0}, {33, 128, 99990}, {5, 256, 100000}}) {
      SCOPED_TRACE("T=" + std::to_string(t) + " D=" + std::to_string(d) +
                   " offset=" + std::to_string(offset));
      const int64_t batch = 3;
      const auto xv = random_floats(batch * t * d, 70 + d);
      Tensor x = on(device(), xv, {batch, 1, t, d}), y = poisoned({batch, 1, t, d}, device());
      rope_forward(x, offset, 10000.0f, y);
      // Angles in double: only the rounding of the result (and of cos/sin in double) remains.
      EXPECT_TRUE(
          all_close(y, rope_ref(xv, batch, t, d, offset, 10000.0, false), 4 * kEps32, 2 * kEps32));
      Tensor dx = poisoned({batch, 1, t, d}, device());
      rope_backward(x, offset, 10000.0f, dx);
      EXPECT_TRUE(
          all_close(dx, rope_ref(xv, batch, t, d, offset, 10000.0, true), 4 * kEps32, 2 * kEps32));
      // In place, and backward undoing forward.
      rope_forward(x, offset, 10000.0f, x);
      rope_backward(x, offset, 10000.0f, x);
      EXPECT_TRUE(all_close(x, to_double(xv), 8 * kEps32, 8 * kEps32));
    }
    Tensor odd = on(device(), random_floats(6, 1), {2, 3}), out = poisoned({2, 3}, device());
    EXPECT_TRUE(
        throws_error([&] { rope_forward(odd, 0, 10000.0f, out); }, "nnops::rope_forward", "even"));
    Tensor even = on(device(), random_floats(4, 1), {2, 2}), out2 = poisoned({2, 2}, device());
    EXPECT_TRUE(throws_error([&] { rope_forward(even, -1, 10000.0f, out2); }, "nnops::rope_forward",
                             "position_offset"));
    EXPECT_TRUE(
        throws_error([&] { rope_backward(even, 0, 0.0f, out2); }, "nnops::rope_backward", "theta"));
    for (float v : out2.to_vector<float>()) ASSERT_TRUE(std::isnan(v));
  });
}

TEST_P(TransformerOpsTest, GatedActivationsAgainstDefinitionAndFiniteDifferences) {
  for_each_cpu_isa(device(), [&] {
    for (Activation act : {Activation::SiLU, Activation::GELU, Activation::GELUTanh,
                           Activation::ReLU, Activation::Sigmoid}) {
      // h = 1100: rows the CPU takes in pieces of 1024 (a piece and a tail).
      for (auto [rows, h] : std::vector<std::pair<int64_t, int64_t>>{{7, 33}, {3, 1100}}) {
        SCOPED_TRACE(std::string(to_string(act)) + " h=" + std::to_string(h));
        const auto xv = random_floats(rows * 2 * h, 80, -3, 3), gv = random_floats(rows * h, 81);
        Tensor x = on(device(), xv, {rows, 2 * h}), y = poisoned({rows, h}, device());
        gated_activation_forward(act, x, y);
        Tensor dx = poisoned({rows, 2 * h}, device());
        gated_activation_backward(act, x, on(device(), gv, {rows, h}), dx);
        auto f = [&](double a) {  // the activations in double
          switch (act) {
            case Activation::SiLU:
              return a / (1 + std::exp(-a));
            case Activation::GELU:
              return 0.5 * a * (1 + std::erf(a / std::sqrt(2.0)));
            case Activation::GELUTanh:
              return 0.5 * a * (1 + std::tanh(std::sqrt(2 / M_PI) * (a + 0.044715 * a * a * a)));
            case Activation::ReLU:
              return a > 0 ? a : 0.0;
            default:
              return 1 / (1 + std::exp(-a));
          }
        };
        std::vector<double> ref(rows * h), ref_dx(rows * 2 * h);
        for (int64_t r = 0; r < rows; ++r)
          for (int64_t j = 0; j < h; ++j) {
            const double a = xv[r * 2 * h + j], b = xv[r * 2 * h + h + j], g = gv[r * h + j];
            ref[r * h + j] = f(a) * b;
            const double e = 1e-6;
            ref_dx[r * 2 * h + j] = g * b * (f(a + e) - f(a - e)) / (2 * e);
            ref_dx[r * 2 * h + h + j] = g * f(a);
          }
        // The activations' float formulas are within a few ulps; the derivative by central
        // differences within ~1e-8.
        EXPECT_TRUE(all_close(y, ref, 1e-6, 16 * kEps32));
        EXPECT_TRUE(all_close(dx, ref_dx, 1e-5, 1e-4));
      }
    }
  });
  Tensor odd = on(device(), random_floats(6, 1), {2, 3}), y = poisoned({2, 1}, device());
  EXPECT_TRUE(throws_error([&] { gated_activation_forward(Activation::SiLU, odd, y); },
                           "nnops::gated_activation_forward", "even"));
}

TEST_P(TransformerOpsTest, DropoutKeepsWhereTheUniformIsAtLeastP) {
  for (int64_t n : {1, 7, 1023, 100003}) {
    for (float p : {0.0f, 0.1f, 0.5f, 1.0f}) {
      SCOPED_TRACE("n=" + std::to_string(n) + " p=" + std::to_string(p));
      const auto xv = random_floats(n, 90);
      Tensor x = on(device(), xv, {n}), y = poisoned({n}, device()),
             u = Tensor::empty({n}, DType::F32, device());
      dropout_forward(x, p, 1234, y);
      fill_uniform(u, 0.0f, 1.0f, 1234);
      const auto uv = u.to_vector<float>(), yv = y.to_vector<float>();
      const float scale = 1.0f / (1.0f - p);
      int64_t kept = 0;
      for (int64_t i = 0; i < n; ++i) {
        const float want = uv[i] >= p ? xv[i] * scale : 0.0f;
        ASSERT_EQ(yv[i], want) << "element " << i;
        kept += uv[i] >= p;
      }
      if (p == 0.0f) EXPECT_EQ(yv, xv);
      if (p == 1.0f) EXPECT_EQ(kept, 0);
      // Backward: the same mask and scale on dy; in place.
      Tensor g = on(device(), xv, {n});
      dropout_backward(g, p, 1234, g);
      EXPECT_EQ(g.to_vector<float>(), yv);
    }
  }
  Tensor x = on(device(), {1.0f}, {1}), y = poisoned({1}, device());
  EXPECT_TRUE(throws_error([&] { dropout_forward(x, 1.5f, 1, y); }, "nnops::dropout_forward", "p"));
  EXPECT_TRUE(
      throws_error([&] { dropout_backward(x, -0.1f, 1, y); }, "nnops::dropout_backward", "p"));
  EXPECT_TRUE(std::isnan(y.item()));
}

INSTANTIATE_TEST_SUITE_P(Devices, TransformerOpsTest, ::testing::Values(Device::CPU, Device::CUDA),
                         device_name);

}  // namespace
}  // namespace nnops::test
