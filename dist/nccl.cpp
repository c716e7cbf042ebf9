// nnops::dist for CUDA tensors over NCCL: one NCCL communicator per nnops Communicator, made on
// first use from the MPI ranks (rank 0's unique id broadcast over MPI), with each rank on GPU
// local_rank % device_count. Collectives are enqueued on the calling thread's nnops stream.
// Without NCCL in the build, CUDA tensors are an error.
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

cudaStream_t stream() {
  void* s = nnops::cuda::current_stream();
  return s ? static_cast<cudaStream_t>(s) : cudaStreamPerThread;
}

ncclComm_t nccl_comm(Communicator::Impl& impl, const char* fn) {
  if (!impl.nccl) {
    const int devices = nnops::cuda::device_count();
    if (devices == 0) throw Error(std::string(fn) + ": no usable CUDA device");
    nnops::cuda::set_device(impl.local_rank % devices);
    ncclUniqueId id;
    if (impl.rank == 0) check_nccl(ncclGetUniqueId(&id), fn, impl.rank);
    check_mpi(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, impl.comm), fn, impl.rank);
    auto state = std::make_shared<NcclState>();
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
  ncclComm_t c = nccl_comm(*this, fn);
  // One group: NCCL fuses the small reductions of a call as buckets would.
  check_nccl(ncclGroupStart(), fn, rank);
  for (Tensor* t : tensors) {
    if (t->numel() == 0) continue;
    float* d = t->data<float>();
    check_nccl(
        ncclAllReduce(d, d, static_cast<size_t>(t->numel()), ncclFloat32, red_op(op), c, stream()),
        fn, rank);
  }
  check_nccl(ncclGroupEnd(), fn, rank);
}

void Communicator::Impl::broadcast_cuda(const char* fn, const std::vector<Tensor*>& tensors,
                                        int root) {
  ncclComm_t c = nccl_comm(*this, fn);
  check_nccl(ncclGroupStart(), fn, rank);
  for (Tensor* t : tensors) {
    if (t->numel() == 0) continue;
    void* d = t->raw_data();
    check_nccl(ncclBroadcast(d, d, t->nbytes(), ncclUint8, root, c, stream()), fn, rank);
  }
  check_nccl(ncclGroupEnd(), fn, rank);
}

void Communicator::Impl::reduce_scatter_cuda(const char* fn, const Tensor& in, Tensor& out, Op op) {
  ncclComm_t c = nccl_comm(*this, fn);
  if (out.numel() == 0) return;
  check_nccl(
      ncclReduceScatter(in.data<float>(), out.data<float>(), static_cast<size_t>(out.numel()),
                        ncclFloat32, red_op(op), c, stream()),
      fn, rank);
}

void Communicator::Impl::allgather_cuda(const char* fn, const Tensor& in, Tensor& out) {
  ncclComm_t c = nccl_comm(*this, fn);
  if (in.numel() == 0) return;
  check_nccl(ncclAllGather(in.data<float>(), out.data<float>(), static_cast<size_t>(in.numel()),
                           ncclFloat32, c, stream()),
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
