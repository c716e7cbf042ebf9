// The MLP of the reference workload: Linear(in, hidden) -> activation -> Linear(hidden, out),
// with optional pruning masks on both weights, written only against nnops' public API.
#pragma once

#include <functional>
#include <memory>
#include <nnops/nnops.hpp>
#include <optional>
#include <string>
#include <vector>

namespace train {

struct Mlp {
  int64_t in = 0, hidden = 0, out = 0;
  std::optional<nnops::Activation> activation;  // nullopt: the plain two-layer linear model
  nnops::Device device = nnops::Device::CPU;
  nnops::Tensor w1, b1, w2, b2;  // w1 [hidden, in], w2 [out, hidden] like nn.Linear
  nnops::Tensor m1, m2;          // U8 masks of w1 and w2 (all ones until pruned)
  // BF16 mixed precision: the products run on these BF16 working copies of w1 and w2, while
  // w1 and w2 stay the FP32 masters that Adam updates (and that checkpoints and pruning see).
  // Undefined in FP32 training.
  nnops::Tensor w1_work, w2_work;
  // Sparse execution (--sparse-execution): a pruned layer whose compressed form runs faster
  // than its dense product trains and infers on it (its values are the masters then, and the
  // dense weight is refreshed by sync_from_sparse). Null: the dense weight serves.
  std::shared_ptr<nnops::SparseMatrix> s1, s2;
  // Tensor parallelism (Megatron-LM's MLP): this rank's shard holds hidden units
  // [hidden_offset, hidden_offset + hidden) of hidden_total, w1 and b1 by rows (column-parallel)
  // and w2 by columns (row-parallel); b2 is whole on every rank. Each rank's product with its
  // columns of w2 is a partial output; sum_partial_outputs adds them over the ranks (the one
  // all-reduce of a forward), and only the rank with adds_output_bias adds b2 before it. The
  // backward needs no communication: every rank holds the whole output gradient, and fc1's
  // input is the data (no dX to reduce). Unsplit: hidden_total == hidden, no hook.
  int64_t hidden_total = 0, hidden_offset = 0;
  std::function<void(nnops::Tensor&)> sum_partial_outputs;
  bool adds_output_bias = true;

  // nn.Linear's default initialisation: weights and biases uniform in +-1/sqrt(fan_in).
  static Mlp create(int64_t in, int64_t hidden, int64_t out,
                    std::optional<nnops::Activation> activation, nnops::Device device,
                    uint64_t seed);
  bool mixed_precision() const { return w1_work.defined(); }
  // Switches to BF16 mixed precision (creates the working copies from the masters).
  void use_bf16();
  // Rounds the masters into the working copies again (after pruning or loading them).
  void sync_working();
  // The dense weights from their sparse forms (after sparse fine-tuning), which then stop.
  void sync_from_sparse();
  // This rank's shard `rank` of `ranks` of an unsplit model (copies; the hook is the caller's).
  Mlp shard(int rank, int ranks) const;
  bool split() const { return hidden != hidden_total; }
  int64_t parameter_count() const;
  int64_t nonzero_weights() const;  // kept entries of the masks plus the biases
  // The whole model's (all tensor-parallel shards together).
  double flops_per_sample_train() const { return 6.0 * (in * hidden_total + hidden_total * out); }
};

// Activations and gradients for up to `capacity` rows; views of them serve smaller batches.
// In mixed precision the activations, their gradients and the weight gradients are BF16;
// the model output, the biases' gradients and the losses stay FP32.
class Workspace {
 public:
  Workspace(const Mlp& model, int64_t capacity);
  // Runs the model on x [rows, in]; returns a view of the output [rows, out].
  nnops::Tensor forward(const Mlp& model, const nnops::Tensor& x);
  // The gradient buffer for the output of the last forward ([rows, out]).
  nnops::Tensor output_grad();
  // Back-propagates output_grad() through the last forward; fills the weight gradients. When
  // given, layer_done is called with each layer's gradients as soon as they are complete (the
  // second layer's first), so data-parallel training can start averaging them.
  using LayerDone = std::function<void(const std::vector<nnops::Tensor*>&)>;
  void backward(const Mlp& model, const nnops::Tensor& x, const LayerDone& layer_done = {});
  // dw1, db1, dw2, db2 of the last backward.
  std::vector<nnops::Tensor*> gradients() { return {&dw1_, &db1_, &dw2_, &db2_}; }
  // One masked Adam step on all four parameters.
  void adam_step(Mlp& model, const nnops::AdamOptions& options);
  void reset_optimizer() { states_ = std::vector<nnops::AdamState>(4); }

 private:
  nnops::Tensor rows(nnops::Tensor& t) const;  // the first rows_ rows of a buffer
  // The layer-1 input of the last forward: x itself, or its BF16 rounding.
  nnops::Tensor input(const nnops::Tensor& x);
  int64_t rows_ = 0;
  nnops::Tensor x_bf16_;  // mixed precision only
  nnops::Tensor h_, a_, y_, dy_, da_, dh_;
  nnops::Tensor dw1_, db1_, dw2_, db2_;
  nnops::Tensor dv1_, dv2_;  // gradients of the sparse forms' values (sparse execution)
  std::vector<nnops::AdamState> states_{4};
};

}  // namespace train
