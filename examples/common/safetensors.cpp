// safetensors reading and writing (format in safetensors.hpp), with a small strict JSON parser
// for the header: objects, arrays, strings (escapes and \u included), numbers, true, false, null,
// nested at most 8 deep; anything else is an error naming the file and the byte.
#include "safetensors.hpp"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <stdexcept>
#include <tuple>
#include <utility>

namespace ckpt {

namespace {

constexpr uint64_t kMaxHeader = 100u << 20;
constexpr const char* kChecksumKey = "nnops.fnv1a64";

uint64_t fnv1a(uint64_t h, const unsigned char* data, size_t n) {
  for (size_t i = 0; i < n; ++i) h = (h ^ data[i]) * 1099511628211ull;
  return h;
}
constexpr uint64_t kFnvBasis = 1469598103934665603ull;

struct Json {
  enum Kind { Null, Bool, Number, String, Array, Object } kind = Null;
  std::string text;  // a string's value or a number's literal
  std::vector<Json> items;
  std::vector<std::pair<std::string, Json>> members;
};

class Parser {
 public:
  Parser(const std::string& name, const char* begin, const char* end)
      : name_(name), begin_(begin), p_(begin), end_(end) {}

  Json document() {
    Json v = value(0);
    space();
    if (p_ != end_) fail("unexpected bytes after the header's object");
    return v;
  }

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error(name_ + ": header: " + what + " (at byte " +
                             std::to_string(8 + (p_ - begin_)) + ")");
  }

 private:
  void space() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  bool take(char c) {
    space();
    if (p_ != end_ && *p_ == c) {
      ++p_;
      return true;
    }
    return false;
  }
  void expect(char c) {
    if (!take(c)) fail(std::string("expected '") + c + "'");
  }

  Json value(int depth) {
    if (depth > 8) fail("nested too deeply");
    space();
    if (p_ == end_) fail("unexpected end");
    Json v;
    const char c = *p_;
    if (c == '{') {
      ++p_;
      v.kind = Json::Object;
      if (take('}')) return v;
      do {
        space();
        std::string key = string();
        for (const auto& m : v.members)
          if (m.first == key) fail("key '" + key + "' appears twice");
        expect(':');
        v.members.emplace_back(std::move(key), value(depth + 1));
      } while (take(','));
      expect('}');
    } else if (c == '[') {
      ++p_;
      v.kind = Json::Array;
      if (take(']')) return v;
      do v.items.push_back(value(depth + 1));
      while (take(','));
      expect(']');
    } else if (c == '"') {
      v.kind = Json::String;
      v.text = string();
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      v.kind = Json::Number;
      v.text = number();
    } else if (word("true") || word("false")) {
      v.kind = Json::Bool;
    } else if (word("null")) {
      v.kind = Json::Null;
    } else {
      fail(std::string("unexpected character '") + c + "'");
    }
    return v;
  }

  bool word(const char* w) {
    const size_t n = std::strlen(w);
    if (static_cast<size_t>(end_ - p_) >= n && std::memcmp(p_, w, n) == 0) {
      p_ += n;
      return true;
    }
    return false;
  }

  std::string number() {
    const char* start = p_;
    auto digits = [&] {
      const char* d = p_;
      while (p_ != end_ && *p_ >= '0' && *p_ <= '9') ++p_;
      if (p_ == d) fail("a number lacks digits");
    };
    if (*p_ == '-') ++p_;
    digits();
    if (p_ != end_ && *p_ == '.') ++p_, digits();
    if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
      ++p_;
      if (p_ != end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      digits();
    }
    return std::string(start, p_);
  }

  unsigned hex4() {
    if (end_ - p_ < 4) fail("a \\u escape is cut short");
    unsigned v = 0;
    for (int i = 0; i < 4; ++i, ++p_) {
      const char h = *p_;
      v <<= 4;
      if (h >= '0' && h <= '9')
        v |= h - '0';
      else if (h >= 'a' && h <= 'f')
        v |= h - 'a' + 10;
      else if (h >= 'A' && h <= 'F')
        v |= h - 'A' + 10;
      else
        fail("a \\u escape has a non-hex digit");
    }
    return v;
  }

