// Thread safety: ops called concurrently from several threads on separate tensors give the
// same bits as the same calls made one at a time. Run under ThreadSanitizer in CI.
#include <thread>

#include "test_util.hpp"

namespace nnops::test {
namespace {

// A small training-like sequence touching every op family; returns its outputs' bytes.
std::vector<float> workload(uint64_t seed) {
  // Large enough that the GEMMs cross the OpenMP threshold, so parallel regions nest in threads.
  const int64_t n = 256, k = 65, m = 40;
  Tensor x = Tensor::empty({n, k}), w = Tensor::empty({m, k}), b = Tensor::empty({m});
  fill_normal(x, 0.0f, 1.0f, seed);
  fill_uniform(w, -0.2f, 0.2f, seed + 1);
  fill_uniform(b, -0.2f, 0.2f, seed + 2);
  Tensor y = Tensor::empty({n, m}), p = Tensor::empty({n, m}), dy = Tensor::empty({n, m});
  Tensor dw = Tensor::empty({m, k}), db = Tensor::empty({m}), loss = Tensor::empty({1});
  Tensor mask = Tensor::from_vector(std::vector<uint8_t>(m * k, 1), {m, k});
  std::vector<int32_t> labels(n);
  for (int64_t i = 0; i < n; ++i) labels[i] = static_cast<int32_t>((i + seed) % m);
  Tensor targets = Tensor::from_vector(labels, {n});
  AdamState adam;
  SgdState sgd;
  std::vector<float> out;
  for (int step = 0; step < 20; ++step) {
    linear_forward(x, w, &b, y);
    activation_forward(Activation::GELU, y, y);
    softmax_forward(y, p);
    cross_entropy_loss(y, targets, loss, &dy, Reduction::Mean, 0.1f);
    linear_backward(x, w, dy, nullptr, dw, &db);
    clip_grad_norm({&dw, &db}, 1.0f);
    adam_step(AdamOptions{1e-2f}, w, dw, adam, &mask);
    sgd_step(SgdOptions{1e-2f, 0.9f}, b, db, sgd);
    if (step == 10) {
      l1_unstructured(w, PruneAmount::fraction(0.3), mask);
      apply_mask(w, mask);
    }
    out.push_back(loss.item());
  }
  const auto wv = w.to_vector<float>();
  out.insert(out.end(), wv.begin(), wv.end());
  out.push_back(static_cast<float>(sparsity(mask)));
  return out;
}

TEST(Concurrency, OpsOnSeparateTensorsFromManyThreads) {
  constexpr int kThreads = 6;
  std::vector<std::vector<float>> expected(kThreads), got(kThreads);
  for (int t = 0; t < kThreads; ++t) expected[t] = workload(100 + t);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) threads.emplace_back([t, &got] { got[t] = workload(100 + t); });
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(got[t], expected[t]) << "thread " << t;
}

TEST(Concurrency, DeviceQueriesFromManyThreads) {
  std::vector<std::thread> threads;
  std::vector<int> available(8);
  for (int t = 0; t < 8; ++t) threads.emplace_back([t, &available] { available[t] = cuda_available(); });
  for (auto& th : threads) th.join();
  for (int a : available) EXPECT_EQ(a, available[0]);
}

}  // namespace
}  // namespace nnops::test
