// CUDA pruning masks with the CPU's ranking rule, (|w| bits, flat index): the k-th smallest
// magnitude among the kept entries is found by a radix select (four 8-bit histogram passes over
// the float bits, never a full sort), digit choices made on the device; entries below it are
// pruned, and among entries equal to it the lowest flat indices, found by a scan of tie flags
// computed on the fly. One host wait per call (to learn whether any tie survives; usually none
// does and the scan is skipped), at most 8 bytes of scratch per weight (the scan's ranks).
// Structured masks rank per-slice norms as the CPU does.
#include <thrust/iterator/counting_iterator.h>
#include <thrust/iterator/transform_iterator.h>

#include <algorithm>
#include <cmath>
#include <cub/device/device_scan.cuh>
#include <vector>

#include "../dispatch/slice_order.hpp"
#include "cuda_backend.hpp"
#include "nnops/detail/prune_math.hpp"

namespace nnops::detail {

namespace {

// The radix select's state, on the device: the digits chosen so far (prefix under prefix_mask),
// the threshold's 1-based rank among the kept entries matching the prefix, how many kept entries
// equal the final threshold, how many of those are still to prune (the tie scan's budget), and
// the budget of the tensor being pruned.
struct SelectState {
  uint32_t prefix, prefix_mask;
  int64_t rank, ties, ties_left, budget;
};

// Histogram of the digit at `shift` among kept entries whose higher bits equal the prefix.
__global__ void radix_histogram_kernel(unsigned long long* d_hist, const float* d_w,
                                       const uint8_t* d_mask, int64_t n, const SelectState* d_st,
                                       int shift) {
  __shared__ unsigned int local[256];
  for (int i = threadIdx.x; i < 256; i += blockDim.x) local[i] = 0;
  __syncthreads();
  const uint32_t prefix = d_st->prefix, prefix_mask = d_st->prefix_mask;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    if (d_mask[i] == 0) continue;
    const uint32_t bits = magnitude_bits(d_w[i]);
    if ((bits & prefix_mask) == prefix) atomicAdd(&local[(bits >> shift) & 0xFFu], 1u);
  }
  __syncthreads();
  for (int i = threadIdx.x; i < 256; i += blockDim.x)
    if (local[i]) atomicAdd(&d_hist[i], static_cast<unsigned long long>(local[i]));
}

// One thread: the digit at `shift` holding the rank-th entry; clears the histogram for the next
// pass.
__global__ void radix_choose_digit_kernel(SelectState* d_st, unsigned long long* d_hist,
                                          int shift) {
  int64_t rank = d_st->rank;
  int digit = 0;
  for (; digit < 255 && rank > static_cast<int64_t>(d_hist[digit]); ++digit)
    rank -= static_cast<int64_t>(d_hist[digit]);
  d_st->ties = static_cast<int64_t>(d_hist[digit]);
  d_st->rank = rank;
  d_st->ties_left = rank;
  d_st->prefix |= static_cast<uint32_t>(digit) << shift;
  d_st->prefix_mask |= 0xFFu << shift;
  for (int i = 0; i < 256; ++i) d_hist[i] = 0;
}

// Whether entry i is a kept entry equal to the threshold (a tie), as the scan's input.
struct TieFlag {
  const float* w;
  const uint8_t* mask;
  uint32_t threshold;
  __device__ int64_t operator()(int64_t i) const {
    return mask[i] != 0 && magnitude_bits(w[i]) == threshold;
  }
};

// One thread, before the tensor's ties are pruned (the last flag reads its mask): this tensor's
// budget is what is left, and what is left drops by its ties (the scan is exclusive, so they
// number rank[n - 1] + flag[n - 1]).
__global__ void take_tie_budget_kernel(SelectState* d_st, const int64_t* d_rank, TieFlag tie,
                                       int64_t n) {
  d_st->budget = d_st->ties_left;
  d_st->ties_left -= d_rank[n - 1] + tie(n - 1);
}

// Ties pruned in flat order: d_rank is the exclusive scan of the tie flags, so a tie goes while
// its rank is below the tensor's budget.
__global__ void prune_ties_kernel(uint8_t* d_mask, const int64_t* d_rank, TieFlag tie, int64_t n,
                                  const SelectState* d_st) {
  const int64_t budget = d_st->budget;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    if (d_rank[i] < budget && tie(i)) d_mask[i] = 0;
}

// Prunes kept entries below the threshold, or at or below it (`and_equal`: every tie goes).
__global__ void prune_below_kernel(uint8_t* d_mask, const float* d_w, int64_t n,
                                   uint32_t threshold, bool and_equal) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x) {
    const uint32_t bits = magnitude_bits(d_w[i]);
    if (d_mask[i] != 0 && (bits < threshold || (and_equal && bits == threshold))) d_mask[i] = 0;
  }
}

