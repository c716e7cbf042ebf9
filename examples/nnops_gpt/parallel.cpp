// Data and tensor parallelism for nnops-gpt (see parallel.hpp).
#include "parallel.hpp"

#include <stdexcept>
#include <string>

#include "nnops/cuda.hpp"
#include "shards.hpp"

#ifdef NNOPS_GPT_WITH_MPI
#include <nnops/dist.hpp>

#include "tensor_group.hpp"
#endif

namespace gpt {

using nnops::Tensor;

std::unique_ptr<Model> Parallel::gather(const Model&) {
  throw std::logic_error("Parallel::gather: the model is not split");
}

void Parallel::prune_l1(Model&, double) {
  throw std::logic_error("Parallel::prune_l1: the model is not split");
}

int64_t Parallel::parameters(const Model& m, bool kept_only) const {
  return kept_only ? m.nonzero_parameters() : m.parameter_count();
}

#ifdef NNOPS_GPT_WITH_MPI
namespace {

class MpiParallel final : public Parallel {
 public:
  MpiParallel(bool data_parallel, int t, nnops::Device device)
      : groups_(shards::make_groups(data_parallel, t)),
        world_(groups_.world),
        data_(groups_.data),
        tensor_(groups_.tensor) {
    // One GPU per rank, chosen before anything touches a GPU.
    const int gpus = nnops::cuda::device_count();
    if (device == nnops::Device::CUDA && gpus > 0)
      nnops::cuda::set_device(world_.local_rank() % gpus);
  }
  int rank() const override { return data_.rank(); }
  int size() const override { return data_.size(); }
  int world_rank() const override { return world_.rank(); }
  int tensor_size() const override { return tensor_.size(); }
  void average(const std::vector<Tensor*>& tensors) override {
    if (size() > 1) data_.allreduce(tensors, nnops::dist::Op::Mean);
  }
  double average(double value) override {
    Tensor t = Tensor::from_vector(std::vector<float>{static_cast<float>(value)}, {1});
    data_.allreduce({&t}, nnops::dist::Op::Mean);
    return t.item();
  }

  void split(Model& m) override {
    if (tensor_size() == 1) return;
    TensorGroupOps ops;
    ops.sum = [this](Tensor& t) { tensor_.sum(t); };
    ops.sum_value = [this](double v) { return tensor_.sum(v); };
    m.split(tensor_.rank(), tensor_size(), std::move(ops));
  }

  std::unique_ptr<Model> gather(const Model& s) override {
    auto whole = std::make_unique<Model>(s.config(), s.device(), 0);
    const int t = tensor_size();
    auto& out = whole->parameters();
    const auto& in = s.parameters();
    for (size_t i = 0; i < in.size(); ++i) {
      const Parameter& p = in[i];
      Parameter& q = out[i];
      auto assemble = [&](const Tensor& shard) {
        if (p.split_dim < 0) return shard.clone();
        return shards::assemble(tensor_.stack(shard), p.split_outer, t).reshape(q.value.shape());
      };
      q.value = assemble(p.value);
      if (p.mask.defined()) q.mask = assemble(p.mask);
      if (p.adam.exp_avg.defined()) {
        q.adam.exp_avg = assemble(p.adam.exp_avg);
        q.adam.exp_avg_sq = assemble(p.adam.exp_avg_sq);
        q.adam.step = p.adam.step;
      }
    }
    if (s.mixed_precision()) whole->use_bf16();
    return whole;
  }

  void prune_l1(Model& m, double amount) override {
    const int r = tensor_.rank(), t = tensor_size();
    for (Parameter& p : m.parameters()) {
      if (!p.prunable) continue;
      if (!p.mask.defined()) {
        p.mask = Tensor::from_vector(std::vector<uint8_t>(static_cast<size_t>(p.value.numel()), 1),
                                     p.value.shape(), m.device());
      }
      const int64_t rows = p.value.dim(0), cols = p.value.dim(1);
      std::vector<Tensor> blocks, masks;
      std::vector<nnops::dist::ShardPlacement> where;
      if (p.split_dim == 1) {
        blocks.push_back(p.value.narrow(0, rows));
        masks.push_back(p.mask.narrow(0, rows));
        where.push_back({rows, cols * t, 0, r * cols});
      } else {  // row blocks, each split alike over the ranks
        const int64_t per = rows / p.split_outer;
        for (int64_t b = 0; b < p.split_outer; ++b) {
          blocks.push_back(p.value.narrow(b * per, per));
          masks.push_back(p.mask.narrow(b * per, per));
          where.push_back({rows * t, cols, (b * t + r) * per, 0});
        }
      }
      std::vector<const Tensor*> block_ptrs;
      std::vector<Tensor*> mask_ptrs;
      for (size_t b = 0; b < blocks.size(); ++b) {
        block_ptrs.push_back(&blocks[b]);
        mask_ptrs.push_back(&masks[b]);
      }
      nnops::dist::l1_unstructured(tensor_.comm(), block_ptrs, where,
                                   nnops::PruneAmount::fraction(amount), mask_ptrs);
      nnops::apply_mask(p.value, p.mask);
    }
    m.sync_working();
  }

  int64_t parameters(const Model& m, bool kept_only) const override {
    int64_t split = 0, whole = 0;
    for (const Parameter& p : m.parameters()) {
      const int64_t n =
          kept_only && p.mask.defined() ? nnops::count_nonzero(p.mask) : p.value.numel();
      (p.split_dim >= 0 ? split : whole) += n;
    }
    return (tensor_size() > 1 ? tensor_.sum_count(split) : split) + whole;
  }

  double tensor_seconds() const override { return tensor_.seconds(); }

 private:
  shards::ParallelGroups groups_;
  nnops::dist::Communicator& world_;
  nnops::dist::Communicator& data_;
  shards::TensorGroup& tensor_;
};

}  // namespace
#endif

std::unique_ptr<Parallel> make_parallel(bool data_parallel, int tensor_parallel,
                                        nnops::Device device) {
  if (!data_parallel && tensor_parallel == 1) return std::make_unique<Parallel>();
#ifdef NNOPS_GPT_WITH_MPI
  return std::make_unique<MpiParallel>(data_parallel, tensor_parallel, device);
#else
  (void)device;
  throw std::invalid_argument(
      "--data-parallel and --tensor-parallel need nnops built with MPI (nnops::dist)");
#endif
}

}  // namespace gpt
