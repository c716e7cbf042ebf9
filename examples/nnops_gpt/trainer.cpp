// The training phases' pieces (see trainer.hpp).
#include "trainer.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>
#include <memory>
#include <stdexcept>

#include "timing.hpp"

namespace gpt {

using nnops::DType;
using nnops::Tensor;

Batcher::Batcher(const std::vector<uint8_t>& data, int64_t batch, int64_t context, uint64_t seed)
    : data_(data), batch_(batch), context_(context), rng_(seed) {
  if (static_cast<int64_t>(data.size()) < context + 1) {
    throw std::runtime_error("the training text is shorter than one window");
  }
  windows_.resize(static_cast<size_t>(batch * (context + 1)));
}

const std::vector<int32_t>& Batcher::next() {
  const auto starts = static_cast<uint64_t>(static_cast<int64_t>(data_.size()) - context_);
  for (int64_t b = 0; b < batch_; ++b) {
    const auto start = static_cast<int64_t>(rng_() % starts);  // bias below 2^-40: negligible
    for (int64_t t = 0; t <= context_; ++t) {
      windows_[b * (context_ + 1) + t] = data_[start + t];
    }
  }
  return windows_;
}

void to_inputs_and_targets(const std::vector<int32_t>& windows, int64_t batch, int64_t context,
                           nnops::Device device, Tensor& inputs, Tensor& targets) {
  std::vector<int32_t> in(static_cast<size_t>(batch * context)), out(in.size());
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = 0; t < context; ++t) {
      in[b * context + t] = windows[b * (context + 1) + t];
      out[b * context + t] = windows[b * (context + 1) + t + 1];
    }
  }
  inputs = Tensor::from_vector(in, {batch, context}, device);
  targets = Tensor::from_vector(out, {batch * context}, device);
}

double learning_rate(int64_t step, int64_t steps, int64_t warmup, double peak, double min_ratio) {
  if (warmup > 0 && step <= warmup)
    return peak * static_cast<double>(step) / static_cast<double>(warmup);
  const double span = static_cast<double>(std::max<int64_t>(1, steps - warmup));
  const double progress = std::min(1.0, static_cast<double>(step - warmup) / span);
  const double pi = 3.14159265358979323846;
  return peak * (min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + std::cos(pi * progress)));
}

namespace {

// clip_grad_norm over a tensor-parallel model: the squares of the split gradients summed over
// the group, the whole ones' counted once (every rank holds the same), one factor everywhere.
// Waits for the device (the single-process path does not).
void clip_split_gradients(const Model& model, const std::vector<Tensor*>& grads, double clip) {
  std::vector<Tensor*> split, whole;
  const auto& params = model.parameters();
  for (size_t i = 0; i < params.size(); ++i)
    (params[i].split_dim >= 0 ? split : whole).push_back(grads[i]);
  const float inf = std::numeric_limits<float>::infinity();
  const double split_norm = nnops::clip_grad_norm(split, inf);
  const double whole_norm = nnops::clip_grad_norm(whole, inf);
  const double total =
      std::sqrt(model.sum_value(split_norm * split_norm) + whole_norm * whole_norm);
  const double coef = clip / (total + 1e-6);
  if (coef < 1.0 || std::isnan(coef)) {
    for (Tensor* g : grads) nnops::add_scaled(*g, *g, static_cast<float>(coef), 0.0f);
  }
}

}  // namespace

