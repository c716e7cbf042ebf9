// Adam/AdamW/AMSGrad and SGD over several steps against double-precision implementations of
// torch.optim's single-tensor algorithms; clip_grad_norm against a double norm.
#include <cstring>

#include "test_util.hpp"

namespace nnops::test {
namespace {

// Hyper-parameters as Python holds them: doubles of the decimals written (0.9, not 0.9f).
struct PyAdamHyper {
  double lr = 1e-2, beta1 = 0.9, beta2 = 0.999, eps = 1e-8, wd = 0;
};

struct RefAdam {
  std::vector<double> p, m, v, vmax;
  int64_t step = 0;
  void apply(const AdamOptions& o, const PyAdamHyper& h, const std::vector<float>& grad,
             const std::vector<uint8_t>* mask) {
    ++step;
    const double bc1 = 1 - std::pow(h.beta1, step), bc2 = 1 - std::pow(h.beta2, step);
    for (size_t i = 0; i < p.size(); ++i) {
      if (mask && (*mask)[i] == 0) {
        p[i] = 0;
        continue;
      }
      double g = o.maximize ? -grad[i] : grad[i];
      if (h.wd != 0) {
        if (o.decoupled_weight_decay)
          p[i] *= 1 - h.lr * h.wd;
        else
          g += h.wd * p[i];
      }
      m[i] = h.beta1 * m[i] + (1 - h.beta1) * g;
      v[i] = h.beta2 * v[i] + (1 - h.beta2) * g * g;
      vmax[i] = std::max(vmax[i], v[i]);
      const double denom = std::sqrt(o.amsgrad ? vmax[i] : v[i]) / std::sqrt(bc2) + h.eps;
      p[i] -= h.lr / bc1 * m[i] / denom;
    }
  }
};

class OptimTest : public DeviceTest {};

TEST_P(OptimTest, AdamEveryOptionOverSeveralSteps) {
  for_each_cpu_isa(device(), [&] {
    int variant = 0;
    for (bool amsgrad : {false, true})
      for (bool maximize : {false, true})
        for (double wd : {0.0, 0.1})
          for (bool decoupled : {false, true})
            for (bool masked : {false, true}) {
              if (wd == 0.0 && decoupled) continue;
              PyAdamHyper h;
              h.wd = wd;
              AdamOptions o;
              o.lr = static_cast<float>(h.lr);
              o.amsgrad = amsgrad;
              o.maximize = maximize;
              o.weight_decay = static_cast<float>(wd);
              o.decoupled_weight_decay = decoupled;
              const int64_t n = variant % 2 ? 1023 : 33;
              SCOPED_TRACE(
                  "variant " + std::to_string(variant) + " amsgrad=" + std::to_string(amsgrad) +
                  " maximize=" + std::to_string(maximize) + " wd=" + std::to_string(wd) +
                  " decoupled=" + std::to_string(decoupled) + " masked=" + std::to_string(masked));
              auto p0 = random_floats(n, 100 + variant);
              std::vector<uint8_t> mask(n, 1);
              for (int64_t i = 0; i < n; i += 3) mask[i] = 0;
              if (masked)
                for (int64_t i = 0; i < n; ++i)
                  if (!mask[i]) p0[i] = 0;
              Tensor p = on(device(), p0, {n});
              Tensor mask_t = Tensor::from_vector(mask, {n}, device());
              AdamState state;
              RefAdam ref{to_double(p0), std::vector<double>(n), std::vector<double>(n),
                          std::vector<double>(n)};
              for (int step = 0; step < 6; ++step) {
                // Gradients shrink over steps so the bias corrections matter.
                const auto g =
                    random_floats(n, 1000 * variant + step, -1.0f / (step + 1), 1.0f / (step + 1));
                adam_step(o, p, on(device(), g, {n}), state, masked ? &mask_t : nullptr);
                ref.apply(o, h, g, masked ? &mask : nullptr);
              }
              EXPECT_EQ(state.step, 6);
              // Each step moves p by <= lr with a float relative error of a few u in the update;
              // p itself is rounded each step: 6 steps * (u*|p| + 8u*lr).
              EXPECT_TRUE(all_close(p, ref.p, 6 * 8 * kEps32 * o.lr + 1e-7, 6 * kEps32));
              // m and v: two rounded products and a sum per step, 6 steps: about 18u relative;
              // atol for moments that cancel towards 0 (|g| <= 1, so |m| terms <= 0.1).
              EXPECT_TRUE(all_close(state.exp_avg, ref.m, 6 * 3 * kEps32 * 0.1, 24 * kEps32));
              EXPECT_TRUE(all_close(state.exp_avg_sq, ref.v, 1e-12, 24 * kEps32));
              if (amsgrad) {
                // The running max of v carries v's error, nothing more.
                EXPECT_TRUE(all_close(state.max_exp_avg_sq, ref.vmax, 1e-12, 24 * kEps32));
              } else {
                EXPECT_FALSE(state.max_exp_avg_sq.defined()) << "no AMSGrad state without amsgrad";
              }
              if (masked) {
                const auto pv = p.to_vector<float>(), mv = state.exp_avg.to_vector<float>();
                for (int64_t i = 0; i < n; ++i) {
                  if (mask[i]) continue;
                  ASSERT_EQ(pv[i], 0.0f);
                  ASSERT_EQ(mv[i], 0.0f) << "masked moments stay untouched";
                }
              }
              ++variant;
            }
  });
}

TEST_P(OptimTest, AdamFirstStepMovesEveryWeightByLr) {
  for_each_cpu_isa(device(), [&] {
    // At t = 1, m_hat = g and v_hat = g^2, so each weight moves by lr * g/(|g| + eps).
    const int64_t n = 7;
    const std::vector<float> g = {1.f, -2.f, 0.5f, -0.25f, 3.f, 1e-3f, -1e-3f};
    Tensor p = Tensor::zeros({n}, DType::F32, device());
    AdamState st;
    adam_step(AdamOptions{}, p, on(device(), g, {n}), st);
    std::vector<double> expected(n);
    for (int i = 0; i < n; ++i) expected[i] = -1e-3 * g[i] / (std::fabs(g[i]) + 1e-8);
    EXPECT_TRUE(all_close(p, expected, 1e-10, 4 * kEps32));
  });
}

TEST_P(OptimTest, MultiTensorAdamEqualsSingleTensorSteps) {
  for_each_cpu_isa(device(), [&] {
    const std::vector<int64_t> sizes = {1, 7, 1023};
    std::vector<Tensor> a, b, grads;
    std::vector<AdamState> sa(sizes.size()), sb(sizes.size());
    for (size_t i = 0; i < sizes.size(); ++i) {
      const auto v = random_floats(sizes[i], 7 + i);
      a.push_back(on(device(), v, {sizes[i]}));
      b.push_back(on(device(), v, {sizes[i]}));
      grads.push_back(on(device(), random_floats(sizes[i], 70 + i), {sizes[i]}));
    }
    AdamOptions o;
    o.amsgrad = true;
    o.weight_decay = 0.01f;
    o.decoupled_weight_decay = true;
    for (int step = 0; step < 3; ++step) {
      std::vector<Tensor*> params;
      std::vector<const Tensor*> gs;
      std::vector<AdamState*> states;
      for (size_t i = 0; i < sizes.size(); ++i) {
        params.push_back(&a[i]);
        gs.push_back(&grads[i]);
        states.push_back(&sa[i]);
        adam_step(o, b[i], grads[i], sb[i]);
      }
      adam_step(o, params, gs, states);
    }
    for (size_t i = 0; i < sizes.size(); ++i) {
      EXPECT_EQ(a[i].to_vector<float>(), b[i].to_vector<float>()) << "bitwise equal";
      EXPECT_EQ(sa[i].step, 3);
    }
  });
}

struct RefSgd {
  std::vector<double> p, buf;
  bool first = true;
  void apply(const SgdOptions& o, const std::vector<float>& grad) {
    for (size_t i = 0; i < p.size(); ++i) {
      double d = o.maximize ? -grad[i] : grad[i];
      if (o.weight_decay != 0) d += double(o.weight_decay) * p[i];
      if (o.momentum != 0) {
        buf[i] = first ? d : o.momentum * buf[i] + (1 - double(o.dampening)) * d;
        d = o.nesterov ? d + o.momentum * buf[i] : buf[i];
      }
      p[i] -= double(o.lr) * d;
    }
    first = false;
  }
};

TEST_P(OptimTest, SgdEveryOptionOverSeveralSteps) {
  for_each_cpu_isa(device(), [&] {
    int variant = 0;
    for (float momentum : {0.0f, 0.9f})
      for (float dampening : {0.0f, 0.5f})
        for (bool nesterov : {false, true})
          for (float wd : {0.0f, 0.01f})
            for (bool maximize : {false, true}) {
              if (nesterov && (momentum == 0.0f || dampening != 0.0f)) continue;
              SgdOptions o{0.1f, momentum, dampening, wd, nesterov, maximize};
              const int64_t n = 257;
              const auto p0 = random_floats(n, 300 + variant);
              Tensor p = on(device(), p0, {n});
              SgdState st;
              RefSgd ref{to_double(p0), std::vector<double>(n)};
              for (int step = 0; step < 5; ++step) {
                const auto g = random_floats(n, 400 + 10 * variant + step);
                sgd_step(o, p, on(device(), g, {n}), st);
                ref.apply(o, g);
              }
              // |update| <= lr * (1 + momentum)/(1 - momentum) ~ 2: each step adds ~2u of it.
              EXPECT_TRUE(all_close(p, ref.p, 5 * 4 * kEps32 * 2, 5 * kEps32))
                  << "momentum=" << momentum << " dampening=" << dampening
                  << " nesterov=" << nesterov << " wd=" << wd << " maximize=" << maximize;
              ++variant;
            }
  });
}

TEST_P(OptimTest, MaskedSgdKeepsPrunedWeightsAtZero) {
  for_each_cpu_isa(device(), [&] {
    const int64_t n = 33;
    const float lr = 0.1f, momentum = 0.9f;
    std::vector<float> p0 = random_floats(n, 1);
    std::vector<uint8_t> mask(n, 1);
    for (int64_t i = 0; i < n; i += 2) mask[i] = 0;
    Tensor p = on(device(), p0, {n}), mask_t = Tensor::from_vector(mask, {n}, device());
    SgdState st;
    // One unmasked step fills the whole momentum buffer; then prune and step with the mask.
    const auto g0 = random_floats(n, 2);
    sgd_step(SgdOptions{lr, momentum}, p, on(device(), g0, {n}), st);
    apply_mask(p, mask_t);
    const auto p1 = p.to_vector<float>(), buf1 = st.momentum_buffer.to_vector<float>();
    std::vector<double> ref_p(p1.begin(), p1.end()), ref_buf(buf1.begin(), buf1.end());
    for (int step = 0; step < 3; ++step) {
      const auto g = random_floats(n, 3 + step);
      sgd_step(SgdOptions{lr, momentum}, p, on(device(), g, {n}), st, &mask_t);
      for (int64_t i = 0; i < n; ++i) {
        if (!mask[i]) continue;
        ref_buf[i] = momentum * ref_buf[i] + g[i];
        ref_p[i] -= lr * ref_buf[i];
      }
    }
    const auto pv = p.to_vector<float>(), bv = st.momentum_buffer.to_vector<float>();
    for (int64_t i = 0; i < n; ++i) {
      if (mask[i]) continue;
      EXPECT_EQ(pv[i], 0.0f) << i;
      EXPECT_EQ(bv[i], buf1[i]) << "the momentum of pruned entry " << i << " was touched";
      ref_p[i] = 0.0, ref_buf[i] = buf1[i];
    }
    // Kept entries follow torch.optim.SGD: |buf| <= 10 after a few steps, a few u per step.
    EXPECT_TRUE(all_close(p, ref_p, 3 * 4 * kEps32 * 2, 3 * kEps32));
    EXPECT_TRUE(all_close(st.momentum_buffer, ref_buf, 3 * 4 * kEps32 * 10, 3 * kEps32));
  });
}

TEST_P(OptimTest, ClipGradNormWithInfiniteMaxNormOnlyMeasures) {
  for_each_cpu_isa(device(), [&] {
    const auto g = random_floats(1023, 5);
    Tensor a = on(device(), g, {1023});
    double sum = 0;
    for (float v : g) sum += double(v) * v;
    EXPECT_NEAR(clip_grad_norm({&a}, INFINITY), std::sqrt(sum), 1e-12 * std::sqrt(sum));
    EXPECT_EQ(a.to_vector<float>(), g) << "PyTorch scales by min(inf / norm, 1) = 1: nothing";
  });
}

TEST_P(OptimTest, ClipGradNorm) {
  for_each_cpu_isa(device(), [&] {
    const auto g1 = random_floats(1023, 1), g2 = random_floats(7, 2);
    double sum = 0;
    for (float v : g1) sum += double(v) * v;
    for (float v : g2) sum += double(v) * v;
    const double norm = std::sqrt(sum);
    {
      Tensor a = on(device(), g1, {1023}), b = on(device(), g2, {7});
      const double total = clip_grad_norm({&a, &b}, 1.0f);
      EXPECT_NEAR(total, norm, 1e-12 * norm);
      const double coef = 1.0 / (norm + 1e-6);
      std::vector<double> ref(g1.begin(), g1.end());
      for (auto& v : ref) v *= coef;
      EXPECT_TRUE(all_close(a, ref, 0, 2 * kEps32));
    }
    {
      Tensor a = on(device(), g1, {1023});
      clip_grad_norm({&a}, 1e6f);  // far above the norm: untouched, bit for bit
      EXPECT_EQ(a.to_vector<float>(), g1);
    }
  });
}

TEST_P(OptimTest, ClipGradNormOnTheDeviceMatchesTheHostVersion) {
  for_each_cpu_isa(device(), [&] {
    for (float max_norm : {0.5f, 1e6f, INFINITY}) {
      const auto g1 = random_floats(1023, 31), g2 = random_floats(7, 32), g3 = random_floats(1, 33);
      Tensor a = on(device(), g1, {1023}), b = on(device(), g2, {7}), c = on(device(), g3, {1});
      Tensor a2 = on(device(), g1, {1023}), b2 = on(device(), g2, {7}), c2 = on(device(), g3, {1});
      Tensor norm = poisoned({1}, device());
      clip_grad_norm({&a, &b, &c}, max_norm, norm);
      const double host = clip_grad_norm({&a2, &b2, &c2}, max_norm);
      // Both sum the squares in double; only the order of the partial sums may differ.
      EXPECT_NEAR(norm.item(), host, 2 * kEps32 * host) << max_norm;
      for (auto [x, y] : {std::pair<Tensor*, Tensor*>{&a, &a2}, {&b, &b2}, {&c, &c2}}) {
        const auto yv = y->to_vector<float>();
        EXPECT_TRUE(all_close(*x, std::vector<double>(yv.begin(), yv.end()), 0, 2 * kEps32));
      }
    }
    Tensor norm = poisoned({1}, device());
    clip_grad_norm({}, 1.0f, norm);
    EXPECT_EQ(norm.item(), 0.0f) << "no gradients: norm 0";
    Tensor nan_grad = on(device(), {NAN, 1.0f}, {2});
    clip_grad_norm({&nan_grad}, 1.0f, norm);
    EXPECT_TRUE(std::isnan(norm.item()));
    EXPECT_TRUE(std::isnan(nan_grad.to_vector<float>()[1])) << "scaled by the NaN coefficient";
  });
}

NNOPS_INSTANTIATE_DEVICES(OptimTest);

}  // namespace
}  // namespace nnops::test
