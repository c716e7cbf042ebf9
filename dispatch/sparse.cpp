// SparseMatrix: compression and decompression (on the host; the arrays then live on the weight's
// device), and validation and dispatch for the linear layer on compressed weights.
#include "nnops/sparse.hpp"

#include <algorithm>
#include <mutex>
#include <string>
#include <vector>

#include "backend.hpp"
#include "check.hpp"
#include "nnops/detail/sparse_layout.hpp"
#include "nnops/tensor_ops.hpp"
#include "widen.hpp"

namespace nnops {

namespace detail {

// The pattern's transpose for the CPU backward, never stored in checkpoints. CSR: entry e of
// column c (rows increasing) is at row rows[e] and stored slot slots[e] (eight bytes per kept
// entry). NM24: for each group q of four columns, its rows by block of kNm24RowBlock rows, then
// by 4-bit code, rows increasing (see SparseView::group_rows).
struct SparseColumnIndex {
  std::once_flag built;
  std::vector<int64_t> ptr;  // [cols + 1]
  std::vector<int32_t> rows, slots;
  std::vector<int32_t> group_rows, group_start;
};

}  // namespace detail

size_t SparseMatrix::bytes() const {
  size_t total = 0;
  for (const Tensor* t : {&values_, &metadata_, &row_ptr_, &col_})
    if (t->defined()) total += t->nbytes();
  return total;
}

namespace {

// A host F32 copy of a floating tensor (exact for BF16).
std::vector<float> host_floats(const Tensor& t) {
  Tensor f = Tensor::empty(t.shape(), DType::F32, Device::CPU);
  if (t.dtype() == DType::F32) {
    copy(f, t);
  } else {
    Tensor h = t.to(Device::CPU);
    cast(f, h);
  }
  return f.to_vector<float>();
}

// Host values to a tensor of `dtype` on `device`.
Tensor to_tensor(const std::vector<float>& v, const Shape& shape, DType dtype, Device device) {
  Tensor f = Tensor::from_vector(v, shape, Device::CPU);
  if (dtype == DType::F32) return f.to(device);
  Tensor c = Tensor::empty(shape, dtype, Device::CPU);
  cast(c, f);
  return c.to(device);
}

}  // namespace

SparseMatrix compress(const Tensor& w, const Tensor& mask, SparseFormat format) {
  const char* fn = "nnops::compress";
  return detail::guarded(fn, [&]() -> SparseMatrix {
    detail::ArgCheck check(fn);
    check.floating("w", w).ndim("w", w, 2).tensor("mask", mask, DType::U8);
    check.same_shape("w", w, "mask", mask);
    if (format != SparseFormat::NM24 && format != SparseFormat::CSR)
      check.fail_with("format ", static_cast<int>(format), " is not NM24 or CSR");
    const int64_t out = w.dim(0), in = w.dim(1);
    if (format == SparseFormat::NM24 && in % 4 != 0)
      check.fail_with("w is ", shape_to_string(w.shape()), ": NM24 needs in a multiple of 4");
    const std::vector<float> wv = host_floats(w);
    const std::vector<uint8_t> mv = mask.to(Device::CPU).to_vector<uint8_t>();
    SparseMatrix s;
    s.by_column_ = std::make_shared<detail::SparseColumnIndex>();
    s.format_ = format;
    s.rows_ = out;
    s.cols_ = in;
    if (format == SparseFormat::NM24) {
      const int64_t groups = in / 4, meta_cols = (groups + 1) / 2;
      std::vector<float> values(static_cast<size_t>(out * in / 2), 0.0f);
      std::vector<uint8_t> meta(static_cast<size_t>(out * meta_cols), 0);
      for (int64_t o = 0; o < out; ++o) {
        for (int64_t g = 0; g < groups; ++g) {
          int kept = 0, pos[2] = {0, 1};
          for (int j = 0; j < 4; ++j) {
            if (mv[o * in + 4 * g + j] == 0) continue;
            if (kept == 2) {
              check.fail_with("mask row ", o, ", group ", g, " (columns ", 4 * g, "-", 4 * g + 3,
                              ") keeps more than 2 of 4: not a 2:4 mask");
            }
            pos[kept] = j;
            values[o * in / 2 + 2 * g + kept] = wv[o * in + 4 * g + j];
            ++kept;
          }
          // Kept pairs have p0 < p1; an unused slot (value 0) is marked by the order instead:
          // one kept at p is (p, p), none kept is (3, 2), so gradients skip those slots.
          if (kept == 1) pos[1] = pos[0];
          if (kept == 0) pos[0] = 3, pos[1] = 2;
          s.nnz_ += kept;
          meta[o * meta_cols + g / 2] |=
              static_cast<uint8_t>((pos[0] | pos[1] << 2) << (4 * (g % 2)));
        }
      }
      s.values_ = to_tensor(values, {out, in / 2}, w.dtype(), w.device());
      s.metadata_ = Tensor::from_vector(meta, {out, meta_cols}, w.device());
    } else {
      std::vector<int64_t> row_ptr(static_cast<size_t>(out + 1), 0);
      std::vector<int32_t> col;
      std::vector<float> values;
      if (in > INT32_MAX) check.fail_with("w has ", in, " columns; CSR columns are I32");
      for (int64_t o = 0; o < out; ++o) {
        for (int64_t c = 0; c < in; ++c) {
          if (mv[o * in + c] == 0) continue;
          col.push_back(static_cast<int32_t>(c));
          values.push_back(wv[o * in + c]);
        }
        row_ptr[o + 1] = static_cast<int64_t>(col.size());
      }
      s.nnz_ = static_cast<int64_t>(col.size());
      s.row_ptr_ = Tensor::from_vector(row_ptr, {out + 1}, w.device());
      s.col_ = Tensor::from_vector(col, {s.nnz_}, w.device());
      s.values_ = to_tensor(values, {s.nnz_}, w.dtype(), w.device());
    }
    return s;
  });
}

SparseMatrix SparseMatrix::from_nm24(Tensor values, Tensor metadata, int64_t cols) {
  const char* fn = "nnops::SparseMatrix::from_nm24";
  return detail::guarded(fn, [&]() -> SparseMatrix {
    detail::ArgCheck check(fn);
    check.floating("values", values).ndim("values", values, 2);
    check.tensor("metadata", metadata, DType::U8).ndim("metadata", metadata, 2);
    if (cols < 0 || cols % 4 != 0) check.fail_with("cols is ", cols, ", not a multiple of 4");
    const int64_t rows = values.dim(0);
    check.shape_is("values", values, {rows, cols / 2});
    check.shape_is("metadata", metadata, {rows, (cols / 4 + 1) / 2});
    SparseMatrix s;
    s.by_column_ = std::make_shared<detail::SparseColumnIndex>();
    s.format_ = SparseFormat::NM24;
    s.rows_ = rows;
    s.cols_ = cols;
    const auto meta = metadata.to(Device::CPU).to_vector<uint8_t>();
    const int64_t groups = cols / 4, meta_cols = detail::nm24_metadata_cols(cols);
    for (int64_t o = 0; o < rows; ++o) {
      for (int64_t g = 0; g < groups; ++g) {
        const detail::Nm24Group group = detail::nm24_group(meta.data() + o * meta_cols, g);
        s.nnz_ += group.used0 + group.used1;
      }
    }
    s.values_ = std::move(values);
    s.metadata_ = std::move(metadata);
    return s;
  });
}

void decompress(const SparseMatrix& s, Tensor& w, Tensor* mask) {
  const char* fn = "nnops::decompress";
  detail::guarded(fn, [&] {
    detail::ArgCheck check(fn);
    if (!s.defined()) check.fail("the SparseMatrix is empty (default-constructed or moved from)");
    check.floating_output("w", w).shape_is("w", w, {s.rows(), s.cols()});
    if (mask) check.output("mask", *mask, DType::U8).shape_is("mask", *mask, {s.rows(), s.cols()});
    check.no_alias("mask", mask, "w", w);
    for (const Tensor* t : {static_cast<const Tensor*>(&w), static_cast<const Tensor*>(mask)}) {
      if (t && t->device() != s.device()) {
        check.fail_with(t == &w ? "w" : "mask", " is on ", to_string(t->device()),
                        " but the SparseMatrix is on ", to_string(s.device()));
      }
    }
    const std::vector<float> values = host_floats(s.values());
    std::vector<float> dense(static_cast<size_t>(s.rows() * s.cols()), 0.0f);
    std::vector<uint8_t> kept(mask ? dense.size() : 0, 0);
    const int64_t in = s.cols();
    if (s.format() == SparseFormat::NM24) {
      const std::vector<uint8_t> meta = s.metadata().to(Device::CPU).to_vector<uint8_t>();
      const int64_t groups = in / 4, meta_cols = detail::nm24_metadata_cols(in);
      for (int64_t o = 0; o < s.rows(); ++o) {
        for (int64_t g = 0; g < groups; ++g) {
          const detail::Nm24Group group = detail::nm24_group(meta.data() + o * meta_cols, g);
          const size_t at = static_cast<size_t>(o * in + 4 * g);
          // Unused slots hold 0 (adding it changes nothing) and are not kept.
          dense[at + group.p0] += values[o * in / 2 + 2 * g];
          dense[at + group.p1] += values[o * in / 2 + 2 * g + 1];
          if (mask && group.used0) kept[at + group.p0] = 1;
          if (mask && group.used1) kept[at + group.p1] = 1;
        }
      }
    } else {
      const auto row_ptr = s.row_ptr().to(Device::CPU).to_vector<int64_t>();
      const auto col = s.col().to(Device::CPU).to_vector<int32_t>();
      for (int64_t o = 0; o < s.rows(); ++o) {
        for (int64_t e = row_ptr[o]; e < row_ptr[o + 1]; ++e) {
          dense[o * in + col[e]] = values[e];
          if (mask) kept[o * in + col[e]] = 1;
        }
      }
    }
    Tensor result = to_tensor(dense, {s.rows(), s.cols()}, w.dtype(), w.device());
    Tensor mask_result;
    if (mask) mask_result = Tensor::from_vector(kept, {s.rows(), s.cols()}, mask->device());
    copy(w, result);
    if (mask) copy(*mask, mask_result);
  });
}

const detail::SparseColumnIndex* SparseMatrix::column_index() const {
  if (!by_column_ || device() != Device::CPU) return nullptr;
  detail::SparseColumnIndex& index = *by_column_;
  std::call_once(index.built, [&] {
    if (rows_ > INT32_MAX || (format_ == SparseFormat::NM24 ? values_.numel() : nnz_) > INT32_MAX)
      throw Error("nnops::sparse_linear_backward: more than 2^31 rows or slots in a CPU matrix");
    if (format_ == SparseFormat::NM24) {
      // A counting sort of each group's rows by (row block, code).
      const uint8_t* meta = metadata_.numel() ? metadata_.data<uint8_t>() : nullptr;
      const int64_t groups = cols_ / 4, meta_cols = detail::nm24_metadata_cols(cols_);
      const int64_t blocks = (rows_ + detail::kNm24RowBlock - 1) / detail::kNm24RowBlock;
      const int64_t keys = blocks * 16;
      std::vector<int32_t> group_rows(static_cast<size_t>(groups * rows_));
      std::vector<int32_t> group_start(static_cast<size_t>(groups * (keys + 1)), 0);
      std::vector<int32_t> next(static_cast<size_t>(keys));
      auto key = [&](int64_t o, int64_t q) {
        return (o / detail::kNm24RowBlock) * 16 + detail::nm24_code(meta + o * meta_cols, q);
      };
      for (int64_t q = 0; q < groups; ++q) {
        int32_t* start = group_start.data() + q * (keys + 1);
        for (int64_t o = 0; o < rows_; ++o) ++start[key(o, q) + 1];
        for (int64_t k = 0; k < keys; ++k) start[k + 1] += start[k];
        std::copy(start, start + keys, next.begin());
        for (int64_t o = 0; o < rows_; ++o)
          group_rows[static_cast<size_t>(q * rows_ + next[key(o, q)]++)] = static_cast<int32_t>(o);
      }
      index.group_rows = std::move(group_rows);
      index.group_start = std::move(group_start);
      return;
    }
    // CSR: a counting sort of the entries by column; rows are visited in order, so each
    // column's entries come out with rows increasing.
    std::vector<int64_t> ptr(static_cast<size_t>(cols_ + 1), 0);
    std::vector<int32_t> rows(static_cast<size_t>(nnz_)), slots(static_cast<size_t>(nnz_));
    const int64_t* row_ptr = row_ptr_.data<int64_t>();
    const int32_t* col = col_.numel() ? col_.data<int32_t>() : nullptr;
    for (int64_t e = 0; e < nnz_; ++e) ++ptr[col[e] + 1];
    for (int64_t c = 0; c < cols_; ++c) ptr[c + 1] += ptr[c];
    std::vector<int64_t> next(ptr.begin(), ptr.end() - 1);
    for (int64_t o = 0; o < rows_; ++o) {
      for (int64_t e = row_ptr[o]; e < row_ptr[o + 1]; ++e) {
        const int64_t at = next[col[e]]++;
        rows[at] = static_cast<int32_t>(o);
        slots[at] = static_cast<int32_t>(e);
      }
    }
    index.ptr = std::move(ptr);
    index.rows = std::move(rows);
    index.slots = std::move(slots);
  });
  return &index;
}

namespace {

// The backend's view of a compressed weight whose values are v32 (F32).
detail::SparseView sparse_view(const SparseMatrix& w, const Tensor& v32) {
  const bool nm24 = w.format() == SparseFormat::NM24;
  return detail::SparseView{nm24,
                            w.rows(),
                            w.cols(),
                            v32.numel(),
                            v32.numel() ? v32.data<float>() : nullptr,
                            nm24 && w.metadata().numel() ? w.metadata().data<uint8_t>() : nullptr,
                            nm24 ? nullptr : w.row_ptr().data<int64_t>(),
                            !nm24 && w.col().numel() ? w.col().data<int32_t>() : nullptr,
                            nm24 && w.nnz() < v32.numel()};
}

const float* data_or_null(const Tensor* t) {
  return t && t->numel() ? t->data<float>() : nullptr;
}
float* data_or_null(Tensor* t) {
  return t && t->numel() ? t->data<float>() : nullptr;
}

// x is [N, w.cols()]; returns N.
int64_t check_input(detail::ArgCheck& check, const Tensor& x, const SparseMatrix& w) {
  if (!w.defined()) check.fail("w is an empty SparseMatrix");
  check.floating("x", x).ndim("x", x, 2).floating("w.values", w.values());
  if (x.dim(1) != w.cols()) {
    check.fail_with("x is ", shape_to_string(x.shape()), " but w is [", w.rows(), ", ", w.cols(),
                    "] (x must be [N, ", w.cols(), "])");
  }
  return x.dim(0);
}

}  // namespace

void sparse_linear_forward(const Tensor& x, const SparseMatrix& w, const Tensor* bias, Tensor& y) {
  const char* fn = "nnops::sparse_linear_forward";
  detail::guarded(fn, [&] {
    detail::ArgCheck check(fn);
    const int64_t n = check_input(check, x, w);
    if (bias) check.floating("bias", *bias).shape_is("bias", *bias, {w.rows()});
    check.floating_output("y", y).shape_is("y", y, {n, w.rows()});
    check.no_alias("y", &y, "x", x).no_alias("y", &y, "bias", bias);
    check.no_alias("y", &y, "w.values", w.values());
    if (y.numel() == 0) return;
    check.run([&](detail::Backend& be) {
      // BF16 operands of a 2:4 weight: the backend's sparse tensor-core kernel, where it has one.
      const bool bf16_nm24 = w.format() == SparseFormat::NM24 && x.dtype() == DType::BF16 &&
                             w.values().dtype() == DType::BF16 && y.dtype() == DType::F32 &&
                             (!bias || bias->dtype() == DType::F32);
      if (bf16_nm24 && be.sparse_forward_nm24_bf16(
                           y.data<float>(), static_cast<const uint16_t*>(x.raw_data()),
                           static_cast<const uint16_t*>(w.values().raw_data()),
                           w.metadata().numel() ? w.metadata().data<uint8_t>() : nullptr, w.rows(),
                           w.cols(), bias ? bias->data<float>() : nullptr, n)) {
        return;
      }
      detail::F32Stand f32;
      const Tensor& x32 = f32.in(x);
      const Tensor& v32 = f32.in(w.values());
      const Tensor* b32 = bias ? &f32.in(*bias) : nullptr;
      Tensor& y32 = f32.out(y);
      be.sparse_linear_forward(y32.data<float>(), data_or_null(&x32), sparse_view(w, v32),
                               data_or_null(b32), n);
      f32.finish();
    });
  });
}

void sparse_linear_backward(const Tensor& x, const SparseMatrix& w, const Tensor& dy, Tensor* dx,
                            Tensor* dvalues, Tensor* db) {
  const char* fn = "nnops::sparse_linear_backward";
  detail::guarded(fn, [&] {
    detail::ArgCheck check(fn);
    const int64_t n = check_input(check, x, w);
    check.floating("dy", dy).shape_is("dy", dy, {n, w.rows()});
    if (dx) check.floating_output("dx", *dx).shape_is("dx", *dx, {n, w.cols()});
    if (dvalues) {
      check.floating_output("dvalues", *dvalues).shape_is("dvalues", *dvalues, w.values().shape());
    }
    if (db) check.floating_output("db", *db).shape_is("db", *db, {w.rows()});
    const std::pair<const char*, Tensor*> outputs[] = {
        {"dx", dx}, {"dvalues", dvalues}, {"db", db}};
    for (const auto& [name, out] : outputs) {
      if (!out) continue;
      check.no_alias(name, out, "x", x).no_alias(name, out, "dy", dy);
      check.no_alias(name, out, "w.values", w.values());
      for (const auto& [other_name, other] : outputs) {
        if (other && other != out) check.no_alias(name, out, other_name, *other);
      }
    }
    if ((!dx || dx->numel() == 0) && (!dvalues || dvalues->numel() == 0) &&
        (!db || db->numel() == 0)) {
      return;
    }
    check.run([&](detail::Backend& be) {
      detail::F32Stand f32;
      const Tensor& x32 = f32.in(x);
      const Tensor& dy32 = f32.in(dy);
      const Tensor& v32 = f32.in(w.values());
      Tensor* dx32 = f32.out(dx);
      Tensor* dv32 = f32.out(dvalues);
      Tensor* db32 = f32.out(db);
      detail::SparseView view = sparse_view(w, v32);
      if (dx32 && be.device() == Device::CPU) {
        if (const detail::SparseColumnIndex* index = w.column_index()) {
          view.col_ptr = index->ptr.data();
          view.col_rows = index->rows.data();
          view.col_slots = index->slots.data();
          view.group_rows = index->group_rows.data();
          view.group_start = index->group_start.data();
        }
      }
      be.sparse_linear_backward(data_or_null(dx32), data_or_null(dv32), data_or_null(db32),
                                data_or_null(&x32), view, data_or_null(&dy32), n);
      f32.finish();
    });
  });
}

}  // namespace nnops
