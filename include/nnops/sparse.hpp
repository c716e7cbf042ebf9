// Pruned weights in compressed form, and the linear layer on them, so that pruning cuts storage
// and compute. A SparseMatrix holds an [out, in] weight and its mask as
//   NM24: along `in`, each group of 4 keeps at most 2 values: values [out, in/2] (the group's
//         kept values in position order, a zero where a group keeps fewer than 2) and metadata
//         U8 [out, ceil(in/8)], 4 bits per group (bits 0-1 and 2-3: the two positions p0, p1,
//         low nibble first), the layout cuSPARSELt's 2:4 format describes. Kept pairs have
//         p0 < p1; a group keeping one value at p stores (p, p) and its second slot is unused, a
//         group keeping none stores (3, 2) and both slots are unused (unused slots hold 0 and
//         get no gradient);
//   CSR:  row_ptr I64 [out + 1], col I32 [nnz], values [nnz], columns increasing in a row.
// Values are F32 or BF16 (the weight's dtype). Everything works on every device (README's
// "Sparse weights" lists the kernels of each backend).
#pragma once

#include <cstdint>
#include <memory>

#include "nnops/tensor.hpp"

namespace nnops {

enum class SparseFormat { NM24, CSR };

namespace detail {
struct SparseColumnIndex;  // the kept entries by column, for the CPU backward (built on first use)
}

class SparseMatrix {
 public:
  SparseMatrix() = default;
  SparseMatrix(SparseMatrix&&) = default;
  SparseMatrix& operator=(SparseMatrix&&) = default;

  SparseFormat format() const { return format_; }
  int64_t rows() const { return rows_; }  // out
  int64_t cols() const { return cols_; }  // in
  Device device() const { return values_.device(); }
  DType dtype() const { return values_.dtype(); }
  bool defined() const { return values_.defined(); }
  // The stored values (an optimizer may step them in place).
  Tensor& values() { return values_; }
  const Tensor& values() const { return values_; }
  const Tensor& metadata() const { return metadata_; }  // NM24
  const Tensor& row_ptr() const { return row_ptr_; }    // CSR
  const Tensor& col() const { return col_; }            // CSR
  // Kept entries (NM24: the mask's kept entries; CSR: the stored ones).
  int64_t nnz() const { return nnz_; }
  // Bytes of every array the format stores.
  size_t bytes() const;
  // An NM24 matrix of `cols` columns from arrays stored earlier (values [out, cols/2] F32 or
  // BF16, metadata U8 [out, ceil(cols/8)], on one device; every 4-bit code is valid), e.g. read
  // back from a checkpoint. Throws nnops::Error on shapes or dtypes that do not fit.
  static SparseMatrix from_nm24(Tensor values, Tensor metadata, int64_t cols);

  // The kept entries of a CPU matrix listed by column (the pattern's transpose, which the CPU
  // backward's dx walks; for NM24, each group's rows by block and 2:4 code), built on the first
  // call from any thread and kept; null elsewhere.
  const detail::SparseColumnIndex* column_index() const;

 private:
  friend SparseMatrix compress(const Tensor& w, const Tensor& mask, SparseFormat format);
  SparseFormat format_ = SparseFormat::CSR;
  int64_t rows_ = 0, cols_ = 0, nnz_ = 0;
  Tensor values_, metadata_, row_ptr_, col_;
  std::shared_ptr<detail::SparseColumnIndex> by_column_;
};

// From a dense weight [out, in] and its U8 mask (1 keep): NM24 refuses `in` not a multiple of 4
// and a group keeping more than 2, naming the first such group.
SparseMatrix compress(const Tensor& w, const Tensor& mask, SparseFormat format);
// The dense weight back, exactly (pruned entries 0), and optionally its U8 mask (1 at the
// stored entries: NM24's used slots, CSR's entries).
void decompress(const SparseMatrix& s, Tensor& w, Tensor* mask = nullptr);
// y = x w^T + bias, with linear_forward's shapes and semantics (w as the dense [out, in]).
// Pruned positions, NM24's unused slots among them, are skipped rather than multiplied by 0: a
// NaN or inf of x there does not reach y. The exception is the opt-in sparse tensor-core path
// (CUDA, BF16, NNOPS_CUDA_SPARSE=mma*), which multiplies both slots of every group, an unused
// slot's 0 by x at the position its code names.
void sparse_linear_forward(const Tensor& x, const SparseMatrix& w, const Tensor* bias, Tensor& y);
// The backward pass of sparse_linear_forward, given dy [N, out]: dx [N, in] = dy w (as
// linear_backward's dx), dvalues (w.values()'s shape) = dy^T x at the stored entries only (0 at
// NM24's unused slots), so that an optimizer stepping w.values() with it trains the pruned
// model without ever giving weight to a pruned position, and db [out] = the column sums of dy.
// Each output may be null; every given one is overwritten.
void sparse_linear_backward(const Tensor& x, const SparseMatrix& w, const Tensor& dy, Tensor* dx,
                            Tensor* dvalues, Tensor* db);

}  // namespace nnops
