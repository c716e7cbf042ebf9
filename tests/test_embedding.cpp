// Embedding lookup and gradient against F.embedding's definition: repeated indices summed in
// order, rows never indexed zero, the same bits on every run and thread count, BF16 weights,
// and indices out of range.
#include <omp.h>

#include "test_util.hpp"

namespace nnops::test {
namespace {

class EmbeddingTest : public DeviceTest {};

std::vector<int32_t> random_indices(size_t n, int32_t vocab, uint32_t seed) {
  std::mt19937 gen(seed);
  std::uniform_int_distribution<int32_t> dist(0, vocab - 1);
  std::vector<int32_t> v(n);
  for (auto& i : v) i = dist(gen);
  return v;
}

TEST_P(EmbeddingTest, ForwardGathersAndBackwardSumsRepeats) {
  for (auto [vocab, dim, n] : std::vector<std::tuple<int32_t, int64_t, int64_t>>{
           {1, 1, 1}, {7, 33, 50}, {256, 64, 1000}, {1000, 80, 127}}) {
    SCOPED_TRACE("V=" + std::to_string(vocab) + " D=" + std::to_string(dim));
    // Few distinct indices (vocab / 3 + 1): many repeats, and unused rows.
    auto idx = random_indices(n, std::max(1, vocab / 3 + 1), 20 + vocab);
    const auto wv = random_floats(vocab * dim, 21 + vocab);
    const auto gv = random_floats(n * dim, 22 + vocab);
    Tensor indices = Tensor::from_vector(idx, {n}, device());
    Tensor out = poisoned({n, dim}, device());
    embedding_forward(indices, on(device(), wv, {vocab, dim}), out);
    std::vector<double> ref(n * dim);
    for (int64_t s = 0; s < n; ++s)
      for (int64_t c = 0; c < dim; ++c) ref[s * dim + c] = wv[idx[s] * dim + c];
    EXPECT_TRUE(all_close(out, ref, 0, 0));

    Tensor dw = poisoned({vocab, dim}, device());
    embedding_backward(indices, on(device(), gv, {n, dim}), dw);
    // Summed in the order of s in float: the reference does the same, so the bits match.
    std::vector<float> want(vocab * dim, 0.0f);
    for (int64_t s = 0; s < n; ++s)
      for (int64_t c = 0; c < dim; ++c) want[idx[s] * dim + c] += gv[s * dim + c];
    EXPECT_EQ(dw.to_vector<float>(), want);
  }
}

TEST_P(EmbeddingTest, IndicesOfAnyShape) {
  const auto idx = random_indices(2 * 3 * 5, 11, 30);
  Tensor indices = Tensor::from_vector(idx, {2, 3, 5}, device());
  const auto wv = random_floats(11 * 4, 31);
  Tensor out = poisoned({2, 3, 5, 4}, device());
  embedding_forward(indices, on(device(), wv, {11, 4}), out);
  const auto got = out.to_vector<float>();
  for (size_t s = 0; s < idx.size(); ++s)
    for (int c = 0; c < 4; ++c) ASSERT_EQ(got[s * 4 + c], wv[idx[s] * 4 + c]);
}

TEST_P(EmbeddingTest, BackwardBitsDoNotDependOnThreads) {
  const int64_t n = 20000, vocab = 50, dim = 64;
  const auto idx = random_indices(n, vocab, 40);
  Tensor indices = Tensor::from_vector(idx, {n}, device());
  Tensor g = on(device(), random_floats(n * dim, 41), {n, dim});
  Tensor a = Tensor::empty({vocab, dim}, DType::F32, device()),
         b = Tensor::empty({vocab, dim}, DType::F32, device());
  const int threads = omp_get_max_threads();
  embedding_backward(indices, g, a);
  omp_set_num_threads(1);
  embedding_backward(indices, g, b);
  omp_set_num_threads(threads);
  EXPECT_EQ(a.to_vector<float>(), b.to_vector<float>());
}

TEST_P(EmbeddingTest, Bf16WeightsAndGradients) {
  const auto idx = random_indices(77, 9, 50);
  Tensor indices = Tensor::from_vector(idx, {77}, device());
  Tensor w32 = on(device(), random_floats(9 * 16, 51), {9, 16}),
         w16 = Tensor::empty({9, 16}, DType::BF16, device());
  cast(w16, w32);
  Tensor out = Tensor::empty({77, 16}, DType::BF16, device());
  embedding_forward(indices, w16, out);
  const auto wb = bf16_bits(w16), ob = bf16_bits(out);
  for (size_t s = 0; s < idx.size(); ++s)
    for (int c = 0; c < 16; ++c) ASSERT_EQ(ob[s * 16 + c], wb[idx[s] * 16 + c]);
  Tensor g32 = on(device(), random_floats(77 * 16, 52), {77, 16}),
         g16 = Tensor::empty({77, 16}, DType::BF16, device());
  cast(g16, g32);
  cast(g32, g16);
  Tensor d32 = Tensor::empty({9, 16}, DType::F32, device()),
         d16 = Tensor::empty({9, 16}, DType::BF16, device());
  Tensor want = Tensor::empty({9, 16}, DType::BF16, device());
  embedding_backward(indices, g32, d32);
  embedding_backward(indices, g16, d16);
  cast(want, d32);
  EXPECT_EQ(bf16_bits(d16), bf16_bits(want));
}

TEST_P(EmbeddingTest, IndexOutOfRangeIsAnError) {
  Tensor w = on(device(), random_floats(5 * 3, 60), {5, 3});
  Tensor indices = Tensor::from_vector(std::vector<int32_t>{0, 5, 1}, {3}, device());
  Tensor out = poisoned({3, 3}, device());
  if (device() == Device::CPU) {
    EXPECT_TRUE(throws_error([&] { embedding_forward(indices, w, out); },
                             "nnops::embedding_forward", "indices[1]"));
    for (float v : out.to_vector<float>()) ASSERT_TRUE(std::isnan(v)) << "out was written";
    Tensor dw = poisoned({5, 3}, device());
    EXPECT_TRUE(throws_error([&] { embedding_backward(indices, out, dw); },
                             "nnops::embedding_backward", "must be in [0, 5)"));
  } else {
    // The device finds it: the row is NaN and the next synchronising call names the op.
    embedding_forward(indices, w, out);
    EXPECT_TRUE(throws_error([&] { out.to_vector<float>(); }, "nnops::embedding_forward"));
    EXPECT_TRUE(std::isnan(out.to_vector<float>()[3]));
  }
  Tensor w2 = on(device(), random_floats(6, 61), {2, 3});
  EXPECT_TRUE(
      throws_error([&] { embedding_forward(indices, w2, w2); }, "nnops::embedding_forward", "out"));
  Tensor bad_idx = on(device(), {0.0f}, {1});
  EXPECT_TRUE(
      throws_error([&] { embedding_forward(bad_idx, w, out); }, "nnops::embedding_forward", "I32"));
}

INSTANTIATE_TEST_SUITE_P(Devices, EmbeddingTest, ::testing::Values(Device::CPU, Device::CUDA),
                         device_name);

}  // namespace
}  // namespace nnops::test
