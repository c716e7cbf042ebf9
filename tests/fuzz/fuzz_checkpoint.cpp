// libFuzzer target for nnops-train's checkpoint reader: any bytes must parse or be rejected
// with std::runtime_error, never crash or read out of bounds.
#include <stdexcept>
#include <vector>

#include "checkpoint.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    train::parse_checkpoint("fuzz", std::vector<unsigned char>(data, data + size));
  } catch (const std::runtime_error&) {
  }
  return 0;
}
