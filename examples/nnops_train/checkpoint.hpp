// nnops-train's checkpoint format before safetensors (examples/common/safetensors.hpp), kept so a
// folder saved by an older nnops-train still loads: named tensors in one little-endian file.
//
//   magic    8 bytes  "NNOPSCKP"
//   version  u32      1
//   count    u32      number of entries (at most 64)
//   count x entry:
//     name_len u32 (1..64), name bytes
//     dtype    u32      0 = F32, 1 = I32, 2 = U8
//     ndim     u32      0..8
//     dims     i64 x ndim, each >= 0
//     nbytes   u64      = product(dims) * dtype size
//     data     nbytes
//   checksum u64      FNV-1a 64 of every byte before it
//
// Reading checks every field against the file size and the checksum, so a truncated,
// corrupt or foreign file gets a clear error instead of a crash.
#pragma once

#include <map>
#include <nnops/nnops.hpp>
#include <string>
#include <vector>

namespace train {

using TensorMap = std::map<std::string, nnops::Tensor>;

// Writes host copies of the tensors; throws std::runtime_error on I/O failure.
void save_checkpoint(const std::string& path, const TensorMap& tensors);
// Reads the file into CPU tensors; throws std::runtime_error naming the file and the problem.
TensorMap load_checkpoint(const std::string& path);
// Parses checkpoint bytes (what load_checkpoint reads); `name` prefixes error messages.
TensorMap parse_checkpoint(const std::string& name, const std::vector<unsigned char>& data);

}  // namespace train
