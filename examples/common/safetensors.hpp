// Checkpoints as safetensors files, the format PyTorch and the rest of the ecosystem read
// (safetensors.torch.load_file opens them):
//
//   u64 little-endian N, then N bytes of JSON, then the tensors' bytes, back to back:
//   {"__metadata__": {"key": "value", ...},
//    "name": {"dtype": "F32" | "BF16" | "I32" | "U8", "shape": [d0, ...],
//             "data_offsets": [begin, end]}, ...}
//
// Offsets are relative to the byte after the header, tensors are stored in name order, cover the
// buffer without gaps, little-endian, row-major; the header is padded with spaces to a multiple
// of 8 bytes. nnops adds one metadata entry, "nnops.fnv1a64": the FNV-1a 64 hash (16 hex
// digits) of the header (with those digits read as zeros) followed by the data, so a corrupt or
// truncated file gets a clear error; files from other writers have none and are checked for
// structure only.
#pragma once

#include <map>
#include <nnops/nnops.hpp>
#include <string>
#include <vector>

namespace ckpt {

using TensorMap = std::map<std::string, nnops::Tensor>;
using Metadata = std::map<std::string, std::string>;

struct Safetensors {
  TensorMap tensors;  // CPU tensors
  Metadata metadata;  // without the checksum entry
  bool checksummed = false;
};

// Writes host copies of the tensors; throws std::runtime_error on I/O failure.
void save_safetensors(const std::string& path, const TensorMap& tensors,
                      const Metadata& metadata = {});
// Reads a file; throws std::runtime_error naming the file and the problem. With
// require_checksum, a file without nnops' checksum is refused too.
Safetensors load_safetensors(const std::string& path, bool require_checksum = false);
// The same on bytes in memory; `name` prefixes error messages.
Safetensors parse_safetensors(const std::string& name, const std::vector<unsigned char>& data,
                              bool require_checksum = false);

}  // namespace ckpt
