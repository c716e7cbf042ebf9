// libFuzzer target for nnops-train's checkpoint readers (safetensors, and the format before it):
// any bytes must parse or be rejected with std::runtime_error, never crash or read out of bounds.
#include <stdexcept>
#include <vector>

#include "checkpoint.hpp"
#include "safetensors.hpp"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const std::vector<unsigned char> bytes(data, data + size);
  try {
    train::parse_checkpoint("fuzz", bytes);
  } catch (const std::runtime_error&) {
  }
  for (bool require_checksum : {false, true}) {
    try {
      ckpt::parse_safetensors("fuzz", bytes, require_checksum);
    } catch (const std::runtime_error&) {
    }
  }
  return 0;
}
