// Data-parallel training over nnops::dist (see parallel.hpp).
#include "parallel.hpp"

#include <chrono>
#include <cstring>
#include <stdexcept>

#include "nnops/cuda.hpp"

#ifdef NNOPS_TRAIN_WITH_MPI
#include <nnops/dist.hpp>

#include "shards.hpp"
#include "tensor_group.hpp"
#endif

namespace train {

// The stand-in never splits a model.
Mlp Parallel::gather(const Mlp&) {
  throw std::logic_error("Parallel::gather: the model is not split");
}
void Parallel::prune_split(Mlp&, bool, double) {
  throw std::logic_error("Parallel::prune_split: the model is not split");
}

#ifdef NNOPS_TRAIN_WITH_MPI

// Adam over this rank's slice of each parameter: padded flat copies of parameter and gradient,
// the slice's moments, and the slice of the mask (padding is masked out).
struct Parallel::ShardState {
  struct Param {
    int64_t n = 0, chunk = 0;
    nnops::Tensor padded_grad, grad_slice, padded_param, param_slice, padded_mask, mask_slice;
    nnops::AdamState adam;
  };
  std::vector<Param> params;
};

namespace {

using nnops::Tensor;

// A flat, writable view of a whole tensor (same memory).
Tensor flat(Tensor& t) {
  switch (t.dtype()) {
    case nnops::DType::U8:
      return Tensor::wrap(t.data<uint8_t>(), {t.numel()}, t.device());
    default:
      return Tensor::wrap(t.data<float>(), {t.numel()}, t.device());
  }
}

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

// Over the data and tensor groups of shards::make_groups.
class MpiParallel final : public Parallel {
 public:
  MpiParallel(bool data_parallel, int tensor_parallel, int zero_stage, nnops::Device device)
      : groups_(shards::make_groups(data_parallel, tensor_parallel)),
        world_(groups_.world),
        comm_(groups_.data),
        tensor_(groups_.tensor),
        zero_(zero_stage),
        device_(device) {
    // One GPU per rank, chosen before anything touches a GPU (device_count makes no context).
    const int gpus = nnops::cuda::device_count();
    if (device == nnops::Device::CUDA && gpus > 0)
      nnops::cuda::set_device(world_.local_rank() % gpus);
  }
  int rank() const override { return comm_.rank(); }
  int size() const override { return comm_.size(); }
  int world_rank() const override { return world_.rank(); }
  int tensor_rank() const override { return tensor_.rank(); }
  int tensor_size() const override { return tensor_.size(); }

  Mlp split(Mlp whole) override {
    if (tensor_size() == 1) return whole;
    Mlp shard = whole.shard(tensor_rank(), tensor_size());
    shard.sum_partial_outputs = [this](Tensor& y) { tensor_.sum(y); };
    return shard;
  }

  Mlp gather(const Mlp& s) override {
    const int t = tensor_size();
    // fc1's shards are row blocks, fc2's column blocks (see shards.hpp).
    auto whole = [&](const Tensor& shard, int64_t outer, const nnops::Shape& shape) {
      return shards::assemble(tensor_.stack(shard), outer, t).reshape(shape);
    };
    Mlp m;
    m.in = s.in, m.out = s.out, m.activation = s.activation, m.device = s.device;
    m.hidden = m.hidden_total = s.hidden_total;
    m.w1 = whole(s.w1, 1, {m.hidden, m.in});
    m.b1 = whole(s.b1, 1, {m.hidden});
    m.m1 = whole(s.m1, 1, {m.hidden, m.in});
    m.w2 = whole(s.w2, m.out, {m.out, m.hidden});
    m.m2 = whole(s.m2, m.out, {m.out, m.hidden});
    m.b2 = s.b2.clone();
    if (s.mixed_precision()) m.use_bf16();
    return m;
  }

  void prune_split(Mlp& m, bool global, double amount) override {
    const nnops::dist::ShardPlacement p1{m.hidden_total, m.in, m.hidden_offset, 0},
        p2{m.out, m.hidden_total, 0, m.hidden_offset};
    const auto fraction = nnops::PruneAmount::fraction(amount);
    if (global) {
      nnops::dist::global_unstructured(tensor_.comm(), {&m.w1, &m.w2}, {p1, p2}, fraction,
                                       {&m.m1, &m.m2});
    } else {
      nnops::dist::l1_unstructured(tensor_.comm(), m.w1, p1, fraction, m.m1);
      nnops::dist::l1_unstructured(tensor_.comm(), m.w2, p2, fraction, m.m2);
    }
  }

  int64_t tensor_sum(int64_t count) override { return tensor_.sum_count(count); }
  bool sharded_optimizer() const override { return zero_ == 1; }
  void use_device(nnops::Device device) override { device_ = device; }

  void broadcast(const std::vector<Tensor*>& tensors) override { comm_.broadcast(tensors, 0); }

  void gradients_ready(const std::vector<Tensor*>& grads) override {
    if (zero_ == 1) return;  // the sharded step reduce-scatters instead
    pending_.push_back(comm_.allreduce_async(grads, nnops::dist::Op::Mean));
  }
  void finish_gradients() override {
    const auto t0 = Clock::now();
    for (auto& r : pending_) r.wait();
    pending_.clear();
    waited_ += seconds_since(t0);
  }
  double communication_seconds() const override { return waited_ + tensor_.seconds(); }

