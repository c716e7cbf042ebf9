// Checkpoint reading and writing (format in checkpoint.hpp).
#include "checkpoint.hpp"

#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <vector>

namespace train {

namespace {

constexpr char kMagic[8] = {'N', 'N', 'O', 'P', 'S', 'C', 'K', 'P'};
constexpr uint32_t kVersion = 1;
constexpr uint32_t kMaxEntries = 64, kMaxName = 64, kMaxDims = 8;

uint64_t fnv1a(const unsigned char* data, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i) h = (h ^ data[i]) * 1099511628211ull;
  return h;
}

template <class T>
void put(std::vector<unsigned char>& out, T value) {
  unsigned char bytes[sizeof(T)];
  std::memcpy(bytes, &value, sizeof(T));
  out.insert(out.end(), bytes, bytes + sizeof(T));
}

class Reader {
 public:
  Reader(const std::string& path, const std::vector<unsigned char>& data, size_t end)
      : path_(path), data_(data), end_(end) {}
  template <class T>
  T get(const char* what) {
    T value;
    std::memcpy(&value, bytes(sizeof(T), what), sizeof(T));
    return value;
  }
  const unsigned char* bytes(uint64_t n, const char* what) {
    if (n > end_ - pos_) fail(std::string("truncated: ") + what + " runs past the end of the file");
    const unsigned char* p = data_.data() + pos_;
    pos_ += static_cast<size_t>(n);
    return p;
  }
  size_t position() const { return pos_; }
  [[noreturn]] void fail(const std::string& problem) const {
    throw std::runtime_error(path_ + ": " + problem);
  }

 private:
  const std::string& path_;
  const std::vector<unsigned char>& data_;
  size_t end_, pos_ = 0;
};

}  // namespace

void save_checkpoint(const std::string& path, const TensorMap& tensors) {
  std::vector<unsigned char> out(kMagic, kMagic + 8);
  put<uint32_t>(out, kVersion);
  put<uint32_t>(out, static_cast<uint32_t>(tensors.size()));
  for (const auto& [name, t] : tensors) {
    put<uint32_t>(out, static_cast<uint32_t>(name.size()));
    out.insert(out.end(), name.begin(), name.end());
    put<uint32_t>(out, static_cast<uint32_t>(t.dtype()));
    put<uint32_t>(out, static_cast<uint32_t>(t.ndim()));
    for (int64_t d : t.shape()) put<int64_t>(out, d);
    put<uint64_t>(out, t.nbytes());
    const nnops::Tensor host = t.to(nnops::Device::CPU);
    const auto* p = static_cast<const unsigned char*>(host.raw_data());
    if (host.nbytes() > 0) out.insert(out.end(), p, p + host.nbytes());
  }
  put<uint64_t>(out, fnv1a(out.data(), out.size()));
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size()));
  if (!f) throw std::runtime_error(path + ": cannot write the checkpoint");
}

TensorMap load_checkpoint(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot open the checkpoint");
  const std::vector<unsigned char> data((std::istreambuf_iterator<char>(f)),
                                        std::istreambuf_iterator<char>());
  return parse_checkpoint(path, data);
}

TensorMap parse_checkpoint(const std::string& path, const std::vector<unsigned char>& data) {
  if (data.size() < 8 + 4 + 4 + 8) {
    throw std::runtime_error(path + ": too short to be an nnops checkpoint (" +
                             std::to_string(data.size()) + " bytes)");
  }
  Reader r(path, data, data.size() - 8);
  if (std::memcmp(r.bytes(8, "magic"), kMagic, 8) != 0)
    r.fail("not an nnops checkpoint (bad magic)");
  const auto version = r.get<uint32_t>("version");
  if (version != kVersion) {
    r.fail("unsupported checkpoint version " + std::to_string(version) + " (this build reads " +
           std::to_string(kVersion) + ")");
  }
  uint64_t stored_sum;
  std::memcpy(&stored_sum, data.data() + data.size() - 8, 8);
  if (stored_sum != fnv1a(data.data(), data.size() - 8))
    r.fail("checksum mismatch (the file is corrupt or truncated)");
  const auto count = r.get<uint32_t>("entry count");
  if (count > kMaxEntries)
    r.fail("entry count " + std::to_string(count) + " exceeds " + std::to_string(kMaxEntries));
  TensorMap out;
  for (uint32_t e = 0; e < count; ++e) {
    const auto name_len = r.get<uint32_t>("name length");
    if (name_len == 0 || name_len > kMaxName)
      r.fail("entry " + std::to_string(e) + " has a bad name length");
    const auto* name_bytes = r.bytes(name_len, "name");
    const std::string name(reinterpret_cast<const char*>(name_bytes), name_len);
    const auto dtype_code = r.get<uint32_t>("dtype");
    if (dtype_code > static_cast<uint32_t>(nnops::DType::BF16))
      r.fail("entry '" + name + "' has unknown dtype " + std::to_string(dtype_code));
    const auto dtype = static_cast<nnops::DType>(dtype_code);
    const auto ndim = r.get<uint32_t>("ndim");
    if (ndim > kMaxDims) r.fail("entry '" + name + "' has " + std::to_string(ndim) + " dimensions");
    nnops::Shape shape;
    uint64_t elements = 1;
    for (uint32_t d = 0; d < ndim; ++d) {
      const auto dim = r.get<int64_t>("dims");
      if (dim < 0 || (dim > 0 && elements > (uint64_t(1) << 40) / static_cast<uint64_t>(dim))) {
        r.fail("entry '" + name + "' has a bad dimension " + std::to_string(dim));
      }
      elements *= static_cast<uint64_t>(dim);
      shape.push_back(dim);
    }
    const auto nbytes = r.get<uint64_t>("byte count");
    if (nbytes != elements * nnops::dtype_size(dtype))
      r.fail("entry '" + name + "' byte count does not match its shape");
    const unsigned char* payload = r.bytes(nbytes, "tensor data");
    nnops::Tensor t = nnops::Tensor::empty(shape, dtype);
    if (nbytes > 0) std::memcpy(t.raw_data(), payload, nbytes);
    if (!out.emplace(name, std::move(t)).second) r.fail("entry '" + name + "' appears twice");
  }
  if (r.position() != data.size() - 8) r.fail("trailing bytes after the last entry");
  return out;
}

}  // namespace train
