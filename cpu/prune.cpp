// CPU pruning masks. Candidates are ordered by (|w|, index) so ties prune the lower index first
// and every device agrees; NaN magnitudes rank above everything (never pruned before numbers).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "cpu_backend.hpp"

namespace nnops::detail {

namespace {

// The one ranking rule, (|w|, index), as integers: the bit pattern of a non-negative float grows
// with its value, and NaN, made canonical, sits above +inf (never pruned before a number).
uint32_t magnitude_bits(float w) {
  float mag = std::fabs(w);
  if (std::isnan(mag)) mag = std::numeric_limits<float>::quiet_NaN();
  uint32_t bits;
  std::memcpy(&bits, &mag, sizeof bits);
  return bits;
}

}  // namespace

void CpuBackend::prune_unstructured(uint8_t* const* masks, const float* const* ws,
                                    const int64_t* sizes, int64_t tensor_count, int64_t k) {
  std::vector<int64_t> offsets(static_cast<size_t>(tensor_count) + 1, 0);
  for (int64_t t = 0; t < tensor_count; ++t) offsets[t + 1] = offsets[t] + sizes[t];
  auto prune_flat = [&](int64_t flat) {
    const int64_t t = std::upper_bound(offsets.begin(), offsets.end(), flat) - offsets.begin() - 1;
    masks[t][flat - offsets[t]] = 0;
  };
  if (offsets.back() <= (int64_t(1) << 32)) {
    // Magnitude bits and index packed into one 64-bit key: selecting on these took half the time
    // of (magnitude, index) pairs (16M weights).
    std::vector<uint64_t> keys;
    reserve_scratch(keys, static_cast<size_t>(offsets.back()));
    for (int64_t t = 0; t < tensor_count; ++t) {
      for (int64_t i = 0; i < sizes[t]; ++i) {
        if (masks[t][i] == 0) continue;
        keys.push_back((static_cast<uint64_t>(magnitude_bits(ws[t][i])) << 32) |
                       static_cast<uint64_t>(offsets[t] + i));
      }
    }
    if (k < static_cast<int64_t>(keys.size())) {
      std::nth_element(keys.begin(), keys.begin() + k, keys.end());
    }
    for (int64_t j = 0; j < k; ++j) prune_flat(static_cast<int64_t>(keys[j] & 0xFFFFFFFFu));
    return;
  }
  // Beyond 2^32 entries the index no longer fits beside the magnitude: the same order as pairs.
  std::vector<std::pair<uint32_t, int64_t>> keys;
  reserve_scratch(keys, static_cast<size_t>(offsets.back()));
  for (int64_t t = 0; t < tensor_count; ++t) {
    for (int64_t i = 0; i < sizes[t]; ++i) {
      if (masks[t][i] != 0) keys.emplace_back(magnitude_bits(ws[t][i]), offsets[t] + i);
    }
  }
  if (k < static_cast<int64_t>(keys.size())) {
    std::nth_element(keys.begin(), keys.begin() + k, keys.end());
  }
  for (int64_t j = 0; j < k; ++j) prune_flat(keys[j].second);
}

// Whether slice s of a mask viewed as [outer, slices, inner] still keeps any entry.
static std::vector<uint8_t> kept_slices(const uint8_t* mask, int64_t outer, int64_t slices,
                                        int64_t inner) {
  std::vector<uint8_t> kept = scratch_vector<uint8_t>(static_cast<size_t>(slices), 0);
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t s = 0; s < slices; ++s) {
      const uint8_t* row = mask + (o * slices + s) * inner;
      for (int64_t i = 0; i < inner && !kept[s]; ++i) kept[s] = row[i] != 0;
    }
  }
  return kept;
}

int64_t CpuBackend::count_kept_slices(const uint8_t* mask, int64_t outer, int64_t slices,
                                      int64_t inner) {
  int64_t count = 0;
  for (uint8_t k : kept_slices(mask, outer, slices, inner)) count += k;
  return count;
}

void CpuBackend::prune_ln_structured(uint8_t* mask, const float* w, int64_t outer, int64_t slices,
                                     int64_t inner, int p, int64_t k) {
  const std::vector<uint8_t> kept = kept_slices(mask, outer, slices, inner);
  std::vector<double> norms = scratch_vector<double>(static_cast<size_t>(slices), 0.0);
  for (int64_t o = 0; o < outer; ++o) {
    for (int64_t s = 0; s < slices; ++s) {
      const float* row = w + (o * slices + s) * inner;
      double acc = 0.0;
      for (int64_t i = 0; i < inner; ++i) {
        const double v = std::fabs(static_cast<double>(row[i]));
        acc += p == 1 ? v : v * v;
      }
      norms[s] += acc;
    }
  }
  // Rank by the double norms (slices whose norms differ below float resolution still order by
  // norm), NaN last, then by slice index.
  // Only slices still kept compete (PyTorch's iterative pruning).
  std::vector<int64_t> order;
  reserve_scratch(order, static_cast<size_t>(slices));
  for (int64_t s = 0; s < slices; ++s) {
    if (kept[s]) order.push_back(s);
  }
  auto lower = [&](int64_t a, int64_t b) {
    const double na = norms[a], nb = norms[b];
    if (std::isnan(na) != std::isnan(nb)) return std::isnan(nb);
    if (!std::isnan(na) && na != nb) return na < nb;
    return a < b;
  };
  if (k < static_cast<int64_t>(order.size()))
    std::nth_element(order.begin(), order.begin() + k, order.end(), lower);
  for (int64_t j = 0; j < k; ++j) {
    const int64_t s = order[j];
    for (int64_t o = 0; o < outer; ++o) {
      std::fill(mask + (o * slices + s) * inner, mask + (o * slices + s + 1) * inner, uint8_t{0});
    }
  }
}

void CpuBackend::prune_nm(uint8_t* mask, const float* w, int64_t groups, int n, int m) {
  const int prune = m - n;
#pragma omp parallel for if (groups * m >= kParallelThreshold)
  for (int64_t g = 0; g < groups; ++g) {
    const float* wg = w + g * m;
    uint8_t* mg = mask + g * m;
    // Selection over a tiny group: prune the `prune` lowest in (|w|, index) order.
    for (int j = 0; j < m; ++j) {
      const auto key_j = std::make_pair(magnitude_bits(wg[j]), j);
      int below = 0;  // how many entries rank lower than j
      for (int i = 0; i < m; ++i) below += std::make_pair(magnitude_bits(wg[i]), i) < key_j;
      if (below < prune) mg[j] = 0;
    }
  }
}

void CpuBackend::apply_mask(float* w, const uint8_t* mask, int64_t n) {
#pragma omp parallel for simd if (n >= kParallelThreshold)
  for (int64_t i = 0; i < n; ++i) w[i] = mask[i] != 0 ? w[i] : 0.0f;
}

int64_t CpuBackend::count_nonzero(const uint8_t* mask, int64_t n) {
  int64_t count = 0;
#pragma omp parallel for simd reduction(+ : count) if (n >= kParallelThreshold)
  for (int64_t i = 0; i < n; ++i) count += mask[i] != 0;
  return count;
}

}  // namespace nnops::detail
