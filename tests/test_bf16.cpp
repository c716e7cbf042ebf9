// BF16 storage and casts: conversions against bit patterns PyTorch 2.15 produced
// (`torch.tensor(bits).view(torch.float32).to(torch.bfloat16)`), against an independent
// round-to-nearest-even reference over a sweep of the float range, and cast on every device.
#include <cfloat>
#include <cstring>

#include "test_util.hpp"

namespace nnops::test {
namespace {

float from_bits(uint32_t b) {
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// float bits -> the bf16 bits torch.bfloat16 gave for them: signed zeros, normals, ties to even
// (0x3F808000 rounds down, 0x3F818000 up), overflow to inf (0x7F7FFFFF), subnormals and their
// ties, infinities, and NaNs of either sign and payload (all 0xFFFF on PyTorch's CPU).
const std::vector<std::pair<uint32_t, uint16_t>> kTorch = {
    {0x00000000u, 0x0000u}, {0x80000000u, 0x8000u}, {0x3F800000u, 0x3F80u}, {0xBF800000u, 0xBF80u},
    {0x3F808000u, 0x3F80u}, {0x3F80C000u, 0x3F81u}, {0x3F810000u, 0x3F81u}, {0x3F818000u, 0x3F82u},
    {0x40490FDBu, 0x4049u}, {0xC02DF84Du, 0xC02Eu}, {0x477FE000u, 0x4780u}, {0x7F7F0000u, 0x7F7Fu},
    {0x7F7FFFFFu, 0x7F80u}, {0x7F800000u, 0x7F80u}, {0xFF800000u, 0xFF80u}, {0x7FC00000u, 0xFFFFu},
    {0x006CE3EEu, 0x006Du}, {0x00800000u, 0x0080u}, {0x00000001u, 0x0000u}, {0x00010000u, 0x0001u},
    {0x800116C2u, 0x8001u}, {0x3DCCCCCDu, 0x3DCDu}, {0x3E4CCCCDu, 0x3E4Du}, {0x3E99999Au, 0x3E9Au},
    {0x501502F9u, 0x5015u}, {0xAEDBE6FFu, 0xAEDCu}, {0x47F12065u, 0x47F1u}, {0x004C3927u, 0x004Cu},
    {0x0000000Bu, 0x0000u}, {0x437F8000u, 0x4380u}, {0x43804000u, 0x4380u}, {0x4380C000u, 0x4381u},
    {0x40498000u, 0x404Au}, {0x7F7F8000u, 0x7F80u}, {0x00008000u, 0x0000u}, {0x00018000u, 0x0002u},
    {0x807F8000u, 0x8080u}, {0x7FC00001u, 0xFFFFu}, {0xFF800001u, 0xFFFFu}, {0x7F800001u, 0xFFFFu},
    {0x807FFFFFu, 0x8080u}};

// Round to nearest even written another way: the two bf16 neighbours of f, compared in double.
uint16_t reference_bits(float f) {
  if (std::isnan(f)) return 0xFFFF;
  uint32_t u;
  std::memcpy(&u, &f, 4);
  const uint16_t down = static_cast<uint16_t>(u >> 16);  // toward zero
  if ((u & 0xFFFFu) == 0) return down;
  const uint16_t up = static_cast<uint16_t>(down + 1);  // away from zero (may reach inf)
  const double lo = std::fabs(double(from_bits(uint32_t(down) << 16)));
  const double hi_mag = (up & 0x7FFF) == 0x7F80 ? std::ldexp(1.0, 128)  // the overflow point
                                                : std::fabs(double(from_bits(uint32_t(up) << 16)));
  const double a = std::fabs(double(f));
  if (a - lo < hi_mag - a) return down;
  if (a - lo > hi_mag - a) return up;
  return (down & 1) ? up : down;
}

TEST(Bf16, ConversionMatchesPyTorchBits) {
  for (auto [in, want] : kTorch) {
    EXPECT_EQ(bf16(from_bits(in)).bits, want) << std::hex << "float bits 0x" << in;
    EXPECT_EQ(reference_bits(from_bits(in)), want) << std::hex << "reference, 0x" << in;
  }
}

TEST(Bf16, SweepAgainstAnIndependentReference) {
  for (uint64_t b = 0; b <= 0xFFFFFFFFull; b += 257) {  // 16.7 million floats
    const float f = from_bits(static_cast<uint32_t>(b));
    ASSERT_EQ(bf16(f).bits, reference_bits(f)) << std::hex << "float bits 0x" << b;
  }
}

TEST(Bf16, EveryBf16SurvivesTheRoundTrip) {
  for (uint32_t b = 0; b <= 0xFFFF; ++b) {
    const bf16 v = bf16::from_bits(static_cast<uint16_t>(b));
    const float f = v.to_float();
    if (std::isnan(f)) {
      EXPECT_EQ(bf16(f).bits, 0xFFFF);
    } else {
      ASSERT_EQ(bf16(f).bits, b) << std::hex << b;
    }
  }
}

class Bf16Test : public DeviceTest {};

TEST_P(Bf16Test, CastBothWaysOnEveryDevice) {
  for_each_cpu_isa(device(), [&] {
    for (int64_t n : {1, 7, 33, 1023, 100003}) {
      auto x = random_floats(n, 50 + n, -1e4f, 1e4f);
      x[0] = NAN;
      if (n > 2) x[1] = INFINITY, x[2] = 1e-40f;
      // PyTorch's table (ties, overflow, NaN payloads of either sign) inside the vector loops.
      if (n >= 1023)
        for (size_t i = 0; i < std::size(kTorch); ++i) x[3 + i] = from_bits(kTorch[i].first);
      Tensor src = on(device(), x, {n});
      Tensor half =
          Tensor::from_vector(std::vector<bf16>(n, bf16::from_bits(0x1234)), {n}, device());
      cast(half, src);
      const auto hb = half.to_vector<bf16>();
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(hb[i].bits, reference_bits(x[i])) << i;
      // Back to float: exact (every bf16 is a float), NaN stays NaN.
      Tensor back = poisoned({n}, device());
      cast(back, half);
      const auto bv = back.to_vector<float>();
      for (int64_t i = 0; i < n; ++i) {
        const float want = hb[i].to_float();
        ASSERT_TRUE(std::isnan(want) ? std::isnan(bv[i]) : bv[i] == want) << i;
      }
      // Across devices (a no-op pair on a CPU-only machine).
      Tensor host = Tensor::zeros({n}, DType::BF16);
      cast(host, src);
      EXPECT_EQ(std::memcmp(host.to_vector<bf16>().data(), hb.data(), n * 2), 0);
    }
  });
}

// Tensors of the given dtype holding the bf16 rounding of v (so every dtype holds equal values).
Tensor holding(const std::vector<float>& v, DType dtype, Device device, Shape shape = {}) {
  if (shape.empty()) shape = {int64_t(v.size())};
  std::vector<bf16> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = bf16(v[i]);
  if (dtype == DType::BF16) return Tensor::from_vector(h, shape, device);
  std::vector<float> f(v.size());
  for (size_t i = 0; i < v.size(); ++i) f[i] = h[i].to_float();
  return Tensor::from_vector(f, shape, device);
}

// A BF16 output is the FP32 result rounded to nearest even: 8 significant bits, so a relative
// error up to 2^-8 (half an ulp) on top of the FP32 path's few ulps.
double rtol_for(DType out) {
  return out == DType::BF16 ? std::ldexp(1.0, -8) + 1e-6 : 1e-6;
}

TEST_P(Bf16Test, ActivationsTakeAndGiveBf16) {
  for_each_cpu_isa(device(), [&] {
    const int64_t n = 1023;
    const auto xs = random_floats(n, 81, -6.0f, 6.0f), gs = random_floats(n, 82);
    for (Activation a : {Activation::ReLU, Activation::GELU, Activation::SiLU, Activation::Tanh}) {
      for (DType din : {DType::F32, DType::BF16}) {
        for (DType dout : {DType::F32, DType::BF16}) {
          SCOPED_TRACE(std::string(to_string(a)) + " in " + to_string(din) + " out " +
                       to_string(dout));
          Tensor x = holding(xs, din, device()), dy = holding(gs, DType::BF16, device());
          Tensor y = Tensor::empty({n}, dout, device()), dx = Tensor::empty({n}, dout, device());
          activation_forward(a, x, y);
          activation_backward(a, x, dy, dx);
          const auto xv = as_floats(x), gv = as_floats(dy);
          Tensor xf = Tensor::from_vector(std::vector<float>(xv.begin(), xv.end()), {n}, device());
          Tensor yf = Tensor::empty({n}, DType::F32, device());
          Tensor gf = Tensor::from_vector(std::vector<float>(gv.begin(), gv.end()), {n}, device());
          Tensor dxf = Tensor::empty({n}, DType::F32, device());
          activation_forward(a, xf, yf);  // the F32 path on the same values
          activation_backward(a, xf, gf, dxf);
          const auto yv = yf.to_vector<float>(), dv = dxf.to_vector<float>();
          std::vector<double> want_y(yv.begin(), yv.end()), want_dx(dv.begin(), dv.end());
          EXPECT_TRUE(all_close(as_floats(y), want_y, 1e-30, rtol_for(dout)));
          EXPECT_TRUE(all_close(as_floats(dx), want_dx, 1e-30, rtol_for(dout)));
        }
      }
    }
    // In place on a BF16 tensor.
    Tensor t = holding(xs, DType::BF16, device());
    const auto before = as_floats(t);
    activation_forward(Activation::ReLU, t, t);
    const auto after = as_floats(t);
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(after[i], before[i] > 0 ? before[i] : 0.0) << i;
  });
}

TEST_P(Bf16Test, AddScaledMixesDtypes) {
  const int64_t n = 4099;
  const auto ys = random_floats(n, 83), xs = random_floats(n, 84);
  for (DType dy : {DType::F32, DType::BF16}) {
    for (DType dx : {DType::F32, DType::BF16}) {
      for (float beta : {0.0f, 0.5f}) {
        SCOPED_TRACE(std::string("y ") + to_string(dy) + " x " + to_string(dx) + " beta " +
                     std::to_string(beta));
        Tensor y = holding(ys, dy, device()), x = holding(xs, dx, device());
        const auto y0 = as_floats(y), x0 = as_floats(x);
        if (beta == 0.0f) cast(y, poisoned({n}, device()));  // beta = 0 never reads y (NaN)
        add_scaled(y, x, 2.0f, beta);
        std::vector<double> ref(n);
        for (int64_t i = 0; i < n; ++i) ref[i] = beta * y0[i] + 2.0 * x0[i];
        if (dy == DType::F32) {
          EXPECT_TRUE(all_close(as_floats(y), ref, 1e-6, 4 * kEps32));
        } else {
          EXPECT_TRUE(all_close(as_floats(y), ref, 1e-6, rtol_for(DType::BF16)));
        }
      }
    }
  }
}

// Row-wise ops and losses compute on the widened values: with BF16 inputs they give exactly
// what the F32 path gives on the same (BF16-representable) values, and a BF16 output is that
// F32 result rounded once.
class RowOpCase {
 public:
  RowOpCase(Device device, int64_t rows, int64_t cols, uint32_t seed) : device_(device) {
    shape_ = {rows, cols};
    for (int i = 0; i < 3; ++i) inputs_.push_back(random_floats(rows * cols, seed + i, -8, 8));
  }
  // Input i as a tensor of this dtype, holding BF16-representable values either way.
  Tensor input(int i, DType dtype) const { return holding(inputs_[i], dtype, device_, shape_); }
  Tensor output(DType dtype) const { return Tensor::zeros(shape_, dtype, device_); }
  const Shape& shape() const { return shape_; }

 private:
  Device device_;
  Shape shape_;
  std::vector<std::vector<float>> inputs_;
};

// The BF16 rounding of each value, as the bits PyTorch would store.
std::vector<uint16_t> rounded_bits(const std::vector<float>& v) {
  std::vector<uint16_t> out;
  for (float x : v) out.push_back(reference_bits(x));
  return out;
}

std::vector<uint16_t> bits_of(const Tensor& t) {
  std::vector<uint16_t> out;
  for (bf16 v : t.to_vector<bf16>()) out.push_back(v.bits);
  return out;
}

// Runs op(inputs of dtype `in`, outputs of dtype `out`) and compares with the all-F32 run.
template <class Op>
void expect_like_f32(const RowOpCase& c, int outputs, Op op) {
  std::vector<Tensor> ref_out;
  for (int o = 0; o < outputs; ++o) ref_out.push_back(c.output(DType::F32));
  op(DType::F32, ref_out);
  for (DType in : {DType::F32, DType::BF16}) {
    for (DType out : {DType::F32, DType::BF16}) {
      SCOPED_TRACE(std::string("inputs ") + to_string(in) + ", outputs " + to_string(out));
      std::vector<Tensor> got;
      for (int o = 0; o < outputs; ++o) got.push_back(c.output(out));
      op(in, got);
      for (int o = 0; o < outputs; ++o) {
        const auto want = ref_out[o].to_vector<float>();
        if (out == DType::F32) {
          EXPECT_EQ(got[o].to_vector<float>(), want) << "output " << o;
        } else {
          EXPECT_EQ(bits_of(got[o]), rounded_bits(want)) << "output " << o;
        }
      }
    }
  }
}

TEST_P(Bf16Test, SoftmaxTakesAndGivesBf16) {
  for (int64_t cols : {1, 7, 1000, 1025}) {
    const RowOpCase c(device(), 5, cols, 700 + cols);
    for (bool log : {false, true}) {
      SCOPED_TRACE(log ? "log_softmax" : "softmax");
      expect_like_f32(c, 1, [&](DType in, std::vector<Tensor>& out) {
        log ? log_softmax_forward(c.input(0, in), out[0]) : softmax_forward(c.input(0, in), out[0]);
      });
      expect_like_f32(c, 1, [&](DType in, std::vector<Tensor>& out) {
        const Tensor y = c.input(0, in), dy = c.input(1, in);
        log ? log_softmax_backward(y, dy, out[0]) : softmax_backward(y, dy, out[0]);
      });
    }
  }
}

TEST_P(Bf16Test, LossesTakeBf16AndGiveF32LossesWithGradientsOfEitherDtype) {
  for (int64_t cols : {1, 33, 1000}) {
    const RowOpCase c(device(), 7, cols, 800 + cols);
    std::vector<int32_t> targets(7);
    for (int i = 0; i < 7; ++i) targets[i] = static_cast<int32_t>((i * 5) % cols);
    const Tensor t = Tensor::from_vector(targets, {7}, device());
    // The loss is an extra F32 output beside the gradient; compare it as F32 bits too.
    auto run = [&](auto loss_fn) {
      Tensor ref_loss = Tensor::zeros({1}, DType::F32, device());
      Tensor ref_grad = c.output(DType::F32);
      loss_fn(DType::F32, ref_loss, ref_grad);
      for (DType in : {DType::F32, DType::BF16}) {
        for (DType g : {DType::F32, DType::BF16}) {
          SCOPED_TRACE(std::string("inputs ") + to_string(in) + ", grad " + to_string(g));
          Tensor loss = Tensor::zeros({1}, DType::F32, device()), grad = c.output(g);
          loss_fn(in, loss, grad);
          EXPECT_EQ(loss.to_vector<float>(), ref_loss.to_vector<float>());
          if (g == DType::F32) {
            EXPECT_EQ(grad.to_vector<float>(), ref_grad.to_vector<float>());
          } else {
            EXPECT_EQ(bits_of(grad), rounded_bits(ref_grad.to_vector<float>()));
          }
        }
      }
    };
    SCOPED_TRACE("cols " + std::to_string(cols));
    run([&](DType in, Tensor& loss, Tensor& grad) {
      mse_loss(c.input(0, in), c.input(1, in), loss, &grad);
    });
    run([&](DType in, Tensor& loss, Tensor& grad) {
      cross_entropy_loss(c.input(0, in), t, loss, &grad, Reduction::Mean, 0.1f);
    });
    run([&](DType in, Tensor& loss, Tensor& grad) {
      kd_loss(c.input(0, in), c.input(1, in), 2.0f, loss, &grad);
    });
  }
}

TEST_P(Bf16Test, BadCastsAreErrors) {
  Tensor f = Tensor::zeros({4}, DType::F32, device()),
         h = Tensor::zeros({4}, DType::BF16, device());
  Tensor i = Tensor::zeros({4}, DType::I32, device()),
         h5 = Tensor::zeros({5}, DType::BF16, device());
  EXPECT_TRUE(throws_error([&] { cast(i, f); }, "nnops::cast", "dst is I32"));
  EXPECT_TRUE(throws_error([&] { cast(h5, f); }, "nnops::cast", "shapes must match"));
  Tensor loss_h = Tensor::zeros({1}, DType::BF16, device());
  EXPECT_TRUE(throws_error([&] { mse_loss(h, h, loss_h, nullptr); }, "nnops::mse_loss",
                           "loss has dtype BF16 but F32 is required"));
  EXPECT_TRUE(
      throws_error([&] { softmax_forward(i, h); }, "nnops::softmax_forward", "x has dtype I32"));
  EXPECT_EQ(h.nbytes(), 8u);
  EXPECT_STREQ(to_string(DType::BF16), "BF16");
}

NNOPS_INSTANTIATE_DEVICES(Bf16Test);

}  // namespace
}  // namespace nnops::test
