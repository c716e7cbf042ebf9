// Timing for the example programs' run-time choices (sparse against dense, the GEMM rate).
#pragma once

#include <algorithm>
#include <chrono>
#include <nnops/nnops.hpp>

namespace cli {

// The best of five timed runs of `body` after one warm-up, in milliseconds; waits for the
// device before and after each.
template <class Body>
double best_ms(nnops::Device device, Body body) {
  double best = 1e30;
  for (int rep = 0; rep < 6; ++rep) {
    nnops::synchronize(device);
    const auto t0 = std::chrono::steady_clock::now();
    body();
    nnops::synchronize(device);
    const double ms =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() * 1e3;
    if (rep > 0) best = std::min(best, ms);
  }
  return best;
}

}  // namespace cli
