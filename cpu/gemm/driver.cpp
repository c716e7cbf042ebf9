// CPU GEMM after BLIS / Goto: op(b) is packed into NR-wide panels and op(a) into MR-tall panels
// (edges zero-padded), and an MR x NR register-blocked micro-kernel runs over them, with block
// sizes derived from the cache sizes the OS reports. Micro-kernels, picked at run time: a
// portable 6 x 16 loop nest the compiler vectorizes for baseline x86-64, an AVX2+FMA 6 x 16 one
// in intrinsics whose accumulators stay in registers, and an AVX-512 12 x 32 one
// (cpu/gemm/kernel_wide.cpp). Each thread
// owns a block of c (columns, or rows when c is narrow) and packs what it needs itself, so
// threads never wait on each other inside a product. With beta == 0, c is never read.
#include "driver.hpp"

#include <omp.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "blocking.hpp"
#include "isa.hpp"
#include "kernels.hpp"
#include "pack.hpp"
#include "short_nt.hpp"

namespace nnops::detail {

namespace {

constexpr int kMR = kNarrowMR;
constexpr int kNR = kNarrowNR;
// Products with at most this many rows read a non-transposed F32 b in place (no packing).
constexpr int64_t kInPlaceRows = 256;
// Depth blocks at most this deep write c along its rows (see sgemm_block).
constexpr int64_t kShallowDepth = 64;

// Whether rows of a float matrix n wide lie a multiple of 4 KiB apart: a panel read in place
// then maps every depth row to the same few cache sets and thrashes L1 and L2. Reading 1000
// rows of a panel at a 4 KiB stride ran the 12 x 32 kernel at 75-84 GFLOP/s against 115-117
// packed and 172-176 at a 3-4 KB stride (Intel Xeon, one core); 256 x 1024 x 2048 TN with b
// packed instead of read in place: 219 -> 261 GFLOP/s on two threads.
bool rows_alias_in_cache(int64_t n) {
  return n * static_cast<int64_t>(sizeof(float)) % 4096 == 0;
}

using PackA = void (*)(float*, const void*, bool, int64_t, int64_t, int64_t, int64_t, int64_t,
                       int64_t, int64_t);
using PackTransposed = void (*)(float*, const void*, int64_t, int64_t, int64_t, int64_t, int64_t,
                                int64_t);
using PackRow = void (*)(float*, const void*, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t);

struct SgemmProblem {
  bool trans_a, trans_b;
  int64_t m, n, k;
  float alpha;
  const void* a;  // F32 or BF16, as the packers below read it
  const void* b;
  float beta;
  float* c;
  MicroKernel kernel;
  PackA pack_a;
  PackTransposed pack_transposed;
  PackRow pack_row;
  Blocking blocking;
  bool pairs;                 // BF16 operands packed in depth pairs for the AVX512_BF16 kernels
  bool reserve_only = false;  // grow the packing buffers this product needs, compute nothing
  bool b_in_place = false;    // full panels of a non-transposed F32 b read where they lie
  // The kernel prefetches the panel to the right of one it reads in place (the AVX-512 one).
  bool kernel_prefetches_next_panel = false;
  // The last 1-4 rows against two in-place panels at once (the AVX-512 tiles' kernel; null:
  // each panel's own short tile).
  TailKernel tail64 = nullptr;
};

// The packed panels of op(b) for columns [j0, j0 + nc) and depth [pc, pc + kc).
template <int NR>
void pack_b_block(float* dst, const SgemmProblem& g, int64_t pc, int64_t kc, int64_t j0,
                  int64_t nc) {
  if (g.pairs) {
    for (int64_t jp = 0; jp < (nc + NR - 1) / NR; ++jp)
      pack_b_pairs<NR>(dst, g.b, g.trans_b, g.k, g.n, pc, kc, j0, nc, jp);
  } else if (g.trans_b) {
    for (int64_t jp = 0; jp < (nc + NR - 1) / NR; ++jp) {
      g.pack_transposed(dst, g.b, g.k, pc, kc, j0, nc, jp);
    }
  } else {
    for (int64_t p = 0; p < kc; ++p) g.pack_row(dst, g.b, g.n, pc, kc, j0, nc, p);
  }
}

// One thread's share: c[i0:i1, j0:j1], serially, in MR x NR tiles. Every element's sum runs over
// the same depth blocks in the same order whatever the share, so the bits do not depend on the
// thread count.
// The packing buffers of one thread's share, sized by pack_sizes.
struct PackingBuffers {
  ScratchBuffer a, b;
};

// Floats of packed A and packed B that a share of at most `rows` rows and `cols` columns needs.
// A short block of rows (the batch of a training step) is packed once per depth block and B is
// packed a few panels at a time just before their use, into a buffer that stays in L2: the
// packed B never travels to L3 and back. Taller blocks pack a whole B block for reuse.
template <int MR, int NR>
std::pair<int64_t, int64_t> pack_sizes(const SgemmProblem& g, int64_t rows, int64_t cols) {
  const Blocking& blk = g.blocking;
  const int64_t kc_max = std::min(blk.kc, g.k);
  const int64_t nc_cap = rows <= blk.mc ? kPanelsAtOnce * NR : blk.nc;
  return {std::min(blk.mc, (rows + MR - 1) / MR * MR) * kc_max,
          std::min(nc_cap, (cols + NR - 1) / NR * NR) * kc_max};
}

template <int MR, int NR>
void sgemm_block(const SgemmProblem& g, int64_t i0, int64_t i1, int64_t j0, int64_t j1,
                 PackingBuffers& buffers) {
  const Blocking& blk = g.blocking;
  const int64_t rows = i1 - i0;
  const bool b_per_panel = rows <= blk.mc;
  // Allocated already (run_tiles sized them for any share), so nothing here can throw.
  const auto [a_floats, b_floats] = pack_sizes<MR, NR>(g, rows, j1 - j0);
  float* const a_pack = buffers.a.get(a_floats);
  float* const b_pack = buffers.b.get(b_floats);
  for (int64_t jc = j0; jc < j1; jc += blk.nc) {
    const int64_t nc = std::min(blk.nc, j1 - jc);
    const int64_t b_panels = (nc + NR - 1) / NR;
    for (int64_t pc = 0; pc < g.k; pc += blk.kc) {
      const int64_t kc = std::min(blk.kc, g.k - pc);
      const float beta_here = pc == 0 ? g.beta : 1.0f;  // later depth blocks accumulate
      if (!b_per_panel && !g.b_in_place) pack_b_block<NR>(b_pack, g, pc, kc, jc, nc);
      // A shallow block (the weight gradient over a batch of 64: k = 64) is a stream of c
      // stores, one tile per kc FMAs per element: tiles then go along c's rows (A panel outer),
      // writing c row after row, while the packed B block waits in L2 (it fits: at most half
      // of it). Down the columns (B panel outer, the order for deep blocks, whose B panel is
      // reused from L1 and L2) ran 2000 x 1000 x 64 TN at 284 GFLOP/s, along the rows 306
      // (Intel Xeon, two threads); at kc = 128-256 the two orders ran level.
      const bool rows_outer =
          !b_per_panel && !g.b_in_place && kc <= kShallowDepth && kc * nc <= 2 * blk.mc * blk.kc;
      for (int64_t ic = i0; ic < i1; ic += blk.mc) {
        const int64_t mc = std::min(blk.mc, i1 - ic);
        const int64_t a_panels = (mc + MR - 1) / MR;
        for (int64_t ip = 0; ip < a_panels; ++ip) {
          g.pack_a(a_pack, g.a, g.trans_a, g.m, g.k, ic, mc, pc, kc, ip);
        }
        if (rows_outer) {
          for (int64_t ip = 0; ip < a_panels; ++ip) {
            const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ip * MR));
            for (int64_t jp = 0; jp < b_panels; ++jp) {
              const int64_t col = jc + jp * NR;
              const int nr = static_cast<int>(std::min<int64_t>(NR, jc + nc - col));
              g.kernel(kc, a_pack + ip * MR * kc, b_pack + jp * NR * kc, NR,
                       g.c + (ic + ip * MR) * g.n + col, g.n, g.alpha, beta_here, mr, nr);
            }
          }
          continue;
        }
        // A last tile of 1-4 rows over a b read in place goes once per pair of full panels
        // (64 x 2000 x 1000 NN 283 -> 291 GFLOP/s, Intel Xeon, two threads).
        const int64_t tail_rows = mc - (a_panels - 1) * MR;
        const bool paired_tails = g.tail64 && g.b_in_place && tail_rows <= 4;
        for (int64_t jp = 0; jp < b_panels; ++jp) {
          const int64_t col = jc + jp * NR;
          const int nr = static_cast<int>(std::min<int64_t>(NR, jc + nc - col));
          const bool in_pair = paired_tails && ((jp | 1) + 1) * NR <= nc;
          const float* panel = b_pack + jp * NR * kc;
          int64_t ldb = NR;
          if (g.b_in_place) {
            const float* b_rows = static_cast<const float*>(g.b) + pc * g.n + col;
            // The next panel's rows into L2 while this one computes: read where they lie, its
            // first tile would otherwise wait on L3 for every row. (The AVX-512 kernel does
            // this itself, spread over its depth loop.)
            if (col + NR < jc + nc && !g.kernel_prefetches_next_panel) {
              for (int64_t p = 0; p < kc; ++p) {
                __builtin_prefetch(b_rows + NR + p * g.n, 0, 2);
                __builtin_prefetch(b_rows + NR + NR / 2 + p * g.n, 0, 2);
                __builtin_prefetch(b_rows + 2 * NR - 1 + p * g.n, 0, 2);
              }
            }
            if (nr == NR) {
              panel = b_rows, ldb = g.n;
            } else {  // the edge panel, zero-padded
              for (int64_t p = 0; p < kc; ++p)
                for (int j = 0; j < NR; ++j)
                  b_pack[p * NR + j] = j < nr ? b_rows[p * g.n + j] : 0.0f;
              panel = b_pack;
            }
          } else if (b_per_panel) {
            const int64_t group = jp % kPanelsAtOnce;
            if (group == 0) {
              pack_b_block<NR>(b_pack, g, pc, kc, col, std::min(kPanelsAtOnce * NR, jc + nc - col));
            }
            panel = b_pack + group * NR * kc;
          }
          for (int64_t ip = 0; ip < a_panels; ++ip) {
            const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ip * MR));
            if (in_pair && ip == a_panels - 1) {
              if (jp % 2 == 1)  // the pair's second panel: both are in L2 now
                g.tail64(kc, a_pack + ip * MR * kc, panel - NR, ldb,
                         g.c + (ic + ip * MR) * g.n + col - NR, g.n, g.alpha, beta_here, mr);
              continue;
            }
            g.kernel(kc, a_pack + ip * MR * kc, panel, ldb, g.c + (ic + ip * MR) * g.n + col, g.n,
                     g.alpha, beta_here, mr, nr);
          }
        }
      }
    }
  }
}