void optimizer_step(Model& model, const StepOptions& options) {
  std::vector<Tensor*> grads;
  for (Parameter& p : model.parameters()) {
    if (p.sparse) {  // a compressed weight's gradient exists at its kept entries only
      grads.push_back(&p.sparse_grad);
      continue;
    }
    if (p.mask.defined()) nnops::apply_mask(p.grad, p.mask);  // the pruned weights have none
    grads.push_back(&p.grad);
  }
  if (options.clip > 0 && model.tensor_size() > 1) {
    clip_split_gradients(model, grads, options.clip);
  } else if (options.clip > 0) {
    Tensor norm = Tensor::empty({1}, DType::F32, model.device());
    nnops::clip_grad_norm(grads, static_cast<float>(options.clip), norm);
  }
  for (bool decay : {true, false}) {
    nnops::AdamOptions adam;
    adam.lr = static_cast<float>(options.lr);
    adam.beta1 = options.beta1;
    adam.beta2 = options.beta2;
    adam.eps = options.eps;
    adam.weight_decay = decay ? static_cast<float>(options.weight_decay) : 0.0f;
    adam.decoupled_weight_decay = true;
    std::vector<Tensor*> params, working;
    std::vector<const Tensor*> group_grads, masks;
    std::vector<nnops::AdamState*> states;
    for (Parameter& p : model.parameters()) {
      if (p.decay != decay) continue;
      params.push_back(p.sparse ? &p.sparse->values() : &p.value);
      group_grads.push_back(p.sparse ? &p.sparse_grad : &p.grad);
      states.push_back(&p.adam);
      masks.push_back(p.mask.defined() && !p.sparse ? &p.mask : nullptr);
      working.push_back(p.work.defined() ? &p.work : nullptr);  // kept equal to bf16(value)
    }
    if (!params.empty()) nnops::adam_step(adam, params, group_grads, states, masks, working);
  }
}

double heldout_loss(const Model& model, Workspace& ws, const std::vector<uint8_t>& data,
                    int64_t batch, int64_t batches) {
  const int64_t context = model.config().context;
  const int64_t windows = batch * batches;
  const auto last_start = static_cast<int64_t>(data.size()) - context - 1;
  std::vector<int32_t> w(static_cast<size_t>(batch * (context + 1)));
  Tensor total = Tensor::zeros({1}, DType::F32, model.device());
  Tensor loss = Tensor::empty({1}, DType::F32, model.device());
  Tensor inputs, targets;
  for (int64_t i = 0; i < batches; ++i) {
    for (int64_t b = 0; b < batch; ++b) {
      const int64_t index = i * batch + b;
      const int64_t start = windows > 1 ? last_start * index / (windows - 1) : 0;
      for (int64_t t = 0; t <= context; ++t) w[b * (context + 1) + t] = data[start + t];
    }
    to_inputs_and_targets(w, batch, context, model.device(), inputs, targets);
    const Tensor logits = ws.forward(model, inputs);
    nnops::cross_entropy_loss(logits, targets, loss, nullptr, nnops::Reduction::Sum);
    nnops::add_scaled(total, loss, 1.0f);
  }
  return total.item() / static_cast<double>(windows * context);
}

std::string sample(const Model& model, const std::string& prompt, int64_t count, float temperature,
                   uint64_t seed) {
  const int64_t context = model.config().context;
  Workspace ws(model, 1, context);
  std::vector<int32_t> text(prompt.begin(), prompt.end());
  for (int32_t& c : text) c &= 0xFF;
  if (text.empty()) text.push_back('\n');
  std::mt19937_64 rng(seed);
  std::string out;
  std::vector<double> p(static_cast<size_t>(model.config().vocab));
  for (int64_t i = 0; i < count; ++i) {
    const auto t = std::min<int64_t>(context, static_cast<int64_t>(text.size()));
    const std::vector<int32_t> window(text.end() - t, text.end());
    const Tensor logits = ws.forward(model, Tensor::from_vector(window, {1, t}, model.device()));
    const auto last = logits.narrow(t - 1, 1).to_vector<float>();
    const double top = *std::max_element(last.begin(), last.end());
    double sum = 0;
    for (size_t v = 0; v < p.size(); ++v) sum += p[v] = std::exp((last[v] - top) / temperature);
    double u = static_cast<double>(rng() >> 11) * (1.0 / 9007199254740992.0) * sum;
    size_t chosen = 0;
    while (chosen + 1 < p.size() && u >= p[chosen]) u -= p[chosen++];
    text.push_back(static_cast<int32_t>(chosen));
    out += static_cast<char>(chosen);
  }
  return out;
}