  std::string string() {
    if (p_ == end_ || *p_ != '"') fail("expected a string");
    ++p_;
    std::string out;
    while (true) {
      if (p_ == end_) fail("a string is not closed");
      const unsigned char c = static_cast<unsigned char>(*p_++);
      if (c == '"') return out;
      if (c < 0x20) fail("a control character inside a string");
      if (c != '\\') {
        out += static_cast<char>(c);
        continue;
      }
      if (p_ == end_) fail("a string ends in a backslash");
      const char e = *p_++;
      switch (e) {
        case '"':
          out += '"';
          break;
        case '\\':
          out += '\\';
          break;
        case '/':
          out += '/';
          break;
        case 'b':
          out += '\b';
          break;
        case 'f':
          out += '\f';
          break;
        case 'n':
          out += '\n';
          break;
        case 'r':
          out += '\r';
          break;
        case 't':
          out += '\t';
          break;
        case 'u': {
          unsigned cp = hex4();
          if (cp >= 0xD800 && cp < 0xDC00) {  // a surrogate pair
            if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') fail("a lone surrogate");
            p_ += 2;
            const unsigned lo = hex4();
            if (lo < 0xDC00 || lo >= 0xE000) fail("a bad surrogate pair");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp < 0xE000) {
            fail("a lone surrogate");
          }
          if (cp < 0x80) {
            out += static_cast<char>(cp);
          } else if (cp < 0x800) {
            out += static_cast<char>(0xC0 | (cp >> 6));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          } else if (cp < 0x10000) {
            out += static_cast<char>(0xE0 | (cp >> 12));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          } else {
            out += static_cast<char>(0xF0 | (cp >> 18));
            out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
            out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (cp & 0x3F));
          }
          break;
        }
        default:
          fail(std::string("a bad escape '\\") + e + "'");
      }
    }
  }

  const std::string& name_;
  const char* begin_;
  const char* p_;
  const char* end_;
};

// A non-negative integer of at most 2^50 (shapes and offsets).
uint64_t to_count(const Parser& parser, const Json& v, const std::string& what) {
  if (v.kind != Json::Number || v.text.empty() || v.text.size() > 16 ||
      v.text.find_first_not_of("0123456789") != std::string::npos) {
    parser.fail(what + " must be a non-negative integer");
  }
  const uint64_t n = std::stoull(v.text);
  if (n > (uint64_t(1) << 50)) parser.fail(what + " is too large");
  return n;
}

const char* dtype_name(nnops::DType dt) {
  switch (dt) {
    case nnops::DType::F32:
      return "F32";
    case nnops::DType::I32:
      return "I32";
    case nnops::DType::U8:
      return "U8";
    case nnops::DType::BF16:
      return "BF16";
    case nnops::DType::I64:
      return "I64";
  }
  return "?";
}

