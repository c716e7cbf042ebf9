// Pruned weights in checkpoints (see pruned_weights.hpp).
#include "pruned_weights.hpp"

#include <sstream>
#include <stdexcept>
#include <vector>

namespace ckpt {

using nnops::DType;
using nnops::Tensor;

namespace {

std::string shape_text(const nnops::Shape& s) {
  std::string out;
  for (size_t i = 0; i < s.size(); ++i) out += (i ? "," : "") + std::to_string(s[i]);
  return out;
}

// Whether every group of 4 along the last dimension keeps at most 2 (what NM24 can hold).
bool fits_two_of_four(const std::vector<uint8_t>& m, int64_t cols) {
  if (cols % 4 != 0) return false;
  for (size_t g = 0; g < m.size(); g += 4) {
    if ((m[g] != 0) + (m[g + 1] != 0) + (m[g + 2] != 0) + (m[g + 3] != 0) > 2) return false;
  }
  return true;
}

}  // namespace

void put_pruned(TensorMap& tensors, Metadata& metadata, const std::string& name, const Tensor& w,
                const Tensor* mask) {
  const Tensor host_w = w.to(nnops::Device::CPU);
  std::vector<uint8_t> m;
  if (mask) m = mask->to(nnops::Device::CPU).to_vector<uint8_t>();
  int64_t kept = 0;
  for (uint8_t v : m) kept += v != 0;
  if (!mask || kept == static_cast<int64_t>(m.size())) {
    tensors[name] = host_w.clone();
    return;
  }
  // The compressed forms keep no pruned entry: one that is not 0 would be lost silently.
  const auto all_values = host_w.to_vector<float>();
  for (size_t i = 0; i < m.size(); ++i) {
    if (!m[i] && all_values[i] != 0.0f) {
      throw std::runtime_error("checkpoint: '" + name + "' holds " + std::to_string(all_values[i]) +
                               " at pruned entry " + std::to_string(i) + " (apply its mask first)");
    }
  }
  const int64_t cols = host_w.ndim() == 2 ? host_w.dim(1) : 0;
  if (host_w.ndim() == 2 && fits_two_of_four(m, cols)) {
    const Tensor host_mask = Tensor::from_vector(m, host_w.shape());
    nnops::SparseMatrix s = nnops::compress(host_w, host_mask, nnops::SparseFormat::NM24);
    tensors[name + ".nm24_values"] = s.values().clone();
    tensors[name + ".nm24_metadata"] = s.metadata().clone();
    metadata["nnops.pruned." + name] = "nm24 " + shape_text(host_w.shape());
    return;
  }
  const auto& values = all_values;
  std::vector<uint8_t> bits((m.size() + 7) / 8, 0);
  std::vector<float> kept_values;
  kept_values.reserve(static_cast<size_t>(kept));
  for (size_t i = 0; i < m.size(); ++i) {
    if (!m[i]) continue;
    bits[i / 8] |= static_cast<uint8_t>(1u << (i % 8));
    kept_values.push_back(values[i]);
  }
  tensors[name + ".bitmask"] = Tensor::from_vector(bits, {static_cast<int64_t>(bits.size())});
  tensors[name + ".values"] = Tensor::from_vector(kept_values, {kept});
  metadata["nnops.pruned." + name] = "bitmask " + shape_text(host_w.shape());
}

PrunedWeight take_pruned(const TensorMap& tensors, const Metadata& metadata,
                         const std::string& name, const std::string& dense_mask_name,
                         const std::string& path) {
  auto fail = [&](const std::string& problem) -> std::runtime_error {
    return std::runtime_error(path + ": '" + name + "' " + problem);
  };
  auto get = [&](const std::string& key) -> const Tensor& {
    const auto it = tensors.find(key);
    if (it == tensors.end()) throw fail("has no tensor '" + key + "'");
    return it->second;
  };
  PrunedWeight out;
  const auto form = metadata.find("nnops.pruned." + name);
  if (form == metadata.end()) {  // dense
    const Tensor& w = get(name);
    if (w.dtype() != DType::F32) throw fail("is " + w.describe() + ", not F32");
    out.w = w.clone();
    const auto mask = tensors.find(dense_mask_name);
    if (mask != tensors.end()) {
      if (mask->second.shape() != w.shape() || mask->second.dtype() != DType::U8) {
        throw fail("has a mask " + mask->second.describe() + " that does not fit " + w.describe());
      }
      out.mask = mask->second.clone();
    } else {
      out.mask =
          Tensor::from_vector(std::vector<uint8_t>(static_cast<size_t>(w.numel()), 1), w.shape());
    }
    return out;
  }
  std::istringstream text(form->second);
  std::string kind, dims;
  text >> kind >> dims;
  nnops::Shape shape;
  int64_t numel = 1;
  try {
    std::istringstream parts(dims);
    for (std::string d; std::getline(parts, d, ',');) {
      shape.push_back(std::stoll(d));
      if (shape.back() < 0 || shape.back() > (int64_t(1) << 40)) throw std::out_of_range(d);
      numel *= shape.back();
    }
  } catch (const std::exception&) {
    throw fail("has a malformed shape '" + form->second + "'");
  }
  if (kind == "nm24") {
    if (shape.size() != 2 || shape[1] % 4 != 0) throw fail("is NM24 of shape " + dims);
    const Tensor& values = get(name + ".nm24_values");
    const Tensor& meta = get(name + ".nm24_metadata");
    if (values.shape() != nnops::Shape{shape[0], shape[1] / 2} || values.dtype() != DType::F32 ||
        meta.shape() != nnops::Shape{shape[0], (shape[1] / 4 + 1) / 2} ||
        meta.dtype() != DType::U8) {
      throw fail("has NM24 arrays that do not fit [" + dims + "]");
    }
    // The library rebuilds the dense weight and the mask of the used slots.
    nnops::SparseMatrix sparse =
        nnops::SparseMatrix::from_nm24(values.clone(), meta.clone(), shape[1]);
    out.w = Tensor::empty(shape, DType::F32);
    out.mask = Tensor::empty(shape, DType::U8);
    nnops::decompress(sparse, out.w, &out.mask);
    return out;
  }
  if (kind != "bitmask") throw fail("has an unknown form '" + kind + "'");
  const Tensor& bits_t = get(name + ".bitmask");
  const Tensor& values_t = get(name + ".values");
  if (bits_t.dtype() != DType::U8 || bits_t.shape() != nnops::Shape{(numel + 7) / 8} ||
      values_t.dtype() != DType::F32 || values_t.ndim() != 1) {
    throw fail("has bitmask arrays that do not fit [" + dims + "]");
  }
  const auto bits = bits_t.to_vector<uint8_t>();
  const auto values = values_t.to_vector<float>();
  std::vector<float> w(static_cast<size_t>(numel), 0.0f);
  std::vector<uint8_t> mask(static_cast<size_t>(numel), 0);
  size_t next = 0;
  for (int64_t i = 0; i < numel; ++i) {
    if (!((bits[i / 8] >> (i % 8)) & 1u)) continue;
    if (next == values.size()) throw fail("keeps more entries than it stores values");
    mask[i] = 1;
    w[i] = values[next++];
  }
  if (next != values.size()) throw fail("stores more values than it keeps entries");
  out.w = Tensor::from_vector(w, shape);
  out.mask = Tensor::from_vector(mask, shape);
  return out;
}

}  // namespace ckpt
