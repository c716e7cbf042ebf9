// Pruning masks against a reference ranking by (|w|, flat index), with PyTorch's rounding of
// amounts (round half to even) and iterative pruning on existing masks.
#include <algorithm>
#include <numeric>

#include "test_util.hpp"

namespace nnops::test {
namespace {

// Reference: prune the k kept entries that come first in (|w|, index) order.
std::vector<uint8_t> ref_l1(const std::vector<float>& w, std::vector<uint8_t> mask, int64_t k) {
  std::vector<int64_t> kept;
  for (size_t i = 0; i < w.size(); ++i)
    if (mask[i]) kept.push_back(i);
  std::stable_sort(kept.begin(), kept.end(),
                   [&](int64_t a, int64_t b) { return std::fabs(w[a]) < std::fabs(w[b]); });
  for (int64_t j = 0; j < k; ++j) mask[kept[j]] = 0;
  return mask;
}

int64_t kept_count(const std::vector<uint8_t>& m) {
  return std::count(m.begin(), m.end(), 1);
}

class PruneTest : public DeviceTest {};

TEST_P(PruneTest, L1UnstructuredMatchesReference) {
  for (int64_t n : {1, 7, 33, 257, 1023, 100000}) {
    for (double amount : {0.0, 0.3, 0.5, 0.9, 1.0}) {
      SCOPED_TRACE("n=" + std::to_string(n) + " amount=" + std::to_string(amount));
      const auto w = random_floats(n, 5 + n);
      Tensor mask = Tensor::from_vector(std::vector<uint8_t>(n, 1), {n}, device());
      l1_unstructured(on(device(), w, {n}), PruneAmount::fraction(amount), mask);
      const auto k = static_cast<int64_t>(std::nearbyint(amount * n));
      EXPECT_EQ(mask.to_vector<uint8_t>(), ref_l1(w, std::vector<uint8_t>(n, 1), k));
    }
  }
}

TEST_P(PruneTest, TiesPruneTheLowerIndexFirst) {
  const std::vector<float> w = {0.5f, -0.5f, 0.5f, -0.5f, 0.5f, 0.5f, -0.5f, 0.5f};
  Tensor mask = Tensor::from_vector(std::vector<uint8_t>(8, 1), {2, 4}, device());
  l1_unstructured(on(device(), w, {2, 4}), PruneAmount::count(3), mask);
  EXPECT_EQ(mask.to_vector<uint8_t>(), (std::vector<uint8_t>{0, 0, 0, 1, 1, 1, 1, 1}));
}

TEST_P(PruneTest, NaNMagnitudesArePrunedLast) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const std::vector<float> w = {nan, 0.5f, -0.1f, -nan, 2.0f};
  Tensor mask = Tensor::from_vector(std::vector<uint8_t>(5, 1), {5}, device());
  l1_unstructured(on(device(), w, {5}), PruneAmount::count(4), mask);
  // 0.1, 0.5 and 2.0 go first, then the lower-index NaN.
  EXPECT_EQ(mask.to_vector<uint8_t>(), (std::vector<uint8_t>{0, 0, 0, 1, 0}));
  Tensor m4 = Tensor::from_vector(std::vector<uint8_t>(4, 1), {1, 4}, device());
  nm_structured(on(device(), {nan, 0.5f, -0.1f, 3.0f}, {1, 4}), 2, 4, m4);
  EXPECT_EQ(m4.to_vector<uint8_t>(), (std::vector<uint8_t>{1, 0, 0, 1}));
}

TEST_P(PruneTest, AmountsRoundHalfToEvenLikePython) {
  // round(0.25 * 10) = 2 and round(0.35 * 10) = 4 in Python (0.35 * 10 == 3.5 in double).
  for (auto [amount, expected] :
       std::vector<std::pair<double, int64_t>>{{0.25, 2}, {0.35, 4}, {0.05, 0}, {0.15, 2}}) {
    Tensor mask = Tensor::from_vector(std::vector<uint8_t>(10, 1), {10}, device());
    l1_unstructured(on(device(), random_floats(10, 3), {10}), PruneAmount::fraction(amount), mask);
    EXPECT_EQ(10 - kept_count(mask.to_vector<uint8_t>()), expected) << "amount " << amount;
  }
}

TEST_P(PruneTest, IterativePruningAppliesToKeptEntries) {
  const int64_t n = 1000;
  const auto w = random_floats(n, 77);
  std::vector<uint8_t> ref(n, 1);
  Tensor mask = Tensor::from_vector(ref, {10, 100}, device());
  Tensor wt = on(device(), w, {10, 100});
  // 50% of 1000, then 50% of the 500 left, then count 10 of the 250 left.
  l1_unstructured(wt, PruneAmount::fraction(0.5), mask);
  ref = ref_l1(w, ref, 500);
  l1_unstructured(wt, PruneAmount::fraction(0.5), mask);
  ref = ref_l1(w, ref, 250);
  l1_unstructured(wt, PruneAmount::count(10), mask);
  ref = ref_l1(w, ref, 10);
  EXPECT_EQ(mask.to_vector<uint8_t>(), ref);
  EXPECT_EQ(kept_count(ref), 240);
  EXPECT_NEAR(sparsity(mask), 0.76, 1e-12);
  // A mask with holes that are not the smallest magnitudes: the holes stay holes.
  std::vector<uint8_t> holes(n, 1);
  for (int64_t i = 0; i < n; i += 7) holes[i] = 0;
  Tensor m2 = Tensor::from_vector(holes, {10, 100}, device());
  l1_unstructured(wt, PruneAmount::fraction(0.2), m2);
  EXPECT_EQ(m2.to_vector<uint8_t>(),
            ref_l1(w, holes, static_cast<int64_t>(std::nearbyint(0.2 * kept_count(holes)))));
}

TEST_P(PruneTest, GlobalUnstructuredRanksAcrossTensors) {
  const auto w1 = random_floats(33, 1, -1, 1), w2 = random_floats(1023, 2, -0.5f, 0.5f);
  Tensor m1 = Tensor::from_vector(std::vector<uint8_t>(33, 1), {33}, device());
  Tensor m2 = Tensor::from_vector(std::vector<uint8_t>(1023, 1), {31, 33}, device());
  Tensor t1 = on(device(), w1, {33}), t2 = on(device(), w2, {31, 33});
  global_unstructured({&t1, &t2}, PruneAmount::fraction(0.5), {&m1, &m2});
  std::vector<float> all(w1);
  all.insert(all.end(), w2.begin(), w2.end());
  const auto ref = ref_l1(all, std::vector<uint8_t>(all.size(), 1),
                          static_cast<int64_t>(std::nearbyint(0.5 * 1056)));
  auto got = m1.to_vector<uint8_t>();
  const auto got2 = m2.to_vector<uint8_t>();
  got.insert(got.end(), got2.begin(), got2.end());
  EXPECT_EQ(got, ref);
  // The smaller-magnitude tensor loses more than half.
  EXPECT_GT(sparsity(m2), 0.5);
  EXPECT_LT(sparsity(m1), 0.5);
}

TEST_P(PruneTest, LnStructuredPrunesWholeSlices) {
  const Shape shape = {6, 5, 4};
  const int64_t n = numel_of(shape);
  const auto w = random_floats(n, 9);
  for (int p : {1, 2}) {
    for (int dim : {0, 1, 2, -1}) {
      SCOPED_TRACE("p=" + std::to_string(p) + " dim=" + std::to_string(dim));
      const int d = dim < 0 ? dim + 3 : dim;
      const int64_t slices = shape[d];
      Tensor mask = Tensor::from_vector(std::vector<uint8_t>(n, 1), shape, device());
      ln_structured(on(device(), w, shape), PruneAmount::fraction(0.5), p, dim, mask);
      std::vector<double> norm(slices, 0);
      for (int64_t i = 0; i < n; ++i) {
        const int64_t idx[3] = {i / 20, (i / 4) % 5, i % 4};
        norm[idx[d]] += p == 1 ? std::fabs(w[i]) : double(w[i]) * w[i];
      }
      std::vector<int64_t> order(slices);
      std::iota(order.begin(), order.end(), 0);
      std::stable_sort(order.begin(), order.end(),
                       [&](int64_t a, int64_t b) { return norm[a] < norm[b]; });
      const auto k = static_cast<int64_t>(std::nearbyint(0.5 * slices));
      std::vector<uint8_t> pruned(slices, 0);
      for (int64_t j = 0; j < k; ++j) pruned[order[j]] = 1;
      const auto m = mask.to_vector<uint8_t>();
      for (int64_t i = 0; i < n; ++i) {
        const int64_t idx[3] = {i / 20, (i / 4) % 5, i % 4};
        ASSERT_EQ(m[i], pruned[idx[d]] ? 0 : 1) << "element " << i;
      }
    }
  }
}

TEST_P(PruneTest, IterativeLnStructuredCountsTheSlicesStillKept) {
  // torch.nn.utils.prune.ln_structured(amount=0.2) then (amount=0.5) on w = [1..9], dim 1, p 1:
  // round(0.2 * 9) = 2 slices, then round(0.5 * 7) = 4 of the 7 kept: mask 0 0 0 0 0 0 1 1 1.
  std::vector<float> w(9);
  std::iota(w.begin(), w.end(), 1.0f);
  Tensor wt = on(device(), w, {1, 9});
  Tensor mask = Tensor::from_vector(std::vector<uint8_t>(9, 1), {1, 9}, device());
  ln_structured(wt, PruneAmount::fraction(0.2), 1, 1, mask);
  EXPECT_EQ(mask.to_vector<uint8_t>(), (std::vector<uint8_t>{0, 0, 1, 1, 1, 1, 1, 1, 1}));
  ln_structured(wt, PruneAmount::fraction(0.5), 1, 1, mask);
  EXPECT_EQ(mask.to_vector<uint8_t>(), (std::vector<uint8_t>{0, 0, 0, 0, 0, 0, 1, 1, 1}));
  // A count beyond the 3 slices still kept is refused, and the mask is untouched.
  EXPECT_TRUE(throws_error([&] { ln_structured(wt, PruneAmount::count(4), 1, 1, mask); },
                           "nnops::ln_structured", "[0, 3]"));
  EXPECT_EQ(mask.to_vector<uint8_t>(), (std::vector<uint8_t>{0, 0, 0, 0, 0, 0, 1, 1, 1}));
  // A slice with one entry still 1 counts as kept (PyTorch's PruningContainer).
  Tensor w2 = on(device(), random_floats(12, 3), {3, 4});
  std::vector<uint8_t> m2(12, 1);
  for (int64_t r = 0; r < 3; ++r) m2[r * 4 + 1] = 0;  // column 1 fully pruned
  m2[2] = 0;                                          // column 2 partly pruned: still kept
  Tensor mask2 = Tensor::from_vector(m2, {3, 4}, device());
  ln_structured(w2, PruneAmount::count(3), 2, 1, mask2);
  EXPECT_EQ(count_nonzero(mask2), 0) << "3 kept columns (0, 2, 3) pruned by a count of 3";
}

TEST_P(PruneTest, NmStructuredKeepsTheLargestInEachGroup) {
  for (auto [n_keep, m] :
       std::vector<std::pair<int, int>>{{2, 4}, {1, 4}, {3, 8}, {0, 2}, {1, 1}}) {
    const Shape shape = {7, 8 * m};
    const int64_t total = numel_of(shape);
    auto w = random_floats(total, 11 + m);
    for (int64_t i = 0; i < m; ++i) w[i] = 0.25f;  // a group of ties: lower indices go first
    Tensor mask = Tensor::from_vector(std::vector<uint8_t>(total, 1), shape, device());
    nm_structured(on(device(), w, shape), n_keep, m, mask);
    const auto got = mask.to_vector<uint8_t>();
    for (int64_t g = 0; g < total / m; ++g) {
      std::vector<float> grp(w.begin() + g * m, w.begin() + (g + 1) * m);
      const auto ref = ref_l1(grp, std::vector<uint8_t>(m, 1), m - n_keep);
      for (int j = 0; j < m; ++j)
        ASSERT_EQ(got[g * m + j], ref[j]) << "group " << g << " n:m " << n_keep << ":" << m;
    }
    EXPECT_NEAR(sparsity(mask), 1.0 - double(n_keep) / m, 1e-12);
  }
}

TEST_P(PruneTest, ApplyMaskAndSparsity) {
  const auto w = random_floats(33, 4);
  std::vector<uint8_t> mask(33, 1);
  for (int i = 0; i < 33; i += 3) mask[i] = 0;
  Tensor wt = on(device(), w, {33});
  apply_mask(wt, Tensor::from_vector(mask, {33}, device()));
  const auto out = wt.to_vector<float>();
  for (int i = 0; i < 33; ++i) EXPECT_EQ(out[i], mask[i] ? w[i] : 0.0f);
  EXPECT_NEAR(sparsity(Tensor::from_vector(mask, {33}, device())), 11.0 / 33.0, 1e-15);
  EXPECT_EQ(sparsity(Tensor::zeros({0}, DType::U8, device())), 0.0);
}

NNOPS_INSTANTIATE_DEVICES(PruneTest);

}  // namespace
}  // namespace nnops::test
