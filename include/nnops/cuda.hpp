// CUDA execution context, usable without CUDA headers: every CUDA op is enqueued on the calling
// thread's current stream (by default the per-thread default stream). A trainer that runs its own
// streams sets one for a scope with StreamGuard. In a build without CUDA, or without a usable
// GPU, these functions throw nnops::Error (current_stream() returns nullptr).
#pragma once

namespace nnops::cuda {

// An opaque cudaStream_t; nullptr stands for the per-thread default stream.
using Stream = void*;

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

// The number of usable GPUs (0 without CUDA) and the choice of the calling thread's GPU, for one
// process per GPU (e.g. local_rank % device_count()).
int device_count();
void set_device(int device);

}  // namespace nnops::cuda
