// nnops-gpt checkpoints as safetensors: every parameter under its PyTorch name (a pruned one
// compressed, or whole with its mask as "<name>_mask", the buffer name torch.nn.utils.prune
// uses), AdamW's moments as
// "optimizer.<name>.exp_avg" and ".exp_avg_sq", and in the metadata the model's shape, the
// optimizer's step and the 64-bit seed. Loading restores all of it bit for bit.
#pragma once

#include <cstdint>
#include <map>
#include <string>

#include "model.hpp"

namespace gpt {

struct SavedState {
  int64_t step = 0;  // optimizer steps of the phase the state belongs to
  uint64_t seed = 0;
  std::map<std::string, std::string> extra;  // more metadata (phase, hyperparameters)
};

// Pruned weights are stored compressed (examples/common/pruned_weights.hpp: 2:4 as NM24 values
// and metadata, other masks as a bitmask and the kept values) unless `dense` asks for every
// weight whole with its "<name>_mask" beside it (what bench/torch_gpt.py loads into PyTorch).
void save_model(const std::string& path, const Model& model, const SavedState& state,
                bool dense = false);
// Rebuilds the model the file describes on `device`; throws std::runtime_error naming the file
// and the problem (a missing tensor, a shape that does not match the metadata).
Model load_model(const std::string& path, nnops::Device device, SavedState* state = nullptr);

}  // namespace gpt
