// Strict command-line numbers for the example programs: the whole text must parse and lie in
// range, else std::invalid_argument with a one-line message naming the flag.
#pragma once

#include <cstdint>
#include <string>

namespace cli {

[[noreturn]] void bad(const std::string& message);
int64_t parse_int(const std::string& flag, const char* text, int64_t lo, int64_t hi);
// A finite number in [lo, hi], or (lo, hi] when lo_open.
double parse_real(const std::string& flag, const char* text, double lo, double hi, bool lo_open);

}  // namespace cli
