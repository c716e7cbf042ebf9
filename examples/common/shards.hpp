// Tensor-parallel shards of the trainers' weights. A weight split over `ranks` ranks is seen as
// [outer, ranks, inner]: rank r holds [outer, inner] = whole[:, r, :]. Rows split: outer = 1
// (or the number of fused row blocks, each split alike), inner = rows / ranks * columns;
// columns split: outer = rows, inner = columns / ranks.
#pragma once

#include <nnops/nnops.hpp>

namespace shards {

// Rank `rank`'s shard of `whole` (F32 or U8), as a flat [outer * inner] tensor on whole's device.
nnops::Tensor take(const nnops::Tensor& whole, int64_t outer, int rank, int ranks);

// The whole from every rank's shard stacked by rank ([ranks, outer, inner], flat): the inverse
// of take, flat [outer * ranks * inner].
nnops::Tensor assemble(const nnops::Tensor& stacked, int64_t outer, int ranks);

}  // namespace shards
