// CUDA execution context, usable without CUDA headers. Every CUDA op runs on the GPU that holds
// its tensors, enqueued on the calling thread's current stream for that GPU (by default the
// per-thread default stream). A trainer that runs its own streams sets one for a scope with
// StreamGuard. In a build without CUDA, or without a usable GPU, setting a stream or a device
// throws nnops::Error (current_stream() returns nullptr).
#pragma once

#include <string>

namespace nnops::cuda {

// An opaque cudaStream_t; nullptr stands for the per-thread default stream.
using Stream = void*;

// The stream set by set_current_stream (nullptr: the per-thread default stream). A stream
// belongs to one GPU: ops on another GPU's tensors use that GPU's per-thread default stream.
Stream current_stream();
void set_current_stream(Stream stream);

// Sets the calling thread's stream for a scope and restores the previous one after.
class StreamGuard {
 public:
  explicit StreamGuard(Stream stream) : previous_(current_stream()) { set_current_stream(stream); }
  ~StreamGuard() { set_current_stream(previous_); }
  StreamGuard(const StreamGuard&) = delete;
  StreamGuard& operator=(const StreamGuard&) = delete;

 private:
  Stream previous_;
};

// The number of visible GPUs (0 without CUDA or without a driver). Creates no context on any
// GPU, so one process per GPU can call set_device(local_rank % device_count()) first thing.
int device_count();
// Makes `device` the calling thread's GPU: tensors made afterwards live there. Throws when the
// ordinal is out of range or that GPU cannot run this build's kernels (see unusable_reason).
void set_device(int device);
// The calling thread's GPU ordinal (0 unless set_device chose another).
int current_device();

// Why the calling thread's GPU is not usable ("" when it is): no driver or device, a compute
// capability this build has no kernels for (and the CMAKE_CUDA_ARCHITECTURES that would), a
// context that could not be made.
std::string unusable_reason();

// Waits for the calling thread's current stream only (synchronize(Device::CUDA) waits for the
// whole GPU), then throws for any error a kernel recorded on that stream for this thread.
void synchronize_stream();

// The kernel family of CUDA tensor-core products (BF16 operands, and F32 with
// GemmOptions::allow_tf32): Wmma (the portable kernels), Mma (multistage cp.async + ldmatrix +
// mma.sync), Wgmma (BF16 on compute capability 9.0 through sm_90a's warpgroup MMA; TF32 and
// other GPUs take Mma), WgmmaTma (as Wgmma, with TMA loads into 128-byte swizzled tiles and a
// producer warpgroup, for K-major operands: a not transposed and b transposed, as
// linear_forward's; other products take Wgmma's kernel), or Simt (F32 on the SIMT cores even
// where TF32 is allowed; BF16 takes Wmma). Default: Wmma for now.
// NNOPS_CUDA_GEMM=simt|wmma|mma|wgmma|wgmma_tma chooses for the process;
// set_gemm_kernel overrides it (Default returns to the variable's choice). An unknown value of
// the variable makes every CUDA product throw nnops::Error naming it. Usable in any build.
enum class GemmKernel { Default, Simt, Wmma, Mma, Wgmma, WgmmaTma };
void set_gemm_kernel(GemmKernel kernel);
// The family in force: the last set_gemm_kernel, else NNOPS_CUDA_GEMM, else Default.
GemmKernel gemm_kernel();

// The kernels of CUDA attention_forward / attention_backward: Simple (a block per query row or
// key row: the reference) or Tiled (blocks of rows streaming 32-key tiles through shared memory;
// head sizes 32, 64 and 128 with 16-byte aligned tensors, other shapes take Simple). Default:
// Simple until a GPU has compared them. NNOPS_CUDA_ATTENTION=simple|tiled chooses for the
// process; set_attention_kernel overrides it (Default returns to the variable's choice). An
// unknown value of the variable makes every CUDA attention call throw nnops::Error naming it.
enum class AttentionKernel { Default, Simple, Tiled };
void set_attention_kernel(AttentionKernel kernel);
// The kernels in force: the last set_attention_kernel, else NNOPS_CUDA_ATTENTION, else Default.
AttentionKernel attention_kernel();

// Returns the memory the stream-ordered pool of the calling thread's GPU keeps for reuse to the
// driver (waits for the GPU first), for processes that share the GPU with other libraries.
void empty_cache();

}  // namespace nnops::cuda
