// The dense products of the CPU backend: matmul and the linear layer's forward and backward,
// with BF16 outputs summed in FP32 staging and rounded once, and the bias gradient's column sums.
#include <algorithm>
#include <cstring>

#include "../cpu_backend.hpp"
#include "blocking.hpp"
#include "driver.hpp"
#include "nnops/detail/bf16_math.hpp"

namespace nnops::detail {

namespace {

// The calling thread's F32 staging for BF16 outputs, kept between calls (a training step stages
// every BF16 product); one staging at a time.
ScratchBuffer& staging_scratch() {
  thread_local ScratchBuffer scratch;
  return scratch;
}

// Grows the staging scratch for a BF16 output of `count` elements (F32 outputs need none).
void reserve_staging(View out, int64_t count) {
  if (out.data && out.dtype != DType::F32) staging_scratch().get(count);
}

// An F32 scratch matrix for a BF16 output: the product is summed into it in FP32 and rounded
// once at the end, like every other op that writes BF16.
class F32Staging {
 public:
  F32Staging(View out, int64_t count, bool read_old) : out_(out), count_(count) {
    if (out.dtype == DType::F32) {
      data_ = static_cast<float*>(out.data);
      return;
    }
    staged_ = true;
    data_ = staging_scratch().get(count);
    if (read_old) cpu_backend().cast(data_, DType::F32, out.data, out.dtype, count);
  }
  float* data() const { return data_; }
  // Writes the staged values to the output (rounding to BF16 where it is BF16).
  void finish() const {
    if (staged_) cpu_backend().cast(out_.data, out_.dtype, data_, DType::F32, count_);
  }

 private:
  View out_;
  int64_t count_;
  bool staged_ = false;
  float* data_ = nullptr;
};

}  // namespace

void CpuBackend::gemm(View c, ConstView a, ConstView b, int64_t m, int64_t n, int64_t k,
                      const GemmOptions& options) {
  const F32Staging out(c, m * n, options.beta != 0.0f);
  gemm_f32_out(options.trans_a, options.trans_b, m, n, k, options.alpha, a.data, b.data, a.dtype,
               options.beta, out.data());
  out.finish();
}

void CpuBackend::linear_forward(View y, ConstView x, ConstView w, ConstView bias, int64_t rows,
                                int64_t in, int64_t out) {
  const F32Staging staged(y, rows * out, false);
  float* const y32 = staged.data();
  // Every allocation before the first write of y.
  gemm_f32_out(false, true, rows, out, in, 1.0f, x.data, w.data, x.dtype, 1.0f, y32, true);
  // Broadcast the bias into y, then accumulate x * w^T on top of it (beta = 1).
  if (bias.data) {
    const bool bf16 = bias.dtype == DType::BF16;
#pragma omp parallel for if (rows * out >= kParallelThreshold)
    for (int64_t r = 0; r < rows; ++r) {
      float* yr = y32 + r * out;
      if (!bf16) {
        std::memcpy(yr, bias.data, sizeof(float) * out);
      } else {
        const uint16_t* b16 = static_cast<const uint16_t*>(bias.data);
        for (int64_t j = 0; j < out; ++j) yr[j] = bf16_bits_to_float(b16[j]);
      }
    }
  }
  gemm_f32_out(false, true, rows, out, in, 1.0f, x.data, w.data, x.dtype, bias.data ? 1.0f : 0.0f,
               y32);
  staged.finish();
}

void CpuBackend::linear_backward(View dx, View dw, View db, ConstView x, ConstView w, ConstView dy,
                                 int64_t rows, int64_t in, int64_t out) {
  // Every allocation (packing and staging buffers of both products) before the first write.
  if (dx.data) {
    reserve_staging(dx, rows * in);
    gemm_f32_out(false, false, rows, in, out, 1.0f, dy.data, w.data, dy.dtype, 0.0f, nullptr, true);
  }
  reserve_staging(dw, out * in);
  gemm_f32_out(true, false, out, in, rows, 1.0f, dy.data, x.data, dy.dtype, 0.0f, nullptr, true);
  if (dx.data) {  // dx[rows, in] = dy[rows, out] * w[out, in]
    const F32Staging staged(dx, rows * in, false);
    gemm_f32_out(false, false, rows, in, out, 1.0f, dy.data, w.data, dy.dtype, 0.0f, staged.data());
    staged.finish();
  }
  {  // dw[out, in] = dy^T[out, rows] * x[rows, in]
    const F32Staging staged(dw, out * in, false);
    gemm_f32_out(true, false, out, in, rows, 1.0f, dy.data, x.data, dy.dtype, 0.0f, staged.data());
    staged.finish();
  }
  if (db.data) {
    // Column sums of dy, accumulated in double so long batches lose nothing, then rounded to
    // float (and from there to BF16 where db is BF16). Rows are walked in order inside each
    // thread's block of columns: reads stay sequential, and every column sums its rows in the
    // same order whatever the thread count (the same bits).
    const bool dy_bf16 = dy.dtype == DType::BF16, db_bf16 = db.dtype == DType::BF16;
    const float* dy32 = static_cast<const float*>(dy.data);
    const uint16_t* dy16 = static_cast<const uint16_t*>(dy.data);
    constexpr int64_t kColumns = 256;  // a block's double sums stay in L1
    const int64_t blocks = (out + kColumns - 1) / kColumns;
#pragma omp parallel for if (rows * out >= kParallelThreshold)
    for (int64_t blk = 0; blk < blocks; ++blk) {
      const int64_t o0 = blk * kColumns, width = std::min(kColumns, out - o0);
      double sum[kColumns] = {};
      for (int64_t r = 0; r < rows; ++r) {
        if (dy_bf16) {
          const uint16_t* row = dy16 + r * out + o0;
          for (int64_t o = 0; o < width; ++o) sum[o] += bf16_bits_to_float(row[o]);
        } else {
          const float* row = dy32 + r * out + o0;
#pragma omp simd
          for (int64_t o = 0; o < width; ++o) sum[o] += row[o];
        }
      }
      for (int64_t o = 0; o < width; ++o) {
        const float total = static_cast<float>(sum[o]);
        if (db_bf16) {
          static_cast<uint16_t*>(db.data)[o0 + o] = float_to_bf16_bits(total);
        } else {
          static_cast<float*>(db.data)[o0 + o] = total;
        }
      }
    }
  }
}

}  // namespace nnops::detail