// [begin, end) of part `index` of `parts` near-equal shares of `units` units of `unit` each,
// clipped to `limit`.
std::pair<int64_t, int64_t> share(int64_t units, int64_t unit, int64_t limit, int index,
                                  int parts) {
  const int64_t lo = units * index / parts, hi = units * (index + 1) / parts;
  return {std::min(limit, lo * unit), std::min(limit, hi * unit)};
}

// Runs the product in MR x NR tiles with `kernel`: threads own disjoint blocks of c and never
// wait for each other. Columns are split while every thread gets a few panels; a narrow c (n of
// a few panels) is split by rows instead.
template <int MR, int NR>
void run_tiles(SgemmProblem g, MicroKernel kernel) {
  g.kernel = kernel;
#if defined(__x86_64__) && defined(__GNUC__)
  g.kernel_prefetches_next_panel =
      kernel == micro_kernel_avx512 || kernel == micro_kernel_wide_on_avx2;
  if (kernel == micro_kernel_avx512) g.tail64 = micro_kernel_avx512_tail64;
  if (kernel == micro_kernel_wide_on_avx2) g.tail64 = micro_kernel_wide_on_avx2_tail64;
#endif
  g.blocking = blocking_for_caches<MR, NR>();
  // Pair-packed BF16 panels hold two depths per float slot: the same bytes cover twice the depth
  // (half as many passes over c).
  if (g.pairs) g.blocking.kc = std::min<int64_t>(2 * g.blocking.kc, 1024);
  // b read in place streams from memory once per block of rows: one block holds all of them.
  if (g.b_in_place) g.blocking.mc = std::max(g.blocking.mc, (g.m + MR - 1) / MR * MR);
  // Rows a few tiles past mc (a batch of 64 against mc = 60) are one block too: a block of mc
  // and a sliver of 4 rows streamed all of packed B twice, and a share over mc rows packs its
  // whole B block (2 MiB at 500 columns, out of L2) instead of a few panels at a time.
  // 64 x 2000 x 1000 NT: 128-143 -> 160-173 GFLOP/s (AMD EPYC); NN (b in place) unchanged.
  if (g.m <= g.blocking.mc + 2 * MR) {
    g.blocking.mc = std::max(g.blocking.mc, (g.m + MR - 1) / MR * MR);
  }
  // Inside another op's parallel region (attention's blocks) a product runs on its thread alone.
  const int threads =
      g.m * g.n * g.k >= kParallelThreshold && !omp_in_parallel() ? omp_get_max_threads() : 1;
  // The calling thread's buffers, one pair per worker, kept between calls (a fresh 2 MiB
  // allocation per GEMM is an mmap plus page faults, in a training loop's hottest call). They
  // are grown here, before the parallel region: an exception cannot leave an OpenMP region, and
  // running out of memory must leave c untouched. Every share fits the sizes of the whole c.
  thread_local std::vector<PackingBuffers> buffers;
  if (buffers.size() < static_cast<size_t>(threads)) buffers.resize(static_cast<size_t>(threads));
  const auto [a_floats, b_floats] = pack_sizes<MR, NR>(g, g.m, g.n);
  const int64_t b_short = pack_sizes<MR, NR>(g, std::min(g.m, g.blocking.mc), g.n).second;
  for (int t = 0; t < threads; ++t) {
    buffers[t].a.get(a_floats);
    buffers[t].b.get(std::max(b_floats, b_short));  // a row share may pack B per panel
  }
  if (g.reserve_only) return;
  PackingBuffers* const shares = buffers.data();  // the region's workers see the caller's
  if (threads <= 1) {
    sgemm_block<MR, NR>(g, 0, g.m, 0, g.n, shares[0]);
    return;
  }
  // Each thread packs its share of one operand and the whole of the other: splitting rows packs
  // m*k/threads + n*k floats per thread, splitting columns m*k + n*k/threads, so the longer
  // side is split (a 2048-token step's products have m = 2048 against n = 256: splitting their
  // columns packed all of A on every thread, a third of the product's time).
  const int64_t col_panels = (g.n + NR - 1) / NR, row_panels = (g.m + MR - 1) / MR;
  // A b read in place is not packed at all: splitting rows then costs each thread half of A's
  // packing and a read of all of b (about half a packing's cost per element), which wins over
  // packing all of A while n < 2m (the transformer's 256 x 256 weight gradients over 2048 tokens).
  const bool split_rows = row_panels >= threads && (g.b_in_place ? g.n < 2 * g.m : g.m > g.n);
#pragma omp parallel num_threads(threads)
  {
    const int t = omp_get_thread_num(), parts = omp_get_num_threads();
    if (split_rows) {
      const auto [i0, i1] = share(row_panels, MR, g.m, t, parts);
      if (i0 < i1) sgemm_block<MR, NR>(g, i0, i1, 0, g.n, shares[t]);
    } else {
      const auto [j0, j1] = share(col_panels, NR, g.n, t, parts);
      if (j0 < j1) sgemm_block<MR, NR>(g, 0, g.m, j0, j1, shares[t]);
    }
  }
}

