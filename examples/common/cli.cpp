// Strict command-line numbers (see cli.hpp).
#include "cli.hpp"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <stdexcept>

#ifdef NNOPS_EXAMPLES_WITH_MPI
#include <nnops/dist.hpp>
#endif

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

int run_program(const char* program, int argc, char** argv,
                const std::function<int(int, char**)>& body) {
  try {
#ifdef NNOPS_EXAMPLES_WITH_MPI
    // MPI starts before anything else when a parallel mode is asked for (it may adjust argv).
    std::unique_ptr<nnops::dist::Environment> mpi;
    for (int i = 1; i < argc; ++i) {
      if (std::strcmp(argv[i], "--data-parallel") == 0 ||
          std::strcmp(argv[i], "--tensor-parallel") == 0) {
        mpi = std::make_unique<nnops::dist::Environment>(&argc, &argv);
        break;
      }
    }
#endif
    return body(argc, argv);
  } catch (const std::invalid_argument& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    return 2;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s: %s\n", program, e.what());
    return 1;
  }
}

}  // namespace cli
