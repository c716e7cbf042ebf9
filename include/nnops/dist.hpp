// Data-parallel training across processes: nnops::dist wraps MPI for CPU tensors and NCCL for
// CUDA tensors (built when CMake finds them; see NNOPS_MPI). Collectives take lists of tensors,
// which must be the same shapes, dtypes and order on every rank: a small metadata reduction runs
// first, so a mismatch is an nnops::Error on every rank instead of a hang. MPI and NCCL errors
// are nnops::Error naming the call and the rank. Requires linking nnops::dist.
#pragma once

#include <cstddef>
#include <memory>
#include <vector>

#include "nnops/prune.hpp"
#include "nnops/tensor.hpp"

namespace nnops::dist {

enum class Op { Sum, Mean };

// Initialises MPI (with thread support for one calling thread) unless the caller already did,
// and finalises it on destruction only if it initialised it.
class Environment {
 public:
  Environment(int* argc, char*** argv);
  ~Environment();
  Environment(const Environment&) = delete;
  Environment& operator=(const Environment&) = delete;

 private:
  bool owns_ = false;
};

// A pending non-blocking collective; wait() completes it (and unpacks its buckets). Destroying
// an unfinished request waits for it.
class Request {
 public:
  Request();
  Request(Request&&) noexcept;
  Request& operator=(Request&&) noexcept;
  ~Request();
  void wait();
  bool pending() const;

  struct State;
  explicit Request(std::unique_ptr<State> state);

 private:
  std::unique_ptr<State> state_;
};

struct ShardPlacement;

class Communicator {
 public:
  // MPI_COMM_WORLD. MPI must be initialised (Environment).
  static Communicator world();
  // A communicator of the caller's: `mpi_comm` points to an MPI_Comm that outlives this object.
  static Communicator from_mpi(const void* mpi_comm);

  // The ranks that pass the same color (>= 0) form a new communicator, ranked by key and then
  // by rank here, like MPI_Comm_split: a world of TP x DP ranks gets its tensor-parallel and
  // data-parallel groups. Collective over this communicator. The new one owns its MPI
  // communicator (freed with its last copy) and, for CUDA tensors, its own NCCL communicator.
  Communicator split(int color, int key) const;

  int rank() const;
  int size() const;
  // The rank among the processes on this host (for choosing a GPU: local_rank % device_count).
  int local_rank() const;

  // Reduces every tensor across ranks in place. Tensors are packed into buckets of at most
  // bucket_bytes() (one reduction per bucket, not one per small tensor); a tensor larger than a
  // bucket is reduced in place on its own. CPU tensors go through MPI, CUDA tensors through NCCL.
  void allreduce(const std::vector<Tensor*>& tensors, Op op = Op::Sum);
  // The same without waiting: the tensors must not be touched until the request is waited on.
  Request allreduce_async(const std::vector<Tensor*>& tensors, Op op = Op::Sum);
  // Every rank's tensors become root's.
  void broadcast(const std::vector<Tensor*>& tensors, int root);
  // in holds size() equal chunks; out (one chunk) receives the reduction of chunk rank().
  void reduce_scatter(const Tensor& in, Tensor& out, Op op = Op::Sum);
  // out holds size() chunks of in's size: chunk r is rank r's in.
  void allgather(const Tensor& in, Tensor& out);
  void barrier();

  size_t bucket_bytes() const;
  void set_bucket_bytes(size_t bytes);  // default 25 MiB, as PyTorch's DDP

  struct Impl;

 private:
  friend void l1_unstructured(const Communicator&, const Tensor&, const ShardPlacement&,
                              PruneAmount, Tensor&);
  friend void l1_unstructured(const Communicator&, const std::vector<const Tensor*>&,
                              const std::vector<ShardPlacement>&, PruneAmount,
                              const std::vector<Tensor*>&);
  friend void global_unstructured(const Communicator&, const std::vector<const Tensor*>&,
                                  const std::vector<ShardPlacement>&, PruneAmount,
                                  const std::vector<Tensor*>&);
  explicit Communicator(std::shared_ptr<Impl> impl);
  std::shared_ptr<Impl> impl_;
};

// Where a rank's shard lies in a weight split across a group: its [rows, cols] block sits at
// (row0, col0) of the whole [total_rows, total_cols] weight (a column-parallel layer splits the
// rows, a row-parallel one the columns). Flat indices are the whole weight's.
struct ShardPlacement {
  int64_t total_rows = 0, total_cols = 0, row0 = 0, col0 = 0;
};

// nnops::l1_unstructured over a weight whose shards the ranks of `group` hold: every rank passes
// its shard w (F32, 2-D) and its mask shard, and every mask becomes exactly the part of the mask
// one process computes on the whole weight (the amount counts the whole weight's kept entries;
// ties in |w| go to the lower whole-weight index). A radix select whose histograms are summed
// over the group (nine rounds of 256 counts: 32 magnitude bits, then 40 index bits among the
// equal magnitudes); the shards travel nowhere. Collective over `group`; the shards must tile the
// whole weight. nm_structured along an unsplit last dimension, or with the column split at a
// multiple of m, needs no communication (groups are whole in every shard). ln_structured over
// shards would need the slices' norms from every rank (ranked over the whole weight's slices):
// not provided.
void l1_unstructured(const Communicator& group, const Tensor& w, const ShardPlacement& where,
                     PruneAmount amount, Tensor& mask);
// The same when a rank holds several blocks of the one weight (a fused gate-and-up projection
// split by rows holds a block of each half): the blocks' placements all lie in one weight.
void l1_unstructured(const Communicator& group, const std::vector<const Tensor*>& blocks,
                     const std::vector<ShardPlacement>& where, PruneAmount amount,
                     const std::vector<Tensor*>& masks);

// nnops::global_unstructured over several sharded weights: one ranking over the kept entries of
// all of them, as if the whole weights were flattened and concatenated in the order given (ties
// go to the lower index there). Every rank passes its shard of each weight, in the same order,
// with its placement; the masks become exactly one process's. Collective over `group`.
void global_unstructured(const Communicator& group, const std::vector<const Tensor*>& ws,
                         const std::vector<ShardPlacement>& where, PruneAmount amount,
                         const std::vector<Tensor*>& masks);

}  // namespace nnops::dist
