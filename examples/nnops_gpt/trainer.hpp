// The training phases of nnops-gpt: batches, the learning-rate schedule, one AdamW step with
// masks and clipping, held-out evaluation and sampling, on nnops' public API.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "corpus.hpp"
#include "model.hpp"
#include "options.hpp"

namespace gpt {

// Windows of context + 1 bytes at uniformly drawn offsets: inputs are the first context bytes,
// targets the next byte of each.
class Batcher {
 public:
  Batcher(const std::vector<uint8_t>& data, int64_t batch, int64_t context, uint64_t seed);
  // The next batch's windows, batch x (context + 1) bytes as I32.
  const std::vector<int32_t>& next();

 private:
  const std::vector<uint8_t>& data_;
  int64_t batch_, context_;
  std::mt19937_64 rng_;
  std::vector<int32_t> windows_;
};

// Splits windows [b, t + 1] into inputs [b, t] and targets [b * t] on the device.
void to_inputs_and_targets(const std::vector<int32_t>& windows, int64_t batch, int64_t context,
                           nnops::Device device, nnops::Tensor& inputs, nnops::Tensor& targets);

// Linear warm-up over `warmup` steps to `peak`, then a cosine to min_ratio * peak at `steps`
// (step counts from 1), as bench/torch_gpt.py computes it.
double learning_rate(int64_t step, int64_t steps, int64_t warmup, double peak, double min_ratio);

struct StepOptions {
  double lr = 1e-3, weight_decay = 0.1, clip = 1.0;
  float beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f;
};

// One optimizer step after a backward pass: pruned entries' gradients zeroed, all gradients
// clipped to `clip` in total norm (0: not clipped), then AdamW (decay on matrices only) with the
// masks kept. Nothing waits for the device.
void optimizer_step(Model& model, const StepOptions& options);

// Mean cross-entropy (nats per byte) over `batches` batches of windows spread evenly over data.
double heldout_loss(const Model& model, Workspace& ws, const std::vector<uint8_t>& data,
                    int64_t batch, int64_t batches);

// Generates `count` bytes after `prompt` at `temperature` (seeded).
std::string sample(const Model& model, const std::string& prompt, int64_t count, float temperature,
                   uint64_t seed);

// Prunes every prunable weight (2:4, or L1 unstructured at amount) and zeroes the pruned entries.
void prune(Model& model, PrunePattern pattern, double amount);

// Sparse execution: each pruned weight's product (forward, and backward with dx and the weight
// gradient, over `tokens` rows) is timed dense and on its compressed form (NM24 for 2:4, else
// CSR), and the compressed form is kept where it is faster (or always); prints the choices.
void choose_sparse_execution(Model& model, PrunePattern pattern, bool always, int64_t tokens);

// The GEMM rate of this device in GFLOP/s (the best of a few 1024^3 products), the reference of
// model FLOPs utilisation.
double measured_gemm_gflops(nnops::Device device);

}  // namespace gpt
