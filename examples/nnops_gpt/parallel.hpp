// Data parallelism for nnops-gpt (--data-parallel under mpirun): every rank draws the same
// batches, runs the model on its share of each batch's sequences, and the gradients are averaged
// (nnops::dist, MPI on CPU tensors and NCCL on GPU tensors) before clipping and the optimizer
// step, so every rank keeps identical weights. Without --data-parallel, a one-rank stand-in.
#pragma once

#include <memory>
#include <nnops/nnops.hpp>
#include <vector>

namespace gpt {

class DataParallel {
 public:
  virtual ~DataParallel() = default;
  virtual int rank() const { return 0; }
  virtual int size() const { return 1; }
  // Every tensor becomes the mean of its copies on all ranks.
  virtual void average(const std::vector<nnops::Tensor*>&) {}
  virtual double average(double value) { return value; }
};

// The MPI-backed group when `enabled` (MPI must be initialised: nnops::dist::Environment), else
// the stand-in. Throws std::invalid_argument when asked of a build without MPI.
std::unique_ptr<DataParallel> make_data_parallel(bool enabled, nnops::Device device);

}  // namespace gpt
