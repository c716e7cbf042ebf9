// Synthetic regression and classification data (see data.hpp).
#include "data.hpp"

#include <cmath>
#include <vector>

namespace train {

using nnops::DType;
using nnops::Tensor;

namespace {

constexpr int64_t kGeneratorHidden = 256;

// rows x out matrix: G2 * tanh(G1 * x) + noise, with G1, G2 scaled to keep unit-order values.
Tensor teacher_function(const Tensor& x, int64_t out, float noise, uint64_t seed,
                        nnops::Device device) {
  const int64_t rows = x.dim(0), in = x.dim(1);
  Tensor g1 = Tensor::empty({kGeneratorHidden, in}, DType::F32, device);
  Tensor g2 = Tensor::empty({out, kGeneratorHidden}, DType::F32, device);
  nnops::fill_normal(g1, 0.0f, 1.5f / std::sqrt(static_cast<float>(in)), seed + 11);
  nnops::fill_normal(g2, 0.0f, 1.5f / std::sqrt(static_cast<float>(kGeneratorHidden)), seed + 12);
  Tensor h = Tensor::empty({rows, kGeneratorHidden}, DType::F32, device);
  nnops::linear_forward(x, g1, nullptr, h);
  nnops::activation_forward(nnops::Activation::Tanh, h, h);
  Tensor y = Tensor::empty({rows, out}, DType::F32, device);
  nnops::fill_normal(y, 0.0f, noise, seed + 13);
  nnops::matmul(h, g2, y, nnops::GemmOptions{false, true, 1.0f, 1.0f});  // y = h*g2^T + noise
  return y;
}

Split take_rows(const Tensor& x, const Tensor& y, int64_t start, int64_t count,
                nnops::Device device) {
  // Copies (not views) so each split owns its memory.
  auto copy_rows = [&](const Tensor& t) { return t.narrow(start, count).to(device); };
  return Split{copy_rows(x), copy_rows(y)};
}

}  // namespace

Dataset make_dataset(const DataSpec& spec, nnops::Device device) {
  const int64_t total = spec.train_samples + spec.heldout_samples;
  Tensor x = Tensor::empty({total, spec.in}, DType::F32, device);
  nnops::fill_normal(x, 0.0f, 1.0f, spec.seed * 1000 + 1);
  Tensor y = teacher_function(x, spec.out, spec.noise, spec.seed * 1000, device);
  if (spec.task == Task::Classify) {
    const auto scores = y.to_vector<float>();
    std::vector<int32_t> labels(total);
    for (int64_t i = 0; i < total; ++i) {
      int32_t best = 0;
      for (int64_t c = 1; c < spec.out; ++c) {
        if (scores[i * spec.out + c] > scores[i * spec.out + best]) best = static_cast<int32_t>(c);
      }
      labels[i] = best;
    }
    y = Tensor::from_vector(labels, {total}, device);
  }
  Dataset d;
  d.train = take_rows(x, y, 0, spec.train_samples, device);
  d.heldout = take_rows(x, y, spec.train_samples, spec.heldout_samples, device);
  return d;
}

}  // namespace train
