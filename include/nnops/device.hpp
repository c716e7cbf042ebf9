// Devices and element types, and the choice of the default device.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ostream>

namespace nnops {

enum class Device { CPU, CUDA };
enum class DType { F32, I32, U8, BF16, I64 };  // I64: sparse row pointers

const char* to_string(Device device);
const char* to_string(DType dtype);
std::size_t dtype_size(DType dtype);

inline std::ostream& operator<<(std::ostream& os, Device device) {
  return os << to_string(device);
}
inline std::ostream& operator<<(std::ostream& os, DType dtype) {
  return os << to_string(dtype);
}

// True when the library was built with CUDA and a usable GPU answered the first probe.
bool cuda_available();

// NNOPS_DEVICE=cpu|cuda overrides; otherwise CUDA when available, else CPU.
// NNOPS_DEVICE=cuda on a machine without a usable GPU throws nnops::Error.
Device default_device();

// Waits for all queued work on the device (on CUDA: the calling thread's GPU, every thread's
// streams), then throws for device errors the calling thread's ops recorded (a no-op on the CPU).
void synchronize(Device device);

}  // namespace nnops
