// Activations and softmax / log_softmax: forward against double-precision formulas, backward
// against the analytic double derivative and against central finite differences in double.
#include "test_util.hpp"

namespace nnops::test {
namespace {

constexpr double kPi = 3.14159265358979323846;
constexpr float kSlope = 0.01f;

double ref_forward(Activation a, double x) {
  switch (a) {
    case Activation::ReLU:
      return x > 0 ? x : 0;
    case Activation::LeakyReLU:
      return x > 0 ? x : kSlope * x;
    case Activation::GELU:
      return 0.5 * x * (1 + std::erf(x / std::sqrt(2.0)));
    case Activation::GELUTanh:
      return 0.5 * x * (1 + std::tanh(std::sqrt(2 / kPi) * (x + 0.044715 * x * x * x)));
    case Activation::SiLU:
      return x / (1 + std::exp(-x));
    case Activation::Sigmoid:
      return 1 / (1 + std::exp(-x));
    case Activation::Tanh:
      return std::tanh(x);
  }
  return 0;
}

// Central difference of the double reference: truncation O(h^2) ~ 1e-10 for these smooth f.
double finite_difference(Activation a, double x) {
  const double h = 1e-5;
  return (ref_forward(a, x + h) - ref_forward(a, x - h)) / (2 * h);
}

const std::vector<Activation> kAll = {
    Activation::ReLU, Activation::LeakyReLU, Activation::GELU, Activation::GELUTanh,
    Activation::SiLU, Activation::Sigmoid,   Activation::Tanh};

class ActivationTest : public DeviceTest {};

// |x| <= 8 and each formula is a few float operations around erf/exp/tanh (<= 2 ulp in glibc
// and CUDA): the absolute error stays below ~10 ulp of max(1, |x|), hence atol 2e-6 and
// rtol 1e-5 (cancellation in 1 + erf(x) for x < 0 makes the absolute bound the binding one).
TEST_P(ActivationTest, ForwardMatchesDoubleReference) {
  for_each_cpu_isa(device(), [&] {
    for (Activation a : kAll) {
      for (int64_t n : {1, 7, 33, 1023, 40000}) {
        SCOPED_TRACE(std::string(to_string(a)) + " n=" + std::to_string(n));
        const auto x = random_floats(n, 11 + n, -8.0f, 8.0f);
        Tensor y = poisoned({n}, device());
        activation_forward(a, on(device(), x, {n}), y, kSlope);
        std::vector<double> ref(n);
        for (int64_t i = 0; i < n; ++i) ref[i] = ref_forward(a, x[i]);
        EXPECT_TRUE(all_close(y, ref, 2e-6, 1e-5));
      }
    }
  });
}

TEST_P(ActivationTest, BackwardMatchesFiniteDifferences) {
  for_each_cpu_isa(device(), [&] {
    for (Activation a : kAll) {
      for (int64_t n : {1, 33, 1023}) {
        SCOPED_TRACE(std::string(to_string(a)) + " n=" + std::to_string(n));
        auto x = random_floats(n, 21 + n, -6.0f, 6.0f);
        for (float& v : x)
          if (std::fabs(v) < 1e-3f) v = 0.5f;  // keep the ReLU kink out of FD
        const auto dy = random_floats(n, 31 + n);
        Tensor dx = poisoned({n}, device());
        activation_backward(a, on(device(), x, {n}), on(device(), dy, {n}), dx, kSlope);
        std::vector<double> ref(n);
        for (int64_t i = 0; i < n; ++i) ref[i] = dy[i] * finite_difference(a, x[i]);
        EXPECT_TRUE(all_close(dx, ref, 2e-6, 1e-5));
      }
    }
  });
}

TEST_P(ActivationTest, OutputsMayAliasInputs) {
  for_each_cpu_isa(device(), [&] {
    const auto x = random_floats(33, 5, -3, 3), dy = random_floats(33, 6);
    Tensor t = on(device(), x, {33});
    activation_forward(Activation::GELU, t, t);  // y aliases x
    std::vector<double> ref(33);
    for (int i = 0; i < 33; ++i) ref[i] = ref_forward(Activation::GELU, x[i]);
    EXPECT_TRUE(all_close(t, ref, 2e-6, 1e-5));
    Tensor g = on(device(), dy, {33});
    activation_backward(Activation::Tanh, on(device(), x, {33}), g, g);  // dx aliases dy
    for (int i = 0; i < 33; ++i)
      ref[i] = dy[i] * (1 - std::tanh(double(x[i])) * std::tanh(double(x[i])));
    EXPECT_TRUE(all_close(g, ref, 2e-6, 1e-5));
  });
}

TEST_P(ActivationTest, SpecialValues) {
  for_each_cpu_isa(device(), [&] {
    const float nan = std::numeric_limits<float>::quiet_NaN(), inf = INFINITY;
    const std::vector<float> x = {nan, 0.0f, -0.0f, inf, -inf, 100.0f, -100.0f};
    Tensor y = poisoned({7}, device());
    activation_forward(Activation::ReLU, on(device(), x, {7}), y);
    auto v = y.to_vector<float>();
    EXPECT_TRUE(std::isnan(v[0])) << "ReLU(NaN) must be NaN, as torch.relu";
    EXPECT_EQ(v[3], inf);
    EXPECT_EQ(v[4], 0.0f);
    activation_forward(Activation::Sigmoid, on(device(), x, {7}), y);
    v = y.to_vector<float>();
    EXPECT_EQ(v[3], 1.0f);
    EXPECT_EQ(v[4], 0.0f);
    EXPECT_EQ(v[5], 1.0f);
    EXPECT_GE(v[6], 0.0f);  // no overflow to NaN for large negative inputs
    EXPECT_LT(v[6], 1e-40f);
    activation_forward(Activation::SiLU, on(device(), x, {7}), y);
    v = y.to_vector<float>();
    EXPECT_EQ(v[5], 100.0f);
    EXPECT_FALSE(std::isnan(v[6]));
    // GELU (tanh): x (1 + tanh(u)) / 2 at the ends, as PyTorch: -inf * 0 is NaN.
    activation_forward(Activation::GELUTanh, on(device(), x, {7}), y);
    v = y.to_vector<float>();
    EXPECT_TRUE(std::isnan(v[0]));
    EXPECT_EQ(v[1], 0.0f);
    EXPECT_EQ(v[3], inf);
    EXPECT_TRUE(std::isnan(v[4]));
    EXPECT_EQ(v[5], 100.0f);
    EXPECT_EQ(v[6], 0.0f);
    Tensor dx = poisoned({7}, device());
    activation_backward(Activation::ReLU, on(device(), x, {7}),
                        on(device(), std::vector<float>(7, 1.0f), {7}), dx);
    v = dx.to_vector<float>();
    EXPECT_EQ(v[1], 0.0f) << "ReLU'(0) is 0";
    EXPECT_EQ(v[0], 1.0f) << "PyTorch's threshold_backward passes dy where x is NaN";
  });
}

NNOPS_INSTANTIATE_DEVICES(ActivationTest);

// ---- softmax / log_softmax --------------------------------------------------------------

std::vector<double> ref_softmax(const std::vector<float>& x, int64_t rows, int64_t cols, bool log) {
  std::vector<double> y(x.size());
  for (int64_t r = 0; r < rows; ++r) {
    double mx = -INFINITY;
    for (int64_t c = 0; c < cols; ++c) mx = std::max(mx, double(x[r * cols + c]));
    double s = 0;
    for (int64_t c = 0; c < cols; ++c) s += std::exp(x[r * cols + c] - mx);
    for (int64_t c = 0; c < cols; ++c) {
      const double lp = x[r * cols + c] - mx - std::log(s);
      y[r * cols + c] = log ? lp : std::exp(lp);
    }
  }
  return y;
}

class SoftmaxTest : public DeviceTest {};

// softmax values are <= 1 with ~cols-term sums: atol 1e-6 (a few ulp of 1 plus exp's error);
// log_softmax of logits up to |x| ~ 1e4 is x - lse with lse rounded to float: rtol 2 ulp.
TEST_P(SoftmaxTest, ForwardMatchesDoubleReference) {
  for_each_cpu_isa(device(), [&] {
    for (bool log : {false, true}) {
      for (auto [shape, scale] : std::vector<std::pair<Shape, float>>{{{1, 1}, 1.f},
                                                                      {{7, 33}, 5.f},
                                                                      {{33, 1023}, 3.f},
                                                                      {{3, 5, 7}, 1.f},
                                                                      {{4, 257}, 1e4f}}) {
        SCOPED_TRACE(std::string(log ? "log_softmax " : "softmax ") + shape_to_string(shape) +
                     " scale=" + std::to_string(scale));
        const int64_t n = numel_of(shape), cols = shape.back();
        const auto x = random_floats(n, 41 + n, -scale, scale);
        Tensor y = poisoned(shape, device());
        (log ? log_softmax_forward : softmax_forward)(on(device(), x, shape), y);
        const auto ref = ref_softmax(x, n / cols, cols, log);
        EXPECT_TRUE(all_close(y, ref, log ? 1e-5 : 1e-6, log ? 4 * kEps32 : 1e-5));
      }
    }
  });
}

// Backward against finite differences of L = sum(dy * f(x)) with the double reference.
TEST_P(SoftmaxTest, BackwardMatchesFiniteDifferences) {
  for_each_cpu_isa(device(), [&] {
    for (bool log : {false, true}) {
      const int64_t rows = 3, cols = 33;
      const auto x = random_floats(rows * cols, 51, -4, 4), dy = random_floats(rows * cols, 52);
      Tensor y = Tensor::empty({rows, cols}, DType::F32, device());
      (log ? log_softmax_forward : softmax_forward)(on(device(), x, {rows, cols}), y);
      Tensor dx = poisoned({rows, cols}, device());
      (log ? log_softmax_backward : softmax_backward)(y, on(device(), dy, {rows, cols}), dx);
      std::vector<double> fd(rows * cols);
      for (int64_t i = 0; i < rows * cols; ++i) {
        const double h = 1e-3;  // x is float; perturb in double through a double copy
        auto loss_at = [&](double delta) {
          std::vector<double> xd = to_double(x);
          xd[i] += delta;
          const int64_t r = i / cols;
          double mx = -INFINITY, s = 0, l = 0;
          for (int64_t c = 0; c < cols; ++c) mx = std::max(mx, xd[r * cols + c]);
          for (int64_t c = 0; c < cols; ++c) s += std::exp(xd[r * cols + c] - mx);
          for (int64_t c = 0; c < cols; ++c) {
            const double lp = xd[r * cols + c] - mx - std::log(s);
            l += dy[r * cols + c] * (log ? lp : std::exp(lp));
          }
          return l;
        };
        fd[i] = (loss_at(h) - loss_at(-h)) / (2 * h);
      }
      // FD truncation ~h^2 * f''' ~ 1e-6; float backward error ~1e-6.
      EXPECT_TRUE(all_close(dx, fd, 1e-5, 1e-4)) << (log ? "log_softmax" : "softmax");
    }
  });
}

TEST_P(SoftmaxTest, HugeLogitsStayFinite) {
  for_each_cpu_isa(device(), [&] {
    const std::vector<float> x = {1e4f, -1e4f, 0.0f, 1e4f};
    Tensor y = poisoned({1, 4}, device());
    softmax_forward(on(device(), x, {1, 4}), y);
    EXPECT_TRUE(all_close(y, {0.5, 0.0, 0.0, 0.5}, 1e-7, 0));
    log_softmax_forward(on(device(), x, {1, 4}), y);
    EXPECT_TRUE(
        all_close(y, {-std::log(2.0), -2e4 - std::log(2.0), -1e4 - std::log(2.0), -std::log(2.0)},
                  1e-6, 1e-6));
  });
}

NNOPS_INSTANTIATE_DEVICES(SoftmaxTest);

}  // namespace
}  // namespace nnops::test
