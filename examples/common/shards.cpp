// Tensor-parallel shards (see shards.hpp).
#include "shards.hpp"

#include <stdexcept>
#include <string>

namespace shards {

nnops::Tensor take(const nnops::Tensor& whole, int64_t outer, int rank, int ranks) {
  const int64_t n = whole.numel();
  if (outer <= 0 || n % (outer * ranks) != 0) {
    throw std::invalid_argument("shards::take: " + whole.describe() + " does not split into " +
                                std::to_string(outer) + " x " + std::to_string(ranks) + " blocks");
  }
  const int64_t inner = n / (outer * ranks);
  nnops::Tensor as_blocks = whole.reshape({outer, ranks, inner});
  nnops::Tensor by_rank =
      nnops::Tensor::empty({ranks, outer, inner}, whole.dtype(), whole.device());
  nnops::permute(as_blocks, {1, 0, 2}, by_rank);
  return by_rank.narrow(rank, 1).clone().reshape({outer * inner});
}

nnops::Tensor assemble(const nnops::Tensor& stacked, int64_t outer, int ranks) {
  const int64_t n = stacked.numel();
  const int64_t inner = n / (outer * ranks);
  nnops::Tensor whole =
      nnops::Tensor::empty({outer, ranks, inner}, stacked.dtype(), stacked.device());
  nnops::permute(stacked.reshape({ranks, outer, inner}), {1, 0, 2}, whole);
  return whole.reshape({n});
}

}  // namespace shards
