// The MLP forward, backward and masked Adam step (see model.hpp).
#include "model.hpp"

#include <cmath>

#include "shards.hpp"

namespace train {

using nnops::DType;
using nnops::Tensor;

Mlp Mlp::create(int64_t in, int64_t hidden, int64_t out,
                std::optional<nnops::Activation> activation, nnops::Device device, uint64_t seed) {
  Mlp m;
  m.in = in, m.hidden = hidden, m.out = out, m.activation = activation, m.device = device;
  m.hidden_total = hidden;
  auto init = [&](Tensor& t, nnops::Shape shape, int64_t fan_in, uint64_t s) {
    t = Tensor::empty(shape, DType::F32, device);
    const float bound = 1.0f / std::sqrt(static_cast<float>(fan_in));
    nnops::fill_uniform(t, -bound, bound, s);
  };
  init(m.w1, {hidden, in}, in, seed * 4 + 0);
  init(m.b1, {hidden}, in, seed * 4 + 1);
  init(m.w2, {out, hidden}, hidden, seed * 4 + 2);
  init(m.b2, {out}, hidden, seed * 4 + 3);
  m.m1 = Tensor::from_vector(std::vector<uint8_t>(hidden * in, 1), {hidden, in}, device);
  m.m2 = Tensor::from_vector(std::vector<uint8_t>(out * hidden, 1), {out, hidden}, device);
  return m;
}

void Mlp::use_bf16() {
  w1_work = Tensor::empty(w1.shape(), DType::BF16, device);
  w2_work = Tensor::empty(w2.shape(), DType::BF16, device);
  sync_working();
}

void Mlp::sync_working() {
  if (!mixed_precision()) return;
  nnops::cast(w1_work, w1);
  nnops::cast(w2_work, w2);
}

Mlp Mlp::shard(int rank, int ranks) const {
  Mlp s;
  s.in = in, s.out = out, s.activation = activation, s.device = device;
  s.hidden_total = hidden_total;
  s.hidden = hidden / ranks;
  s.hidden_offset = hidden_offset + rank * s.hidden;
  // fc1 by rows (one block), fc2 by columns (one block per output row).
  s.w1 = shards::take(w1, 1, rank, ranks).reshape({s.hidden, in});
  s.b1 = shards::take(b1, 1, rank, ranks);
  s.m1 = shards::take(m1, 1, rank, ranks).reshape({s.hidden, in});
  s.w2 = shards::take(w2, out, rank, ranks).reshape({out, s.hidden});
  s.m2 = shards::take(m2, out, rank, ranks).reshape({out, s.hidden});
  s.b2 = b2.clone();
  s.adds_output_bias = rank == 0;
  if (mixed_precision()) s.use_bf16();
  return s;
}

int64_t Mlp::parameter_count() const {
  return w1.numel() + b1.numel() + w2.numel() + b2.numel();
}

int64_t Mlp::nonzero_weights() const {
  return nnops::count_nonzero(m1) + nnops::count_nonzero(m2) + b1.numel() + b2.numel();
}

void Mlp::sync_from_sparse() {
  if (s1) nnops::decompress(*s1, w1);
  if (s2) nnops::decompress(*s2, w2);
  s1.reset();
  s2.reset();
  sync_working();
}

Workspace::Workspace(const Mlp& m, int64_t capacity) {
  const DType inner = m.mixed_precision() ? DType::BF16 : DType::F32;
  auto make = [&](int64_t rows, int64_t cols, DType dtype) {
    return Tensor::empty({rows, cols}, dtype, m.device);
  };
  if (m.mixed_precision()) x_bf16_ = make(capacity, m.in, DType::BF16);
  h_ = make(capacity, m.hidden, inner);
  a_ = make(capacity, m.hidden, inner);
  y_ = make(capacity, m.out, DType::F32);  // the losses read FP32 outputs
  dy_ = make(capacity, m.out, inner);
  da_ = make(capacity, m.hidden, inner);
  dh_ = make(capacity, m.hidden, inner);
  // Adam reads BF16 weight gradients directly and steps the FP32 masters.
  dw1_ = make(m.hidden, m.in, inner);
  dw2_ = make(m.out, m.hidden, inner);
  db1_ = Tensor::empty({m.hidden}, DType::F32, m.device);
  db2_ = Tensor::empty({m.out}, DType::F32, m.device);
  if (m.s1) dv1_ = Tensor::empty(m.s1->values().shape(), DType::F32, m.device);
  if (m.s2) dv2_ = Tensor::empty(m.s2->values().shape(), DType::F32, m.device);
}

namespace {

// y = x w^T + b on the sparse form when there is one, else on the dense weight.
void layer_forward(const Tensor& x, const Tensor& w, const nnops::SparseMatrix* s, const Tensor* b,
                   Tensor& y) {
  if (s) {
    nnops::sparse_linear_forward(x, *s, b, y);
  } else {
    nnops::linear_forward(x, w, b, y);
  }
}

void layer_backward(const Tensor& x, const Tensor& w, const nnops::SparseMatrix* s,
                    const Tensor& dy, Tensor* dx, Tensor& dw, Tensor& dvalues, Tensor& db) {
  if (s) {
    nnops::sparse_linear_backward(x, *s, dy, dx, &dvalues, &db);
  } else {
    nnops::linear_backward(x, w, dy, dx, dw, &db);
  }
}

}  // namespace

Tensor Workspace::rows(Tensor& t) const {
  return t.narrow(0, rows_);
}

Tensor Workspace::input(const Tensor& x) {
  if (!x_bf16_.defined()) return x.narrow(0, x.dim(0));  // a view of x itself
  return rows(x_bf16_);
}

Tensor Workspace::forward(const Mlp& m, const Tensor& x) {
  rows_ = x.dim(0);
  Tensor h = rows(h_), a = rows(a_), y = rows(y_);
  Tensor in = input(x);
  if (m.mixed_precision()) nnops::cast(in, x);
  const Tensor& w1 = m.mixed_precision() ? m.w1_work : m.w1;
  const Tensor& w2 = m.mixed_precision() ? m.w2_work : m.w2;
  layer_forward(in, w1, m.s1.get(), &m.b1, h);
  if (m.activation) nnops::activation_forward(*m.activation, h, a);
  layer_forward(m.activation ? a : h, w2, m.s2.get(), m.adds_output_bias ? &m.b2 : nullptr, y);
  if (m.sum_partial_outputs) m.sum_partial_outputs(y);
  return y;
}

Tensor Workspace::output_grad() {
  return rows(dy_);
}

void Workspace::backward(const Mlp& m, const Tensor& x, const LayerDone& layer_done) {
  Tensor h = rows(h_), a = rows(a_), dy = rows(dy_);
  Tensor da = rows(da_), dh = rows(dh_);
  const Tensor in = input(x);  // as the last forward left it
  const Tensor& w1 = m.mixed_precision() ? m.w1_work : m.w1;
  const Tensor& w2 = m.mixed_precision() ? m.w2_work : m.w2;
  layer_backward(m.activation ? a : h, w2, m.s2.get(), dy, &da, dw2_, dv2_, db2_);
  if (layer_done) layer_done({&dw2_, &db2_});
  if (m.activation) {
    nnops::activation_backward(*m.activation, h, da, dh);
    layer_backward(in, w1, m.s1.get(), dh, nullptr, dw1_, dv1_, db1_);
  } else {
    layer_backward(in, w1, m.s1.get(), da, nullptr, dw1_, dv1_, db1_);
  }
  if (layer_done) layer_done({&dw1_, &db1_});
}

void Workspace::adam_step(Mlp& m, const nnops::AdamOptions& options) {
  if (m.s1 || m.s2) {  // sparse execution: the stored values step, pruned weights stay out
    Tensor* p1 = m.s1 ? &m.s1->values() : &m.w1;
    Tensor* p2 = m.s2 ? &m.s2->values() : &m.w2;
    nnops::adam_step(options, {p1, &m.b1, p2, &m.b2},
                     {m.s1 ? &dv1_ : &dw1_, &db1_, m.s2 ? &dv2_ : &dw2_, &db2_},
                     {&states_[0], &states_[1], &states_[2], &states_[3]},
                     {m.s1 ? nullptr : &m.m1, nullptr, m.s2 ? nullptr : &m.m2, nullptr});
    return;
  }
  std::vector<Tensor*> working;
  if (m.mixed_precision()) working = {&m.w1_work, nullptr, &m.w2_work, nullptr};
  nnops::adam_step(options, {&m.w1, &m.b1, &m.w2, &m.b2}, {&dw1_, &db1_, &dw2_, &db2_},
                   {&states_[0], &states_[1], &states_[2], &states_[3]},
                   {&m.m1, nullptr, &m.m2, nullptr}, working);
}

}  // namespace train