void prune(Model& model, PrunePattern pattern, double amount) {
  for (Parameter& p : model.parameters()) {
    if (!p.prunable) continue;
    if (!p.mask.defined()) {
      p.mask = Tensor::from_vector(std::vector<uint8_t>(static_cast<size_t>(p.value.numel()), 1),
                                   p.value.shape(), model.device());
    }
    if (pattern == PrunePattern::TwoFour) {
      nnops::nm_structured(p.value, 2, 4, p.mask);
    } else {
      nnops::l1_unstructured(p.value, nnops::PruneAmount::fraction(amount), p.mask);
    }
    nnops::apply_mask(p.value, p.mask);
  }
  model.sync_working();
}

void choose_sparse_execution(Model& model, PrunePattern pattern, bool always, int64_t tokens) {
  const nnops::Device device = model.device();
  const auto format =
      pattern == PrunePattern::TwoFour ? nnops::SparseFormat::NM24 : nnops::SparseFormat::CSR;
  std::printf("sparse execution (forward + backward of each pruned product over %lld tokens):\n",
              (long long)tokens);
  int64_t chosen = 0, total = 0;
  for (Parameter& p : model.parameters()) {
    if (!p.mask.defined()) continue;
    auto s = std::make_shared<nnops::SparseMatrix>(nnops::compress(p.value, p.mask, format));
    const int64_t out = p.value.dim(0), in = p.value.dim(1);
    Tensor x = Tensor::empty({tokens, in}, DType::F32, device);
    Tensor dy = Tensor::empty({tokens, out}, DType::F32, device);
    nnops::fill_uniform(x, -1, 1, 1);
    nnops::fill_uniform(dy, -1, 1, 2);
    Tensor y = Tensor::empty({tokens, out}, DType::F32, device);
    Tensor dx = Tensor::empty({tokens, in}, DType::F32, device);
    Tensor dw = Tensor::empty({out, in}, DType::F32, device);
    Tensor dv = Tensor::empty(s->values().shape(), DType::F32, device);
    double dense = 0, sparse = 0;
    if (!always) {
      dense = cli::best_ms(device, [&] {
        nnops::linear_forward(x, p.value, nullptr, y);
        nnops::linear_backward(x, p.value, dy, &dx, dw, nullptr);
      });
      sparse = cli::best_ms(device, [&] {
        nnops::sparse_linear_forward(x, *s, nullptr, y);
        nnops::sparse_linear_backward(x, *s, dy, &dx, &dv, nullptr);
      });
    }
    const bool use = always || sparse < dense;
    ++total;
    if (use) {
      ++chosen;
      p.sparse_grad = std::move(dv);
      p.sparse = std::move(s);
    }
    if (!always) {
      std::printf("  %-22s %s %.2f ms compressed, %.2f ms dense -> %s\n", p.name.c_str(),
                  format == nnops::SparseFormat::NM24 ? "NM24" : "CSR", sparse, dense,
                  use ? "compressed" : "dense");
    }
  }
  std::printf("  %lld of %lld pruned products run compressed\n", (long long)chosen,
              (long long)total);
}

double measured_gemm_gflops(nnops::Device device) {
  const int64_t n = 1024;
  Tensor a = Tensor::empty({n, n}, DType::F32, device),
         b = Tensor::empty({n, n}, DType::F32, device);
  Tensor c = Tensor::empty({n, n}, DType::F32, device);
  nnops::fill_uniform(a, -1, 1, 1);
  nnops::fill_uniform(b, -1, 1, 2);
  const double ms = cli::best_ms(device, [&] { nnops::matmul(a, b, c); });
  return 2.0 * n * n * n / ms * 1e-6;
}

}  // namespace gpt