std::string quoted(const std::string& s) {
  std::string out = "\"";
  for (unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char buf[8];
      std::snprintf(buf, sizeof buf, "\\u%04x", c);
      out += buf;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

}  // namespace

void save_safetensors(const std::string& path, const TensorMap& tensors, const Metadata& metadata) {
  std::string header = "{\"__metadata__\":{";
  for (const auto& [k, v] : metadata) header += quoted(k) + ":" + quoted(v) + ",";
  header += quoted(kChecksumKey) + ":\"";
  const size_t checksum_at = header.size();
  header += "0000000000000000\"}";
  uint64_t offset = 0;
  std::vector<nnops::Tensor> hosts;
  for (const auto& [name, t] : tensors) {
    if (name == "__metadata__") throw std::runtime_error(path + ": a tensor named __metadata__");
    header += "," + quoted(name) + ":{\"dtype\":\"" + dtype_name(t.dtype()) + "\",\"shape\":[";
    for (int i = 0; i < t.ndim(); ++i) header += (i ? "," : "") + std::to_string(t.dim(i));
    header += "],\"data_offsets\":[" + std::to_string(offset) + "," +
              std::to_string(offset + t.nbytes()) + "]}";
    offset += t.nbytes();
    hosts.push_back(t.to(nnops::Device::CPU));
  }
  header += "}";
  header.append((8 - header.size() % 8) % 8, ' ');
  uint64_t h =
      fnv1a(kFnvBasis, reinterpret_cast<const unsigned char*>(header.data()), header.size());
  for (const nnops::Tensor& t : hosts)
    if (t.nbytes() > 0) h = fnv1a(h, static_cast<const unsigned char*>(t.raw_data()), t.nbytes());
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  header.replace(checksum_at, 16, hex);

  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  unsigned char size[8];
  for (int i = 0; i < 8; ++i)
    size[i] = static_cast<unsigned char>(uint64_t(header.size()) >> (8 * i));
  f.write(reinterpret_cast<const char*>(size), 8);
  f.write(header.data(), static_cast<std::streamsize>(header.size()));
  for (const nnops::Tensor& t : hosts)
    if (t.nbytes() > 0)
      f.write(static_cast<const char*>(t.raw_data()), static_cast<std::streamsize>(t.nbytes()));
  if (!f) throw std::runtime_error(path + ": cannot write the checkpoint");
}

Safetensors load_safetensors(const std::string& path, bool require_checksum) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error(path + ": cannot open the checkpoint");
  const std::vector<unsigned char> data((std::istreambuf_iterator<char>(f)),
                                        std::istreambuf_iterator<char>());
  return parse_safetensors(path, data, require_checksum);
}