  double average(double value) override {
    Tensor t = Tensor::from_vector(std::vector<float>{static_cast<float>(value)}, {1});
    comm_.allreduce({&t}, nnops::dist::Op::Mean);
    return t.item();
  }

  bool identical_on_all_ranks(const std::vector<const Tensor*>& tensors) override {
    float differs = 0.0f;
    for (const Tensor* t : tensors) {
      Tensor mine = t->to(nnops::Device::CPU), root = mine.clone();
      comm_.broadcast({&root}, 0);
      if (std::memcmp(mine.raw_data(), root.raw_data(), mine.nbytes()) != 0) differs = 1.0f;
    }
    Tensor flag = Tensor::from_vector(std::vector<float>{differs}, {1});
    comm_.allreduce({&flag});
    return flag.item() == 0.0f;
  }

  void sharded_adam_step(Mlp& m, Workspace& ws, const nnops::AdamOptions& options,
                         std::shared_ptr<ShardState>& state) override {
    const auto t0 = Clock::now();
    struct AddTime {  // the whole sharded step counts: its collectives are not overlapped
      const Clock::time_point& start;
      double& total;
      ~AddTime() { total += seconds_since(start); }
    } add_time{t0, waited_};
    Tensor* params[] = {&m.w1, &m.b1, &m.w2, &m.b2};
    const std::vector<Tensor*> grads = ws.gradients();
    Tensor* masks[] = {&m.m1, nullptr, &m.m2, nullptr};
    const int n_ranks = size(), r = rank();
    if (!state) {
      state = std::make_shared<ShardState>();
      for (int i = 0; i < 4; ++i) {
        ShardState::Param p;
        p.n = params[i]->numel();
        p.chunk = (p.n + n_ranks - 1) / n_ranks;
        p.padded_grad = Tensor::zeros({p.chunk * n_ranks}, nnops::DType::F32, device_);
        p.grad_slice = Tensor::empty({p.chunk}, nnops::DType::F32, device_);
        p.padded_param = Tensor::zeros({p.chunk * n_ranks}, nnops::DType::F32, device_);
        p.param_slice = Tensor::empty({p.chunk}, nnops::DType::F32, device_);
        if (masks[i]) {  // the padding is masked out (zeros), the rest refreshed every step
          p.padded_mask = Tensor::zeros({p.chunk * n_ranks}, nnops::DType::U8, device_);
          p.mask_slice = p.padded_mask.narrow(r * p.chunk, p.chunk);
        }
        state->params.push_back(std::move(p));
      }
    }
    for (int i = 0; i < 4; ++i) {
      ShardState::Param& p = state->params[i];
      // Masks change when the model is pruned: copy them in each step (n bytes, no allocation).
      if (masks[i]) {
        Tensor head = p.padded_mask.narrow(0, p.n), src = flat(*masks[i]);
        nnops::copy(head, src);
      }
      Tensor grad_head = p.padded_grad.narrow(0, p.n), grad_flat = flat(*grads[i]);
      nnops::copy(grad_head, grad_flat);
      comm_.reduce_scatter(p.padded_grad, p.grad_slice, nnops::dist::Op::Mean);
      Tensor param_head = p.padded_param.narrow(0, p.n), param_flat = flat(*params[i]);
      nnops::copy(param_head, param_flat);
      Tensor mine = p.padded_param.narrow(r * p.chunk, p.chunk);
      nnops::copy(p.param_slice, mine);
      nnops::adam_step(options, p.param_slice, p.grad_slice, p.adam,
                       masks[i] ? &p.mask_slice : nullptr);
      comm_.allgather(p.param_slice, p.padded_param);
      nnops::copy(param_flat, param_head);
    }
  }

 private:
  shards::ParallelGroups groups_;
  nnops::dist::Communicator& world_;
  nnops::dist::Communicator& comm_;  // the data-parallel group
  shards::TensorGroup& tensor_;      // the tensor-parallel group
  int zero_;
  nnops::Device device_;
  std::vector<nnops::dist::Request> pending_;
  double waited_ = 0.0;
};

}  // namespace

std::unique_ptr<Parallel> make_parallel(bool data_parallel, int tensor_parallel, int zero_stage,
                                        nnops::Device device) {
  if (!data_parallel && tensor_parallel == 1) {
    if (zero_stage != 0) throw std::invalid_argument("--zero needs --data-parallel");
    return std::make_unique<Parallel>();
  }
  return std::make_unique<MpiParallel>(data_parallel, tensor_parallel, zero_stage, device);
}

#else

struct Parallel::ShardState {};

std::unique_ptr<Parallel> make_parallel(bool data_parallel, int tensor_parallel, int zero_stage,
                                        nnops::Device) {
  if (data_parallel || tensor_parallel > 1 || zero_stage != 0) {
    throw std::invalid_argument(
        "--data-parallel and --tensor-parallel need nnops built with MPI (NNOPS_MPI)");
  }
  return std::make_unique<Parallel>();
}

#endif

}  // namespace train
