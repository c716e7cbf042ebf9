// CPU pruning masks. Candidates are ordered by (|w|, index) so ties prune the lower index first
// and every device agrees; NaN magnitudes rank above everything (never pruned before numbers).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "cpu_backend.hpp"

namespace nnops::detail {

namespace {

struct Candidate {
  float magnitude;
  int64_t index;
};

// Strict weak order: numbers by value, NaN after all numbers, then by index.
bool ranks_lower(const Candidate& a, const Candidate& b) {
  const bool a_nan = std::isnan(a.magnitude), b_nan = std::isnan(b.magnitude);
  if (a_nan != b_nan) return b_nan;
  if (!a_nan && a.magnitude != b.magnitude) return a.magnitude < b.magnitude;
  return a.index < b.index;
}

// Moves the k lowest-ranked candidates to the front.
void select_lowest(std::vector<Candidate>& c, int64_t k) {
  if (k < static_cast<int64_t>(c.size())) {
    std::nth_element(c.begin(), c.begin() + k, c.end(), ranks_lower);
  }
}

}  // namespace

namespace {

// The (|w|, index) order as one 64-bit integer: the bits of a non-negative float grow with its
// value (NaN, made canonical, sits above +inf), and the index below breaks ties. Selecting on
// these 8-byte keys took half the time of (float, int64) pairs with a comparator (16M weights).
uint64_t rank_key(float w, uint64_t index) {
  float mag = std::fabs(w);
  if (std::isnan(mag)) mag = std::numeric_limits<float>::quiet_NaN();
  uint32_t bits;
  std::memcpy(&bits, &mag, sizeof bits);
  return (static_cast<uint64_t>(bits) << 32) | index;
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
    std::vector<uint64_t> keys;
    keys.reserve(static_cast<size_t>(offsets.back()));
    for (int64_t t = 0; t < tensor_count; ++t) {
      for (int64_t i = 0; i < sizes[t]; ++i) {
        if (masks[t][i] != 0)
          keys.push_back(rank_key(ws[t][i], static_cast<uint64_t>(offsets[t] + i)));
      }
    }
    if (k < static_cast<int64_t>(keys.size()))
      std::nth_element(keys.begin(), keys.begin() + k, keys.end());
    for (int64_t j = 0; j < k; ++j) prune_flat(static_cast<int64_t>(keys[j] & 0xFFFFFFFFu));
    return;
  }
  // Beyond 2^32 entries the index no longer fits beside the magnitude.
  std::vector<Candidate> candidates;
  for (int64_t t = 0; t < tensor_count; ++t) {
    for (int64_t i = 0; i < sizes[t]; ++i) {
      if (masks[t][i] != 0) candidates.push_back({std::fabs(ws[t][i]), offsets[t] + i});
    }
  }
  select_lowest(candidates, k);
  for (int64_t j = 0; j < k; ++j) prune_flat(candidates[j].index);
}

void CpuBackend::prune_ln_structured(uint8_t* mask, const float* w, int64_t outer, int64_t slices,
                                     int64_t inner, int p, int64_t k) {
  std::vector<double> norms(static_cast<size_t>(slices), 0.0);
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
  std::vector<Candidate> candidates(static_cast<size_t>(slices));
  for (int64_t s = 0; s < slices; ++s) {
    const double norm = p == 1 ? norms[s] : std::sqrt(norms[s]);
    candidates[s] = {static_cast<float>(norm), s};
  }
  // Rank in double precision: two slices whose norms differ below float resolution must still
  // order by norm, so compare the doubles and fall back to the index.
  auto lower = [&](const Candidate& a, const Candidate& b) {
    const double na = norms[a.index], nb = norms[b.index];
    if (std::isnan(na) != std::isnan(nb)) return std::isnan(nb);
    if (!std::isnan(na) && na != nb) return na < nb;
    return a.index < b.index;
  };
  if (k < slices)
    std::nth_element(candidates.begin(), candidates.begin() + k, candidates.end(), lower);
  for (int64_t j = 0; j < k; ++j) {
    const int64_t s = candidates[j].index;
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
      const Candidate cj{std::fabs(wg[j]), j};
      int below = 0;  // how many entries rank lower than j
      for (int i = 0; i < m; ++i) below += i != j && ranks_lower({std::fabs(wg[i]), i}, cj);
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
