// Losses against double-precision references; gradients against the analytic double gradient
// and against central finite differences of the double loss.
#include <cstring>

#include "test_util.hpp"

namespace nnops::test {
namespace {

double ref_mse(const std::vector<double>& p, const std::vector<float>& t, Reduction r) {
  double s = 0;
  for (size_t i = 0; i < p.size(); ++i) s += (p[i] - t[i]) * (p[i] - t[i]);
  return r == Reduction::Mean ? s / p.size() : s;
}

double ref_ce(const std::vector<double>& x, const std::vector<int32_t>& y, int64_t C, Reduction r,
              double e, int32_t ignore) {
  const int64_t N = y.size();
  double total = 0;
  int64_t kept = 0;
  for (int64_t i = 0; i < N; ++i) {
    if (y[i] == ignore) continue;
    ++kept;
    double mx = -INFINITY, s = 0, sum_neg_lp = 0;
    for (int64_t c = 0; c < C; ++c) mx = std::max(mx, x[i * C + c]);
    for (int64_t c = 0; c < C; ++c) s += std::exp(x[i * C + c] - mx);
    const double lse = mx + std::log(s);
    for (int64_t c = 0; c < C; ++c) sum_neg_lp += lse - x[i * C + c];
    total += (1 - e) * (lse - x[i * C + y[i]]) + e * sum_neg_lp / C;
  }
  return r == Reduction::Mean ? total / kept : total;
}

// F.kl_div(log_softmax(s/T), softmax(t/T), reduction='batchmean') * T^2 written out as PyTorch
// computes it: pointwise xlogy(p_t, p_t) - p_t * log_p_s, where xlogy(0, y) = 0 unless y is NaN.
double ref_kd(const std::vector<double>& s, const std::vector<double>& t, int64_t N, int64_t C,
              double T) {
  double total = 0;
  for (int64_t i = 0; i < N; ++i) {
    double mx_t = -INFINITY, mx_s = -INFINITY, sum_t = 0, sum_s = 0;
    for (int64_t c = 0; c < C; ++c) {
      // std::max would skip a NaN; PyTorch's max propagates it.
      const double vt = t[i * C + c] / T, vs = s[i * C + c] / T;
      mx_t = std::isnan(vt) || vt > mx_t ? vt : mx_t;
      mx_s = std::isnan(vs) || vs > mx_s ? vs : mx_s;
    }
    for (int64_t c = 0; c < C; ++c) {
      sum_t += std::exp(t[i * C + c] / T - mx_t);
      sum_s += std::exp(s[i * C + c] / T - mx_s);
    }
    for (int64_t c = 0; c < C; ++c) {
      const double p_t = std::exp(t[i * C + c] / T - mx_t) / sum_t;
      const double log_p_s = s[i * C + c] / T - mx_s - std::log(sum_s);
      const double xlogy = p_t == 0 && !std::isnan(p_t) ? 0.0 : p_t * std::log(p_t);
      total += xlogy - p_t * log_p_s;
    }
  }
  return T * T * total / N;
}

// Central differences of a double loss with respect to each input.
template <class F>
std::vector<double> numeric_grad(const std::vector<float>& x, F loss, double h) {
  std::vector<double> g(x.size());
  for (size_t i = 0; i < x.size(); ++i) {
    std::vector<double> xp = to_double(x), xm = to_double(x);
    xp[i] += h;
    xm[i] -= h;
    g[i] = (loss(xp) - loss(xm)) / (2 * h);
  }
  return g;
}

class LossTest : public DeviceTest {};

TEST_P(LossTest, MseMatchesReferenceAndFiniteDifferences) {
  for_each_cpu_isa(device(), [&] {
    for (Reduction red : {Reduction::Mean, Reduction::Sum}) {
      for (int64_t n : {1, 7, 33, 1023}) {
        SCOPED_TRACE("n=" + std::to_string(n) + (red == Reduction::Mean ? " mean" : " sum"));
        const auto p = random_floats(n, 3 + n), t = random_floats(n, 4 + n);
        Tensor loss = poisoned({1}, device()), grad = poisoned({n}, device());
        mse_loss(on(device(), p, {n}), on(device(), t, {n}), loss, &grad, red);
        const double ref = ref_mse(to_double(p), t, red);
        // The sum is taken in double; only the float differences (1 ulp each) and the final
        // rounding contribute: rtol 4u.
        EXPECT_NEAR(loss.item(), ref, 4 * kEps32 * std::fabs(ref) + 1e-12);
        const auto fd = numeric_grad(
            p, [&](const std::vector<double>& v) { return ref_mse(v, t, red); }, 1e-4);
        EXPECT_TRUE(all_close(grad, fd, 1e-6, 1e-5));
      }
    }
  });
}

TEST_P(LossTest, CrossEntropyMatchesReferenceAndFiniteDifferences) {
  for_each_cpu_isa(device(), [&] {
    struct Case {
      int64_t N, C;
      float e;
      Reduction red;
      float scale;
    };
    for (const Case& k :
         {Case{1, 1, 0.0f, Reduction::Mean, 1}, Case{7, 33, 0.0f, Reduction::Mean, 3},
          Case{33, 7, 0.1f, Reduction::Sum, 3}, Case{5, 1023, 0.2f, Reduction::Mean, 5},
          Case{9, 5, 0.3f, Reduction::Mean, 1e4f}}) {
      SCOPED_TRACE("N=" + std::to_string(k.N) + " C=" + std::to_string(k.C) +
                   " e=" + std::to_string(k.e));
      const auto x = random_floats(k.N * k.C, 5 + k.N, -k.scale, k.scale);
      std::vector<int32_t> y(k.N);
      for (int64_t i = 0; i < k.N; ++i) y[i] = static_cast<int32_t>((i * 7 + 3) % k.C);
      if (k.N > 2) y[1] = -100;  // one ignored row
      Tensor loss = poisoned({1}, device()), grad = poisoned({k.N, k.C}, device());
      cross_entropy_loss(on(device(), x, {k.N, k.C}), Tensor::from_vector(y, {k.N}, device()), loss,
                         &grad, k.red, k.e);
      auto f = [&](const std::vector<double>& v) { return ref_ce(v, y, k.C, k.red, k.e, -100); };
      const double ref = f(to_double(x));
      // Per row the loss is lse - x[y]: with |x| up to 1e4 both are rounded to float (u * 1e4).
      EXPECT_NEAR(loss.item(), ref, 1e-6 + 8 * kEps32 * (std::fabs(ref) + k.scale));
      if (k.scale < 100) {
        const auto fd = numeric_grad(x, f, 1e-4);
        EXPECT_TRUE(all_close(grad, fd, 1e-6, 1e-4));
      } else {
        // FD is meaningless at 1e4; compare with softmax - target distribution in double. A float
        // x - max has a relative error u, so p = exp(x - max) errs by u * |x - max| * p <= u / e
        // absolutely; the normalisation and the scale add a few u relatively.
        int64_t kept = 0;
        for (int32_t t : y) kept += t != -100;
        const double scale = k.red == Reduction::Mean ? 1.0 / kept : 1.0;
        std::vector<double> ref_grad(x.size(), 0.0);
        for (int64_t i = 0; i < k.N; ++i) {
          if (y[i] == -100) continue;
          double mx = -INFINITY, sum = 0;
          for (int64_t c = 0; c < k.C; ++c) mx = std::max<double>(mx, x[i * k.C + c]);
          for (int64_t c = 0; c < k.C; ++c) sum += std::exp(x[i * k.C + c] - mx);
          for (int64_t c = 0; c < k.C; ++c) {
            const double target = (c == y[i] ? 1.0 - k.e : 0.0) + k.e / k.C;
            ref_grad[i * k.C + c] = scale * (std::exp(x[i * k.C + c] - mx) / sum - target);
          }
        }
        EXPECT_TRUE(all_close(grad, ref_grad, 2 * kEps32, 8 * kEps32));
      }
    }
  });
}

TEST_P(LossTest, CrossEntropyWithEveryTargetIgnored) {
  for_each_cpu_isa(device(), [&] {
    const auto x = random_floats(12, 9);
    Tensor loss = poisoned({1}, device()), grad = poisoned({3, 4}, device());
    const std::vector<int32_t> y = {-1, -1, -1};
    cross_entropy_loss(on(device(), x, {3, 4}), Tensor::from_vector(y, {3}, device()), loss, &grad,
                       Reduction::Mean, 0.0f, -1);
    EXPECT_TRUE(std::isnan(loss.item())) << "PyTorch gives NaN (0/0) for Mean";
    for (float g : grad.to_vector<float>()) EXPECT_EQ(g, 0.0f);
    cross_entropy_loss(on(device(), x, {3, 4}), Tensor::from_vector(y, {3}, device()), loss, &grad,
                       Reduction::Sum, 0.0f, -1);
    EXPECT_EQ(loss.item(), 0.0f);
  });
}

TEST_P(LossTest, KdMatchesReferenceAndFiniteDifferences) {
  for_each_cpu_isa(device(), [&] {
    for (float T : {1.0f, 2.0f, 4.0f}) {
      for (auto [N, C] : std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {7, 33}, {4, 257}}) {
        SCOPED_TRACE("T=" + std::to_string(T) + " N=" + std::to_string(N) +
                     " C=" + std::to_string(C));
        const auto s = random_floats(N * C, 60 + C, -4, 4), t = random_floats(N * C, 61 + C, -4, 4);
        Tensor loss = poisoned({1}, device()), grad = poisoned({N, C}, device());
        kd_loss(on(device(), s, {N, C}), on(device(), t, {N, C}), T, loss, &grad);
        auto f = [&](const std::vector<double>& v) { return ref_kd(v, to_double(t), N, C, T); };
        const double ref = f(to_double(s));
        // KL sums C terms p_t*(log p_t - log p_s), each with float logs (~u * |x|/T).
        EXPECT_NEAR(loss.item(), ref, 1e-6 + 16 * kEps32 * std::fabs(ref));
        const auto fd = numeric_grad(s, f, 1e-4);
        EXPECT_TRUE(all_close(grad, fd, 1e-6, 1e-4));
      }
    }
  });
}

// At a high temperature the loss is T^2 times a sum of nearly cancelling terms: computed with
// float logs, T = 1000 on 1e5 classes was 5% off. In double the rows hold 1e-4 at any T (the
// arithmetic's own error is ~1e-12 relative here); the gradient is one float rounding of
// (T/N) * (p_s - p_t).
TEST_P(LossTest, KdHoldsItsPrecisionAtAnyTemperature) {
  const int64_t N = 2, C = 100000;
  const auto s = random_floats(N * C, 71, 1.0f, 100000.0f);
  const auto t = random_floats(N * C, 72, 1.0f, 100000.0f);
  for (double T : {1e-3, 1.0, 20.0, 1000.0}) {
    SCOPED_TRACE("T=" + std::to_string(T));
    Tensor loss = poisoned({1}, device()), grad = poisoned({N, C}, device());
    kd_loss(on(device(), s, {N, C}), on(device(), t, {N, C}), static_cast<float>(T), loss, &grad);
    const double Tf = static_cast<float>(T);  // the temperature the op was given
    const double ref = ref_kd(to_double(s), to_double(t), N, C, Tf);
    EXPECT_NEAR(loss.item(), ref, 1e-4 * std::fabs(ref));
    std::vector<double> ref_grad(static_cast<size_t>(N * C));
    for (int64_t i = 0; i < N; ++i) {
      double mx_s = -INFINITY, mx_t = -INFINITY, sum_s = 0, sum_t = 0;
      for (int64_t c = 0; c < C; ++c) {
        mx_s = std::max(mx_s, s[i * C + c] / Tf);
        mx_t = std::max(mx_t, t[i * C + c] / Tf);
      }
      for (int64_t c = 0; c < C; ++c) {
        sum_s += std::exp(s[i * C + c] / Tf - mx_s);
        sum_t += std::exp(t[i * C + c] / Tf - mx_t);
      }
      for (int64_t c = 0; c < C; ++c) {
        const double ps = std::exp(s[i * C + c] / Tf - mx_s) / sum_s;
        const double pt = std::exp(t[i * C + c] / Tf - mx_t) / sum_t;
        ref_grad[i * C + c] = Tf / N * (ps - pt);
      }
    }
    EXPECT_TRUE(all_close(grad, ref_grad, 1e-12 * Tf / N, 2 * kEps32));
  }
}

TEST_P(LossTest, KdWithHugeLogitsIsFinite) {
  for_each_cpu_isa(device(), [&] {
    const std::vector<float> s = {1e4f, -1e4f, 0.0f}, t = {-1e4f, 1e4f, 0.0f};
    Tensor loss = poisoned({1}, device()), grad = poisoned({1, 3}, device());
    kd_loss(on(device(), s, {1, 3}), on(device(), t, {1, 3}), 1.0f, loss, &grad);
    // Teacher puts all mass on class 1, where log p_s = -2e4: the loss is 2e4.
    EXPECT_NEAR(loss.item(), 2e4, 2e4 * 4 * kEps32);
    EXPECT_TRUE(all_close(grad, {1.0, -1.0, 0.0}, 1e-6, 0));
    kd_loss(on(device(), s, {1, 3}), on(device(), s, {1, 3}), 3.0f, loss, &grad);
    EXPECT_NEAR(loss.item(), 0.0, 1e-6) << "KL of a distribution with itself is 0";
  });
}

TEST_P(LossTest, KdNaNAndInfinityFollowPyTorch) {
  for_each_cpu_isa(device(), [&] {
    constexpr float kNaN = std::numeric_limits<float>::quiet_NaN(), kInf = INFINITY;
    const std::vector<float> s = {0.5f, -1.0f, 2.0f};
    Tensor loss = poisoned({1}, device()), grad = poisoned({1, 3}, device());
    // A NaN or +inf teacher logit, or a teacher row of -inf only: NaN in PyTorch.
    for (const std::vector<float>& t :
         {std::vector<float>{kNaN, 0.0f, 1.0f}, {kInf, 0.0f, 1.0f}, {-kInf, -kInf, -kInf}}) {
      kd_loss(on(device(), s, {1, 3}), on(device(), t, {1, 3}), 2.0f, loss, &grad);
      EXPECT_TRUE(std::isnan(loss.item())) << "teacher " << t[0] << " " << t[1] << " " << t[2];
      EXPECT_TRUE(std::isnan(ref_kd(to_double(s), to_double(t), 1, 3, 2.0)));
    }
    // Student -inf where the teacher is also -inf: 0 * -inf is NaN in F.kl_div.
    const std::vector<float> t0 = {-kInf, 0.0f, 1.0f}, s0 = {-kInf, 0.0f, 1.0f};
    kd_loss(on(device(), s0, {1, 3}), on(device(), t0, {1, 3}), 1.0f, loss, &grad);
    EXPECT_TRUE(std::isnan(loss.item()));
    // A teacher -inf over a finite student: that term is xlogy(0, 0) = 0, the loss finite.
    kd_loss(on(device(), s, {1, 3}), on(device(), t0, {1, 3}), 1.0f, loss, &grad);
    const double ref = ref_kd(to_double(s), to_double(t0), 1, 3, 1.0);
    ASSERT_TRUE(std::isfinite(ref));
    EXPECT_NEAR(loss.item(), ref, 1e-6 + 16 * kEps32 * std::fabs(ref));
  });
}

TEST_P(LossTest, ZeroClassesAreValid) {
  for_each_cpu_isa(device(), [&] {
    Tensor loss = poisoned({1}, device()), grad = poisoned({3, 0}, device());
    kd_loss(Tensor::empty({3, 0}, DType::F32, device()),
            Tensor::empty({3, 0}, DType::F32, device()), 2.0f, loss, &grad);
    EXPECT_EQ(loss.item(), 0.0f) << "PyTorch: kl_div over [3, 0] with batchmean is 0";
    Tensor grad0 = Tensor::empty({0, 0}, DType::F32, device());
    cross_entropy_loss(Tensor::empty({0, 0}, DType::F32, device()),
                       Tensor::empty({0}, DType::I32, device()), loss, &grad0);
    EXPECT_TRUE(std::isnan(loss.item())) << "PyTorch: cross_entropy over [0, 0] is NaN under Mean";
    cross_entropy_loss(Tensor::empty({0, 0}, DType::F32, device()),
                       Tensor::empty({0}, DType::I32, device()), loss, &grad0, Reduction::Sum);
    EXPECT_EQ(loss.item(), 0.0f);
  });
}

TEST_P(LossTest, ReductionsGiveTheSameBitsOnEveryRun) {
  for_each_cpu_isa(device(), [&] {
    // No floating-point atomics anywhere: two runs on the same inputs agree bit for bit.
    const int64_t N = 333, C = 1031;
    Tensor x = on(device(), random_floats(N * C, 91, -5, 5), {N, C});
    Tensor t = on(device(), random_floats(N * C, 92, -5, 5), {N, C});
    std::vector<int32_t> y(N);
    for (int64_t i = 0; i < N; ++i) y[i] = static_cast<int32_t>((i * 31) % C);
    Tensor labels = Tensor::from_vector(y, {N}, device());
    auto run = [&] {
      std::vector<float> out;
      Tensor loss = poisoned({1}, device()), grad = poisoned({N, C}, device());
      mse_loss(x, t, loss, &grad);
      out.push_back(loss.item());
      cross_entropy_loss(x, labels, loss, &grad, Reduction::Mean, 0.1f);
      out.push_back(loss.item());
      kd_loss(x, t, 2.0f, loss, &grad);
      out.push_back(loss.item());
      Tensor w = on(device(), random_floats(C * 17, 93), {17, C}), dw = poisoned({17, C}, device());
      Tensor db = poisoned({17}, device()), dy = on(device(), random_floats(N * 17, 94), {N, 17});
      linear_backward(x, w, dy, nullptr, dw, &db);
      for (float v : db.to_vector<float>()) out.push_back(v);
      Tensor g = on(device(), random_floats(N * C, 95), {N, C}), norm = poisoned({1}, device());
      clip_grad_norm({&g}, 1.0f, norm);
      out.push_back(norm.item());
      return out;
    };
    const auto first = run(), second = run();
    ASSERT_EQ(first.size(), second.size());
    EXPECT_EQ(std::memcmp(first.data(), second.data(), first.size() * sizeof(float)), 0);
  });
}

TEST_P(LossTest, TargetOutOfRangeIsAnError) {
  for_each_cpu_isa(device(), [&] {
    Tensor x = on(device(), random_floats(12, 96), {3, 4});
    Tensor bad = Tensor::from_vector(std::vector<int32_t>{0, 4, 1}, {3}, device());
    Tensor loss = poisoned({1}, device()), grad = poisoned({3, 4}, device());
    if (device() == Device::CPU) {
      // The CPU checks the targets before it writes anything.
      EXPECT_TRUE(throws_error([&] { cross_entropy_loss(x, bad, loss, &grad); },
                               "nnops::cross_entropy_loss", "targets[1] is 4"));
      return;
    }
    // On CUDA the kernel finds it without a round trip: the call returns, its loss is NaN, and the
    // next synchronising call throws naming the op; after that the library is usable again.
    cross_entropy_loss(x, bad, loss, &grad);
    EXPECT_TRUE(throws_error([&] { synchronize(Device::CUDA); }, "nnops::cross_entropy_loss",
                             "outside [0, classes)"));
    EXPECT_TRUE(std::isnan(loss.item()));
    const auto g = grad.to_vector<float>();
    EXPECT_TRUE(std::isnan(g[4]) && std::isnan(g[7])) << "the bad row's gradient is NaN";
    EXPECT_FALSE(std::isnan(g[0])) << "the other rows are computed";
    Tensor good = Tensor::from_vector(std::vector<int32_t>{0, 3, 1}, {3}, device());
    cross_entropy_loss(x, good, loss, &grad);
    EXPECT_FALSE(std::isnan(loss.item()));
  });
}

TEST_P(LossTest, GradientIsOptional) {
  for_each_cpu_isa(device(), [&] {
    const auto p = random_floats(7, 1), t = random_floats(7, 2);
    Tensor loss = poisoned({1}, device());
    mse_loss(on(device(), p, {7}), on(device(), t, {7}), loss, nullptr);
    EXPECT_NEAR(loss.item(), ref_mse(to_double(p), t, Reduction::Mean), 1e-6);
  });
}

NNOPS_INSTANTIATE_DEVICES(LossTest);

}  // namespace
}  // namespace nnops::test