// Blocks stride over the slices of w viewed as [outer, slices, inner] (any count fits one
// launch): each slice's L-p norm (double; skipped when d_w is null) and whether its mask keeps
// any entry.
__global__ void slice_norms_kernel(double* d_norm, int* d_kept, const float* d_w,
                                   const uint8_t* d_mask, int64_t outer, int64_t slices,
                                   int64_t inner, int p) {
  __shared__ double s_sum[32];
  __shared__ int s_any;
  for (int64_t s = blockIdx.x; s < slices; s += gridDim.x) {  // uniform across the block
    if (threadIdx.x == 0) s_any = 0;
    __syncthreads();
    double acc = 0.0;
    int any = 0;
    for (int64_t j = threadIdx.x; j < outer * inner; j += blockDim.x) {
      const int64_t o = j / inner, i = j % inner;
      const int64_t idx = (o * slices + s) * inner + i;
      if (d_w) {  // null: only the kept flags are wanted (count_kept_slices)
        const double v = fabs(static_cast<double>(d_w[idx]));
        acc += p == 1 ? v : v * v;
      }
      any |= d_mask[idx] != 0;
    }
    if (any) atomicOr(&s_any, 1);
    for (int offset = 16; offset > 0; offset /= 2)
      acc += __shfl_down_sync(0xffffffffu, acc, offset);
    if ((threadIdx.x & 31) == 0) s_sum[threadIdx.x / 32] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
      double total = 0.0;
      for (int w = 0; w < (blockDim.x + 31) / 32; ++w) total += s_sum[w];
      if (d_norm) d_norm[s] = total;
      d_kept[s] = s_any;
    }
    __syncthreads();  // s_sum and s_any are reused by the next slice
  }
}

__global__ void zero_slices_kernel(uint8_t* d_mask, const int64_t* d_slices, int64_t count,
                                   int64_t outer, int64_t slices, int64_t inner) {
  const int64_t total = count * outer * inner;
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < total;
       j += int64_t(gridDim.x) * blockDim.x) {
    const int64_t c = j / (outer * inner), rest = j % (outer * inner);
    const int64_t o = rest / inner, i = rest % inner;
    d_mask[(o * slices + d_slices[c]) * inner + i] = 0;
  }
}

// One thread per group of m: prune the m - n lowest in (|w| bits, index) order.
__global__ void nm_kernel(uint8_t* d_mask, const float* d_w, int64_t groups, int n, int m) {
  for (int64_t g = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; g < groups;
       g += int64_t(gridDim.x) * blockDim.x) {
    const float* wg = d_w + g * m;
    uint8_t* mg = d_mask + g * m;
    for (int j = 0; j < m; ++j) {
      const uint32_t bj = magnitude_bits(wg[j]);
      int below = 0;
      for (int i = 0; i < m; ++i) {
        const uint32_t bi = magnitude_bits(wg[i]);
        below += bi < bj || (bi == bj && i < j);
      }
      if (below < m - n) mg[j] = 0;
    }
  }
}

}  // namespace

