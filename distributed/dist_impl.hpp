// The state behind nnops::dist::Communicator, shared by the MPI (communicator.cpp) and NCCL
// (nccl.cpp) halves.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "nnops/dist.hpp"

namespace nnops::dist {

// Throws nnops::Error "<fn>: rank <r>: MPI error: <MPI's text>" unless status is MPI_SUCCESS.
void check_mpi(int status, const char* fn, int rank);

struct NcclState;  // defined in nccl.cpp when NCCL is built in

struct Communicator::Impl : std::enable_shared_from_this<Communicator::Impl> {
  Impl() = default;
  Impl(const Impl&) = delete;
  Impl& operator=(const Impl&) = delete;
  ~Impl();
  MPI_Comm comm = MPI_COMM_NULL;
  bool owned = false;  // made by split: freed here
  int rank = 0, size = 1, local_rank = 0;
  size_t bucket_bytes = size_t(25) << 20;
  std::shared_ptr<NcclState> nccl;  // created on the first collective over CUDA tensors
  // Bucket buffers of finished requests, reused so that a training step's allreduces do not
  // allocate (and page-fault) megabytes each time.
  mutable std::vector<std::vector<float>> spare_buffers;

  // Checks the tensors here (those from first_written on must be writable), then that every
  // rank passed the same list; returns their device.
  Device validate(const char* fn, const std::vector<Tensor*>& tensors, bool float_only,
                  int64_t extra, size_t first_written = 0) const;
  void agree(const char* fn, uint64_t fingerprint) const;

  Request allreduce_cpu(const char* fn, const std::vector<Tensor*>& tensors, Op op) const;

  void allreduce_cuda(const char* fn, const std::vector<Tensor*>& tensors, Op op);
  void broadcast_cuda(const char* fn, const std::vector<Tensor*>& tensors, int root);
  void reduce_scatter_cuda(const char* fn, const Tensor& in, Tensor& out, Op op);
  void allgather_cuda(const char* fn, const Tensor& in, Tensor& out);
};

}  // namespace nnops::dist
