// Parallel training for nnops-gpt under mpirun.
// --data-parallel: every rank draws the same batches, runs the model on its share of each
// batch's sequences, and the gradients are averaged (nnops::dist, MPI on CPU tensors and NCCL on
// GPU tensors) before clipping and the optimizer step, so every rank keeps identical weights.
// --tensor-parallel T: each rank holds 1/T of the heads and MLP units (see Model::split); a world
// of T x D ranks has tensor groups of T consecutive ranks and data groups across them.
// Without either, a one-rank stand-in.
#pragma once

#include <memory>
#include <nnops/nnops.hpp>
#include <vector>

#include "model.hpp"

namespace gpt {

class Parallel {
 public:
  virtual ~Parallel() = default;
  // Within the data-parallel group.
  virtual int rank() const { return 0; }
  virtual int size() const { return 1; }
  virtual int world_rank() const { return 0; }
  virtual int tensor_size() const { return 1; }
  // Every tensor becomes the mean of its copies in the data-parallel group.
  virtual void average(const std::vector<nnops::Tensor*>&) {}
  virtual double average(double value) { return value; }
  // Makes a whole model this rank's shard of it (nothing without tensor parallelism).
  virtual void split(Model&) {}
  // The whole model from the group's shards (weights, masks, AdamW moments), on every rank
  // (collective).
  virtual std::unique_ptr<Model> gather(const Model& shard);
  // L1 magnitude pruning of every prunable weight, ranked over the whole weight across the
  // group (the same masks as one process); 2:4 needs no communication.
  virtual void prune_l1(Model&, double amount);
  // The whole model's parameter count, or its kept entries (pruned ones left out).
  virtual int64_t parameters(const Model& m, bool kept_only) const;
  // Seconds spent in the tensor group's all-reduces.
  virtual double tensor_seconds() const { return 0.0; }
};

// The MPI-backed groups when either is asked for (MPI must be initialised:
// nnops::dist::Environment), else the stand-in. Throws std::invalid_argument when asked of a
// build without MPI, or when the world does not fit T.
std::unique_ptr<Parallel> make_parallel(bool data_parallel, int tensor_parallel,
                                        nnops::Device device);

}  // namespace gpt
