// The collectives of a tensor-parallel group as the trainers use them, over nnops::dist (built
// with MPI only).
#pragma once

#include <nnops/dist.hpp>
#include <nnops/nnops.hpp>

namespace shards {

class TensorGroup {
 public:
  explicit TensorGroup(nnops::dist::Communicator comm) : comm_(std::move(comm)) {}
  int rank() const { return comm_.rank(); }
  int size() const { return comm_.size(); }
  const nnops::dist::Communicator& comm() const { return comm_; }
  // Adds the ranks' partial results in place (the all-reduce of a split layer); timed.
  void sum(nnops::Tensor& partial);
  // A host value summed over the ranks: each travels in FP32 and every rank adds them in the
  // same order (in double), so all get the same result.
  double sum(double value);
  // Exact for counts below 2^48 (they travel as 16-bit digits).
  int64_t sum_count(int64_t value);
  // Every rank's shard (F32 or U8, any device) stacked by rank, flat, on the shard's device.
  nnops::Tensor stack(const nnops::Tensor& shard);
  // Seconds spent in sum(Tensor&).
  double seconds() const { return seconds_; }

 private:
  nnops::dist::Communicator comm_;
  double seconds_ = 0.0;
};

// The groups of a world of T x D ranks: tensor groups of T consecutive ranks (the ones that talk
// every forward, so on one host where the world spans several), data groups of the ranks with
// the same place in their tensor group. With T = 1 every rank is a tensor group of its own and
// the data group is the world. Collective; throws std::invalid_argument (naming the flags) when
// the world is not T ranks, or a multiple of T with data parallelism.
struct ParallelGroups {
  nnops::dist::Communicator world, data;
  TensorGroup tensor;
};
ParallelGroups make_groups(bool data_parallel, int tensor_parallel);

}  // namespace shards