void CudaBackend::prune_unstructured(uint8_t* const* masks, const float* const* ws,
                                     const int64_t* sizes, int64_t tensor_count, int64_t k) {
  if (k == 0) return;
  // Radix select of the k-th smallest key bits, most significant digit first, on the device.
  DeviceScratch hist(256 * sizeof(unsigned long long)), state(sizeof(SelectState));
  const SelectState start{0u, 0u, k, 0, 0, 0};
  NNOPS_CUDA_CHECK(
      cudaMemsetAsync(hist.as<void>(), 0, 256 * sizeof(unsigned long long), t_stream));
  copy_from_host(state.as<void>(), &start, sizeof start);
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int64_t t = 0; t < tensor_count; ++t) {
      if (sizes[t] == 0) continue;
      radix_histogram_kernel<<<grid_for(sizes[t], 256, 1024), 256, 0, t_stream>>>(
          hist.as<unsigned long long>(), ws[t], masks[t], sizes[t], state.as<SelectState>(),
          shift);
      check_launch("radix_histogram_kernel");
    }
    radix_choose_digit_kernel<<<1, 1, 0, t_stream>>>(state.as<SelectState>(),
                                                     hist.as<unsigned long long>(), shift);
    check_launch("radix_choose_digit_kernel");
  }
  SelectState st;
  copy_to_host(&st, state.as<void>(), sizeof st);  // the call's one wait
  // Everything below the threshold goes; of the entries equal to it, the first `rank` in flat
  // order: all of them when rank == ties (distinct magnitudes: the usual case), else a scan.
  const bool all_ties = st.rank == st.ties;
  int64_t largest = 0;
  for (int64_t t = 0; t < tensor_count; ++t) {
    if (sizes[t] == 0) continue;
    largest = std::max(largest, sizes[t]);
    prune_below_kernel<<<grid_for(sizes[t], 256), 256, 0, t_stream>>>(masks[t], ws[t], sizes[t],
                                                                      st.prefix, all_ties);
    check_launch("prune_below_kernel");
  }
  if (all_ties || st.rank == 0) return;
  // Masks still hold the ties (prune_below_kernel spares them), so the flags read them as kept.
  DeviceScratch tie_rank(largest * sizeof(int64_t));
  size_t temp_bytes = 0;
  for (int64_t t = 0; t < tensor_count; ++t) {
    const int64_t n = sizes[t];
    if (n == 0) continue;
    const TieFlag tie{ws[t], masks[t], st.prefix};
    auto flags = thrust::make_transform_iterator(thrust::counting_iterator<int64_t>(0), tie);
    size_t bytes = 0;
    NNOPS_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(nullptr, bytes, flags,
                                                   tie_rank.as<int64_t>(), n, t_stream));
    temp_bytes = std::max(temp_bytes, bytes);
  }
  DeviceScratch temp(temp_bytes);
  for (int64_t t = 0; t < tensor_count; ++t) {
    const int64_t n = sizes[t];
    if (n == 0) continue;
    const TieFlag tie{ws[t], masks[t], st.prefix};
    auto flags = thrust::make_transform_iterator(thrust::counting_iterator<int64_t>(0), tie);
    size_t bytes = temp_bytes;
    NNOPS_CUDA_CHECK(cub::DeviceScan::ExclusiveSum(temp.as<void>(), bytes, flags,
                                                   tie_rank.as<int64_t>(), n, t_stream));
    take_tie_budget_kernel<<<1, 1, 0, t_stream>>>(state.as<SelectState>(),
                                                  tie_rank.as<int64_t>(), tie, n);
    check_launch("take_tie_budget_kernel");
    prune_ties_kernel<<<grid_for(n, 256), 256, 0, t_stream>>>(masks[t], tie_rank.as<int64_t>(),
                                                              tie, n, state.as<SelectState>());
    check_launch("prune_ties_kernel");
  }
}

int64_t CudaBackend::count_kept_slices(const uint8_t* mask, int64_t outer, int64_t slices,
                                       int64_t inner) {
  DeviceScratch kept(slices * sizeof(int));
  slice_norms_kernel<<<grid_for(slices, 1, 65535), 256, 0, t_stream>>>(
      nullptr, kept.as<int>(), nullptr, mask, outer, slices, inner, 1);
  check_launch("slice_norms_kernel");
  std::vector<int> host(static_cast<size_t>(slices));
  copy_to_host(host.data(), kept.as<void>(), host.size() * sizeof(int));
  int64_t count = 0;
  for (int k : host) count += k;
  return count;
}

void CudaBackend::prune_ln_structured(uint8_t* mask, const float* w, int64_t outer, int64_t slices,
                                      int64_t inner, int p, int64_t k) {
  DeviceScratch norms(slices * sizeof(double)), kept(slices * sizeof(int));
  slice_norms_kernel<<<grid_for(slices, 1, 65535), 256, 0, t_stream>>>(
      norms.as<double>(), kept.as<int>(), w, mask, outer, slices, inner, p);
  check_launch("slice_norms_kernel");
  std::vector<double> host_norms(static_cast<size_t>(slices));
  std::vector<int> host_kept(static_cast<size_t>(slices));
  copy_to_host(host_norms.data(), norms.as<void>(), host_norms.size() * sizeof(double));
  copy_to_host(host_kept.data(), kept.as<void>(), host_kept.size() * sizeof(int));
  const std::vector<int64_t> order = weakest_slices(host_norms, host_kept, k);  // as the CPU
  DeviceScratch chosen(k * sizeof(int64_t));
  copy_from_host(chosen.as<void>(), order.data(), order.size() * sizeof(int64_t));
  zero_slices_kernel<<<grid_for(k * outer * inner, 256), 256, 0, t_stream>>>(
      mask, chosen.as<int64_t>(), k, outer, slices, inner);
  check_launch("zero_slices_kernel");
}

void CudaBackend::prune_nm(uint8_t* mask, const float* w, int64_t groups, int n, int m) {
  nm_kernel<<<grid_for(groups, 256), 256, 0, t_stream>>>(mask, w, groups, n, m);
  check_launch("nm_kernel");
}

}  // namespace nnops::detail
