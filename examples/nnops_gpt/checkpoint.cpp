// nnops-gpt checkpoints (see checkpoint.hpp).
#include "checkpoint.hpp"

#include <stdexcept>

#include "pruned_weights.hpp"
#include "safetensors.hpp"

namespace gpt {

namespace {

int64_t meta_int(const ckpt::Metadata& m, const std::string& key, const std::string& path) {
  const auto it = m.find(key);
  if (it == m.end()) throw std::runtime_error(path + ": the metadata has no '" + key + "'");
  try {
    size_t used = 0;
    const long long v = std::stoll(it->second, &used);
    if (used != it->second.size()) throw std::invalid_argument(key);
    return v;
  } catch (const std::exception&) {
    throw std::runtime_error(path + ": metadata '" + key + "' is not an integer: '" + it->second +
                             "'");
  }
}

}  // namespace

void save_model(const std::string& path, const Model& model, const SavedState& state, bool dense) {
  ckpt::TensorMap tensors;
  ckpt::Metadata meta = state.extra;
  for (const Parameter& p : model.parameters()) {
    if (dense || !p.mask.defined()) {
      tensors[p.name] = p.value.to(nnops::Device::CPU);
      if (p.mask.defined()) tensors[p.name + "_mask"] = p.mask.to(nnops::Device::CPU);
    } else {
      ckpt::put_pruned(tensors, meta, p.name, p.value, &p.mask);
    }
    if (p.adam.exp_avg.defined()) {
      tensors["optimizer." + p.name + ".exp_avg"] = p.adam.exp_avg.to(nnops::Device::CPU);
      tensors["optimizer." + p.name + ".exp_avg_sq"] = p.adam.exp_avg_sq.to(nnops::Device::CPU);
    }
  }
  const Config& c = model.config();
  meta["arch"] = arch_name(c.arch);
  meta["layers"] = std::to_string(c.layers);
  meta["heads"] = std::to_string(c.heads);
  meta["kv_heads"] = std::to_string(c.kv_heads);
  meta["dim"] = std::to_string(c.dim);
  meta["context"] = std::to_string(c.context);
  meta["vocab"] = std::to_string(c.vocab);
  meta["step"] = std::to_string(state.step);
  meta["seed"] = std::to_string(state.seed);
  ckpt::save_safetensors(path, tensors, meta);
}

Model load_model(const std::string& path, nnops::Device device, SavedState* state) {
  ckpt::Safetensors file = ckpt::load_safetensors(path, /*require_checksum=*/true);
  const ckpt::Metadata& m = file.metadata;
  Config c;
  const auto arch = m.find("arch");
  if (arch == m.end() || (arch->second != "gpt2" && arch->second != "llama")) {
    throw std::runtime_error(path + ": the metadata names no architecture (gpt2 or llama)");
  }
  c.arch = arch->second == "gpt2" ? Arch::Gpt2 : Arch::Llama;
  c.layers = meta_int(m, "layers", path);
  c.heads = meta_int(m, "heads", path);
  c.kv_heads = meta_int(m, "kv_heads", path);
  c.dim = meta_int(m, "dim", path);
  c.context = meta_int(m, "context", path);
  c.vocab = meta_int(m, "vocab", path);
  try {
    c.validate("");
  } catch (const std::invalid_argument& e) {
    throw std::runtime_error(path + ": " + e.what());
  }
  Model model(c, device, 0);
  for (Parameter& p : model.parameters()) {
    auto take = [&](const std::string& name, nnops::Tensor& into, nnops::DType dtype) {
      const auto it = file.tensors.find(name);
      if (it == file.tensors.end()) return false;
      if (it->second.shape() != p.value.shape() || it->second.dtype() != dtype) {
        throw std::runtime_error(path + ": '" + name + "' is " + it->second.describe() +
                                 " but the model needs " + nnops::shape_to_string(p.value.shape()));
      }
      into = it->second.to(device);
      return true;
    };
    // Whole or compressed; a mask only where the file holds one.
    const bool pruned = m.count("nnops.pruned." + p.name) || file.tensors.count(p.name + "_mask");
    ckpt::PrunedWeight w = ckpt::take_pruned(file.tensors, m, p.name, p.name + "_mask", path);
    if (w.w.shape() != p.value.shape()) {
      throw std::runtime_error(path + ": '" + p.name + "' is " + w.w.describe() +
                               " but the model needs " + nnops::shape_to_string(p.value.shape()));
    }
    p.value = w.w.to(device);
    if (pruned) p.mask = w.mask.to(device);
    if (take("optimizer." + p.name + ".exp_avg", p.adam.exp_avg, nnops::DType::F32) &&
        !take("optimizer." + p.name + ".exp_avg_sq", p.adam.exp_avg_sq, nnops::DType::F32)) {
      throw std::runtime_error(path + ": no tensor 'optimizer." + p.name + ".exp_avg_sq'");
    }
    p.adam.step = p.adam.exp_avg.defined() ? meta_int(m, "step", path) : 0;
  }
  if (state) {
    state->step = meta_int(m, "step", path);
    state->seed = static_cast<uint64_t>(std::stoull(m.at("seed")));
    state->extra.clear();
    for (const auto& [key, value] : m) {  // the compressed forms are written afresh
      if (key.rfind("nnops.pruned.", 0) != 0) state->extra[key] = value;
    }
  }
  return model;
}

}  // namespace gpt
