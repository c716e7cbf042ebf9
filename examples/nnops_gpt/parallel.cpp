// Data parallelism for nnops-gpt (see parallel.hpp).
#include "parallel.hpp"

#include <stdexcept>

#include "nnops/cuda.hpp"

#ifdef NNOPS_GPT_WITH_MPI
#include <nnops/dist.hpp>
#endif

namespace gpt {

#ifdef NNOPS_GPT_WITH_MPI
namespace {

class MpiDataParallel final : public DataParallel {
 public:
  explicit MpiDataParallel(nnops::Device device) : comm_(nnops::dist::Communicator::world()) {
    // One GPU per rank, chosen before anything touches a GPU.
    const int gpus = nnops::cuda::device_count();
    if (device == nnops::Device::CUDA && gpus > 0)
      nnops::cuda::set_device(comm_.local_rank() % gpus);
  }
  int rank() const override { return comm_.rank(); }
  int size() const override { return comm_.size(); }
  void average(const std::vector<nnops::Tensor*>& tensors) override {
    comm_.allreduce(tensors, nnops::dist::Op::Mean);
  }
  double average(double value) override {
    nnops::Tensor t =
        nnops::Tensor::from_vector(std::vector<float>{static_cast<float>(value)}, {1});
    comm_.allreduce({&t}, nnops::dist::Op::Mean);
    return t.item();
  }

 private:
  nnops::dist::Communicator comm_;
};

}  // namespace
#endif

std::unique_ptr<DataParallel> make_data_parallel(bool enabled, nnops::Device device) {
  if (!enabled) return std::make_unique<DataParallel>();
#ifdef NNOPS_GPT_WITH_MPI
  return std::make_unique<MpiDataParallel>(device);
#else
  (void)device;
  throw std::invalid_argument("--data-parallel needs nnops built with MPI (nnops::dist)");
#endif
}

}  // namespace gpt
