// c = alpha * a b^T + beta * c for a short a (a batch: [m, k], m <= kShortNtRows) and a b of many
// rows ([n, k]: a layer's weight, linear_forward's x w^T), computed as c^T = b a^T. The general
// driver packs op(b) = b^T into 32-wide panels, a transposing pass over the whole weight on every
// call that took 22-25% of the batch-64 forward products (perf, Intel Xeon). Here b's rows are
// the micro-kernel's A side, read where they lie (12 rows, each contiguous in k), a^T is packed
// once (64 x 2000: 0.5 MiB, shared by the threads), and c^T goes through a scratch transposed
// into c at the end. Each element sums over k in order with one fused multiply-add each and the
// depth blocks are added as the general driver adds them: the same bits.
#include "short_nt.hpp"

#include <omp.h>

#include <algorithm>

#include "../transpose.hpp"
#include "blocking.hpp"

namespace nnops::detail {

void gemm_short_nt(int64_t m, int64_t n, int64_t k, float alpha, const float* a, const float* b,
                   float beta, float* c, bool reserve_only, RowsKernel kernel, int64_t kc) {
  constexpr int64_t kPanel = kWideNR, kRows = kWideMR;
  const int64_t m_pad = (m + kPanel - 1) / kPanel * kPanel, panels = m_pad / kPanel;
  // a^T as panels of [k][32] (the batch rows past m zeros) and c^T [n, m_pad]: the calling
  // thread's, kept between calls and grown here, before anything is written.
  thread_local ScratchBuffer at_buffer, ct_buffer;
  float* const at = at_buffer.get(k * m_pad);
  float* const ct = ct_buffer.get(n * m_pad);
  if (reserve_only) return;
  const int threads =
      m * n * k >= kParallelThreshold && !omp_in_parallel() ? omp_get_max_threads() : 1;
  const int64_t blocks = (n + kRows - 1) / kRows;
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), parts = omp_get_num_threads();
    // Each thread packs its share of the depths of every panel ...
    const int64_t p0 = k * t / parts, p1 = k * (t + 1) / parts;
    for (int64_t q = 0; q < panels && p0 < p1; ++q) {
      float* panel = at + q * k * kPanel;
      const int64_t rows = std::min(kPanel, m - q * kPanel);
      transpose_strided(panel + p0 * kPanel, kPanel, a + q * kPanel * k + p0, k, rows, p1 - p0,
                        true);
      if (rows < kPanel)
        for (int64_t p = p0; p < p1; ++p)
          std::fill(panel + p * kPanel + rows, panel + (p + 1) * kPanel, 0.0f);
    }
#pragma omp barrier
    // ... then computes its own blocks of 12 rows of c^T (12 columns of c), depth blocks in order.
    const int64_t b0 = blocks * t / parts, b1 = blocks * (t + 1) / parts;
    const int64_t j0 = std::min(n, b0 * kRows), j1 = std::min(n, b1 * kRows);
    if (beta != 0.0f && j0 < j1)  // c's old values for the first depth block's beta
      transpose_strided(ct + j0 * m_pad, m_pad, c + j0, n, m, j1 - j0, true);
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int mr = static_cast<int>(std::min(kRows, n - blk * kRows));
      for (int64_t pc = 0; pc < k; pc += kc) {
        const int64_t depth = std::min(kc, k - pc);
        const float beta_here = pc == 0 ? beta : 1.0f;  // later depth blocks accumulate
        for (int64_t q = 0; q < panels; ++q) {
          kernel(depth, b + blk * kRows * k + pc, k, at + q * k * kPanel + pc * kPanel,
                 ct + blk * kRows * m_pad + q * kPanel, m_pad, alpha, beta_here, mr);
        }
      }
    }
    if (j0 < j1) transpose_strided(c + j0, n, ct + j0 * m_pad, m_pad, j1 - j0, m, true);
  }
}

}  // namespace nnops::detail
