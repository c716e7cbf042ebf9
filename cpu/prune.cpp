// CPU pruning masks. Candidates are ordered by (|w|, index) so ties prune the lower index first
// and every device agrees; NaN magnitudes rank above everything (never pruned before numbers).
// Unstructured selection is a radix select over the magnitude bits, as on the GPU.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <utility>
#include <vector>

#include "../dispatch/slice_order.hpp"
#include "cpu_backend.hpp"
#include "nnops/detail/prune_math.hpp"

namespace nnops::detail {

namespace {


}  // namespace

namespace {

// Counts, per value of the digit (bits >> shift) & (bins - 1), the kept entries whose bits above
// the digit equal `prefix`. Threads fill their own histograms (rows of `local`, allocated by the
// caller: nothing may throw inside a parallel region) over fixed chunks; integer sums make the
// result independent of the thread count.
void magnitude_histogram(std::vector<int64_t>& hist, std::vector<int64_t>& local,
                         uint8_t* const* masks, const float* const* ws, const int64_t* sizes,
                         int64_t tensor_count, uint32_t prefix, uint32_t prefix_mask, int shift,
                         int threads) {
  const int bins = static_cast<int>(hist.size());
  const uint32_t digit_mask = static_cast<uint32_t>(bins - 1);
  std::fill(hist.begin(), hist.end(), 0);
  std::fill(local.begin(), local.end(), 0);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    int64_t* mine = local.data() + static_cast<size_t>(omp_get_thread_num()) * bins;
    for (int64_t t = 0; t < tensor_count; ++t) {
      const float* w = ws[t];
      const uint8_t* m = masks[t];
#pragma omp for schedule(static) nowait
      for (int64_t i = 0; i < sizes[t]; ++i) {
        // Branch-free (adding 0 or 1): whether an entry matches the prefix is unpredictable.
        const uint32_t bits = magnitude_bits(w[i]);
        mine[(bits >> shift) & digit_mask] += (m[i] != 0) & ((bits & prefix_mask) == prefix);
      }
    }
  }
  for (int t = 0; t < threads; ++t)
    for (int b = 0; b < bins; ++b) hist[b] += local[static_cast<size_t>(t) * bins + b];
}

}  // namespace

// The k smallest kept entries in (|w| bits, flat index) order, found without sorting: a radix
// select over the 32 magnitude bits in histogram passes gives the k-th smallest bits T; entries
// below T are pruned, and of the entries equal to T the first ones in flat order (3.1x
// std::nth_element at 16M weights, 1.6x at 65536; bench/bench_ops.cpp, two threads).
void CpuBackend::prune_unstructured(uint8_t* const* masks, const float* const* ws,
                                    const int64_t* sizes, int64_t tensor_count, int64_t k) {
  // Two 16-bit passes over large inputs (one full read fewer); three passes of 11, 11 and 10
  // bits below a million entries, where clearing and merging 65536-bin histograms would cost
  // more than the pass saves.
  int64_t total = 0;
  for (int64_t t = 0; t < tensor_count; ++t) total += sizes[t];
  static constexpr int kWide[][2] = {{16, 16}, {0, 16}};  // {shift, bits} per pass
  static constexpr int kNarrow[][2] = {{21, 11}, {10, 11}, {0, 10}};
  const bool wide = total >= (int64_t(1) << 20);
  const int passes = wide ? 2 : 3;
  uint32_t prefix = 0, prefix_mask = 0;
  int64_t rank = k;  // 1-based rank of T among the kept entries that match the prefix
  // Every buffer is allocated before the first mask byte is written, so running out of memory
  // leaves the masks untouched.
  const int threads = total >= kParallelThreshold ? omp_get_max_threads() : 1;
  const int max_bits = wide ? 16 : 11;
  std::vector<int64_t> hist = scratch_vector<int64_t>(size_t(1) << max_bits, 0);
  std::vector<int64_t> local = scratch_vector<int64_t>(static_cast<size_t>(threads) << max_bits, 0);
  constexpr int64_t kChunk = 65536;
  std::vector<std::vector<int64_t>> ties(static_cast<size_t>(tensor_count));
  for (int64_t t = 0; t < tensor_count; ++t)
    ties[t] = scratch_vector<int64_t>(static_cast<size_t>((sizes[t] + kChunk - 1) / kChunk), 0);
  for (int pass = 0; pass < passes; ++pass) {
    const int shift = wide ? kWide[pass][0] : kNarrow[pass][0];
    const int bits = wide ? kWide[pass][1] : kNarrow[pass][1];
    hist.resize(size_t(1) << bits);  // never grows: max_bits is the widest pass
    local.resize(static_cast<size_t>(threads) << bits);
    magnitude_histogram(hist, local, masks, ws, sizes, tensor_count, prefix, prefix_mask, shift,
                        threads);
    uint32_t digit = 0;
    while (digit + 1 < hist.size() && rank > hist[digit]) rank -= hist[digit++];
    prefix |= digit << shift;
    prefix_mask |= ((1u << bits) - 1u) << shift;
  }
  const uint32_t threshold = prefix;
  // One parallel pass prunes everything below T and counts each fixed chunk's ties with T; then
  // the first `rank` ties in flat order go, visiting only the chunks that hold them.
  for (int64_t t = 0; t < tensor_count; ++t) {
    const float* w = ws[t];
    uint8_t* m = masks[t];
    const int64_t chunks = (sizes[t] + kChunk - 1) / kChunk;
    int64_t* const tie_counts = ties[t].data();
#pragma omp parallel for schedule(static) if (sizes[t] >= kParallelThreshold)
    for (int64_t c = 0; c < chunks; ++c) {
      const int64_t end = std::min(sizes[t], (c + 1) * kChunk);
      int64_t count = 0;
      // Branch-free: half the entries fall below T in no predictable order.
      for (int64_t i = c * kChunk; i < end; ++i) {
        const uint32_t bits = magnitude_bits(w[i]);
        const uint8_t keep = m[i];
        count += (keep != 0) & (bits == threshold);
        m[i] = bits < threshold ? uint8_t{0} : keep;
      }
      tie_counts[c] = count;
    }
    for (int64_t c = 0; c < chunks && rank > 0; ++c) {
      if (tie_counts[c] == 0) continue;
      const int64_t end = std::min(sizes[t], (c + 1) * kChunk);
      for (int64_t i = c * kChunk; i < end && rank > 0; ++i) {
        if (m[i] != 0 && magnitude_bits(w[i]) == threshold) {
          m[i] = 0;
          --rank;
        }
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
