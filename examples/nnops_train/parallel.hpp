// Data-parallel training for nnops-train (--data-parallel, under mpirun): every rank runs the
// same model on its shard of each batch; gradients are averaged layer by layer as the backward
// pass produces them (so communication overlaps the rest of the backward), and the optimizer
// steps identically everywhere. --zero 1 shards Adam's state: gradients are reduce-scattered,
// each rank updates its slice of every parameter, and the slices are all-gathered.
// --tensor-parallel T splits the hidden layer across T ranks (see Mlp); a world of T x D ranks
// has T-rank tensor-parallel groups of consecutive ranks and D-rank data-parallel groups.
// Without either (or without MPI in the build) a single-rank stand-in does nothing.
#pragma once

#include <memory>
#include <nnops/nnops.hpp>
#include <vector>

#include "model.hpp"

namespace train {

class Parallel {
 public:
  virtual ~Parallel() = default;
  // Within the data-parallel group: the rank's share of every batch is rows
  // [rank() * batch / size(), (rank() + 1) * batch / size()).
  virtual int rank() const { return 0; }
  virtual int size() const { return 1; }
  // In the whole job (rank 0 logs and saves).
  virtual int world_rank() const { return 0; }
  virtual int tensor_rank() const { return 0; }
  virtual int tensor_size() const { return 1; }
  // This rank's shard of a whole model, with the hook that sums partial outputs over the
  // tensor-parallel group; the model itself when there is no such group.
  virtual Mlp split(Mlp whole) { return whole; }
  // The whole model from the group's shards, on every rank (collective).
  virtual Mlp gather(const Mlp& shard);
  // Prunes a split model's weights by L1 magnitude, per layer or globally across both, ranking
  // the whole weights across the group (the same masks as one process).
  virtual void prune_split(Mlp&, bool global, double amount);
  // The sum of a count over the tensor-parallel group.
  virtual int64_t tensor_sum(int64_t count) { return count; }
  virtual bool sharded_optimizer() const { return false; }
  // The device the run settled on (a rank that found no usable GPU falls back to the CPU).
  virtual void use_device(nnops::Device) {}
  // Every rank's tensors become rank 0's.
  virtual void broadcast(const std::vector<nnops::Tensor*>&) {}
  // One layer's gradients are complete: start averaging them across ranks.
  virtual void gradients_ready(const std::vector<nnops::Tensor*>&) {}
  // Waits for every averaging started since the last call.
  virtual void finish_gradients() {}
  // Seconds spent waiting for gradient communication that the backward did not hide.
  virtual double communication_seconds() const { return 0.0; }
  // The mean of a host value over the ranks.
  virtual double average(double value) { return value; }
  // Whether every rank holds the same bytes in these tensors.
  virtual bool identical_on_all_ranks(const std::vector<const nnops::Tensor*>&) { return true; }
  // A masked Adam step of the four parameters with the state sharded across ranks (--zero 1);
  // `state` persists between steps of one phase (a new phase starts from a fresh one).
  struct ShardState;
  virtual void sharded_adam_step(Mlp&, Workspace&, const nnops::AdamOptions&,
                                 std::shared_ptr<ShardState>&) {}
};

// The MPI implementation when `data_parallel` (MPI must be initialised), else the stand-in.
// Throws std::invalid_argument when data parallelism was asked of a build without MPI.
// With tensor_parallel > 1 too (the world must be tensor_parallel ranks, or a multiple of it
// with data_parallel).
std::unique_ptr<Parallel> make_parallel(bool data_parallel, int tensor_parallel, int zero_stage,
                                        nnops::Device device);

}  // namespace train