Safetensors parse_safetensors(const std::string& name, const std::vector<unsigned char>& data,
                              bool require_checksum) {
  if (data.size() < 8) {
    throw std::runtime_error(name + ": too short to be a safetensors file (" +
                             std::to_string(data.size()) + " bytes)");
  }
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= static_cast<uint64_t>(data[i]) << (8 * i);
  if (n > kMaxHeader || n > data.size() - 8) {
    throw std::runtime_error(name + ": truncated: the header says " + std::to_string(n) +
                             " bytes but " + std::to_string(data.size() - 8) + " follow");
  }
  const char* text = reinterpret_cast<const char*>(data.data() + 8);
  Parser parser(name, text, text + n);
  const Json root = parser.document();
  if (root.kind != Json::Object) parser.fail("the header is not an object");
  const uint64_t buffer = data.size() - 8 - n;
  const unsigned char* base = data.data() + 8 + n;

  Safetensors out;
  std::string checksum;
  std::vector<std::tuple<uint64_t, uint64_t, std::string>> spans;
  for (const auto& [key, v] : root.members) {
    if (key == "__metadata__") {
      if (v.kind != Json::Object) parser.fail("__metadata__ is not an object");
      for (const auto& [mk, mv] : v.members) {
        if (mv.kind != Json::String) parser.fail("metadata '" + mk + "' is not a string");
        if (mk == kChecksumKey)
          checksum = mv.text;
        else
          out.metadata[mk] = mv.text;
      }
      continue;
    }
    if (v.kind != Json::Object) parser.fail("tensor '" + key + "' is not an object");
    const Json *dtype = nullptr, *shape = nullptr, *offsets = nullptr;
    for (const auto& [field, fv] : v.members) {
      if (field == "dtype")
        dtype = &fv;
      else if (field == "shape")
        shape = &fv;
      else if (field == "data_offsets")
        offsets = &fv;
      else
        parser.fail("tensor '" + key + "' has an unknown field '" + field + "'");
    }
    if (!dtype || dtype->kind != Json::String || !shape || shape->kind != Json::Array || !offsets ||
        offsets->kind != Json::Array || offsets->items.size() != 2) {
      parser.fail("tensor '" + key + "' needs dtype, shape and two data_offsets");
    }
    nnops::DType dt;
    if (dtype->text == "F32")
      dt = nnops::DType::F32;
    else if (dtype->text == "BF16")
      dt = nnops::DType::BF16;
    else if (dtype->text == "I32")
      dt = nnops::DType::I32;
    else if (dtype->text == "U8")
      dt = nnops::DType::U8;
    else if (dtype->text == "I64")
      dt = nnops::DType::I64;
    else
      parser.fail("tensor '" + key + "' has dtype " + dtype->text + ", which nnops does not read");
    if (shape->items.size() > 8) parser.fail("tensor '" + key + "' has more than 8 dimensions");
    nnops::Shape dims;
    uint64_t elements = 1;
    for (const Json& d : shape->items) {
      const uint64_t dim = to_count(parser, d, "a dimension of '" + key + "'");
      if (dim > 0 && elements > (uint64_t(1) << 40) / dim)
        parser.fail("tensor '" + key + "' is too large");
      elements *= dim;
      dims.push_back(static_cast<int64_t>(dim));
    }
    const uint64_t begin = to_count(parser, offsets->items[0], "an offset of '" + key + "'");
    const uint64_t end = to_count(parser, offsets->items[1], "an offset of '" + key + "'");
    if (end < begin || end - begin != elements * nnops::dtype_size(dt))
      parser.fail("tensor '" + key + "' has data_offsets that do not match its shape");
    if (end > buffer) {
      throw std::runtime_error(name + ": truncated: tensor '" + key + "' ends at byte " +
                               std::to_string(end) + " of a " + std::to_string(buffer) +
                               "-byte buffer");
    }
    nnops::Tensor t = nnops::Tensor::empty(dims, dt);
    if (end > begin) std::memcpy(t.raw_data(), base + begin, end - begin);
    out.tensors.emplace(key, std::move(t));
    spans.emplace_back(begin, end, key);
  }
  // The tensors cover the buffer exactly, without gaps or overlaps.
  std::sort(spans.begin(), spans.end());
  uint64_t at = 0;
  for (const auto& [b, e, key] : spans) {
    if (b != at) parser.fail("tensor '" + key + "' does not start where the previous one ends");
    at = e;
  }
  if (at != buffer) {
    throw std::runtime_error(name + ": truncated or padded: the tensors cover " +
                             std::to_string(at) + " bytes but " + std::to_string(buffer) +
                             " follow the header");
  }
  if (checksum.empty()) {
    if (require_checksum)
      parser.fail("no " + std::string(kChecksumKey) + " (not written by nnops)");
    return out;
  }
  // The hash of the header with the checksum's digits read as zeros, then of the data.
  const std::string header(text, n);
  const std::string key = "\"" + std::string(kChecksumKey) + "\"";
  const size_t k = header.find(key);
  if (k == std::string::npos || header.find(key, k + 1) != std::string::npos)
    parser.fail("the checksum key is not in its expected form");
  size_t v = header.find('"', k + key.size());
  if (v == std::string::npos || checksum.size() != 16 ||
      checksum.find_first_not_of("0123456789abcdef") != std::string::npos ||
      header.compare(v + 1, 16, checksum) != 0) {
    parser.fail("the checksum is not 16 lowercase hex digits");
  }
  std::string zeroed = header;
  zeroed.replace(v + 1, 16, "0000000000000000");
  uint64_t h =
      fnv1a(kFnvBasis, reinterpret_cast<const unsigned char*>(zeroed.data()), zeroed.size());
  h = fnv1a(h, base, buffer);
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(h));
  if (checksum != hex) {
    throw std::runtime_error(name + ": checksum mismatch (the file is corrupt)");
  }
  out.checksummed = true;
  return out;
}

}  // namespace ckpt
