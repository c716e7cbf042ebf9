// Thread safety: ops called concurrently from several threads on separate tensors give the
// same bits as the same calls made one at a time. Run under ThreadSanitizer in CI.
#include <omp.h>

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
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([t, &got] { got[t] = workload(100 + t); });
  for (auto& th : threads) th.join();
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(got[t], expected[t]) << "thread " << t;
}

TEST(Concurrency, DeviceQueriesFromManyThreads) {
  std::vector<std::thread> threads;
  std::vector<int> available(8);
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([t, &available] { available[t] = cuda_available(); });
  for (auto& th : threads) th.join();
  for (int a : available) EXPECT_EQ(a, available[0]);
}

// Bitwise results for any OpenMP thread count (GEMM threads own blocks of c; reductions
// add fixed chunks in a fixed order). Sizes cross the parallel thresholds.
TEST(Determinism, ResultsDoNotDependOnThreadCount) {
  auto run = [] {
    const int64_t n = 300, k = 257, m = 190;
    Tensor a = Tensor::empty({n, k}), b = Tensor::empty({k, m}), c = Tensor::empty({n, m});
    fill_normal(a, 0, 1, 1);
    fill_normal(b, 0, 1, 2);
    matmul(a, b, c);
    Tensor t = Tensor::empty({n, m}), loss = Tensor::empty({1}), grad = Tensor::empty({n, m});
    fill_normal(t, 0, 1, 3);
    std::vector<float> out = c.to_vector<float>();
    // The other ways GEMM splits its work: a narrow c split by rows, and a short a (a batch)
    // against a transposed b, whose panels are packed one group at a time.
    Tensor tall = Tensor::empty({1000, 257}), narrow = Tensor::empty({257, 9});
    Tensor tall_out = Tensor::empty({1000, 9});
    fill_normal(tall, 0, 1, 5);
    fill_normal(narrow, 0, 1, 6);
    matmul(tall, narrow, tall_out);
    Tensor batch = Tensor::empty({64, 300}), w = Tensor::empty({999, 300});
    Tensor batch_out = Tensor::empty({64, 999});
    fill_normal(batch, 0, 1, 7);
    fill_normal(w, 0, 1, 8);
    matmul(batch, w, batch_out, GemmOptions{false, true});
    for (const Tensor* extra : {&tall_out, &batch_out}) {
      const auto v = extra->to_vector<float>();
      out.insert(out.end(), v.begin(), v.end());
    }
    mse_loss(c, t, loss, &grad);
    out.push_back(loss.item());
    std::vector<int32_t> y(n);
    for (int64_t i = 0; i < n; ++i) y[i] = static_cast<int32_t>(i % m);
    cross_entropy_loss(c, Tensor::from_vector(y, {n}), loss, &grad, Reduction::Mean, 0.1f);
    out.push_back(loss.item());
    kd_loss(c, t, 2.0f, loss, &grad);
    out.push_back(loss.item());
    Tensor big = Tensor::empty({1 << 20});
    fill_normal(big, 0, 1, 4);
    out.push_back(static_cast<float>(clip_grad_norm({&big}, 1.0f)));
    return out;
  };
  const int saved = omp_get_max_threads();
  omp_set_num_threads(1);
  const auto one = run();
  for (int threads : {2, 3, 4}) {
    omp_set_num_threads(threads);
    EXPECT_EQ(run(), one) << threads << " threads";
  }
  omp_set_num_threads(saved);
}

}  // namespace
}  // namespace nnops::test
