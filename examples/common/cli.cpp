// Strict command-line numbers (see cli.hpp).
#include "cli.hpp"

#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <stdexcept>

namespace cli {

void bad(const std::string& message) {
  throw std::invalid_argument(message);
}

int64_t parse_int(const std::string& flag, const char* text, int64_t lo, int64_t hi) {
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(text, &end, 10);
  if (errno != 0 || end == text || *end != '\0' || v < lo || v > hi) {
    bad(flag + " needs an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) +
        "], got '" + text + "'");
  }
  return v;
}

double parse_real(const std::string& flag, const char* text, double lo, double hi, bool lo_open) {
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(text, &end);
  const bool in_range = lo_open ? v > lo : v >= lo;
  if (errno != 0 || end == text || *end != '\0' || !std::isfinite(v) || !in_range || v > hi) {
    bad(flag + " needs a number in " + (lo_open ? "(" : "[") + std::to_string(lo) + ", " +
        std::to_string(hi) + "], got '" + text + "'");
  }
  return v;
}

}  // namespace cli
