// The 2:4 forward's staged sparse tensor-core kernel (cuda/sparse_mma_staged.cu), beside
// sparse_mma.cu's direct one, which chooses between them.
#pragma once

#include <cstdint>

#include "cuda_backend.hpp"

namespace nnops::detail {

// Whether the staged kernel takes these operands: a depth (cols) that is a multiple of 64,
// 16-byte aligned x and values, 8-byte aligned metadata.
bool sparse_mma_staged_fits(const uint16_t* x, const uint16_t* values, const uint8_t* metadata,
                            int64_t rows, int64_t cols, int64_t n);
// y[n, rows] = x[n, cols] w^T + bias, w the NM24 matrix of `values` and `metadata`; compute
// capability 8.0 or newer. meta_by_rows: the metadata register's second reading (sparse_mma.cu).
void sparse_forward_mma_staged(float* y, const uint16_t* x, const uint16_t* values,
                               const uint8_t* metadata, int64_t rows, int64_t cols,
                               const float* bias, int64_t n, bool meta_by_rows);

}  // namespace nnops::detail
