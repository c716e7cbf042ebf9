// nnops::dist for CUDA tensors over NCCL: one NCCL communicator per nnops Communicator, made on
// first use from the MPI ranks (rank 0's unique id broadcast over MPI) on the GPU that holds the
// tensors of that first call; every later call's tensors must be on that GPU. A rank chooses its
// GPU before it allocates anything, with nnops::cuda::set_device(local_rank % device_count())
// (device_count() makes no context). Collectives run on that GPU, enqueued on the calling
// thread's nnops stream when it belongs to that GPU. Without NCCL in the build, CUDA tensors
// are an error.
#include <string>

#include "dist_impl.hpp"
#include "nnops/cuda.hpp"

#ifdef NNOPS_WITH_NCCL
#include <cuda_runtime.h>
#include <nccl.h>
#endif

namespace nnops::dist {

#ifdef NNOPS_WITH_NCCL

struct NcclState {
  ncclComm_t comm = nullptr;
  int device = 0;  // the GPU the communicator was made on
  ~NcclState() {
    if (comm) ncclCommDestroy(comm);
  }
};

namespace {

void check_nccl(ncclResult_t status, const char* fn, int rank) {
  if (status != ncclSuccess) {
    throw Error(std::string(fn) + ": rank " + std::to_string(rank) +
                ": NCCL error: " + ncclGetErrorString(status));
  }
}

// Runs a collective's enqueueing on `device` (the thread's device is restored after).
class OnDevice {
 public:
  OnDevice(int device, const char* fn, int rank) {
    cudaGetDevice(&previous_);
    if (device != previous_ && cudaSetDevice(device) != cudaSuccess) {
      cudaGetLastError();
      throw Error(std::string(fn) + ": rank " + std::to_string(rank) + ": cannot use CUDA device " +
                  std::to_string(device));
    }
    int stream_device = -1;
    void* s = nnops::cuda::current_stream();
    if (s && cudaStreamGetDevice(static_cast<cudaStream_t>(s), &stream_device) != cudaSuccess)
      cudaGetLastError();
    stream_ = s && stream_device == device ? static_cast<cudaStream_t>(s) : cudaStreamPerThread;
  }
  ~OnDevice() { cudaSetDevice(previous_); }
  OnDevice(const OnDevice&) = delete;
  OnDevice& operator=(const OnDevice&) = delete;
  cudaStream_t stream() const { return stream_; }

 private:
  int previous_ = 0;
  cudaStream_t stream_;
};

// The GPU of a call's tensors (all on one, and on the communicator's once it exists).
int device_of(Communicator::Impl& impl, const char* fn, const std::vector<const Tensor*>& ts) {
  int device = -1;
  for (const Tensor* t : ts) {
    if (device >= 0 && t->device_index() != device) {
      throw Error(std::string(fn) + ": rank " + std::to_string(impl.rank) +
                  ": the tensors are on CUDA:" + std::to_string(device) +
                  " and CUDA:" + std::to_string(t->device_index()) + " (one GPU per call)");
    }
    device = t->device_index();
  }
  if (impl.nccl && device >= 0 && device != impl.nccl->device) {
    throw Error(std::string(fn) + ": rank " + std::to_string(impl.rank) +
                ": the tensors are on CUDA:" + std::to_string(device) +
                " but this communicator's NCCL runs on CUDA:" + std::to_string(impl.nccl->device));
  }
  return device < 0 ? 0 : device;
}

// The communicator, made on `device` (where the first call's tensors live) on first use.
ncclComm_t nccl_comm(Communicator::Impl& impl, const char* fn, int device) {
  if (!impl.nccl) {
    ncclUniqueId id;
    if (impl.rank == 0) check_nccl(ncclGetUniqueId(&id), fn, impl.rank);
    check_mpi(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, impl.comm), fn, impl.rank);
    auto state = std::make_shared<NcclState>();
    state->device = device;
    check_nccl(ncclCommInitRank(&state->comm, impl.size, id, impl.rank), fn, impl.rank);
    impl.nccl = std::move(state);
  }
  return impl.nccl->comm;
}

ncclRedOp_t red_op(Op op) {
  return op == Op::Mean ? ncclAvg : ncclSum;
}

}  // namespace

void Communicator::Impl::allreduce_cuda(const char* fn, const std::vector<Tensor*>& tensors,
                                        Op op) {
  const int device = device_of(*this, fn, {tensors.begin(), tensors.end()});
  const OnDevice on(device, fn, rank);
  ncclComm_t c = nccl_comm(*this, fn, device);
  // One group: NCCL fuses the small reductions of a call as buckets would.
  check_nccl(ncclGroupStart(), fn, rank);
  for (Tensor* t : tensors) {
    if (t->numel() == 0) continue;
    float* d = t->data<float>();
    check_nccl(ncclAllReduce(d, d, static_cast<size_t>(t->numel()), ncclFloat32, red_op(op), c,
                             on.stream()),
               fn, rank);
  }
  check_nccl(ncclGroupEnd(), fn, rank);
}

void Communicator::Impl::broadcast_cuda(const char* fn, const std::vector<Tensor*>& tensors,
                                        int root) {
  const int device = device_of(*this, fn, {tensors.begin(), tensors.end()});
  const OnDevice on(device, fn, rank);
  ncclComm_t c = nccl_comm(*this, fn, device);
  check_nccl(ncclGroupStart(), fn, rank);
  for (Tensor* t : tensors) {
    if (t->numel() == 0) continue;
    void* d = t->raw_data();
    check_nccl(ncclBroadcast(d, d, t->nbytes(), ncclUint8, root, c, on.stream()), fn, rank);
  }
  check_nccl(ncclGroupEnd(), fn, rank);
}

void Communicator::Impl::reduce_scatter_cuda(const char* fn, const Tensor& in, Tensor& out, Op op) {
  const int device = device_of(*this, fn, {&in, &out});
  const OnDevice on(device, fn, rank);
  ncclComm_t c = nccl_comm(*this, fn, device);
  if (out.numel() == 0) return;
  check_nccl(
      ncclReduceScatter(in.data<float>(), out.data<float>(), static_cast<size_t>(out.numel()),
                        ncclFloat32, red_op(op), c, on.stream()),
      fn, rank);
}

void Communicator::Impl::allgather_cuda(const char* fn, const Tensor& in, Tensor& out) {
  const int device = device_of(*this, fn, {&in, &out});
  const OnDevice on(device, fn, rank);
  ncclComm_t c = nccl_comm(*this, fn, device);
  if (in.numel() == 0) return;
  check_nccl(ncclAllGather(in.data<float>(), out.data<float>(), static_cast<size_t>(in.numel()),
                           ncclFloat32, c, on.stream()),
             fn, rank);
}

#else

struct NcclState {};

namespace {
[[noreturn]] void no_nccl(const char* fn, int rank) {
  throw Error(std::string(fn) + ": rank " + std::to_string(rank) +
              ": the tensors are on CUDA but nnops::dist was built without NCCL");
}
}  // namespace

void Communicator::Impl::allreduce_cuda(const char* fn, const std::vector<Tensor*>&, Op) {
  no_nccl(fn, rank);
}
void Communicator::Impl::broadcast_cuda(const char* fn, const std::vector<Tensor*>&, int) {
  no_nccl(fn, rank);
}
void Communicator::Impl::reduce_scatter_cuda(const char* fn, const Tensor&, Tensor&, Op) {
  no_nccl(fn, rank);
}
void Communicator::Impl::allgather_cuda(const char* fn, const Tensor&, Tensor&) {
  no_nccl(fn, rank);
}

#endif

}  // namespace nnops::dist
