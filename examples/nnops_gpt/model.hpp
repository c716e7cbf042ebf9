// The decoder-only transformer of nnops-gpt, written only against nnops' public API:
//   gpt2:  learned positions, LayerNorm, GELU (tanh) MLP of 4x width, biases, output tied to
//          the token embedding;
//   llama: rotary positions, RMSNorm, SwiGLU MLP, grouped-query attention, no biases, an
//          untied output matrix.
// Parameter names are those of bench/torch_gpt.py's PyTorch module, so a checkpoint loads
// there with load_state_dict.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <nnops/nnops.hpp>
#include <string>
#include <utility>
#include <vector>

namespace gpt {

enum class Arch { Gpt2, Llama };
const char* arch_name(Arch a);

struct Config {
  Arch arch = Arch::Gpt2;
  int64_t layers = 4, heads = 4, kv_heads = 4, dim = 256, context = 256, vocab = 256;
  int64_t hidden() const;  // the MLP width: 4 dim (gpt2), 8/3 dim rounded up to 32 (llama)
  int64_t head_dim() const { return dim / heads; }
  float norm_eps = 1e-5f, rope_theta = 10000.0f;
  // Throws std::invalid_argument naming the flag when the shape cannot work.
  void validate(const char* prefix = "--") const;
};

struct Parameter {
  std::string name;
  nnops::Tensor value, grad;
  nnops::Tensor mask;     // U8, defined once the weight is pruned
  nnops::AdamState adam;  // moments of the current phase
  bool decay = false;     // matrices are decayed by AdamW; biases and norm gains are not
  bool prunable = false;  // the weights of linear layers (not embeddings or the output)
  // BF16 mixed precision: the rounding of value that the products read (undefined in FP32, and
  // for tensors no product reads). Adam keeps it equal to bf16(value).
  nnops::Tensor work;
  // Sparse execution: the compressed form the products use instead (its values then are the
  // master that AdamW steps, with sparse_grad), until Model::sync_from_sparse.
  std::shared_ptr<nnops::SparseMatrix> sparse;
  nnops::Tensor sparse_grad;
  // Tensor parallelism: how the whole weight is split (see examples/common/shards.hpp): -1 not
  // split; 0 by rows (split_outer row blocks, each split alike: 2 for llama's fused gate and up
  // projection); 1 by columns.
  int split_dim = -1;
  int64_t split_outer = 1;
};

// What a tensor-parallel model needs from its group.
struct TensorGroupOps {
  std::function<void(nnops::Tensor&)> sum;  // adds the ranks' partial results in place
  std::function<double(double)> sum_value;  // a host value summed over the ranks
};

class Model {
 public:
  // GPT-2's initialisation: weights N(0, 0.02) (the projections into the residual stream
  // scaled by 1/sqrt(2 layers)), biases 0, norm gains 1; each tensor from its own seed.
  Model(const Config& config, nnops::Device device, uint64_t seed);
  const Config& config() const { return config_; }
  nnops::Device device() const { return device_; }
  std::vector<Parameter>& parameters() { return params_; }
  const std::vector<Parameter>& parameters() const { return params_; }
  Parameter& find(const std::string& name);
  const Parameter& find(const std::string& name) const;
  // BF16 mixed precision: every weight a product reads gets a BF16 working copy; the FP32
  // values stay the masters that AdamW updates and checkpoints hold.
  void use_bf16();
  bool mixed_precision() const;
  void sync_working();  // the working copies from the masters again (after pruning, loading)
  // Every weight with a compressed form gets its dense value back from it, and the form goes.
  void sync_from_sparse();
  // What the products read: the working copy in mixed precision, else the value.
  const nnops::Tensor& product_weight(const Parameter* p) const;
  int64_t parameter_count() const;
  int64_t nonzero_parameters() const;  // pruned entries left out
  // Model FLOPs of one training token (forward and backward): 6 per weight of every product
  // plus attention's 6 * layers * dim * context / 2 (causal).
  double train_flops_per_token() const;

