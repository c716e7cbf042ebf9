// LayerNorm and RMSNorm against double-precision references of F.layer_norm / F.rms_norm, on
// every device: odd widths, rows far from zero, constant rows, optional affine parameters,
// finite differences of the backward, BF16 through the F32 path, and hostile arguments.
#include "test_util.hpp"

namespace nnops::test {
namespace {

struct NormRef {
  std::vector<double> y, mean, rstd;
};

// F.layer_norm / F.rms_norm over rows of length d, in double.
NormRef norm_ref(const std::vector<double>& x, const std::vector<double>* w,
                 const std::vector<double>* b, int64_t rows, int64_t d, double eps, bool rms) {
  NormRef r{std::vector<double>(x.size()), std::vector<double>(rows), std::vector<double>(rows)};
  for (int64_t i = 0; i < rows; ++i) {
    double mu = 0, var = 0;
    if (!rms) {
      for (int64_t c = 0; c < d; ++c) mu += x[i * d + c];
      mu /= d;
    }
    for (int64_t c = 0; c < d; ++c) var += (x[i * d + c] - mu) * (x[i * d + c] - mu);
    var /= d;
    const double rs = 1 / std::sqrt(var + eps);
    r.mean[i] = mu;
    r.rstd[i] = rs;
    for (int64_t c = 0; c < d; ++c) {
      double v = (x[i * d + c] - mu) * rs;
      if (w) v *= (*w)[c];
      if (b) v += (*b)[c];
      r.y[i * d + c] = v;
    }
  }
  return r;
}

struct GradRef {
  std::vector<double> dx, dw, db;
  std::vector<double> dx_scale;  // rstd * (|g| + |mean(g)| + |xh * mean(g xh)|): dx's terms
};

// The backward formulas of SEMANTICS.md from the saved mean and rstd, in double.
GradRef norm_grad_ref(const std::vector<double>& x, const std::vector<double>* w,
                      const std::vector<double>& mean, const std::vector<double>& rstd,
                      const std::vector<double>& dy, int64_t rows, int64_t d, bool rms) {
  GradRef g{std::vector<double>(x.size()), std::vector<double>(d, 0.0), std::vector<double>(d, 0.0),
            std::vector<double>(x.size())};
  for (int64_t i = 0; i < rows; ++i) {
    const double mu = rms ? 0.0 : mean[i], rs = rstd[i];
    double mg = 0, mgx = 0;
    for (int64_t c = 0; c < d; ++c) {
      const double gc = dy[i * d + c] * (w ? (*w)[c] : 1.0), xh = (x[i * d + c] - mu) * rs;
      mg += gc;
      mgx += gc * xh;
      g.dw[c] += dy[i * d + c] * xh;
      g.db[c] += dy[i * d + c];
    }
    mg = rms ? 0.0 : mg / d;
    mgx /= d;
    for (int64_t c = 0; c < d; ++c) {
      const double gc = dy[i * d + c] * (w ? (*w)[c] : 1.0), xh = (x[i * d + c] - mu) * rs;
      g.dx[i * d + c] = rs * (gc - mg - xh * mgx);
      g.dx_scale[i * d + c] = rs * (std::fabs(gc) + std::fabs(mg) + std::fabs(xh * mgx));
    }
  }
  return g;
}

std::vector<double> doubles(const Tensor& t) {
  return to_double(t.to_vector<float>());
}

class NormTest : public DeviceTest {};

TEST_P(NormTest, ForwardAndBackwardAgainstDoubleReference) {
  for_each_cpu_isa(device(), [&] {
    const float eps = 1e-5f;
    for (bool rms : {false, true}) {
      for (int64_t d : {1, 2, 7, 64, 80, 96, 128, 256, 1000}) {
        for (int affine = 0; affine < 3; ++affine) {  // none, weight, weight and bias
          SCOPED_TRACE((rms ? "rms d=" : "layer d=") + std::to_string(d) +
                       " affine=" + std::to_string(affine));
          const Shape shape = {3, 7, d};
          const int64_t rows = 21;
          auto xv = random_floats(rows * d, 100 + d, -2, 2);
          // Row 0 sits far from zero (1e4 + noise), row 1 is constant.
          for (int64_t c = 0; c < d; ++c) xv[c] += 1e4f, xv[d + c] = 0.75f;
          const auto wv = random_floats(d, 200 + d, 0.5f, 1.5f), bv = random_floats(d, 300 + d);
          const auto dyv = random_floats(rows * d, 400 + d);
          Tensor x = on(device(), xv, shape), w = on(device(), wv, {d}), b = on(device(), bv, {d});
          Tensor y = poisoned(shape, device()), mean = poisoned({3, 7}, device()),
                 rstd = poisoned({3, 7}, device());
          const Tensor* wp = affine >= 1 ? &w : nullptr;
          const Tensor* bp = affine >= 2 && !rms ? &b : nullptr;
          if (rms) {
            rms_norm_forward(x, wp, eps, y, &rstd);
          } else {
            layer_norm_forward(x, wp, bp, eps, y, &mean, &rstd);
          }
          const auto xd = to_double(xv), wd = to_double(wv), bd = to_double(bv);
          const NormRef ref =
              norm_ref(xd, wp ? &wd : nullptr, bp ? &bd : nullptr, rows, d, eps, rms);
          // Statistics in double; the output in float from a two-float mean: a few roundings of
          // |xh * w| and |b| each.
          std::vector<double> bound(ref.y.size());
          for (int64_t i = 0; i < rows * d; ++i) {
            const double xh = (xd[i] - ref.mean[i / d]) * ref.rstd[i / d];
            bound[i] = 8 * kEps32 *
                       (std::fabs(xh * (wp ? wd[i % d] : 1.0)) + (bp ? std::fabs(bd[i % d]) : 0.0));
          }
          EXPECT_TRUE(all_within(y, ref.y, bound));
          EXPECT_TRUE(all_close(rstd, ref.rstd, 0, 2 * kEps32));
          if (!rms) EXPECT_TRUE(all_close(mean, ref.mean, 0, 2 * kEps32));
          if (!rms && d > 1) {  // a constant row normalises to the bias
            const auto yv = y.to_vector<float>();
            for (int64_t c = 0; c < d; ++c) ASSERT_EQ(yv[d + c], bp ? bv[c] : 0.0f);
          }

          Tensor dx = poisoned(shape, device()), dw = poisoned({d}, device()),
                 db = poisoned({d}, device());
          if (rms) {
            rms_norm_backward(x, wp, rstd, on(device(), dyv, shape), &dx, &dw);
          } else {
            layer_norm_backward(x, wp, mean, rstd, on(device(), dyv, shape), &dx, &dw, &db);
          }
          const GradRef g = norm_grad_ref(xd, wp ? &wd : nullptr, doubles(mean), doubles(rstd),
                                          to_double(dyv), rows, d, rms);
          // dx: the row sums in double, the bracket in float: a few roundings of each of its
          // terms (which cancel for constant rows and for RMSNorm at D = 1).
          std::vector<double> dx_bound(g.dx.size());
          for (size_t i = 0; i < dx_bound.size(); ++i)
            dx_bound[i] = 16 * kEps32 * g.dx_scale[i] + 1e-7;
          EXPECT_TRUE(all_within(dx, g.dx, dx_bound));
          EXPECT_TRUE(all_close(dw, g.dw, 1e-5, 8 * kEps32));
          if (!rms) EXPECT_TRUE(all_close(db, g.db, 1e-5, 8 * kEps32));
        }
      }
    }
  });
}

TEST_P(NormTest, BackwardMatchesFiniteDifferences) {
  for (bool rms : {false, true}) {
    const int64_t rows = 3, d = 5;
    const auto xv = random_floats(rows * d, 7), wv = random_floats(d, 8, 0.5f, 1.5f),
               bv = random_floats(d, 9), rv = random_floats(rows * d, 10);
    Tensor x = on(device(), xv, {rows, d}), w = on(device(), wv, {d}), b = on(device(), bv, {d});
    Tensor y = Tensor::empty({rows, d}, DType::F32, device());
    Tensor mean = Tensor::empty({rows}, DType::F32, device()),
           rstd = Tensor::empty({rows}, DType::F32, device());
    Tensor dx = Tensor::empty({rows, d}, DType::F32, device());
    Tensor dw = Tensor::empty({d}, DType::F32, device()),
           db = Tensor::empty({d}, DType::F32, device());
    const Tensor dy = on(device(), rv, {rows, d});  // loss = sum(y * r)
    if (rms) {
      rms_norm_forward(x, &w, 1e-5f, y, &rstd);
      rms_norm_backward(x, &w, rstd, dy, &dx, &dw);
    } else {
      layer_norm_forward(x, &w, &b, 1e-5f, y, &mean, &rstd);
      layer_norm_backward(x, &w, mean, rstd, dy, &dx, &dw, &db);
    }
    const auto wd = to_double(wv), bd = to_double(bv);
    auto loss = [&](const std::vector<double>& xs, const std::vector<double>& ws) {
      const NormRef r = norm_ref(xs, &ws, rms ? nullptr : &bd, rows, d, 1e-5, rms);
      double s = 0;
      for (size_t i = 0; i < r.y.size(); ++i) s += r.y[i] * rv[i];
      return s;
    };
    std::vector<double> num_dx(rows * d), num_dw(d);
    const double h = 1e-6;
    for (int64_t i = 0; i < rows * d; ++i) {
      auto p = to_double(xv), m = to_double(xv);
      p[i] += h, m[i] -= h;
      num_dx[i] = (loss(p, wd) - loss(m, wd)) / (2 * h);
    }
    for (int64_t c = 0; c < d; ++c) {
      auto p = wd, m = wd;
      p[c] += h, m[c] -= h;
      num_dw[c] = (loss(to_double(xv), p) - loss(to_double(xv), m)) / (2 * h);
    }
    EXPECT_TRUE(all_close(dx, num_dx, 1e-4, 1e-4));
    EXPECT_TRUE(all_close(dw, num_dw, 1e-4, 1e-4));
  }
}

TEST_P(NormTest, Bf16GoesThroughTheF32Path) {
  const int64_t rows = 33, d = 96;
  Tensor x32 = on(device(), random_floats(rows * d, 11, -3, 3), {rows, d});
  Tensor x16 = Tensor::empty({rows, d}, DType::BF16, device());
  cast(x16, x32);
  cast(x32, x16);  // the F32 path sees exactly the BF16 values
  Tensor y32 = Tensor::empty({rows, d}, DType::F32, device());
  Tensor y16 = Tensor::empty({rows, d}, DType::BF16, device()),
         want = Tensor::empty({rows, d}, DType::BF16, device());
  layer_norm_forward(x32, nullptr, nullptr, 1e-5f, y32, nullptr, nullptr);
  layer_norm_forward(x16, nullptr, nullptr, 1e-5f, y16, nullptr, nullptr);
  cast(want, y32);
  EXPECT_EQ(bf16_bits(y16), bf16_bits(want));
  // In place: y is x.
  layer_norm_forward(x16, nullptr, nullptr, 1e-5f, x16, nullptr, nullptr);
  EXPECT_EQ(bf16_bits(x16), bf16_bits(want));
}

// Views one float into a buffer: the vector loops peel or take unaligned loads.
TEST(NormCpu, MisalignedViews) {
  const int64_t rows = 9, d = 100;
  const auto xv = random_floats(rows * d, 21), wv = random_floats(d, 22);
  std::vector<float> xbuf(rows * d + 1), ybuf(rows * d + 1, NAN);
  std::copy(xv.begin(), xv.end(), xbuf.begin() + 1);
  Tensor x = Tensor::wrap(xbuf.data() + 1, {rows, d}), y = Tensor::wrap(ybuf.data() + 1, {rows, d});
  Tensor w = Tensor::from_vector(wv, {d});
  Tensor ya = Tensor::empty({rows, d});
  layer_norm_forward(x, &w, nullptr, 1e-5f, y, nullptr, nullptr);
  layer_norm_forward(Tensor::from_vector(xv, {rows, d}), &w, nullptr, 1e-5f, ya, nullptr, nullptr);
  EXPECT_TRUE(all_close(y, to_double(ya.to_vector<float>()), 1e-6, 4 * kEps32));
  EXPECT_TRUE(std::isnan(ybuf[0])) << "wrote before the view";
}

TEST_P(NormTest, ZeroRowsAndHostileArguments) {
  Tensor x = on(device(), random_floats(12, 12), {3, 4});
  Tensor y = poisoned({3, 4}, device()), mean = poisoned({3}, device());
  Tensor empty = Tensor::empty({0, 4}, DType::F32, device());
  Tensor empty_y = Tensor::empty({0, 4}, DType::F32, device());
  layer_norm_forward(empty, nullptr, nullptr, 1e-5f, empty_y, nullptr, nullptr);
  Tensor dw = poisoned({4}, device()), ms = Tensor::empty({0}, DType::F32, device());
  layer_norm_backward(empty, nullptr, ms, ms, empty, nullptr, &dw, nullptr);
  EXPECT_TRUE(all_close(dw, std::vector<double>(4, 0.0), 0, 0)) << "no rows: dweight is 0";

  Tensor w5 = on(device(), random_floats(5, 13), {5});
  const auto before = y.to_vector<float>();
  EXPECT_TRUE(throws_error([&] { layer_norm_forward(x, &w5, nullptr, 1e-5f, y, nullptr, nullptr); },
                           "nnops::layer_norm_forward", "weight"));
  EXPECT_TRUE(
      throws_error([&] { layer_norm_forward(x, nullptr, nullptr, -1.0f, y, nullptr, nullptr); },
                   "nnops::layer_norm_forward", "eps"));
  Tensor mean4 = poisoned({4}, device());
  EXPECT_TRUE(
      throws_error([&] { layer_norm_forward(x, nullptr, nullptr, 1e-5f, y, &mean4, nullptr); },
                   "nnops::layer_norm_forward", "mean"));
  EXPECT_TRUE(
      throws_error([&] { rms_norm_forward(x, nullptr, 1e-5f, y, &y); }, "nnops::rms_norm_forward"));
  Tensor y_shifted = Tensor::empty({3, 4}, DType::F32, device());
  EXPECT_TRUE(throws_error([&] { rms_norm_backward(x, nullptr, x, x, &y_shifted, nullptr); },
                           "nnops::rms_norm_backward", "rstd"));
  EXPECT_TRUE(throws_error([&] { layer_norm_backward(x, nullptr, mean, mean, x, &y, &dw, &dw); },
                           "nnops::layer_norm_backward", "dbias"));
  const auto after = y.to_vector<float>();
  for (size_t i = 0; i < before.size(); ++i) ASSERT_TRUE(std::isnan(after[i]));
}

INSTANTIATE_TEST_SUITE_P(Devices, NormTest, ::testing::Values(Device::CPU, Device::CUDA),
                         device_name);

}  // namespace
}  // namespace nnops::test
