// Attention against a double-precision F.scaled_dot_product_attention: multi-head, grouped and
// multi-query heads, causal (top-left) with Tq != Tk both ways, sharp softmaxes (logits x30),
// odd head sizes, the logsumexp, the backward by formula and by finite differences, BF16 through
// the F32 path, and hostile arguments.
#include <omp.h>

#include <array>

#include "test_util.hpp"

namespace nnops::test {
namespace {

struct Dims {
  int64_t b, hq, hkv, tq, tk, d;
  bool causal;
};

struct AttnRef {
  std::vector<double> out, lse, dq, dk, dv;
};

// Naive attention in double (P materialised per row), forward and backward.
AttnRef attention_ref(const Dims& s, const std::vector<double>& q, const std::vector<double>& k,
                      const std::vector<double>& v, const std::vector<double>* dout, double scale) {
  AttnRef r;
  r.out.assign(s.b * s.hq * s.tq * s.d, 0.0);
  r.lse.assign(s.b * s.hq * s.tq, 0.0);
  r.dq.assign(q.size(), 0.0);
  r.dk.assign(k.size(), 0.0);
  r.dv.assign(v.size(), 0.0);
  const int64_t group = s.hq / s.hkv;
  for (int64_t b = 0; b < s.b; ++b)
    for (int64_t h = 0; h < s.hq; ++h) {
      const int64_t g = h / group;
      for (int64_t i = 0; i < s.tq; ++i) {
        const int64_t qi = ((b * s.hq + h) * s.tq + i) * s.d;
        const int64_t seen = s.causal ? std::min(s.tk, i + 1) : s.tk;
        std::vector<double> p(seen);
        double mx = -INFINITY;
        for (int64_t j = 0; j < seen; ++j) {
          const int64_t kj = ((b * s.hkv + g) * s.tk + j) * s.d;
          double dot = 0;
          for (int64_t c = 0; c < s.d; ++c) dot += q[qi + c] * k[kj + c];
          p[j] = scale * dot;
          mx = std::max(mx, p[j]);
        }
        double sum = 0;
        for (int64_t j = 0; j < seen; ++j) sum += std::exp(p[j] - mx);
        const double lse = mx + std::log(sum);
        r.lse[(b * s.hq + h) * s.tq + i] = lse;
        for (int64_t j = 0; j < seen; ++j) {
          p[j] = std::exp(p[j] - lse);
          const int64_t vj = ((b * s.hkv + g) * s.tk + j) * s.d;
          for (int64_t c = 0; c < s.d; ++c) r.out[qi + c] += p[j] * v[vj + c];
        }
        if (!dout) continue;
        double delta = 0;
        for (int64_t c = 0; c < s.d; ++c) delta += (*dout)[qi + c] * r.out[qi + c];
        for (int64_t j = 0; j < seen; ++j) {
          const int64_t kj = ((b * s.hkv + g) * s.tk + j) * s.d;
          double dp = 0;
          for (int64_t c = 0; c < s.d; ++c) dp += (*dout)[qi + c] * v[kj + c];
          const double ds = p[j] * (dp - delta);
          for (int64_t c = 0; c < s.d; ++c) {
            r.dq[qi + c] += scale * ds * k[kj + c];
            r.dk[kj + c] += scale * ds * q[qi + c];
            r.dv[kj + c] += p[j] * (*dout)[qi + c];
          }
        }
      }
    }
  return r;
}

// f once on the CPU; on CUDA once per attention kernel (the tiled ones take head sizes 32, 64 and
// 128 and leave the others to the simple ones).
template <class F>
void for_each_attention_kernel(Device device, F&& f) {
  if (device != Device::CUDA) return f();
  for (auto kernel : {cuda::AttentionKernel::Simple, cuda::AttentionKernel::Tiled}) {
    SCOPED_TRACE(kernel == cuda::AttentionKernel::Tiled ? "tiled CUDA kernels" : "simple CUDA kernels");
    cuda::set_attention_kernel(kernel);
    f();
  }
  cuda::set_attention_kernel(cuda::AttentionKernel::Default);
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

class AttentionTest : public DeviceTest {
 protected:
  void check_all_shapes();
  // Runs forward and backward on random inputs (logits scaled by `sharp`) and compares.
  void check(const Dims& s, double sharp, uint32_t seed) {
    SCOPED_TRACE("B=" + std::to_string(s.b) + " Hq=" + std::to_string(s.hq) +
                 " Hkv=" + std::to_string(s.hkv) + " Tq=" + std::to_string(s.tq) +
                 " Tk=" + std::to_string(s.tk) + " D=" + std::to_string(s.d) +
                 (s.causal ? " causal" : "") + " x" + std::to_string(sharp));
    const Shape qs = {s.b, s.hq, s.tq, s.d}, ks = {s.b, s.hkv, s.tk, s.d};
    const auto qv = random_floats(numel_of(qs), seed, -1, 1),
               kv = random_floats(numel_of(ks), seed + 1, -1, 1);
    const auto vv = random_floats(numel_of(ks), seed + 2, -1, 1),
               gv = random_floats(numel_of(qs), seed + 3, -1, 1);
    const double scale = sharp / std::sqrt(double(s.d));
    AttentionOptions opt;
    opt.causal = s.causal;
    opt.scale = static_cast<float>(scale);
    Tensor q = on(device(), qv, qs), k = on(device(), kv, ks), v = on(device(), vv, ks);
    Tensor out = poisoned(qs, device()), lse = poisoned({s.b, s.hq, s.tq}, device());
    attention_forward(q, k, v, out, &lse, opt);
    const auto gd = to_double(gv);
    const AttnRef r =
        attention_ref(s, to_double(qv), to_double(kv), to_double(vv), &gd, double(opt.scale));
    // Float dot products of D terms and sums of Tk terms, magnified by the logit scale.
    const double tol = (s.d + s.tk + 8) * kEps32 * (1 + sharp * 4);
    EXPECT_TRUE(all_close(out, r.out, tol * max_abs(r.out), tol));
    EXPECT_TRUE(all_close(lse, r.lse, tol * (1 + max_abs(r.lse)), tol));
    Tensor dq = poisoned(qs, device()), dk = poisoned(ks, device()), dv = poisoned(ks, device());
    attention_backward(q, k, v, out, lse, on(device(), gv, qs), dq, dk, dv, opt);
    // The gradients also carry ds = p (dout . v - D), a difference of two rounded D-term sums:
    // an absolute error of ~D u |dout||v| even where the exact value is 0 (one key: ds is 0).
    const double tb = 4 * tol * (1 + sharp), floor = 0.01;
    EXPECT_TRUE(all_close(dq, r.dq, tb * (max_abs(r.dq) + floor), tb));
    EXPECT_TRUE(all_close(dk, r.dk, tb * (max_abs(r.dk) + floor), tb));
    EXPECT_TRUE(all_close(dv, r.dv, tb * (max_abs(r.dv) + floor), tb));
  }
};

TEST_P(AttentionTest, HeadsAndLengthsAgainstDoubleReference) {
  for_each_attention_kernel(device(),
                            [&] { for_each_cpu_isa(device(), [&] { check_all_shapes(); }); });
}

TEST_P(AttentionTest, LongSequence) {
  for_each_attention_kernel(device(), [&] { check({1, 2, 1, 1000, 1000, 64, true}, 1.0, 77); });
}

// Views that start 4 bytes into their buffer: the tiled CUDA kernels read 16-byte words, so
// such tensors take the simple kernels (on the CPU: any alignment), and agree with the aligned
// tensors' run (the tiled kernels when chosen), forward and backward. 33 queries x 65 keys, head
// size 64; the orders of the float sums differ, hence the tolerances.
TEST_P(AttentionTest, ViewsOffByOneFloat) {
  for_each_attention_kernel(device(), [&] {
    const Shape qs = {1, 2, 33, 64}, ks = {1, 1, 65, 64};
    const int64_t nq = numel_of(qs), nk = numel_of(ks);
    const auto qv = random_floats(nq, 21, -1, 1), kv = random_floats(nk, 22, -1, 1),
               vv = random_floats(nk, 23, -1, 1), gv = random_floats(nq, 24, -1, 1);
    auto shifted = [&](const std::vector<float>& values, const Shape& shape) {
      std::vector<float> padded(values.size() + 1, 0.0f);
      std::copy(values.begin(), values.end(), padded.begin() + 1);
      return on(device(), padded, {int64_t(padded.size())});
    };
    Tensor qb = shifted(qv, qs), kb = shifted(kv, ks), vb = shifted(vv, ks), gb = shifted(gv, qs);
    Tensor ob = poisoned({nq + 1}, device());
    const Tensor q = qb.narrow(1, nq).reshape(qs), k = kb.narrow(1, nk).reshape(ks),
                 v = vb.narrow(1, nk).reshape(ks), dout = gb.narrow(1, nq).reshape(qs);
    Tensor out = ob.narrow(1, nq).reshape(qs);
    Tensor lse = poisoned({1, 2, 33}, device());
    AttentionOptions opt;
    opt.causal = true;
    attention_forward(q, k, v, out, &lse, opt);
    Tensor dqb = poisoned({nq + 1}, device()), dkb = poisoned({nk + 1}, device()),
           dvb = poisoned({nk + 1}, device());
    Tensor dq = dqb.narrow(1, nq).reshape(qs), dk = dkb.narrow(1, nk).reshape(ks),
           dv = dvb.narrow(1, nk).reshape(ks);
    attention_backward(q, k, v, out, lse, dout, dq, dk, dv, opt);

    const Tensor qa = on(device(), qv, qs), ka = on(device(), kv, ks), va = on(device(), vv, ks);
    Tensor want = Tensor::empty(qs, DType::F32, device());
    Tensor want_lse = Tensor::empty({1, 2, 33}, DType::F32, device());
    attention_forward(qa, ka, va, want, &want_lse, opt);
    Tensor dq_a = Tensor::empty(qs, DType::F32, device()),
           dk_a = Tensor::empty(ks, DType::F32, device()),
           dv_a = Tensor::empty(ks, DType::F32, device());
    attention_backward(qa, ka, va, want, want_lse, on(device(), gv, qs), dq_a, dk_a, dv_a, opt);
    EXPECT_TRUE(all_close(out, to_double(want.to_vector<float>()), 1e-6, 1e-5));
    EXPECT_TRUE(all_close(lse, to_double(want_lse.to_vector<float>()), 1e-6, 1e-5));
    EXPECT_TRUE(all_close(dq, to_double(dq_a.to_vector<float>()), 1e-5, 1e-4));
    EXPECT_TRUE(all_close(dk, to_double(dk_a.to_vector<float>()), 1e-5, 1e-4));
    EXPECT_TRUE(all_close(dv, to_double(dv_a.to_vector<float>()), 1e-5, 1e-4));
  });
}

void AttentionTest::check_all_shapes() {
  uint32_t seed = 1000;
  for (bool causal : {false, true}) {
    // Multi-head, grouped (4 and 8 query heads per key head) and multi-query.
    for (auto [hq, hkv] : std::vector<std::pair<int64_t, int64_t>>{{2, 2}, {4, 1}, {8, 2}}) {
      for (auto [tq, tk] :
           std::vector<std::pair<int64_t, int64_t>>{{1, 1}, {7, 7}, {7, 33}, {33, 7}, {127, 127}}) {
        check({2, hq, hkv, tq, tk, 64, causal}, 1.0, seed++);
      }
    }
    for (int64_t d : {1, 2, 80, 96, 128, 256}) check({1, 2, 1, 37, 45, d, causal}, 1.0, seed++);
    check({1, 4, 2, 70, 70, 64, causal}, 30.0, seed++);  // sharp: nearly one-hot rows
    // Several blocks of 128 with lengths that differ: causal key blocks that only some query
    // rows see are computed in halves, each for the rows that see it.
    for (auto [tq, tk] : std::vector<std::pair<int64_t, int64_t>>{{150, 260}, {260, 150}})
      check({1, 2, 1, tq, tk, 32, causal}, 1.0, seed++);
  }
}

// The backward takes one pass per (batch, key head) when there are at least two per thread, and
// a pass for dq of its own otherwise: with 3 of them, one thread takes the first path and two
// threads the second. Both add the same terms in the same order.
TEST(AttentionCpu, BitsDoNotDependOnThreadCountOrPath) {
  const Shape qs = {3, 4, 150, 32}, ks = {3, 1, 150, 32};
  Tensor q = on(Device::CPU, random_floats(numel_of(qs), 1), qs);
  Tensor k = on(Device::CPU, random_floats(numel_of(ks), 2), ks);
  Tensor v = on(Device::CPU, random_floats(numel_of(ks), 3), ks);
  Tensor g = on(Device::CPU, random_floats(numel_of(qs), 4), qs);
  AttentionOptions causal;
  causal.causal = true;
  auto run = [&](int threads) {
    const int saved = omp_get_max_threads();
    omp_set_num_threads(threads);
    Tensor out = Tensor::empty(qs), lse = Tensor::empty({3, 4, 150});
    Tensor dq = Tensor::empty(qs), dk = Tensor::empty(ks), dv = Tensor::empty(ks);
    attention_forward(q, k, v, out, &lse, causal);
    attention_backward(q, k, v, out, lse, g, dq, dk, dv, causal);
    omp_set_num_threads(saved);
    std::vector<float> all = out.to_vector<float>();
    for (const Tensor* t : {&lse, &dq, &dk, &dv}) {
      const auto part = t->to_vector<float>();
      all.insert(all.end(), part.begin(), part.end());
    }
    return all;
  };
  EXPECT_EQ(run(1), run(2));
}

// q, k, v and out as views one float into their buffers.
TEST(AttentionCpu, MisalignedViews) {
  const Shape qs = {1, 2, 37, 24};
  const int64_t n = numel_of(qs);
  std::vector<float> bufs[4];
  Tensor t[4];
  for (int i = 0; i < 4; ++i) {
    bufs[i].assign(n + 1, 0.0f);
    const auto r = random_floats(n, 30 + i);
    std::copy(r.begin(), r.end(), bufs[i].begin() + 1);
    t[i] = Tensor::wrap(bufs[i].data() + 1, qs);
  }
  attention_forward(t[0], t[1], t[2], t[3], nullptr);
  Tensor want = Tensor::empty(qs);
  attention_forward(t[0].clone(), t[1].clone(), t[2].clone(), want, nullptr);
  EXPECT_TRUE(all_close(t[3], to_double(want.to_vector<float>()), 1e-6, 1e-5));
  EXPECT_EQ(bufs[3][0], 0.0f);
}

TEST_P(AttentionTest, BackwardMatchesFiniteDifferences) {
  const Dims s{1, 2, 1, 3, 4, 3, true};
  const Shape qs = {1, 2, 3, 3}, ks = {1, 1, 4, 3};
  const auto qv = random_floats(18, 5), kv = random_floats(12, 6), vv = random_floats(12, 7),
             rv = random_floats(18, 8);
  Tensor q = on(device(), qv, qs), k = on(device(), kv, ks), v = on(device(), vv, ks);
  Tensor out = Tensor::empty(qs, DType::F32, device()),
         lse = Tensor::empty({1, 2, 3}, DType::F32, device());
  AttentionOptions opt;
  opt.causal = true;
  attention_forward(q, k, v, out, &lse, opt);
  Tensor dq = Tensor::empty(qs, DType::F32, device()), dk = Tensor::empty(ks, DType::F32, device()),
         dv = Tensor::empty(ks, DType::F32, device());
  attention_backward(q, k, v, out, lse, on(device(), rv, qs), dq, dk, dv, opt);
  const double scale = 1 / std::sqrt(3.0);
  auto loss = [&](const std::vector<double>& a, const std::vector<double>& b,
                  const std::vector<double>& c) {
    const AttnRef r = attention_ref(s, a, b, c, nullptr, scale);
    double t = 0;
    for (size_t i = 0; i < r.out.size(); ++i) t += r.out[i] * rv[i];
    return t;
  };
  auto numeric = [&](int which) {
    const std::array<std::vector<double>, 3> base = {to_double(qv), to_double(kv), to_double(vv)};
    std::vector<double> g(base[which].size());
    for (size_t i = 0; i < g.size(); ++i) {
      auto p = base, m = base;
      p[which][i] += 1e-6, m[which][i] -= 1e-6;
      g[i] = (loss(p[0], p[1], p[2]) - loss(m[0], m[1], m[2])) / 2e-6;
    }
    return g;
  };
  EXPECT_TRUE(all_close(dq, numeric(0), 1e-5, 1e-4));
  EXPECT_TRUE(all_close(dk, numeric(1), 1e-5, 1e-4));
  EXPECT_TRUE(all_close(dv, numeric(2), 1e-5, 1e-4));
}

TEST_P(AttentionTest, Bf16GoesThroughTheF32Path) {
  const Shape qs = {1, 4, 9, 16}, ks = {1, 2, 11, 16};
  auto bf = [&](const Shape& shape, uint32_t seed, Tensor& f32) {
    Tensor t16 = Tensor::empty(shape, DType::BF16, device());
    f32 = on(device(), random_floats(numel_of(shape), seed), shape);
    cast(t16, f32);
    cast(f32, t16);
    return t16;
  };
  Tensor q32, k32, v32;
  Tensor q16 = bf(qs, 1, q32), k16 = bf(ks, 2, k32), v16 = bf(ks, 3, v32);
  Tensor out32 = Tensor::empty(qs, DType::F32, device()),
         out16 = Tensor::empty(qs, DType::BF16, device());
  Tensor want = Tensor::empty(qs, DType::BF16, device());
  attention_forward(q32, k32, v32, out32, nullptr);
  attention_forward(q16, k16, v16, out16, nullptr);
  cast(want, out32);
  EXPECT_EQ(bf16_bits(out16), bf16_bits(want));
}

TEST_P(AttentionTest, HostileArguments) {
  Tensor q = on(device(), random_floats(24, 1), {1, 3, 2, 4}),
         k = on(device(), random_floats(16, 2), {1, 2, 2, 4});
  Tensor out = poisoned({1, 3, 2, 4}, device());
  EXPECT_TRUE(throws_error([&] { attention_forward(q, k, k, out, nullptr); },
                           "nnops::attention_forward", "multiple"));
  Tensor k1 = on(device(), random_floats(8, 3), {1, 1, 2, 4}),
         k5 = on(device(), random_floats(10, 3), {1, 1, 2, 5});
  EXPECT_TRUE(throws_error([&] { attention_forward(q, k5, k5, out, nullptr); },
                           "nnops::attention_forward", "head size"));
  EXPECT_TRUE(throws_error([&] { attention_forward(q, k1, k1, q, nullptr); },
                           "nnops::attention_forward", "out"));
  Tensor lse = poisoned({1, 3, 3}, device());
  EXPECT_TRUE(throws_error([&] { attention_forward(q, k1, k1, out, &lse); },
                           "nnops::attention_forward", "logsumexp"));
  AttentionOptions bad;
  bad.scale = -1.0f;
  EXPECT_TRUE(throws_error([&] { attention_forward(q, k1, k1, out, nullptr, bad); },
                           "nnops::attention_forward", "scale"));
  for (float x : out.to_vector<float>()) ASSERT_TRUE(std::isnan(x));
  Tensor l = poisoned({1, 3, 2}, device()), dq = poisoned({1, 3, 2, 4}, device()),
         dk = poisoned({1, 1, 2, 4}, device());
  EXPECT_TRUE(throws_error([&] { attention_backward(q, k1, k1, out, l, out, dq, dk, dk); },
                           "nnops::attention_backward", "dv"));
}

INSTANTIATE_TEST_SUITE_P(Devices, AttentionTest, ::testing::Values(Device::CPU, Device::CUDA),
                         device_name);

}  // namespace
}  // namespace nnops::test
