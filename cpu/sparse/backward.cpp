// CPU linear layer on compressed weights, backward, on transposes so the batch is the vector
// dimension (as the forward):
// - dx^T[column] = the sum of value * dy^T[row] over the column's kept entries. CSR: rows
//   increasing, the forward's kernel on the pattern's transpose (SparseView::col_ptr, built once
//   per matrix), blocks of dy^T rows outermost so they come from L1, the accumulators [in, n] in
//   scratch between blocks. NM24: group by group of four columns over each block of dy^T rows,
//   the block's rows sorted by 2:4 code (SparseView::group_rows), so each code's two columns are
//   known for its whole run and the four columns' sums stay in registers: one read of a dy^T row
//   feeds both its kept values, half the multiply-adds of the dense product (AMD EPYC, batch 64:
//   1.0-1.2 ms against 1.4-1.5 ms dense and 1.4-2.3 ms through the column index; blocks of 128
//   rows measured best among 64-256, 64 rows ran 1.6-1.75 ms);
// - each stored value's gradient is the dot product of dy^T[row] and x^T[column] (AVX-512: 16
//   slots at a time, reduced together), blocks of x^T rows outermost for the same reason, where
//   less than a quarter of the weight is kept; denser weights take the dense dy^T x and pick
//   their slots out of it (NM24 on AVX-512: tile by tile from the GEMM's micro-kernel);
// - db = the column sums of dy in double.
// Every output sums in one fixed order whatever the thread: the same bits for any thread count.
// Scalar loops are the reference (the baseline level's path); the vector kernels take the batch
// padded with zero rows to whole vectors.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "../cpu_backend.hpp"
#include "../gemm/kernels.hpp"
#include "../transpose.hpp"
#include "layout.hpp"

