// Pruned weights in checkpoints, stored so that the file shrinks with the density:
//   a 2:4 mask (every group of 4 along the last dimension keeps at most 2):
//     "<name>.nm24_values" [out, in/2] and "<name>.nm24_metadata" U8, nnops::compress's NM24
//     layout (the kept values, 4 bits of positions per group);
//   any other mask that prunes something:
//     "<name>.bitmask" U8 [ceil(numel / 8)] (entry i is bit i % 8 of byte i / 8, least
//     significant first) and "<name>.values" [kept] (the kept entries in row-major order);
//   a mask that prunes nothing: the dense "<name>" alone.
// The metadata entry "nnops.pruned.<name>" records the form and the dense shape ("nm24 2000,1000"
// or "bitmask 2000,1000"), so a reader rebuilds the weight and its mask exactly (pruned entries
// +0). F32 weights.
#pragma once

#include <string>

#include "safetensors.hpp"

namespace ckpt {

// Adds w (with its U8 mask, or none) under `name` in the smallest of the forms above. Throws
// std::runtime_error when a pruned entry of w is not 0 (the compressed forms would drop it).
void put_pruned(TensorMap& tensors, Metadata& metadata, const std::string& name,
                const nnops::Tensor& w, const nnops::Tensor* mask);

struct PrunedWeight {
  nnops::Tensor w, mask;  // CPU tensors; mask all ones for a dense entry
};
// The weight `name` in whichever form it was stored; a dense one takes its mask from
// `dense_mask_name` when present (the layout before compressed weights), else all ones.
// Throws std::runtime_error naming `path` when it is missing or malformed.
PrunedWeight take_pruned(const TensorMap& tensors, const Metadata& metadata,
                         const std::string& name, const std::string& dense_mask_name,
                         const std::string& path);

}  // namespace ckpt
