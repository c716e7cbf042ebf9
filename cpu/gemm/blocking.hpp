// Block sizes of the CPU GEMM (cpu/gemm/driver.cpp).
#pragma once

#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <fstream>
#include <memory>
#include <sstream>
#include <string>

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

// The size of the data (or unified) cache of `level` that the first CPU sees, from Linux's
// sysfs (what lscpu prints), else glibc's sysconf, else `fallback`. sysfs comes first because
// sysconf decodes CPUID itself and some hypervisors' CPUID is wrong: an AMD EPYC VM whose
// sysfs and lscpu say 32 MiB of L3 gave 320 MiB through sysconf, and B blocks sized for that
// (64 MiB) ran 2048^3 at 138 GFLOP/s against 195 for oneDNN.
inline int64_t cache_bytes(int level, int64_t fallback) {
  for (int index = 0; index < 8; ++index) {
    const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index);
    std::ifstream level_file(dir + "/level"), type_file(dir + "/type"), size_file(dir + "/size");
    int this_level = 0;
    std::string type, size;
    if (!(level_file >> this_level)) break;  // no such index: no more caches
    if (this_level != level || !(type_file >> type) || type == "Instruction") continue;
    int64_t value = 0;
    char unit = 0;
    std::istringstream in((size_file >> size) ? size : std::string());
    if (in >> value) {
      in >> unit;
      const int64_t scale = unit == 'K' ? 1 << 10 : unit == 'M' ? 1 << 20 : unit == 'G' ? 1 << 30 : 1;
      if (value > 0) return value * scale;
    }
  }
  const int name = level == 2 ? _SC_LEVEL2_CACHE_SIZE : _SC_LEVEL3_CACHE_SIZE;
  const long v = sysconf(name);
  return v > 0 ? v : fallback;
}

template <int MR, int NR>
Blocking blocking_for_caches() {
  static const Blocking b = [] {
    const int64_t l2 = cache_bytes(2, 512 << 10);
    const int64_t l3 = cache_bytes(3, 8 << 20);
    Blocking r{};
    r.kc = std::clamp<int64_t>(l2 / 8 / (NR * 4) / 8 * 8, 64, 1024);
    r.mc = std::clamp<int64_t>(l2 / 4 / (r.kc * 4) / MR * MR, MR, 64 * MR);
    r.nc = std::clamp<int64_t>(l3 / 4 / (r.kc * 4) / NR * NR, 16 * NR, 512 * NR);
    return r;
  }();
  return b;
}

}  // namespace nnops::detail