namespace nnops::detail {

namespace {

using namespace sparse;

// dx[r, c] for every batch row of column c, one at a time.
void scalar_columns(float* dx, const float* dyt, const SparseView& w, int64_t n, int64_t c) {
  for (int64_t r = 0; r < n; ++r) {
    float acc = 0.0f;
    for (int64_t e = w.col_ptr[c]; e < w.col_ptr[c + 1]; ++e)
      acc += w.values[w.col_slots[e]] * dyt[w.col_rows[e] * n + r];
    dx[r * w.cols + c] = acc;
  }
}

// dvalues of row o's slots [s0, s1): dot(dy^T[o], x^T[column]) each, 0 for unused slots.
void slot_grads_generic(float* dvalues, const float* xt, const float* dyt, const SparseView& w,
                        int64_t n, int64_t o, int64_t s0, int64_t s1) {
  const float* d = dyt + o * n;
  for (int64_t s = s0; s < s1; ++s) {
    bool used;
    const int64_t c = slot_column(w, o, s, used);
    float acc = 0.0f;
    if (used)
      for (int64_t r = 0; r < n; ++r) acc += d[r] * xt[c * n + r];
    dvalues[s] = acc;
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// acc[c, r0 .. r0 + VECS * kLanes) = the sum of value * dy^T[row, r0 ..] over column c's entries,
// for columns [c_lo, c_hi), blocks of dy^T rows outermost (rows increasing within a column: one
// order, whatever the blocking or the chunk width).
template <class V, int kLanes, int VECS>
NNOPS_ALWAYS_INLINE void blocked_columns(float* acc, const float* dyt, const SparseView& w,
                                         int64_t n, int64_t r0, int64_t c_lo, int64_t c_hi,
                                         int64_t* cursor) {
  const int64_t block = block_rows(VECS * kLanes);
  for (int64_t c = c_lo; c < c_hi; ++c) cursor[c - c_lo] = w.col_ptr[c];
  for (int64_t o0 = 0; o0 < w.rows; o0 += block) {
    const int64_t o1 = std::min(o0 + block, w.rows);
    for (int64_t c = c_lo; c < c_hi; ++c) {
      float* out = acc + c * n + r0;
      V a[VECS] = {};
      if (o0 > 0) {
#pragma GCC unroll 4
        for (int j = 0; j < VECS; ++j) std::memcpy(&a[j], out + j * kLanes, sizeof(V));
      }
      int64_t e = cursor[c - c_lo];
      const int64_t end = w.col_ptr[c + 1];
      for (; e < end && w.col_rows[e] < o1; ++e) {
        const V v = w.values[w.col_slots[e]] - V{};  // a broadcast: x - 0 == x
        const float* d = dyt + int64_t(w.col_rows[e]) * n + r0;
#pragma GCC unroll 4
        for (int j = 0; j < VECS; ++j) {
          V dj;
          std::memcpy(&dj, d + j * kLanes, sizeof(V));
          a[j] += v * dj;
        }
      }
      cursor[c - c_lo] = e;
#pragma GCC unroll 4
      for (int j = 0; j < VECS; ++j) std::memcpy(out + j * kLanes, &a[j], sizeof(V));
    }
  }
}

template <int VECS>
__attribute__((target("avx512f"))) void blocked_columns_avx512(float* acc, const float* dyt,
                                                               const SparseView& w, int64_t n,
                                                               int64_t r0, int64_t c_lo,
                                                               int64_t c_hi, int64_t* cursor) {
  blocked_columns<V16, 16, VECS>(acc, dyt, w, n, r0, c_lo, c_hi, cursor);
}
template <int VECS>
__attribute__((target("avx2,fma"))) void blocked_columns_avx2(float* acc, const float* dyt,
                                                              const SparseView& w, int64_t n,
                                                              int64_t r0, int64_t c_lo,
                                                              int64_t c_hi, int64_t* cursor) {
  blocked_columns<V8, 8, VECS>(acc, dyt, w, n, r0, c_lo, c_hi, cursor);
}

// The 16 lane sums of a[0..15], as one vector (entry j in lane j): adjacent lanes added in
// pairs, four times over, each step halving the lanes per entry (one fixed order).
__attribute__((target("avx512f"))) NNOPS_ALWAYS_INLINE V16 halve(V16 a, V16 b) {
  return __builtin_shufflevector(a, b, 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30) +
         __builtin_shufflevector(a, b, 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
}
__attribute__((target("avx512f"))) V16 sum16(const V16* a) {
  V16 s1[8], s2[4], s3[2];
  for (int i = 0; i < 8; ++i) s1[i] = halve(a[2 * i], a[2 * i + 1]);
  for (int i = 0; i < 4; ++i) s2[i] = halve(s1[2 * i], s1[2 * i + 1]);
  for (int i = 0; i < 2; ++i) s3[i] = halve(s2[2 * i], s2[2 * i + 1]);
  return halve(s3[0], s3[1]);
}

// Up to 16 slots of one row, at columns cols[0 .. count) (bit j of `used`: slot j holds a kept
// entry): a 16-lane accumulator each over the batch's whole vectors, reduced together, then the
// batch's last n % 16 rows one by one. (A bit mask, not bools: bytes stored one by one and read
// back as one word stall store forwarding, which made this 5x slower.)
__attribute__((target("avx512f"))) void sixteen_slot_grads(float* dvalues, const float* xt,
                                                           const float* d, int64_t n,
                                                           const int64_t* cols, uint32_t used,
                                                           int count) {
  const int64_t whole = n / 16 * 16;
  const float* xs[16];
  for (int j = 0; j < 16; ++j) xs[j] = xt + cols[j] * n;
  V16 acc[16] = {};
  for (int64_t r = 0; r < whole; r += 16) {
    V16 dv;
    std::memcpy(&dv, d + r, sizeof(V16));
#pragma GCC unroll 16
    for (int j = 0; j < 16; ++j) {
      V16 xv;
      std::memcpy(&xv, xs[j] + r, sizeof(V16));
      acc[j] += dv * xv;
    }
  }
  float sums[16];
  const V16 total = sum16(acc);
  std::memcpy(sums, &total, sizeof(sums));
  for (int j = 0; j < count; ++j) {
    float s = sums[j];
    for (int64_t r = whole; r < n; ++r) s += d[r] * xt[cols[j] * n + r];
    dvalues[j] = (used >> j) & 1u ? s : 0.0f;
  }
}

// dvalues of rows [o0, o1), blocks of x^T rows outermost: each row's slots in the block, 16 at
// a time. Every slot's dot product lies in one block: the same bits as one pass.
__attribute__((target("avx512f"))) void blocked_slot_grads_avx512(float* dvalues, const float* xt,
                                                                  const float* dyt,
                                                                  const SparseView& w, int64_t n,
                                                                  int64_t o0, int64_t o1,
                                                                  int64_t* cursor) {
  const int64_t block = block_rows(n);
  if (!w.nm24)
    for (int64_t o = o0; o < o1; ++o) cursor[o - o0] = w.row_ptr[o];
  int64_t cols[16];
  for (int64_t c0 = 0; c0 < w.cols; c0 += block) {
    const int64_t c1 = std::min(c0 + block, w.cols);
    for (int64_t o = o0; o < o1; ++o) {
      // The row's slots with columns in [c0, c1): NM24 blocks hold whole groups.
      int64_t s0, s1;
      if (w.nm24) {
        s0 = o * (w.cols / 2) + c0 / 2;
        s1 = o * (w.cols / 2) + c1 / 2;
      } else {
        s0 = s1 = cursor[o - o0];
        while (s1 < w.row_ptr[o + 1] && w.col[s1] < c1) ++s1;
        cursor[o - o0] = s1;
      }
      const uint8_t* meta = w.nm24 ? w.metadata + o * nm24_metadata_cols(w.cols) : nullptr;
      for (int64_t s = s0; s < s1; s += 16) {
        const int count = static_cast<int>(std::min<int64_t>(16, s1 - s));
        uint32_t used = 0;
        if (w.nm24) {  // whole groups: decode each once for its two slots
          const int64_t g0 = (s - o * (w.cols / 2)) / 2;
          for (int k = 0; k < count / 2; ++k) {
            const Nm24Group grp = nm24_group(meta, g0 + k);
            cols[2 * k] = 4 * (g0 + k) + grp.p0;
            cols[2 * k + 1] = 4 * (g0 + k) + grp.p1;
            used |= uint32_t(grp.used0) << (2 * k) | uint32_t(grp.used1) << (2 * k + 1);
          }
        } else {
          for (int j = 0; j < count; ++j) cols[j] = w.col[s + j];
          used = (1u << count) - 1;
        }
        for (int j = count; j < 16; ++j) cols[j] = cols[0];
        sixteen_slot_grads(dvalues + s, xt, dyt + o * n, n, cols, used, count);
      }
    }
  }
}
#endif

// NM24's dx, group by group: with a group's rows sorted by code, each code's two columns are
// known for the whole run, so its four columns' sums stay in registers and every row of the run
// adds its two values' products with one read of dy^T[row] (half the multiply-adds of the dense
// product, none on pruned weights). Column 4q + p sums over the codes in order, rows increasing
// within a code: one order, whatever the thread or the batch chunk.
// Runs body.template run<K>() for every code K, in order.
template <class Body, int... K>
NNOPS_ALWAYS_INLINE void for_each_code(Body& body, std::integer_sequence<int, K...>) {
  (body.template run<K>(), ...);
}

// dx[r, 4q .. 4q + 3] for every batch row, one at a time, groups [q_lo, q_hi): the vector
// kernel's order (blocks of rows, codes, rows increasing) with scalars.
void nm24_scalar_groups(float* dx, const float* dyt, const SparseView& w, int64_t n, int64_t q_lo,
                        int64_t q_hi) {
  const int64_t half = w.cols / 2;
  const int64_t keys = (w.rows + kNm24RowBlock - 1) / kNm24RowBlock * 16;
  for (int64_t r = 0; r < n; ++r) {
    for (int64_t q = q_lo; q < q_hi; ++q) {
      float acc[4] = {0.0f, 0.0f, 0.0f, 0.0f};
      const int32_t* rows = w.group_rows + q * w.rows;
      const int32_t* start = w.group_start + q * (keys + 1);
      for (int64_t k = 0; k < keys; ++k) {
        const Nm24Group c = nm24_decode(static_cast<unsigned>(k % 16));
        for (int32_t i = start[k]; i < start[k + 1]; ++i) {
          const int64_t o = rows[i];
          const float d = dyt[o * n + r];
          const float* v = w.values + o * half + 2 * q;
          if (c.used0) acc[c.p0] += v[0] * d;
          if (c.used1) acc[c.p1] += v[1] * d;
        }
      }
      for (int p = 0; p < 4; ++p) dx[r * w.cols + 4 * q + p] = acc[p];
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// One group's four columns for batch rows [r0, r0 + VECS * kLanes), into acc [in, n].
template <class V, int VECS, int kLanes>
struct Nm24Group4 {
  V sum[4][VECS];
  const int32_t* rows;
  const int32_t* start;
  const float* dyt;
  const float* values;  // the group's two slots of row 0
  int64_t n, r0, half;
  int32_t listed;                       // entries of rows
  static constexpr int32_t kAhead = 8;  // entries between a prefetch and its use

  template <int CODE>
  NNOPS_ALWAYS_INLINE void run() {
    constexpr Nm24Group c = nm24_decode(CODE);
    constexpr unsigned p0 = c.p0, p1 = c.p1;
    constexpr bool use0 = c.used0, use1 = c.used1;
    if constexpr (use0 || use1) {
      const int32_t end = start[CODE + 1];
      for (int32_t i = start[CODE]; i < end; ++i) {
        const int64_t o = rows[i];
        // The stored values of the row kAhead entries on: rows lie `half` floats apart, each
        // in its own line, and waiting on L2 for them took a fifth of the kernel's time.
        if (i + kAhead < listed) __builtin_prefetch(values + int64_t(rows[i + kAhead]) * half);
        const float* d = dyt + o * n + r0;
        V dv[VECS];
#pragma GCC unroll 4
        for (int j = 0; j < VECS; ++j) std::memcpy(&dv[j], d + j * kLanes, sizeof(V));
        const float* v = values + o * half;
        if constexpr (use0) {
          const V a = v[0] - V{};  // a broadcast: x - 0 == x
#pragma GCC unroll 4
          for (int j = 0; j < VECS; ++j) sum[p0][j] += a * dv[j];
        }
        if constexpr (use1) {
          const V b = v[1] - V{};
#pragma GCC unroll 4
          for (int j = 0; j < VECS; ++j) sum[p1][j] += b * dv[j];
        }
      }
    }
  }
};

// Groups [q_lo, q_hi) for batch rows [r0, r0 + VECS * kLanes): blocks of kNm24RowBlock rows of
// dy^T outermost (each block's chunk stays in L1 across the groups), the four columns' sums
// kept in acc [in, n] between blocks.
template <class V, int VECS, int kLanes>
NNOPS_ALWAYS_INLINE void nm24_groups(float* acc, const float* dyt, const SparseView& w, int64_t n,
                                     int64_t r0, int64_t q_lo, int64_t q_hi) {
  const int64_t blocks = (w.rows + kNm24RowBlock - 1) / kNm24RowBlock;
  for (int64_t b = 0; b < blocks; ++b) {
    for (int64_t q = q_lo; q < q_hi; ++q) {
      Nm24Group4<V, VECS, kLanes> g{{},
                                    w.group_rows + q * w.rows,
                                    w.group_start + q * (blocks * 16 + 1) + b * 16,
                                    dyt,
                                    w.values + 2 * q,
                                    n,
                                    r0,
                                    w.cols / 2,
                                    static_cast<int32_t>(w.rows)};
      if (b > 0) {
        for (int p = 0; p < 4; ++p)
#pragma GCC unroll 4
          for (int j = 0; j < VECS; ++j)
            std::memcpy(&g.sum[p][j], acc + (4 * q + p) * n + r0 + j * kLanes, sizeof(V));
      }
      for_each_code(g, std::make_integer_sequence<int, 16>{});
      for (int p = 0; p < 4; ++p)
#pragma GCC unroll 4
        for (int j = 0; j < VECS; ++j)
          std::memcpy(acc + (4 * q + p) * n + r0 + j * kLanes, &g.sum[p][j], sizeof(V));
    }
  }
}

template <int VECS>
__attribute__((target("avx512f"))) void nm24_groups_avx512(float* acc, const float* dyt,
                                                           const SparseView& w, int64_t n,
                                                           int64_t r0, int64_t q_lo, int64_t q_hi) {
  nm24_groups<V16, VECS, 16>(acc, dyt, w, n, r0, q_lo, q_hi);
}
// Two vectors at most: four columns' sums of more do not fit AVX2's 16 registers.
template <int VECS>
__attribute__((target("avx2,fma"))) void nm24_groups_avx2(float* acc, const float* dyt,
                                                          const SparseView& w, int64_t n,
                                                          int64_t r0, int64_t q_lo, int64_t q_hi) {
  nm24_groups<V8, VECS, 8>(acc, dyt, w, n, r0, q_lo, q_hi);
}
#endif

#if defined(__x86_64__) && defined(__GNUC__)
// NM24's dvalues on AVX-512, output rows [o0, o1): the dense dy^T x 12 rows x 32 columns at a
// time through the GEMM's AVX-512 micro-kernel into a tile in L1 (a panel of dy^T packed from dy,
// x from xp, packed once into 32-column panels [in / 32][n][32], the last zero-padded: the GEMM's
// products and order, so the GEMM's bits), then each row's 16 slots of those 32 columns picked
// out by one two-source permute whose mask zeroes unused slots. The dense blocks (below) wrote
// [256, in] through L2 and gathered from it in a second pass, 19% of their time (perf, 1000 ->
// 2000 at batch 64). x read in place instead of packed ran 1.5-7% slower (every dy^T panel
// reads all of x, rows 4 KB apart, from L2; Intel Xeon). scratch: 12 * n floats.
__attribute__((target("avx512f"))) void nm24_slot_grads_avx512(float* dvalues, const float* xp,
                                                               const float* dy, const SparseView& w,
                                                               int64_t n, int64_t o0, int64_t o1,
                                                               float* scratch) {
  constexpr int MR = kWideMR, NR = kWideNR;
  static_assert(NR == 32, "a tile row is two 16-lane vectors: 8 groups, 16 slots");
  const int64_t in = w.cols, out = w.rows, half = in / 2, meta_cols = nm24_metadata_cols(in);
  float* const a_panel = scratch;  // [n][MR]: dy^T rows o .. o + 11, depth-major
  const int64_t full_cols = in / NR * NR;
  alignas(64) float tile[MR * NR];
  for (int64_t o = o0; o < o1; o += MR) {
    const int mr = static_cast<int>(std::min<int64_t>(MR, o1 - o));
    for (int64_t p = 0; p < n; ++p) {  // row p of dy holds the panel's depth p, contiguous
      std::memcpy(a_panel + p * MR, dy + p * out + o, sizeof(float) * mr);
      for (int i = mr; i < MR; ++i) a_panel[p * MR + i] = 0.0f;
    }
    for (int64_t c0 = 0; c0 < in; c0 += NR) {
      const bool full = c0 < full_cols;
      const int nr = full ? NR : static_cast<int>(in - full_cols);
      micro_kernel_avx512(n, a_panel, xp + c0 * n, NR, tile, NR, 1.0f, 0.0f, mr, nr);
      for (int i = 0; i < mr; ++i) {
        const uint8_t* meta = w.metadata + (o + i) * meta_cols;
        float* dv = dvalues + (o + i) * half + c0 / 2;
        if (!full) {  // a few groups: one at a time
          for (int64_t q = 0; q < nr / 4; ++q) {
            const Nm24Group grp = nm24_group(meta, c0 / 4 + q);
            dv[2 * q] = grp.used0 ? tile[i * NR + 4 * q + grp.p0] : 0.0f;
            dv[2 * q + 1] = grp.used1 ? tile[i * NR + 4 * q + grp.p1] : 0.0f;
          }
          continue;
        }
        uint32_t codes;
        std::memcpy(&codes, meta + c0 / 8, sizeof(codes));  // groups c0 / 4 .. + 7
        const Nm24Lanes lanes = nm24_lanes(codes);
        const __m512 both = _mm512_permutex2var_ps(_mm512_load_ps(tile + i * NR),
                                                   reinterpret_cast<__m512i>(lanes.column),
                                                   _mm512_load_ps(tile + i * NR + 16));
        const __m512 picked = reinterpret_cast<__m512>(reinterpret_cast<I16>(both) & lanes.used);
        _mm512_storeu_ps(dv, picked);
      }
    }
  }
}
#endif

// Panels [j0, j1) of x [n, in] as nm24_slot_grads_avx512 reads them: [in / 32][n][32], the
// last zero-padded.
void pack_x_panels(float* xp, const float* x, int64_t n, int64_t in, int64_t j0, int64_t j1) {
  for (int64_t j = j0; j < j1; ++j) {
    float* panel = xp + j * kWideNR * n;
    const int64_t c0 = j * kWideNR, cols = std::min<int64_t>(kWideNR, in - c0);
    for (int64_t p = 0; p < n; ++p) {
      std::memcpy(panel + p * kWideNR, x + p * in + c0, sizeof(float) * cols);
      std::fill(panel + p * kWideNR + cols, panel + (p + 1) * kWideNR, 0.0f);
    }
  }
}

using Nm24Groups = void (*)(float*, const float*, const SparseView&, int64_t, int64_t, int64_t,
                            int64_t);

using BlockedColumns = void (*)(float*, const float*, const SparseView&, int64_t, int64_t, int64_t,
                                int64_t, int64_t*);
using BlockedSlotGrads = void (*)(float*, const float*, const float*, const SparseView&, int64_t,
                                  int64_t, int64_t, int64_t*);
using Nm24SlotGrads = void (*)(float*, const float*, const float*, const SparseView&, int64_t,
                               int64_t, int64_t, float*);

struct BackwardKernels {
  // dx over v vectors of batch rows (v - 1): CSR's, up to 4; NM24's, up to nm24_vecs.
  BlockedColumns columns[4] = {};
  Nm24Groups nm24_groups[4] = {};
  int64_t lanes = 0;  // batch rows per vector (0: the scalar loops only)
  int nm24_vecs = 0;
  BlockedSlotGrads slot_grads = nullptr;    // dvalues (null: slot_grads_generic row by row)
  Nm24SlotGrads nm24_slot_grads = nullptr;  // NM24's dvalues (null: the dense blocks)
};

BackwardKernels backward_kernels_for_active_isa() {
#if defined(__x86_64__) && defined(__GNUC__)
  switch (active_cpu_isa()) {
    case CpuIsa::AVX512:
      return {{blocked_columns_avx512<1>, blocked_columns_avx512<2>, blocked_columns_avx512<3>,
               blocked_columns_avx512<4>},
              {nm24_groups_avx512<1>, nm24_groups_avx512<2>, nm24_groups_avx512<3>,
               nm24_groups_avx512<4>},
              16,
              4,
              blocked_slot_grads_avx512,
              nm24_slot_grads_avx512};
    case CpuIsa::AVX2:
    case CpuIsa::AVX2WideTiles:
      return {{blocked_columns_avx2<1>, blocked_columns_avx2<2>, blocked_columns_avx2<3>,
               blocked_columns_avx2<4>},
              {nm24_groups_avx2<1>, nm24_groups_avx2<2>},
              8,
              2,
              nullptr,
              nullptr};
    default:
      break;
  }
#endif
  return {};
}

// Output rows per block of the dense weight gradient (a block of [rows, in] stays in L2).
constexpr int64_t kDenseRows = 256;

// This thread's share [begin, end) of `count` items.
std::pair<int64_t, int64_t> thread_share(int64_t count) {
  const int threads = omp_get_num_threads(), t = omp_get_thread_num();
  return {count * t / threads, count * (t + 1) / threads};
}

}  // namespace

void CpuBackend::sparse_linear_backward(float* dx, float* dvalues, float* db, const float* x,
                                        const SparseView& w, const float* dy, int64_t n) {
  const int64_t in = w.cols, out = w.rows;
  if (dx && (w.nm24 ? !w.group_rows : !w.col_ptr))
    throw Error("nnops::sparse_linear_backward: dx needs the matrix's column index");
  const BackwardKernels kernels = backward_kernels_for_active_isa();
  // dx chunk by chunk over the batch padded with zero rows to whole vectors, each chunk's dy^T
  // [out, width] and accumulators [in, width] in contiguous panels: below a chunk of 4 vectors
  // the scalar loops had taken 3-20x the dense time (2:4 at batch 32, AMD EPYC), and as one
  // [out, n] matrix dy^T's rows lay n floats apart (8 KiB at 2048 tokens: a block's rows in a
  // few L1 sets).
  const int64_t lanes = dx ? kernels.lanes : 0;
  const int64_t np = lanes ? (n + lanes - 1) / lanes * lanes : n;
  const int max_vecs = w.nm24 ? kernels.nm24_vecs : 4;
  const int64_t chunk = max_vecs * lanes;
  // dvalues: where at least a quarter of the weight is kept (2:4, for one) the dense product's
  // reuse of every load wins over one dot product per slot, whose loads feed one multiply-add
  // each, and the dense weight gradient in row blocks costs about what dense training does.
  const bool dense_enough = 4 * w.slots >= w.rows * w.cols;
  const bool nm24_tiles = dvalues && w.nm24 && kernels.nm24_slot_grads;
  // Every scratch array before the first output is written.
  thread_local ScratchBuffer dyt_buffer, xt_buffer, acc_buffer, dw_buffer, xp_buffer;
  // dy^T as one [out, n] matrix: db, the scalar dx, and dvalues off the 2:4 tile path read it
  // (the vector dx takes its own chunk panels below).
  const bool whole_dyt = db || (dx && !lanes) || (dvalues && !nm24_tiles);
  float* const dyt = whole_dyt ? dyt_buffer.get(out * n) : nullptr;
  float* const xt = dvalues && !dense_enough ? xt_buffer.get(in * n) : nullptr;
  const bool parallel = in * out * n >= kParallelThreshold;
  const int threads = parallel ? omp_get_max_threads() : 1;
  const int64_t tile_scratch = kWideMR * n;  // nm24_slot_grads_avx512's, per thread
  const int64_t x_panels = (in + kWideNR - 1) / kWideNR;
  float* const x_packed = nm24_tiles ? xp_buffer.get(x_panels * kWideNR * n) : nullptr;
  float* const dw = nm24_tiles ? dw_buffer.get(threads * tile_scratch)
                    : dvalues && dense_enough
                        ? dw_buffer.get(threads * std::min(kDenseRows, out) * in)
                        : nullptr;
  // The GEMM's packing buffers of every thread, grown before the region (nothing may throw in
  // it).
  if (dw && !nm24_tiles) reserve_thread_gemm_buffers(threads, std::min(kDenseRows, out), in, n);
  float* const acc = lanes ? acc_buffer.get(in * np) : nullptr;
  thread_local ScratchBuffer panel_buffer;
  float* const dyt_panels = lanes ? panel_buffer.get(out * np) : nullptr;
  if (dyt) transpose(dyt, dy, n, out, cpu_isa_has_avx2());
  if (xt) transpose(xt, x, n, in, cpu_isa_has_avx2());
  if (lanes) {
#pragma omp parallel if (parallel)
    {
      const int nthreads = omp_get_num_threads(), t = omp_get_thread_num();
      const int64_t chunks = (np + chunk - 1) / chunk;
      for (int64_t i = t; i < chunks; i += nthreads) {  // each thread its chunks of dy^T ...
        const int64_t r0 = i * chunk, width = std::min(chunk, np - r0);
        const int64_t rows = std::min(width, n - r0);
        float* panel = dyt_panels + out * r0;
        transpose_strided(panel, width, dy + r0 * out, out, rows, out, true);
        for (int64_t o = 0; o < out; ++o)
          std::fill(panel + o * width + rows, panel + (o + 1) * width, 0.0f);
      }
#pragma omp barrier
      // ... then its own columns of dx (NM24: groups of four) in every chunk.
      const auto [q_lo, q_hi] = thread_share(w.nm24 ? in / 4 : in);
      const int64_t c_lo = w.nm24 ? 4 * q_lo : q_lo, c_hi = w.nm24 ? 4 * q_hi : q_hi;
      thread_local std::vector<int64_t> cursor;  // CSR: each column's next entry
      cursor.resize(static_cast<size_t>(c_hi - c_lo));
      for (int64_t r0 = 0; r0 < np; r0 += chunk) {
        const int64_t width = std::min(chunk, np - r0), rows = std::min(width, n - r0);
        float* a = acc + in * r0;
        const int64_t vecs = width / lanes;
        if (w.nm24)
          kernels.nm24_groups[vecs - 1](a, dyt_panels + out * r0, w, width, 0, q_lo, q_hi);
        else
          kernels.columns[vecs - 1](a, dyt_panels + out * r0, w, width, 0, c_lo, c_hi,
                                    cursor.data());
        transpose_strided(dx + r0 * in + c_lo, in, a + c_lo * width, width, c_hi - c_lo, rows,
                          true);
      }
    }
  } else if (dx) {
#pragma omp parallel if (parallel)
    {
      // Each thread its own columns of dx (NM24: groups of four).
      const auto [q_lo, q_hi] = thread_share(w.nm24 ? in / 4 : in);
      if (w.nm24) {
        nm24_scalar_groups(dx, dyt, w, n, q_lo, q_hi);
      } else {
        for (int64_t c = q_lo; c < q_hi; ++c) scalar_columns(dx, dyt, w, n, c);
      }
    }
  }
  if (nm24_tiles) {
#pragma omp parallel if (parallel)
    {
      const auto [j0, j1] = thread_share(x_panels);
      pack_x_panels(x_packed, x, n, in, j0, j1);
#pragma omp barrier
      const auto [lo, hi] = thread_share(out);
      kernels.nm24_slot_grads(dvalues, x_packed, dy, w, n, lo, hi,
                              dw + omp_get_thread_num() * tile_scratch);
    }
  } else if (dvalues && dense_enough) {
    // Each thread its own rows, in blocks: the block's dense dy^T x through the GEMM (on this
    // thread alone) into its own scratch, which stays in its L2, then the stored slots picked
    // out. One parallel region: blocks handed to both threads in turn (a GEMM region and a
    // gather region per block) left the threads waiting on each other and moved every block
    // between their caches. The dense values do not depend on the blocking (each is one sum
    // over the batch, in order), so neither do the bits.
#pragma omp parallel if (parallel)
    {
      const auto [lo, hi] = thread_share(out);
      float* const block = dw + omp_get_thread_num() * std::min(kDenseRows, out) * in;
      for (int64_t o0 = lo; o0 < hi; o0 += kDenseRows) {
        const int64_t rows = std::min(kDenseRows, hi - o0);
        gemm(View{block, DType::F32}, ConstView{dyt + o0 * n, DType::F32}, ConstView{x, DType::F32},
             rows, in, n, GemmOptions{});
        for (int64_t o = o0; o < o0 + rows; ++o) {
          const float* g = block + (o - o0) * in;
          if (w.nm24) {  // group by group: each code decoded once for its two slots
            float* dv = dvalues + o * (in / 2);
            const uint8_t* meta = w.metadata + o * nm24_metadata_cols(in);
            for (int64_t q = 0; q < in / 4; ++q) {
              const Nm24Group grp = nm24_group(meta, q);
              dv[2 * q] = grp.used0 ? g[4 * q + grp.p0] : 0.0f;
              dv[2 * q + 1] = grp.used1 ? g[4 * q + grp.p1] : 0.0f;
            }
          } else {
            for (int64_t e = w.row_ptr[o]; e < w.row_ptr[o + 1]; ++e) dvalues[e] = g[w.col[e]];
          }
        }
      }
    }
  } else if (dvalues) {
    if (kernels.slot_grads) {
#pragma omp parallel if (parallel)
      {
        const auto share = thread_share(out);
        thread_local std::vector<int64_t> cursor;  // CSR: each row's next slot
        cursor.resize(static_cast<size_t>(share.second - share.first));
        kernels.slot_grads(dvalues, xt, dyt, w, n, share.first, share.second, cursor.data());
      }
    } else {
      // Every slot is one dot product, whatever the thread.
#pragma omp parallel for schedule(dynamic, 16) if (parallel)
      for (int64_t o = 0; o < out; ++o) {
        const auto [s0, s1] = row_slots(w, o);
        slot_grads_generic(dvalues, xt, dyt, w, n, o, s0, s1);
      }
    }
  }
  if (db) {
    // Column sums of dy in double, rows in order (as linear_backward's db).
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t o = 0; o < out; ++o) {
      double sum = 0.0;
      for (int64_t r = 0; r < n; ++r) sum += dyt[o * n + r];
      db[o] = static_cast<float>(sum);
    }
  }
}

}  // namespace nnops::detail
