// Strict command-line numbers for the example programs: the whole text must parse and lie in
// range, else std::invalid_argument with a one-line message naming the flag.
#pragma once

#include <cstdint>
#include <functional>
#include <initializer_list>
#include <string>
#include <utility>

namespace cli {

[[noreturn]] void bad(const std::string& message);
int64_t parse_int(const std::string& flag, const char* text, int64_t lo, int64_t hi);
// A finite number in [lo, hi], or (lo, hi] when lo_open.
double parse_real(const std::string& flag, const char* text, double lo, double hi, bool lo_open);

// The value of a flag with named choices, e.g. parse_choice(flag, value, {{"cpu", CPU},
// {"cuda", CUDA}}); anything else is "--device must be cpu or cuda, got 'x'".
template <class T>
T parse_choice(const std::string& flag, const std::string& value,
               std::initializer_list<std::pair<const char*, T>> choices) {
  std::string names;
  size_t i = 0;
  for (const auto& [name, result] : choices) {
    if (value == name) return result;
    names += (i == 0 ? "" : i + 1 == choices.size() ? " or " : ", ") + std::string(name);
    ++i;
  }
  bad(flag + " must be " + names + ", got '" + value + "'");
}

// The entry of an example program: MPI is started first when --data-parallel is on the command
// line (builds with MPI), then body runs; a bad flag (std::invalid_argument) exits 2, any other
// error 1, each as one line "<program>: <message>" on stderr.
int run_program(const char* program, int argc, char** argv,
                const std::function<int(int, char**)>& body);

}  // namespace cli
