// The transformer of nnops-gpt: parameters, forward and backward (see model.hpp).
#include "model.hpp"

#include <cmath>
#include <stdexcept>

#include "shards.hpp"

namespace gpt {

using nnops::DType;
using nnops::Shape;
using nnops::Tensor;

const char* arch_name(Arch a) {
  return a == Arch::Gpt2 ? "gpt2" : "llama";
}

int64_t Config::hidden() const {
  if (arch == Arch::Gpt2) return 4 * dim;
  return (8 * dim / 3 + 31) / 32 * 32;
}

void Config::validate(const char* prefix) const {
  const std::string p = prefix;
  auto fail = [](const std::string& m) { throw std::invalid_argument(m); };
  if (layers < 1 || dim < 1 || heads < 1 || kv_heads < 1 || context < 1) {
    fail(p + "layers, " + p + "dim, " + p + "heads, " + p + "kv-heads and --context must be >= 1");
  }
  if (dim % heads != 0) {
    fail(p + "dim " + std::to_string(dim) + " is not a multiple of " + p + "heads " +
         std::to_string(heads));
  }
  if (heads % kv_heads != 0) {
    fail(p + "heads " + std::to_string(heads) + " is not a multiple of " + p + "kv-heads " +
         std::to_string(kv_heads));
  }
  if (arch == Arch::Gpt2 && kv_heads != heads) fail("--arch gpt2 has no grouped-query attention");
  if (arch == Arch::Llama && head_dim() % 2 != 0) {
    fail("rotary embeddings need an even head dimension; " + p + "dim / " + p + "heads is " +
         std::to_string(head_dim()));
  }
}

Parameter* Model::add(const std::string& name, const Shape& shape, bool decay, bool prunable) {
  Parameter p;
  p.name = name;
  p.value = Tensor::empty(shape, DType::F32, device_);
  p.grad = Tensor::zeros(shape, DType::F32, device_);
  p.decay = decay;
  p.prunable = prunable;
  params_.push_back(std::move(p));
  return &params_.back();
}

Model::Model(const Config& config, nnops::Device device, uint64_t seed)
    : config_(config), device_(device) {
  config_.validate();
  const Config& c = config_;
  const int64_t C = c.dim, D = c.head_dim(), H = c.hidden();
  const bool gpt2 = c.arch == Arch::Gpt2;
  // Pointers into params_ stay valid: it is reserved for every parameter up front.
  params_.reserve(static_cast<size_t>(5 + 16 * c.layers));
  wte_ = add("wte.weight", {c.vocab, C}, true, false);
  if (gpt2) wpe_ = add("wpe.weight", {c.context, C}, true, false);
  for (int64_t l = 0; l < c.layers; ++l) {
    const std::string n = "h." + std::to_string(l) + ".";
    Layer L{};
    L.ln1_w = add(n + "ln_1.weight", {C}, false, false);
    if (gpt2) L.ln1_b = add(n + "ln_1.bias", {C}, false, false);
    L.q_w = add(n + "attn.q.weight", {c.heads * D, C}, true, true);
    if (gpt2) L.q_b = add(n + "attn.q.bias", {c.heads * D}, false, false);
    L.k_w = add(n + "attn.k.weight", {c.kv_heads * D, C}, true, true);
    if (gpt2) L.k_b = add(n + "attn.k.bias", {c.kv_heads * D}, false, false);
    L.v_w = add(n + "attn.v.weight", {c.kv_heads * D, C}, true, true);
    if (gpt2) L.v_b = add(n + "attn.v.bias", {c.kv_heads * D}, false, false);
    L.proj_w = add(n + "attn.proj.weight", {C, c.heads * D}, true, true);
    if (gpt2) L.proj_b = add(n + "attn.proj.bias", {C}, false, false);
    L.ln2_w = add(n + "ln_2.weight", {C}, false, false);
    if (gpt2) L.ln2_b = add(n + "ln_2.bias", {C}, false, false);
    // llama: the gate's rows first, then the up projection's (gated_activation's layout).
    L.fc_w = add(n + "mlp.fc.weight", {gpt2 ? H : 2 * H, C}, true, true);
    if (gpt2) L.fc_b = add(n + "mlp.fc.bias", {H}, false, false);
    L.out_w = add(n + "mlp.proj.weight", {C, H}, true, true);
    if (gpt2) L.out_b = add(n + "mlp.proj.bias", {C}, false, false);
    layers_.push_back(L);
  }
  lnf_w_ = add("ln_f.weight", {C}, false, false);
  if (gpt2) lnf_b_ = add("ln_f.bias", {C}, false, false);
  if (!gpt2) head_ = add("lm_head.weight", {c.vocab, C}, true, false);

  const float residual_std = 0.02f / std::sqrt(2.0f * static_cast<float>(c.layers));
  for (size_t i = 0; i < params_.size(); ++i) {
    Parameter& p = params_[i];
    const uint64_t stream = seed ^ (0x9E3779B97F4A7C15ull * (i + 1));
    if (p.value.ndim() == 1) {
      nnops::fill(p.value, p.name.find("ln_") != std::string::npos ? 1.0f : 0.0f);
    } else {
      const bool residual = p.name.find("attn.proj.weight") != std::string::npos ||
                            p.name.find("mlp.proj.weight") != std::string::npos;
      nnops::fill_normal(p.value, 0.0f, residual ? residual_std : 0.02f, stream);
    }
  }
}

void Model::split(int rank, int ranks, TensorGroupOps ops) {
  rank_ = rank, ranks_ = ranks, ops_ = std::move(ops);
  if (ranks == 1) return;
  const bool gpt2 = config_.arch == Arch::Gpt2;
  for (Layer& L : layers_) {
    for (Parameter* p : {L.q_w, L.q_b, L.k_w, L.k_b, L.v_w, L.v_b, L.fc_w, L.fc_b}) {
      if (p) p->split_dim = 0;
    }
    for (Parameter* p : {L.proj_w, L.out_w}) p->split_dim = 1;
    if (!gpt2) L.fc_w->split_outer = 2;  // the gate's rows, then the up projection's
  }
  for (Parameter& p : params_) {
    if (p.split_dim < 0) continue;
    if (p.split_dim == 1) p.split_outer = p.value.dim(0);
    Shape shape = p.value.shape();
    shape[p.split_dim] /= ranks;
    p.value = shards::take(p.value, p.split_outer, rank, ranks).reshape(shape);
    if (p.mask.defined()) p.mask = shards::take(p.mask, p.split_outer, rank, ranks).reshape(shape);
    p.grad = Tensor::zeros(shape, DType::F32, device_);
    p.adam = nnops::AdamState();
    if (p.work.defined()) p.work = Tensor::empty(shape, DType::BF16, device_);
  }
  sync_working();
}

Parameter& Model::find(const std::string& name) {
  for (Parameter& p : params_)
    if (p.name == name) return p;
  throw std::runtime_error("the model has no parameter '" + name + "'");
}

const Parameter& Model::find(const std::string& name) const {
  return const_cast<Model*>(this)->find(name);
}

void Model::use_bf16() {
  for (Parameter& p : params_) {
    // The linear weights and the output matrix (gpt2's is the token embedding); lookups read the
    // FP32 tables.
    const bool output =
        p.name == "lm_head.weight" || (config_.arch == Arch::Gpt2 && p.name == "wte.weight");
    if (p.prunable || output) p.work = Tensor::empty(p.value.shape(), DType::BF16, device_);
  }
  sync_working();
}

bool Model::mixed_precision() const {
  return wte_->work.defined() || (head_ && head_->work.defined());
}

void Model::sync_working() {
  for (Parameter& p : params_)
    if (p.work.defined()) nnops::cast(p.work, p.value);
}

void Model::sync_from_sparse() {
  for (Parameter& p : params_) {
    if (!p.sparse) continue;
    nnops::decompress(*p.sparse, p.value);
    p.sparse.reset();
    p.sparse_grad = Tensor();
  }
  sync_working();
}

const Tensor& Model::product_weight(const Parameter* p) const {
  return p->work.defined() ? p->work : p->value;
}

int64_t Model::parameter_count() const {
  int64_t n = 0;
  for (const Parameter& p : params_) n += p.value.numel();
  return n;
}

int64_t Model::nonzero_parameters() const {
  int64_t n = 0;
  for (const Parameter& p : params_)
    n += p.mask.defined() ? nnops::count_nonzero(p.mask) : p.value.numel();
  return n;
}

double Model::train_flops_per_token() const {
  double weights = 0;  // every weight that takes part in a product (not the lookups)
  for (const Parameter& p : params_) {
    if (p.value.ndim() == 2 && p.name != "wte.weight" && p.name != "wpe.weight") {
      // The whole model's: a split weight counts its every shard.
      weights += static_cast<double>(p.value.numel()) * (p.split_dim >= 0 ? ranks_ : 1);
    }
  }
  if (config_.arch == Arch::Gpt2) weights += static_cast<double>(wte_->value.numel());  // tied
  return 6.0 * weights +
         6.0 * static_cast<double>(config_.layers * config_.dim * config_.context) / 2.0;
}

// ---------------------------------------------------------------------------------------------

namespace {

Tensor flat(int64_t n, DType dtype, nnops::Device device) {
  return Tensor::empty({n}, dtype, device);
}

int64_t numel(const Shape& s) {
  int64_t n = 1;
  for (int64_t d : s) n *= d;
  return n;
}

const Tensor* value_or_null(const Parameter* p) {
  return p ? &p->value : nullptr;
}
Tensor* grad_or_null(Parameter* p) {
  return p ? &p->grad : nullptr;
}

}  // namespace

Tensor Workspace::view(Tensor& buffer, const Shape& shape) {
  return buffer.narrow(0, numel(shape)).reshape(shape);
}

Workspace::Workspace(const Model& model, int64_t batch, int64_t context) {
  const Config& c = model.config();
  const nnops::Device dev = model.device();
  const int64_t n = batch * context, C = c.dim, D = c.head_dim();
  // This rank's heads and MLP units (all of them without tensor parallelism).
  const int64_t q_width = model.local_heads() * D, kv_width = model.local_kv_heads() * D;
  const int64_t H = model.local_hidden();
  const int64_t fc_width = c.arch == Arch::Gpt2 ? H : 2 * H;
  capacity_ = n;
  vocab_ = c.vocab;
  for (int64_t l = 0; l < c.layers; ++l) {
    LayerActs a;
    a.resid_in = flat(n * C, DType::F32, dev);
    a.ln1 = flat(n * C, DType::F32, dev);
    a.mean1 = flat(n, DType::F32, dev);
    a.rstd1 = flat(n, DType::F32, dev);
    a.q = flat(n * q_width, DType::F32, dev);
    a.k = flat(n * kv_width, DType::F32, dev);
    a.v = flat(n * kv_width, DType::F32, dev);
    a.attn = flat(n * q_width, DType::F32, dev);
    a.lse = flat(n * model.local_heads(), DType::F32, dev);
    a.merged = flat(n * q_width, DType::F32, dev);
    a.mid = flat(n * C, DType::F32, dev);
    a.ln2 = flat(n * C, DType::F32, dev);
    a.mean2 = flat(n, DType::F32, dev);
    a.rstd2 = flat(n, DType::F32, dev);
    a.fc = flat(n * fc_width, DType::F32, dev);
    a.act = flat(n * H, DType::F32, dev);
    if (model.mixed_precision()) {
      a.ln1_b = flat(n * C, DType::BF16, dev);
      a.merged_b = flat(n * q_width, DType::BF16, dev);
      a.ln2_b = flat(n * C, DType::BF16, dev);
      a.act_b = flat(n * H, DType::BF16, dev);
    }
    acts_.push_back(std::move(a));
  }
  bf16_ = model.mixed_precision();
  if (bf16_) {
    lnf_b_ = flat(n * C, DType::BF16, dev);
    dy_b_ = flat(n * std::max({C, q_width, fc_width, c.vocab}), DType::BF16, dev);
  }
  tokens_ = flat(n, DType::I32, dev);
  positions_ = flat(n, DType::I32, dev);
  resid_out_ = flat(n * C, DType::F32, dev);
  lnf_ = flat(n * C, DType::F32, dev);
  meanf_ = flat(n, DType::F32, dev);
  rstdf_ = flat(n, DType::F32, dev);
  logits_ = flat(n * c.vocab, DType::F32, dev);
  dlogits_ = flat(n * c.vocab, DType::F32, dev);
  tmp_c_ = flat(n * std::max(C, q_width), DType::F32, dev);
  tmp_c2_ = flat(n * std::max(C, q_width), DType::F32, dev);
  heads_ = flat(n * q_width, DType::F32, dev);
  dheads_ = flat(n * q_width, DType::F32, dev);
  dq_ = flat(n * q_width, DType::F32, dev);
  dk_ = flat(n * kv_width, DType::F32, dev);
  dv_ = flat(n * kv_width, DType::F32, dev);
  dmlp_ = flat(n * H, DType::F32, dev);
  dfc_ = flat(n * fc_width, DType::F32, dev);
  dresid_ = flat(n * C, DType::F32, dev);
  if (c.arch == Arch::Gpt2) demb_ = flat(c.vocab * C, DType::F32, dev);
}

namespace {

// y = x w^T + b through the weight's compressed form when it has one.
void product_forward(const Model& m, const Tensor& x, const Parameter* w, const Parameter* b,
                     Tensor& y) {
  if (w->sparse) {
    nnops::sparse_linear_forward(x, *w->sparse, value_or_null(b), y);
  } else {
    nnops::linear_forward(x, m.product_weight(w), value_or_null(b), y);
  }
}

// Its backward: dx (may be null), the weight's gradient (sparse_grad for a compressed form) and
// the bias's.
void product_backward(const Model& m, const Tensor& x, Parameter* w, Parameter* b, const Tensor& dy,
                      Tensor* dx) {
  if (w->sparse) {
    nnops::sparse_linear_backward(x, *w->sparse, dy, dx, &w->sparse_grad, grad_or_null(b));
  } else {
    nnops::linear_backward(x, m.product_weight(w), dy, dx, w->grad, grad_or_null(b));
  }
}

void norm_forward(const Config& c, const Tensor& x, const Parameter* w, const Parameter* b,
                  Tensor& y, Tensor& mean, Tensor& rstd) {
  if (c.arch == Arch::Gpt2) {
    nnops::layer_norm_forward(x, &w->value, value_or_null(b), c.norm_eps, y, &mean, &rstd);
  } else {
    nnops::rms_norm_forward(x, &w->value, c.norm_eps, y, &rstd);
  }
}

void norm_backward(const Config& c, const Tensor& x, Parameter* w, Parameter* b, const Tensor& mean,
                   const Tensor& rstd, const Tensor& dy, Tensor& dx) {
  if (c.arch == Arch::Gpt2) {
    nnops::layer_norm_backward(x, &w->value, mean, rstd, dy, &dx, &w->grad, grad_or_null(b));
  } else {
    nnops::rms_norm_backward(x, &w->value, rstd, dy, &dx, &w->grad);
  }
}

}  // namespace

Tensor Workspace::product_input(const Tensor& x, Tensor& rounded) {
  if (!bf16_) return x.reshape(x.shape());
  Tensor r = view(rounded, x.shape());
  nnops::cast(r, x);
  return r;
}

Tensor Workspace::product_grad(const Tensor& dy) {
  if (!bf16_) return dy.reshape(dy.shape());
  Tensor r = view(dy_b_, dy.shape());
  nnops::cast(r, dy);
  return r;
}

Tensor Workspace::saved(Tensor& f32, Tensor& bf16, const Shape& shape) {
  return view(bf16_ ? bf16 : f32, shape);
}

Tensor Workspace::forward(const Model& model, const Tensor& tokens) {
  const Config& c = model.config();
  if (tokens.ndim() != 2 || tokens.dim(0) * tokens.dim(1) > capacity_ ||
      tokens.dim(1) > c.context) {
    throw std::invalid_argument("gpt::Workspace::forward: tokens " + tokens.describe() +
                                " do not fit the workspace");
  }
  b_ = tokens.dim(0);
  t_ = tokens.dim(1);
  const int64_t n = b_ * t_, C = c.dim, D = c.head_dim();
  const int64_t Hq = model.local_heads(), Hkv = model.local_kv_heads();
  const bool gpt2 = c.arch == Arch::Gpt2;
  Tensor tok = view(tokens_, {b_, t_});
  nnops::copy(tok, tokens);

  Tensor x0 = view(acts_[0].resid_in, {b_, t_, C});
  nnops::embedding_forward(tok, model.wte()->value, x0);
  if (gpt2) {
    Tensor p = view(positions_, {b_, t_});
    if (positions_for_ != std::make_pair(b_, t_)) {  // uploaded once per shape, not per step
      std::vector<int32_t> pos(static_cast<size_t>(n));
      for (int64_t i = 0; i < n; ++i) pos[i] = static_cast<int32_t>(i % t_);
      nnops::copy(p, Tensor::from_vector(pos, {b_, t_}, model.device()));
      positions_for_ = {b_, t_};
    }
    Tensor pe = view(tmp_c_, {b_, t_, C});
    nnops::embedding_forward(p, model.wpe()->value, pe);
    nnops::add_scaled(x0, pe, 1.0f);
  }
  nnops::AttentionOptions attention;
  attention.causal = true;
  for (size_t l = 0; l < acts_.size(); ++l) {
    LayerActs& a = acts_[l];
    const Model::Layer& L = model.layers()[l];
    Tensor x = view(a.resid_in, {n, C}), ln1 = view(a.ln1, {n, C});
    Tensor mean1 = view(a.mean1, {n}), rstd1 = view(a.rstd1, {n});
    norm_forward(c, x, L.ln1_w, L.ln1_b, ln1, mean1, rstd1);
    const Tensor ln1_in = product_input(ln1, a.ln1_b);
    // Projections come out as [b, t, heads, D]; attention wants [b, heads, t, D].
    Tensor q = view(a.q, {b_, Hq, t_, D}), k = view(a.k, {b_, Hkv, t_, D});
    Tensor v = view(a.v, {b_, Hkv, t_, D});
    struct Projection {
      const Parameter *w, *b;
      int64_t heads;
      Tensor* out;
    };
    for (const Projection& p : {Projection{L.q_w, L.q_b, Hq, &q}, Projection{L.k_w, L.k_b, Hkv, &k},
                                Projection{L.v_w, L.v_b, Hkv, &v}}) {
      Tensor h = view(heads_, {n, p.heads * D});
      product_forward(model, ln1_in, p.w, p.b, h);
      nnops::permute(h.reshape({b_, t_, p.heads, D}), {0, 2, 1, 3}, *p.out);
    }
    if (!gpt2) {
      nnops::rope_forward(q, 0, c.rope_theta, q);
      nnops::rope_forward(k, 0, c.rope_theta, k);
    }
    Tensor attn = view(a.attn, {b_, Hq, t_, D}), lse = view(a.lse, {b_, Hq, t_});
    nnops::attention_forward(q, k, v, attn, &lse, attention);
    Tensor merged = view(a.merged, {b_, t_, Hq, D});
    nnops::permute(attn, {0, 2, 1, 3}, merged);
    Tensor mid = view(a.mid, {n, C});  // the projection written in place, then the residual
    product_forward(model, product_input(merged.reshape({n, Hq * D}), a.merged_b), L.proj_w,
                    model.row_parallel_bias(L.proj_b), mid);
    model.sum_partial(mid);
    nnops::add_scaled(mid, x, 1.0f);

    Tensor ln2 = view(a.ln2, {n, C}), mean2 = view(a.mean2, {n}), rstd2 = view(a.rstd2, {n});
    norm_forward(c, mid, L.ln2_w, L.ln2_b, ln2, mean2, rstd2);
    const int64_t H = model.local_hidden();
    Tensor fc = view(a.fc, {n, gpt2 ? H : 2 * H}), act = view(a.act, {n, H});
    product_forward(model, product_input(ln2, a.ln2_b), L.fc_w, L.fc_b, fc);
    if (gpt2) {
      nnops::activation_forward(nnops::Activation::GELUTanh, fc, act);
    } else {
      nnops::gated_activation_forward(nnops::Activation::SiLU, fc, act);
    }
    Tensor next = view(l + 1 < acts_.size() ? acts_[l + 1].resid_in : resid_out_, {n, C});
    product_forward(model, product_input(act, a.act_b), L.out_w, model.row_parallel_bias(L.out_b),
                    next);
    model.sum_partial(next);
    nnops::add_scaled(next, mid, 1.0f);
  }
  Tensor xf = view(resid_out_, {n, C}), lnf = view(lnf_, {n, C});
  Tensor meanf = view(meanf_, {n}), rstdf = view(rstdf_, {n});
  norm_forward(c, xf, model.lnf_w(), model.lnf_b(), lnf, meanf, rstdf);
  Tensor logits = view(logits_, {n, c.vocab});
  const Parameter* head = gpt2 ? model.wte() : model.head();
  nnops::linear_forward(product_input(lnf, lnf_b_), model.product_weight(head), nullptr, logits);
  return logits;
}

size_t Workspace::bytes() const {
  size_t total = 0;
  for (const LayerActs& a : acts_) {
    for (const Tensor* t :
         {&a.resid_in, &a.ln1, &a.mean1,  &a.rstd1,    &a.q,     &a.k,     &a.v,
          &a.attn,     &a.lse, &a.merged, &a.mid,      &a.ln2,   &a.mean2, &a.rstd2,
          &a.fc,       &a.act, &a.ln1_b,  &a.merged_b, &a.ln2_b, &a.act_b}) {
      total += t->nbytes();
    }
  }
  for (const Tensor* t :
       {&tokens_,  &positions_, &resid_out_, &lnf_,    &meanf_,  &rstdf_, &logits_,
        &dlogits_, &tmp_c_,     &tmp_c2_,    &heads_,  &dheads_, &dq_,    &dk_,
        &dv_,      &dmlp_,      &dfc_,       &dresid_, &demb_,   &lnf_b_, &dy_b_}) {
    total += t->nbytes();
  }
  return total;
}

Tensor Workspace::logits_grad() {
  return view(dlogits_, {b_ * t_, vocab_});
}

void Workspace::backward(Model& model) {
  const Config& c = model.config();
  const int64_t n = b_ * t_, C = c.dim, D = c.head_dim();
  const int64_t Hq = model.local_heads(), Hkv = model.local_kv_heads(), H = model.local_hidden();
  const bool gpt2 = c.arch == Arch::Gpt2;
  Tensor dres = view(dresid_, {n, C});
  {
    Parameter* head = gpt2 ? model.wte() : model.head();
    Tensor dlnf = view(tmp_c_, {n, C});
    nnops::linear_backward(saved(lnf_, lnf_b_, {n, C}), model.product_weight(head),
                           product_grad(logits_grad()), &dlnf, head->grad, nullptr);
    norm_backward(c, view(resid_out_, {n, C}), model.lnf_w(), model.lnf_b(), view(meanf_, {n}),
                  view(rstdf_, {n}), dlnf, dres);
  }
  nnops::AttentionOptions attention;
  attention.causal = true;
  for (size_t li = acts_.size(); li-- > 0;) {
    LayerActs& a = acts_[li];
    const Model::Layer& L = model.layers()[li];
    // MLP: resid_out = mid + out(act(fc(ln2(mid)))).
    Tensor dact = view(dmlp_, {n, H}), dfc = view(dfc_, {n, gpt2 ? H : 2 * H});
    Tensor fc = view(a.fc, {n, gpt2 ? H : 2 * H});
    product_backward(model, saved(a.act, a.act_b, {n, H}), L.out_w, L.out_b, product_grad(dres),
                     &dact);
    if (gpt2) {
      nnops::activation_backward(nnops::Activation::GELUTanh, fc, dact, dfc);
    } else {
      nnops::gated_activation_backward(nnops::Activation::SiLU, fc, dact, dfc);
    }
    Tensor dln = view(tmp_c_, {n, C}), dpart = view(tmp_c2_, {n, C});
    Tensor mid = view(a.mid, {n, C});
    product_backward(model, saved(a.ln2, a.ln2_b, {n, C}), L.fc_w, L.fc_b, product_grad(dfc), &dln);
    model.sum_partial(dln);  // every rank's units contribute to the norm's output gradient
    norm_backward(c, mid, L.ln2_w, L.ln2_b, view(a.mean2, {n}), view(a.rstd2, {n}), dln, dpart);
    nnops::add_scaled(dres, dpart, 1.0f);  // now the gradient of mid

    // Attention: mid = resid_in + proj(merged heads).
    Tensor dmerged = view(tmp_c_, {n, Hq * D});
    product_backward(model, saved(a.merged, a.merged_b, {n, Hq * D}), L.proj_w, L.proj_b,
                     product_grad(dres), &dmerged);
    Tensor dattn = view(dheads_, {b_, Hq, t_, D});
    nnops::permute(dmerged.reshape({b_, t_, Hq, D}), {0, 2, 1, 3}, dattn);
    Tensor q = view(a.q, {b_, Hq, t_, D}), k = view(a.k, {b_, Hkv, t_, D});
    Tensor v = view(a.v, {b_, Hkv, t_, D});
    Tensor dq = view(dq_, {b_, Hq, t_, D}), dk = view(dk_, {b_, Hkv, t_, D});
    Tensor dv = view(dv_, {b_, Hkv, t_, D});
    nnops::attention_backward(q, k, v, view(a.attn, {b_, Hq, t_, D}), view(a.lse, {b_, Hq, t_}),
                              dattn, dq, dk, dv, attention);
    if (!gpt2) {
      nnops::rope_backward(dq, 0, c.rope_theta, dq);
      nnops::rope_backward(dk, 0, c.rope_theta, dk);
    }
    const Tensor ln1 = saved(a.ln1, a.ln1_b, {n, C});
    dln = view(tmp_c_, {n, C});
    struct Projection {
      Parameter *w, *b;
      int64_t heads;
      Tensor* grad;
    };
    bool first = true;
    for (const Projection& p :
         {Projection{L.q_w, L.q_b, Hq, &dq}, Projection{L.k_w, L.k_b, Hkv, &dk},
          Projection{L.v_w, L.v_b, Hkv, &dv}}) {
      Tensor h = view(heads_, {b_, t_, p.heads, D});
      nnops::permute(*p.grad, {0, 2, 1, 3}, h);
      Tensor* dx = first ? &dln : &dpart;
      product_backward(model, ln1, p.w, p.b, product_grad(h.reshape({n, p.heads * D})), dx);
      if (!first) nnops::add_scaled(dln, dpart, 1.0f);
      first = false;
    }
    model.sum_partial(dln);  // likewise every rank's heads
    norm_backward(c, view(a.resid_in, {n, C}), L.ln1_w, L.ln1_b, view(a.mean1, {n}),
                  view(a.rstd1, {n}), dln, dpart);
    nnops::add_scaled(dres, dpart, 1.0f);  // the gradient of this layer's input
  }
  Tensor tok = view(tokens_, {b_, t_});
  Tensor dx0 = dres.reshape({b_, t_, C});
  if (gpt2) {
    Tensor demb = view(demb_, {c.vocab, C});
    nnops::embedding_backward(tok, dx0, demb);
    nnops::add_scaled(model.wte()->grad, demb, 1.0f);  // tied: the output's gradient is there
    nnops::embedding_backward(view(positions_, {b_, t_}), dx0, model.wpe()->grad);
  } else {
    nnops::embedding_backward(tok, dx0, model.wte()->grad);
  }
}

}  // namespace gpt
