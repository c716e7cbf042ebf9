// CPU pruning masks. Candidates are ordered by (|w|, index) so ties prune the lower index first
// and every device agrees; NaN magnitudes rank above everything (never pruned before numbers).
// Unstructured selection is a radix select over the magnitude bits, as on the GPU.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "../dispatch/slice_order.hpp"
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

namespace {

// Counts, per value of the digit (bits >> shift) & (bins - 1), the kept entries whose bits above
// the digit equal `prefix`. Threads fill their own histograms over fixed chunks; integer sums
// make the result independent of the thread count.
void magnitude_histogram(std::vector<int64_t>& hist, uint8_t* const* masks, const float* const* ws,
                         const int64_t* sizes, int64_t tensor_count, uint32_t prefix,
                         uint32_t prefix_mask, int shift) {
  const int bins = static_cast<int>(hist.size());
  const uint32_t digit_mask = static_cast<uint32_t>(bins - 1);
  std::fill(hist.begin(), hist.end(), 0);
  int64_t total = 0;
  for (int64_t t = 0; t < tensor_count; ++t) total += sizes[t];
#pragma omp parallel if (total >= kParallelThreshold)
  {
    std::vector<int64_t> local(static_cast<size_t>(bins), 0);
    for (int64_t t = 0; t < tensor_count; ++t) {
      const float* w = ws[t];
      const uint8_t* m = masks[t];
#pragma omp for schedule(static) nowait
      for (int64_t i = 0; i < sizes[t]; ++i) {
        const uint32_t bits = magnitude_bits(w[i]);
        if (m[i] != 0 && (bits & prefix_mask) == prefix) ++local[(bits >> shift) & digit_mask];
      }
    }
#pragma omp critical
    for (int b = 0; b < bins; ++b) hist[b] += local[b];
  }
}

}  // namespace

// The k smallest kept entries in (|w| bits, flat index) order, found without sorting: a radix
// select over the 32 magnitude bits in three histogram passes (11, 11 and 10 bits) gives the
// k-th smallest bits T; entries below T are pruned, and of the entries equal to T the first
// ones in flat order (3.4x std::nth_element at 16M weights; see bench/bench_ops.cpp).
void CpuBackend::prune_unstructured(uint8_t* const* masks, const float* const* ws,
                                    const int64_t* sizes, int64_t tensor_count, int64_t k) {
  static constexpr int kShifts[] = {21, 10, 0};
  static constexpr int kBits[] = {11, 11, 10};
  uint32_t prefix = 0, prefix_mask = 0;
  int64_t rank = k;  // 1-based rank of T among the kept entries that match the prefix
  for (int pass = 0; pass < 3; ++pass) {
    std::vector<int64_t> hist = scratch_vector<int64_t>(size_t(1) << kBits[pass], 0);
    magnitude_histogram(hist, masks, ws, sizes, tensor_count, prefix, prefix_mask, kShifts[pass]);
    uint32_t digit = 0;
    while (digit + 1 < hist.size() && rank > hist[digit]) rank -= hist[digit++];
    prefix |= digit << kShifts[pass];
    prefix_mask |= ((1u << kBits[pass]) - 1u) << kShifts[pass];
  }
  const uint32_t threshold = prefix;
  for (int64_t t = 0; t < tensor_count; ++t) {
    const float* w = ws[t];
    uint8_t* m = masks[t];
#pragma omp parallel for schedule(static) if (sizes[t] >= kParallelThreshold)
    for (int64_t i = 0; i < sizes[t]; ++i) {
      if (magnitude_bits(w[i]) < threshold) m[i] = 0;
    }
  }
  // Ties with T: the lowest flat indices first, `rank` of them.
  for (int64_t t = 0; t < tensor_count && rank > 0; ++t) {
    const float* w = ws[t];
    uint8_t* m = masks[t];
    for (int64_t i = 0; i < sizes[t] && rank > 0; ++i) {
      if (m[i] != 0 && magnitude_bits(w[i]) == threshold) {
        m[i] = 0;
        --rank;
      }
    }
  }
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
  // norm); only slices still kept compete (PyTorch's iterative pruning).
  const std::vector<int64_t> order = weakest_slices(norms, kept, k);
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
