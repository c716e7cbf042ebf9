// Mixed precision in the optimizer: BF16 gradients stepping FP32 masters, BF16 working copies
// written in the same pass, gradient clipping over BF16, and pruning masks from BF16 weights.
#include <algorithm>

#include "test_util.hpp"

namespace nnops::test {
namespace {

class MixedPrecisionTest : public DeviceTest {};

// Values representable in BF16, so F32 and BF16 tensors can hold the same numbers.
std::vector<float> bf16_exact(int64_t n, uint32_t seed, float lo = -1.0f, float hi = 1.0f) {
  std::vector<float> v = random_floats(n, seed, lo, hi);
  for (float& x : v) x = bf16(x).to_float();
  return v;
}

Tensor bf16_tensor(const std::vector<float>& v, const Shape& shape, Device device) {
  std::vector<bf16> h(v.size());
  for (size_t i = 0; i < v.size(); ++i) h[i] = bf16(v[i]);
  return Tensor::from_vector(h, shape, device);
}

// The working copy must be the master rounded to nearest even, bit for bit.
::testing::AssertionResult is_rounded_master(const Tensor& working, const Tensor& master) {
  const auto w = working.to_vector<bf16>();
  const auto m = master.to_vector<float>();
  for (size_t i = 0; i < m.size(); ++i) {
    if (w[i].bits != bf16(m[i]).bits) {
      return ::testing::AssertionFailure()
             << "working[" << i << "] = 0x" << std::hex << w[i].bits << " but bf16(master) = 0x"
             << bf16(m[i]).bits << std::dec << " (master " << m[i] << ")";
    }
  }
  return ::testing::AssertionSuccess();
}

std::vector<uint8_t> half_mask(int64_t n) {
  std::vector<uint8_t> mask(n);
  for (int64_t i = 0; i < n; ++i) mask[i] = static_cast<uint8_t>((i * 7) % 3 != 0);
  return mask;
}

// Adam with a BF16 gradient steps the master exactly as an F32 gradient holding the same values
// does, and the working copy follows the master after every step.
TEST_P(MixedPrecisionTest, AdamStepsTheMasterAndRoundsTheWorkingCopy) {
  for_each_cpu_isa(device(), [&] {
    for (int64_t n : {1, 7, 33, 1023, 70001}) {
      SCOPED_TRACE("n=" + std::to_string(n));
      for (bool masked : {false, true}) {
        const auto w0 = random_floats(n, 10 + n);
        const Tensor mask = Tensor::from_vector(half_mask(n), {n}, device());
        Tensor master = on(device(), w0, {n}), reference = on(device(), w0, {n});
        Tensor working = Tensor::zeros({n}, DType::BF16, device());
        AdamState state, reference_state;
        const AdamOptions options{1e-2f, 0.9f, 0.999f, 1e-8f, 0.01f, true};
        for (int step = 0; step < 4; ++step) {
          const auto g = bf16_exact(n, 100 * step + n);
          adam_step(options, master, bf16_tensor(g, {n}, device()), state,
                    masked ? &mask : nullptr, &working);
          adam_step(options, reference, on(device(), g, {n}), reference_state,
                    masked ? &mask : nullptr);
          ASSERT_EQ(master.to_vector<float>(), reference.to_vector<float>()) << "step " << step;
          ASSERT_EQ(state.exp_avg_sq.to_vector<float>(),
                    reference_state.exp_avg_sq.to_vector<float>());
          ASSERT_TRUE(is_rounded_master(working, master)) << "step " << step;
        }
      }
    }
  });
}

TEST_P(MixedPrecisionTest, MultiTensorAdamTakesWorkingCopiesPerParameter) {
  const int64_t n1 = 300, n2 = 17;
  Tensor m1 = on(device(), random_floats(n1, 1), {n1}), m2 = on(device(), random_floats(n2, 2), {n2});
  Tensor w1 = Tensor::zeros({n1}, DType::BF16, device());
  const Tensor g1 = bf16_tensor(bf16_exact(n1, 3), {n1}, device());
  const Tensor g2 = on(device(), random_floats(n2, 4), {n2});  // an F32 gradient beside it
  AdamState s1, s2;
  adam_step(AdamOptions{}, {&m1, &m2}, {&g1, &g2}, {&s1, &s2}, {}, {&w1, nullptr});
  EXPECT_TRUE(is_rounded_master(w1, m1));
  EXPECT_EQ(s2.step, 1);
}

TEST_P(MixedPrecisionTest, SgdStepsTheMasterAndRoundsTheWorkingCopy) {
  const int64_t n = 1023;
  for (bool masked : {false, true}) {
    const auto w0 = random_floats(n, 20);
    const Tensor mask = Tensor::from_vector(half_mask(n), {n}, device());
    Tensor master = on(device(), w0, {n}), reference = on(device(), w0, {n});
    Tensor working = Tensor::zeros({n}, DType::BF16, device());
    SgdState state, reference_state;
    const SgdOptions options{0.1f, 0.9f, 0.0f, 1e-4f, true};
    for (int step = 0; step < 3; ++step) {
      const auto g = bf16_exact(n, 200 + step);
      sgd_step(options, master, bf16_tensor(g, {n}, device()), state, masked ? &mask : nullptr,
               &working);
      sgd_step(options, reference, on(device(), g, {n}), reference_state,
               masked ? &mask : nullptr);
      ASSERT_EQ(master.to_vector<float>(), reference.to_vector<float>()) << "step " << step;
      ASSERT_TRUE(is_rounded_master(working, master)) << "step " << step;
    }
  }
}

// Clipping BF16 gradients: the norm of their values (summed in double), and each scaled value
// rounded once.
TEST_P(MixedPrecisionTest, ClipGradNormOverBf16Gradients) {
  const auto a = bf16_exact(1000, 30, -3, 3), b = bf16_exact(33, 31, -3, 3);
  for (bool device_norm : {false, true}) {
    Tensor ga = bf16_tensor(a, {1000}, device()), gb = bf16_tensor(b, {33}, device());
    Tensor fa = on(device(), a, {1000}), fb = on(device(), b, {33});
    double norm = 0, reference = clip_grad_norm({&fa, &fb}, 1.0f);
    if (device_norm) {
      Tensor total = Tensor::zeros({1}, DType::F32, device());
      clip_grad_norm({&ga, &gb}, 1.0f, total);
      norm = total.item();
      reference = static_cast<float>(reference);
    } else {
      norm = clip_grad_norm({&ga, &gb}, 1.0f);
    }
    EXPECT_EQ(norm, reference);
    // fa was scaled in FP32 by the same factor: the BF16 result is its rounding.
    for (auto [g, f] : {std::pair<Tensor*, Tensor*>{&ga, &fa}, {&gb, &fb}}) {
      const auto got = g->to_vector<bf16>();
      const auto want = f->to_vector<float>();
      for (size_t i = 0; i < want.size(); ++i) ASSERT_EQ(got[i].bits, bf16(want[i]).bits) << i;
    }
  }
}

// Masks from BF16 weights equal the masks from F32 weights of the same values. BF16 has few
// distinct magnitudes, so many ties: the (|w|, index) rule decides them alike.
TEST_P(MixedPrecisionTest, PruningMasksFromBf16WeightsMatchF32) {
  const int64_t rows = 64, cols = 96, n = rows * cols;
  const auto w = bf16_exact(n, 40, -0.05f, 0.05f);
  const Tensor w16 = bf16_tensor(w, {rows, cols}, device()), w32 = on(device(), w, {rows, cols});
  auto masks = [&](const Tensor& weights) {
    std::vector<std::vector<uint8_t>> out;
    Tensor mask = Tensor::from_vector(std::vector<uint8_t>(n, 1), {rows, cols}, device());
    l1_unstructured(weights, PruneAmount::fraction(0.3), mask);
    l1_unstructured(weights, PruneAmount::fraction(0.5), mask);  // iterative
    out.push_back(mask.to_vector<uint8_t>());
    Tensor rows_mask = Tensor::from_vector(std::vector<uint8_t>(n, 1), {rows, cols}, device());
    ln_structured(weights, PruneAmount::count(20), 2, 0, rows_mask);
    out.push_back(rows_mask.to_vector<uint8_t>());
    Tensor nm = Tensor::from_vector(std::vector<uint8_t>(n, 1), {rows, cols}, device());
    nm_structured(weights, 2, 4, nm);
    out.push_back(nm.to_vector<uint8_t>());
    return out;
  };
  const auto from16 = masks(w16), from32 = masks(w32);
  for (size_t i = 0; i < from32.size(); ++i) EXPECT_EQ(from16[i], from32[i]) << "mask " << i;
  // round(0.3 * 6144) = 1843, then round(0.5 * 4301) = 2150 (half to even).
  EXPECT_EQ(std::count(from16[0].begin(), from16[0].end(), 0), 1843 + 2150);

  // apply_mask on a BF16 weight zeroes exactly the pruned entries and keeps the others' bits.
  Tensor applied = bf16_tensor(w, {rows, cols}, device());
  const Tensor mask = Tensor::from_vector(from16[0], {rows, cols}, device());
  apply_mask(applied, mask);
  const auto after = applied.to_vector<bf16>();
  for (int64_t i = 0; i < n; ++i) {
    ASSERT_EQ(after[i].to_float(), from16[0][i] ? w[i] : 0.0f) << i;
  }
}

TEST_P(MixedPrecisionTest, WorkingCopiesAreCheckedLikeOutputs) {
  Tensor master = Tensor::zeros({8}, DType::F32, device());
  const Tensor grad = Tensor::zeros({8}, DType::BF16, device());
  Tensor as_f32 = Tensor::zeros({8}, DType::F32, device());
  Tensor short_copy = Tensor::zeros({7}, DType::BF16, device());
  AdamState state;
  EXPECT_TRUE(throws_error([&] { adam_step(AdamOptions{}, master, grad, state, nullptr, &as_f32); },
                           "nnops::adam_step", "working has dtype F32 but BF16 is required"));
  EXPECT_TRUE(
      throws_error([&] { adam_step(AdamOptions{}, master, grad, state, nullptr, &short_copy); },
                   "nnops::adam_step", "working"));
  EXPECT_EQ(state.step, 0);
  SgdState sgd;
  EXPECT_TRUE(throws_error([&] { sgd_step(SgdOptions{}, master, grad, sgd, nullptr, &as_f32); },
                           "nnops::sgd_step", "working has dtype F32"));
  Tensor bf16_master = Tensor::zeros({8}, DType::BF16, device());
  EXPECT_TRUE(throws_error([&] { adam_step(AdamOptions{}, bf16_master, grad, state); },
                           "nnops::adam_step", "param has dtype BF16 but F32 is required"));
}

NNOPS_INSTANTIATE_DEVICES(MixedPrecisionTest);

}  // namespace
}  // namespace nnops::test
