// Block sizes of the CPU GEMM (cpu/gemm/driver.cpp).
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <memory>

#include "../cpu_backend.hpp"

namespace nnops::detail {

// Block sizes from the caches the machine reports (Goto/BLIS): a kc x NR panel of B fills an
// eighth of L2, an mc x kc block of A a quarter of L2, and a kc x nc block of B a quarter of L3.
// Defaults where the OS reports nothing. A deep kc halves and quarters the passes over c and
// the micro-kernel's calls; the B panel streams from L2 at 128 bytes per 24 FMAs, which the L2
// sustains. Sizing the panel to half of L1 instead (kc = 128 for 12 x 32 tiles on a 32 KiB L1)
// ran 84 GFLOP/s on one AMD EPYC core at 2048^3 against 105 at kc = 1024 (oneDNN: 108). For
// 12 x 32 tiles on a 32 KiB L1 / 1 MiB L2 / 32 MiB L3 core: kc = 1024, mc = 60, nc = 2048.
struct Blocking {
  int64_t kc, mc, nc;
};

inline int64_t cache_bytes(int name, int64_t fallback) {
  const long v = sysconf(name);
  return v > 0 ? v : fallback;
}

template <int MR, int NR>
Blocking blocking_for_caches() {
  static const Blocking b = [] {
    const int64_t l2 = cache_bytes(_SC_LEVEL2_CACHE_SIZE, 512 << 10);
    const int64_t l3 = cache_bytes(_SC_LEVEL3_CACHE_SIZE, 8 << 20);
    Blocking r{};
    r.kc = std::clamp<int64_t>(l2 / 8 / (NR * 4) / 8 * 8, 64, 1024);
    r.mc = std::clamp<int64_t>(l2 / 4 / (r.kc * 4) / MR * MR, MR, 64 * MR);
    r.nc = std::clamp<int64_t>(l3 / 4 / (r.kc * 4) / NR * NR, 16 * NR, 512 * NR);
    return r;
  }();
  return b;
}

}  // namespace nnops::detail