// The packers of one tile shape for F32 or BF16 operands.
template <int MR, int NR>
void set_packers(SgemmProblem& g, bool bf16, bool avx2) {
  g.pack_a = bf16 ? pack_a<uint16_t, MR> : pack_a<float, MR>;
  g.pack_row = bf16 ? pack_b_row<uint16_t, NR> : pack_b_row<float, NR>;
  g.pack_transposed = bf16 ? pack_b_transposed<uint16_t, NR> : pack_b_transposed<float, NR>;
#if defined(__x86_64__) && defined(__GNUC__)
  if (!bf16 && avx2) g.pack_transposed = pack_b_transposed_avx2<NR>;
  if constexpr (MR % 4 == 0) {
    if (!bf16 && avx2) g.pack_a = pack_a_avx2<MR>;
  }
#else
  (void)avx2;
#endif
}

}  // namespace

void gemm_f32_out(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const void* a, const void* b, DType in_dtype, float beta, float* c,
                  bool reserve_only) {
  if (m == 0 || n == 0) return;
  if (k == 0 || alpha == 0.0f) {
    if (reserve_only) return;
    // Nothing to multiply: c = beta * c, and beta == 0 must not read c.
    for (int64_t i = 0; i < m * n; ++i) c[i] = beta == 0.0f ? 0.0f : beta * c[i];
    return;
  }
  const bool bf16 = in_dtype == DType::BF16;
  SgemmProblem g{trans_a, trans_b, m,       n,       k,       alpha,      a,     b,           beta,
                 c,       nullptr, nullptr, nullptr, nullptr, Blocking{}, false, reserve_only};
  // A short op(a) (the batch of a training step) uses each B panel for a few tiles only: packing
  // a non-transposed b then costs more than it saves, and its rows are read where they lie.
  g.b_in_place = !bf16 && !trans_b && m <= kInPlaceRows && !rows_alias_in_cache(n);
  const CpuIsa isa = active_cpu_isa();
#if defined(__x86_64__) && defined(__GNUC__)
  // A short a times the transpose of a long b (a layer's forward over a batch): b's rows read in
  // place, nothing of it packed (cpu/gemm/short_nt.cpp).
  if (!bf16 && !trans_a && trans_b && m <= kShortNtRows && n >= 2 * kWideMR &&
      n * k >= kShortNtMinB && (isa == CpuIsa::AVX512 || isa == CpuIsa::AVX2WideTiles)) {
    return gemm_short_nt(m, n, k, alpha, static_cast<const float*>(a),
                         static_cast<const float*>(b), beta, c, reserve_only,
                         isa == CpuIsa::AVX512 ? micro_kernel_avx512_rows
                                               : micro_kernel_wide_on_avx2_rows,
                         blocking_for_caches<kWideMR, kWideNR>().kc);
  }
  // BF16 operands on AVX512_BF16 when asked (or the pair kernel's emulation under test).
  const bool native_pairs =
      bf16 && isa == CpuIsa::AVX512 && cpu_supports_avx512bf16() && bf16_pairs_chosen();
  if (bf16 && (native_pairs || isa == CpuIsa::AVX2WideTiles)) {
    g.pack_a = pack_a_pairs<kWideMR>;
    g.pairs = true;
    return run_tiles<kWideMR, kWideNR>(
        g, native_pairs ? micro_kernel_avx512_bf16 : micro_kernel_bf16_pairs_on_avx2);
  }
  if (isa == CpuIsa::AVX512 || isa == CpuIsa::AVX2WideTiles) {
    set_packers<kWideMR, kWideNR>(g, bf16, true);
    return run_tiles<kWideMR, kWideNR>(
        g, isa == CpuIsa::AVX512 ? micro_kernel_avx512 : micro_kernel_wide_on_avx2);
  }
  if (isa == CpuIsa::AVX2) {
    set_packers<kMR, kNR>(g, bf16, true);
    return run_tiles<kMR, kNR>(g, micro_kernel_avx2);
  }
#endif
  set_packers<kMR, kNR>(g, bf16, false);
  run_tiles<kMR, kNR>(g, micro_kernel_generic);
}

void cpu_sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
               const float* a, const float* b, float beta, float* c) {
  gemm_f32_out(trans_a, trans_b, m, n, k, alpha, a, b, DType::F32, beta, c);
}

void reserve_thread_gemm_buffers(int threads, int64_t m, int64_t n, int64_t k) {
  bool failed = false;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    try {
      gemm_f32_out(false, false, m, n, k, 1.0f, nullptr, nullptr, DType::F32, 0.0f, nullptr, true);
    } catch (...) {
#pragma omp atomic write
      failed = true;
    }
  }
  if (failed) throw OutOfMemory("host", static_cast<size_t>((m + n) * k) * sizeof(float));
}

}  // namespace nnops::detail