  // Tensor parallelism after Megatron-LM: this rank keeps heads / T query heads and
  // kv_heads / T key/value heads (q, k, v split by rows, the attention projection by columns)
  // and hidden / T units of the MLP (fc by rows, llama's gate and up halves alike; the output
  // projection by columns); embeddings, norms and the output matrix stay whole on every rank.
  // A forward sums the two row-parallel products over the group (the first rank alone adds
  // their biases), a backward the gradients of the two norms' outputs. Call on a whole model.
  void split(int rank, int ranks, TensorGroupOps ops);
  int tensor_rank() const { return rank_; }
  int tensor_size() const { return ranks_; }
  int64_t local_heads() const { return config_.heads / ranks_; }
  int64_t local_kv_heads() const { return config_.kv_heads / ranks_; }
  int64_t local_hidden() const { return config_.hidden() / ranks_; }
  // The bias a row-parallel product adds here: the first rank's only.
  const Parameter* row_parallel_bias(const Parameter* b) const { return rank_ == 0 ? b : nullptr; }
  void sum_partial(nnops::Tensor& t) const {
    if (ops_.sum) ops_.sum(t);
  }
  double sum_value(double v) const { return ops_.sum_value ? ops_.sum_value(v) : v; }

  // Per-layer parameter handles, in the order of the forward pass.
  struct Layer {
    Parameter *ln1_w, *ln1_b, *q_w, *q_b, *k_w, *k_b, *v_w, *v_b, *proj_w, *proj_b;
    Parameter *ln2_w, *ln2_b, *fc_w, *fc_b, *out_w, *out_b;  // _b null without biases
  };
  const std::vector<Layer>& layers() const { return layers_; }
  Parameter* wte() const { return wte_; }
  Parameter* wpe() const { return wpe_; }    // gpt2 only
  Parameter* head() const { return head_; }  // llama only (gpt2 ties it to wte)
  Parameter* lnf_w() const { return lnf_w_; }
  Parameter* lnf_b() const { return lnf_b_; }

 private:
  Parameter* add(const std::string& name, const nnops::Shape& shape, bool decay, bool prunable);
  Config config_;
  nnops::Device device_;
  std::vector<Parameter> params_;
  std::vector<Layer> layers_;
  Parameter *wte_ = nullptr, *wpe_ = nullptr, *head_ = nullptr, *lnf_w_ = nullptr,
            *lnf_b_ = nullptr;
  int rank_ = 0, ranks_ = 1;
  TensorGroupOps ops_;
};

// Activations kept for the backward pass, for up to batch x context tokens; smaller batches
// and shorter sequences (sampling) use views of the same buffers.
class Workspace {
 public:
  Workspace(const Model& model, int64_t batch, int64_t context);
  // tokens: I32 [b, t] on the model's device. Returns the logits [b * t, vocab] (a view).
  nnops::Tensor forward(const Model& model, const nnops::Tensor& tokens);
  // The gradient buffer of the logits of the last forward ([b * t, vocab]).
  nnops::Tensor logits_grad();
  // Back-propagates logits_grad() through the last forward into every parameter's grad
  // (overwritten, dense: masking them is the caller's).
  void backward(Model& model);
  // Bytes of every buffer: the activations kept for the backward pass and the scratch.
  size_t bytes() const;

 private:
  struct LayerActs {
    nnops::Tensor resid_in, ln1, mean1, rstd1, q, k, v, attn, lse, merged, mid, ln2, mean2, rstd2,
        fc, act;
    // Mixed precision: the BF16 roundings of the products' inputs, kept for the backward.
    nnops::Tensor ln1_b, merged_b, ln2_b, act_b;
  };
  nnops::Tensor view(nnops::Tensor& buffer, const nnops::Shape& shape);
  // A product's input: x itself in FP32, or its BF16 rounding written into `rounded`.
  nnops::Tensor product_input(const nnops::Tensor& x, nnops::Tensor& rounded);
  // A product's output gradient: dy itself in FP32, or its BF16 rounding (into dy_b_).
  nnops::Tensor product_grad(const nnops::Tensor& dy);
  // The input a product kept for its backward: the F32 buffer, or its BF16 rounding.
  nnops::Tensor saved(nnops::Tensor& f32, nnops::Tensor& bf16, const nnops::Shape& shape);
  bool bf16_ = false;
  nnops::Tensor lnf_b_, dy_b_;
  int64_t capacity_ = 0, vocab_ = 0;
  int64_t b_ = 0, t_ = 0;
  std::pair<int64_t, int64_t> positions_for_{0, 0};  // the [b, t] positions_ holds
  std::vector<LayerActs> acts_;
  nnops::Tensor tokens_, positions_, resid_out_, lnf_, meanf_, rstdf_, logits_, dlogits_;
  // Scratch shared by every layer.
  nnops::Tensor tmp_c_, tmp_c2_, heads_, dheads_, dq_, dk_, dv_, dmlp_, dfc_, dresid_;
  nnops::Tensor demb_;  // gpt2: the input embedding's gradient before the tied output's is added
};

}  // namespace gpt
