// The one ranking rule of structured pruning, for every backend: among the slices still kept,
// the k with the smallest norms (norms in double, NaN last), ties by the lower slice index.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

namespace nnops::detail {

// kept[s] != 0 for a slice still kept. Returns the k slices to prune (any order).
template <class Flag>
std::vector<int64_t> weakest_slices(const std::vector<double>& norms, const std::vector<Flag>& kept,
                                    int64_t k) {
  std::vector<int64_t> order;
  order.reserve(norms.size());
  for (size_t s = 0; s < norms.size(); ++s)
    if (kept[s]) order.push_back(static_cast<int64_t>(s));
  auto lower = [&](int64_t a, int64_t b) {
    const double na = norms[a], nb = norms[b];
    if (std::isnan(na) != std::isnan(nb)) return std::isnan(nb);
    if (!std::isnan(na) && na != nb) return na < nb;
    return a < b;
  };
  if (k < static_cast<int64_t>(order.size()))
    std::nth_element(order.begin(), order.begin() + k, order.end(), lower);
  order.resize(static_cast<size_t>(std::min<int64_t>(k, static_cast<int64_t>(order.size()))));
  return order;
}

}  // namespace nnops::detail
