// CPU linear layer on compressed weights (nnops/sparse.hpp), forward: x is transposed once so the
// batch is the contiguous, vector dimension; each output row then adds `value * x^T[column]`
// over its kept entries into a batch-wide accumulator (4 vectors: 64 batch rows on AVX-512, 32
// on AVX2), in the entries' stored order: the same bits for any thread count. Half the
// multiply-adds of the dense product at 2:4, but one vector load per multiply-add (a dense
// micro-kernel reuses each load across its register tile), so the source must come from L1:
// blocks of x^T rows (layout.hpp) are the outer loop, and the accumulators wait in a scratch
// [out, n] between blocks. Two output rows go side by side (independent sums: one row's
// accumulators wait on their previous multiply-add), an exact 2:4 weight's positions decoded by
// a table per metadata byte. The batch is padded with zero rows to whole vectors (1-4 per
// chunk); NM24's last few rows past a multiple of 64 take a kernel with the weight row's slots as
// the vector dimension instead (AVX-512). A portable scalar loop is the reference (the baseline
// level's path).
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../cpu_backend.hpp"
#include "../transpose.hpp"
#include "layout.hpp"

namespace nnops::detail {

namespace {

using namespace sparse;

// y[r, o] of one CSR row, its entries' x read where they lie (the row past the vector chunks).
void csr_row(float* y, const float* x, const SparseView& w, float b, int64_t r, int64_t o) {
  float acc = 0.0f;
  const float* xr = x + r * w.cols;
  for (int64_t e = w.row_ptr[o]; e < w.row_ptr[o + 1]; ++e) acc += w.values[e] * xr[w.col[e]];
  y[r * w.rows + o] = acc + b;
}

// Every batch row of output row o, one at a time.
void scalar_rows(float* y, const float* xt, const SparseView& w, float b, int64_t n, int64_t o) {
  for (int64_t r = 0; r < n; ++r) {
    float acc = 0.0f;
#define NNOPS_SCALAR_ADD(value, column) acc += (value)*xt[(column)*n + r]
    NNOPS_FOR_EACH_ENTRY(w, o, NNOPS_SCALAR_ADD)
#undef NNOPS_SCALAR_ADD
    y[r * w.rows + o] = acc + b;
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// sums[j] += value * src[j * kLanes ..], one vector of the batch each: one kept entry's
// products with its x^T row (a broadcast, a load and a multiply-add per vector).
template <class V, int kLanes, int VECS>
NNOPS_ALWAYS_INLINE void add_scaled(V (&sums)[VECS], float value, const float* src) {
  const V v = value - V{};  // a broadcast: x - 0 == x
#pragma GCC unroll 4
  for (int j = 0; j < VECS; ++j) {
    V xj;  // an unaligned load, through memcpy
    std::memcpy(&xj, src + j * kLanes, sizeof(V));
    sums[j] += v * xj;
  }
}

// For each metadata byte (groups 2q and 2q + 1), the four slots' x^T rows as float offsets from
// the pair's first column's row, rows `stride` floats apart. Decoding each group's nibble into
// two column offsets took some twenty scalar instructions per group, and with 512-bit FMAs on
// ports 0, 1 and 5 those queued on the remaining two or three ALU ports: the 2:4 forward ran at
// half the FMA peak.
struct Nm24PairOffsets {
  int32_t slot[256][4];
};
inline Nm24PairOffsets nm24_pair_offsets(int64_t stride) {
  Nm24PairOffsets t{};
  for (unsigned byte = 0; byte < 256; ++byte) {
    const Nm24Group lo = nm24_decode(byte & 0xFu), hi = nm24_decode(byte >> 4);
    t.slot[byte][0] = static_cast<int32_t>(lo.p0 * stride);
    t.slot[byte][1] = static_cast<int32_t>(lo.p1 * stride);
    t.slot[byte][2] = static_cast<int32_t>((4 + hi.p0) * stride);
    t.slot[byte][3] = static_cast<int32_t>((4 + hi.p1) * stride);
  }
  return t;
}

// ROWS output rows from o of an exact 2:4 weight over columns [c0, c1) (c0 a multiple of 8),
// added to a[row][vector]: two groups per metadata byte, their four x^T rows from the table,
// each row's entries in stored order. Rows side by side, for independent sums: one row's
// VECS accumulators each wait on their previous multiply-add (4 cycles), which held one row
// alone to one multiply-add per cycle, half the FMA peak.
template <class V, int kLanes, int VECS, int ROWS>
NNOPS_ALWAYS_INLINE void nm24_pair_rows(V (&a)[ROWS][VECS], const float* xt, const SparseView& w,
                                        const Nm24PairOffsets& table, int64_t o, int64_t c0,
                                        int64_t c1) {
  constexpr int64_t kStride = VECS * kLanes;  // floats between x^T rows
  const int64_t half = w.cols / 2, meta_cols = nm24_metadata_cols(w.cols);
  const float* v = w.values + o * half + c0 / 2;
  const uint8_t* meta = w.metadata + o * meta_cols + c0 / 8;
  const float* xg = xt + c0 * kStride;
  const int64_t bytes = (c1 - c0) / 8;
  for (int64_t q = 0; q < bytes; ++q, xg += 8 * kStride, v += 4) {
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; ++r) {
      const int32_t* off = table.slot[meta[r * meta_cols + q]];
#pragma GCC unroll 4
      for (int s = 0; s < 4; ++s) add_scaled<V, kLanes, VECS>(a[r], v[r * half + s], xg + off[s]);
    }
  }
  if ((c1 - c0) % 8) {  // an odd group count: the rows' last group
    const int64_t g = c1 / 4 - 1;
#pragma GCC unroll 4
    for (int r = 0; r < ROWS; ++r) {
      const Nm24Group grp = nm24_group(w.metadata + (o + r) * meta_cols, g);
      const float* vg = w.values + (o + r) * half + 2 * g;
      add_scaled<V, kLanes, VECS>(a[r], vg[0], xt + (4 * g + grp.p0) * kStride);
      add_scaled<V, kLanes, VECS>(a[r], vg[1], xt + (4 * g + grp.p1) * kStride);
    }
  }
}

// The ROWS rows' partial sums from acc (none before the first block), and back.
template <class V, int kLanes, int VECS, int ROWS>
NNOPS_ALWAYS_INLINE void load_sums(V (&a)[ROWS][VECS], const float* acc, int64_t n, bool first) {
#pragma GCC unroll 4
  for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < VECS; ++j) {
      if (first)
        a[r][j] = V{};
      else
        std::memcpy(&a[r][j], acc + r * n + j * kLanes, sizeof(V));
    }
}
template <class V, int kLanes, int VECS, int ROWS>
NNOPS_ALWAYS_INLINE void store_sums(float* acc, const V (&a)[ROWS][VECS], int64_t n) {
#pragma GCC unroll 4
  for (int r = 0; r < ROWS; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < VECS; ++j) std::memcpy(acc + r * n + j * kLanes, &a[r][j], sizeof(V));
}

// sums += CSR entry e's value * x^T[its column, r0 ..].
template <class V, int kLanes, int VECS>
NNOPS_ALWAYS_INLINE void add_entry(V (&sums)[VECS], const float* xt, const SparseView& w, int64_t n,
                                   int64_t r0, int64_t e) {
  add_scaled<V, kLanes, VECS>(sums, w.values[e], xt + static_cast<int64_t>(w.col[e]) * n + r0);
}

// CSR rows o and o + 1 over their entries with columns below c1, from cursor[0] and cursor[1]
// (advanced), added to a[row][vector] in each row's stored order: the two rows' entries side
// by side while both have some (independent sums, as nm24_pair_rows), then each one's rest.
template <class V, int kLanes, int VECS>
NNOPS_ALWAYS_INLINE void csr_two_rows(V (&a)[2][VECS], const float* xt, const SparseView& w,
                                      int64_t n, int64_t r0, int64_t o, int64_t c1,
                                      int64_t* cursor) {
  int64_t e0 = cursor[0], e1 = cursor[1];
  const int64_t end0 = w.row_ptr[o + 1], end1 = w.row_ptr[o + 2];
  for (; e0 < end0 && e1 < end1 && w.col[e0] < c1 && w.col[e1] < c1; ++e0, ++e1) {
    add_entry<V, kLanes, VECS>(a[0], xt, w, n, r0, e0);
    add_entry<V, kLanes, VECS>(a[1], xt, w, n, r0, e1);
  }
  for (; e0 < end0 && w.col[e0] < c1; ++e0) add_entry<V, kLanes, VECS>(a[0], xt, w, n, r0, e0);
  for (; e1 < end1 && w.col[e1] < c1; ++e1) add_entry<V, kLanes, VECS>(a[1], xt, w, n, r0, e1);
  cursor[0] = e0;
  cursor[1] = e1;
}

// acc[o, r0 .. r0 + VECS * kLanes) = the sum of value * x^T[column, r0 ..] over row o's entries,
// for rows [o0, o1), blocks of x^T rows outermost. Each sum adds its entries in stored order,
// the partial sums parked in acc between blocks: the same bits as one pass, and for every
// chunk width.
template <class V, int kLanes, int VECS>
NNOPS_ALWAYS_INLINE void blocked_rows(float* acc, const float* xt, const SparseView& w, int64_t n,
                                      int64_t r0, int64_t o0, int64_t o1, int64_t* cursor) {
  const int64_t block = block_rows(VECS * kLanes);
  // Exact 2:4 (every slot kept), x^T rows VECS * kLanes apart: two rows at a time, by the table.
  static const Nm24PairOffsets table = nm24_pair_offsets(VECS * kLanes);
  const bool pairs = w.nm24 && !w.nm24_unused && n == VECS * kLanes && r0 == 0;
  if (!w.nm24)
    for (int64_t o = o0; o < o1; ++o) cursor[o - o0] = w.row_ptr[o];
  for (int64_t c0 = 0; c0 < w.cols; c0 += block) {
    const int64_t c1 = std::min(c0 + block, w.cols);
    if (pairs) {
      int64_t o = o0;
      for (; o + 2 <= o1; o += 2) {
        V a[2][VECS];
        load_sums<V, kLanes, VECS, 2>(a, acc + o * n, n, c0 == 0);
        nm24_pair_rows<V, kLanes, VECS, 2>(a, xt, w, table, o, c0, c1);
        store_sums<V, kLanes, VECS, 2>(acc + o * n, a, n);
      }
      if (o < o1) {
        V a[1][VECS];
        load_sums<V, kLanes, VECS, 1>(a, acc + o * n, n, c0 == 0);
        nm24_pair_rows<V, kLanes, VECS, 1>(a, xt, w, table, o, c0, c1);
        store_sums<V, kLanes, VECS, 1>(acc + o * n, a, n);
      }
      continue;
    }
    int64_t o = o0;
    if (!w.nm24) {
      for (; o + 2 <= o1; o += 2) {
        V a[2][VECS];
        load_sums<V, kLanes, VECS, 2>(a, acc + o * n + r0, n, c0 == 0);
        csr_two_rows<V, kLanes, VECS>(a, xt, w, n, r0, o, c1, cursor + (o - o0));
        store_sums<V, kLanes, VECS, 2>(acc + o * n + r0, a, n);
      }
    }
    for (; o < o1; ++o) {
      float* out = acc + o * n + r0;
      V a[VECS] = {};
      if (c0 > 0) {
#pragma GCC unroll 4
        for (int j = 0; j < VECS; ++j) std::memcpy(&a[j], out + j * kLanes, sizeof(V));
      }
#define NNOPS_VECTOR_ADD(value, column) \
  add_scaled<V, kLanes, VECS>(a, (value), xt + (column)*n + r0);
      NNOPS_FOR_EACH_ENTRY_IN(w, o, c0, c1, cursor + (o - o0), NNOPS_VECTOR_ADD)
#undef NNOPS_VECTOR_ADD
#pragma GCC unroll 4
      for (int j = 0; j < VECS; ++j) std::memcpy(out + j * kLanes, &a[j], sizeof(V));
    }
  }
}

template <int VECS>
__attribute__((target("avx512f"))) void blocked_rows_avx512(float* acc, const float* xt,
                                                            const SparseView& w, int64_t n,
                                                            int64_t r0, int64_t o0, int64_t o1,
                                                            int64_t* cursor) {
  blocked_rows<V16, 16, VECS>(acc, xt, w, n, r0, o0, o1, cursor);
}
template <int VECS>
__attribute__((target("avx2,fma"))) void blocked_rows_avx2(float* acc, const float* xt,
                                                           const SparseView& w, int64_t n,
                                                           int64_t r0, int64_t o0, int64_t o1,
                                                           int64_t* cursor) {
  blocked_rows<V8, 8, VECS>(acc, xt, w, n, r0, o0, o1, cursor);
}
#endif

#if defined(__x86_64__) && defined(__GNUC__)
// The sum of a vector's 16 lanes: halves added in a fixed tree (16 -> 8 -> 4 -> 2 -> 1).
__attribute__((target("avx512f"))) NNOPS_ALWAYS_INLINE float lane_sum(__m512 v) {
  typedef float F8 __attribute__((vector_size(32)));
  typedef float F4 __attribute__((vector_size(16)));
  const V16 a = reinterpret_cast<V16>(v);
  const F8 b = __builtin_shufflevector(a, a, 0, 1, 2, 3, 4, 5, 6, 7) +
               __builtin_shufflevector(a, a, 8, 9, 10, 11, 12, 13, 14, 15);
  const F4 c =
      __builtin_shufflevector(b, b, 0, 1, 2, 3) + __builtin_shufflevector(b, b, 4, 5, 6, 7);
  return (c[0] + c[2]) + (c[1] + c[3]);
}

// R batch rows of one NM24 output row, the row's slots as the vector dimension: 16 slots (8
// groups, 32 columns) at a time, x's 32 columns turned into the slots' by one two-source
// permute with unused slots zeroed (a NaN of x at a pruned position stays out of y), the 16 lane
// sums of each batch row added in a fixed tree at the end (lane_sum).
// One chunk of nm24_slot_row: 16 slots of 32 columns from c0, the columns' x loaded under lo
// and hi (a last chunk's columns past the row are not read), slots past it under `slots`.
template <int R>
__attribute__((target("avx512f"))) NNOPS_ALWAYS_INLINE void nm24_slot_chunk(
    __m512 (&acc)[R], const float* v, const float* x, int64_t in, int64_t c0, uint32_t codes,
    __mmask16 slots, __mmask16 lo, __mmask16 hi) {
  const Nm24Lanes lanes = nm24_lanes(codes);
  const I16 valid = reinterpret_cast<I16>(_mm512_maskz_mov_epi32(slots, _mm512_set1_epi32(-1)));
  const I16 used = lanes.used & valid;
  const __m512 values = _mm512_maskz_loadu_ps(slots, v + c0 / 2);
  const __m512i column = reinterpret_cast<__m512i>(lanes.column);
  for (int i = 0; i < R; ++i) {
    const float* xr = x + i * in + c0;
    const __m512 picked = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(lo, xr), column,
                                                 _mm512_maskz_loadu_ps(hi, xr + 16));
    acc[i] = _mm512_fmadd_ps(values, reinterpret_cast<__m512>(reinterpret_cast<I16>(picked) & used),
                             acc[i]);
  }
}

template <int R>
__attribute__((target("avx512f"))) NNOPS_ALWAYS_INLINE void nm24_slot_row(float* y, const float* x,
                                                                          const SparseView& w,
                                                                          float b, int64_t r,
                                                                          int64_t o) {
  const int64_t in = w.cols, full = in / 32 * 32;
  const float* v = w.values + o * (in / 2);
  const float* xr = x + r * in;
  const uint8_t* meta = w.metadata + o * nm24_metadata_cols(in);
  __m512 acc[R];
  for (int i = 0; i < R; ++i) acc[i] = _mm512_setzero_ps();
  for (int64_t c0 = 0; c0 < full; c0 += 32) {
    uint32_t codes;
    std::memcpy(&codes, meta + c0 / 8, sizeof(codes));
    nm24_slot_chunk<R>(acc, v, xr, in, c0, codes, 0xFFFF, 0xFFFF, 0xFFFF);
  }
  if (full < in) {  // 4-28 columns: 1-7 groups
    const int cols = static_cast<int>(in - full);
    uint32_t codes = 0;
    std::memcpy(&codes, meta + full / 8, static_cast<size_t>(cols / 4 + 1) / 2);
    nm24_slot_chunk<R>(acc, v, xr, in, full, codes, static_cast<__mmask16>((1u << (cols / 2)) - 1u),
                       static_cast<__mmask16>(cols >= 16 ? 0xFFFFu : (1u << cols) - 1u),
                       static_cast<__mmask16>(cols > 16 ? (1u << (cols - 16)) - 1u : 0u));
  }
  for (int i = 0; i < R; ++i) y[(r + i) * w.rows + o] = lane_sum(acc[i]) + b;
}

// y[r, o] for batch rows [r0, n) and rows [o0, o1) of an NM24 weight, four batch rows at a time
// (each stored value loaded once for them), x read in place: the path for the last few batch
// rows past a multiple of 64 (inference at batch 1), where a batch-wide vector of 16 mostly
// padded rows is bound by its one accumulator's latency (1000 -> 2000 at batch 1, AMD EPYC:
// 0.09 ms here, 0.68 ms padded, 0.71 ms by the scalar loop, 0.37 ms dense).
__attribute__((target("avx512f"))) void nm24_narrow_rows_avx512(float* y, const float* x,
                                                                const SparseView& w,
                                                                const float* bias, int64_t n,
                                                                int64_t r0, int64_t o0,
                                                                int64_t o1) {
  for (int64_t r = r0; r < n; r += 4) {
    for (int64_t o = o0; o < o1; ++o) {
      const float b = bias ? bias[o] : 0.0f;
      switch (std::min<int64_t>(4, n - r)) {
        case 4:
          nm24_slot_row<4>(y, x, w, b, r, o);
          break;
        case 3:
          nm24_slot_row<3>(y, x, w, b, r, o);
          break;
        case 2:
          nm24_slot_row<2>(y, x, w, b, r, o);
          break;
        default:
          nm24_slot_row<1>(y, x, w, b, r, o);
          break;
      }
    }
  }
}
#endif

using BlockedRows = void (*)(float*, const float*, const SparseView&, int64_t, int64_t, int64_t,
                             int64_t, int64_t*);

using NarrowRows = void (*)(float*, const float*, const SparseView&, const float*, int64_t, int64_t,
                            int64_t, int64_t);

// The vector kernels of one ISA level: kernels[v - 1] covers v vectors of batch rows.
struct ForwardKernels {
  BlockedRows kernels[4] = {};
  int64_t lanes = 0;                 // batch rows per vector; 0: the scalar loop only
  NarrowRows nm24_narrow = nullptr;  // NM24's last few batch rows (null: padded vectors)
};

ForwardKernels forward_kernels_for_active_isa() {
#if defined(__x86_64__) && defined(__GNUC__)
  switch (active_cpu_isa()) {
    case CpuIsa::AVX512:
      return {{blocked_rows_avx512<1>, blocked_rows_avx512<2>, blocked_rows_avx512<3>,
               blocked_rows_avx512<4>},
              16,
              nm24_narrow_rows_avx512};
    case CpuIsa::AVX2:
    case CpuIsa::AVX2WideTiles:
      return {
          {blocked_rows_avx2<1>, blocked_rows_avx2<2>, blocked_rows_avx2<3>, blocked_rows_avx2<4>},
          8};
    default:
      break;
  }
#endif
  return {};
}

}  // namespace

// Batch rows past a multiple of 64 up to which NM24 takes the narrow kernel: its cost grows with
// the rows (four at a time), a padded vector's does not (one accumulator's latency bounds it).
// Measured (AMD EPYC, 2 threads, 1000 -> 2000): 1 row 0.09 ms narrow against 0.68 padded and 0.37
// dense, 8 rows 0.35 / 0.67 / 0.44, 12 rows 0.55 / 0.69 / 0.55, 16 rows 0.75 / 0.69 / 0.66.
constexpr int64_t kNarrowRows = 12;

void CpuBackend::sparse_linear_forward(float* y, const float* x, const SparseView& w,
                                       const float* bias, int64_t n) {
  const ForwardKernels k = forward_kernels_for_active_isa();
  const int64_t in = w.cols, out = w.rows;
  const bool parallel = out * in * n >= kParallelThreshold;
  thread_local ScratchBuffer xt_buffer, acc_buffer;
  if (!k.lanes) {  // x^T [in + 1, n] (its last row zeros, for NM24's unused slots: layout.hpp)
    float* const xt = xt_buffer.get((in + 1) * n);
    std::fill(xt + in * n, xt + (in + 1) * n, 0.0f);
    transpose(xt, x, n, in, false);
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t o = 0; o < out; ++o) scalar_rows(y, xt, w, bias ? bias[o] : 0.0f, n, o);
    return;
  }
  // Whole chunks of 4 vectors, then the rest: a few rows of an NM24 weight by the narrow kernel,
  // a single CSR row by a scalar loop over x (which one row keeps in registers: 1000 -> 2000 at
  // batch 1, 0.11 ms against 0.15 padded at 90% pruned), else one chunk of 1-3 vectors padded
  // with zero rows. Below 64 rows (a batch of 32, inference at batch 1) the scalar loop had taken
  // 3-33x the dense product's time (2:4, the MLP's layers; AMD EPYC).
  const int64_t chunk = 4 * k.lanes, whole = n / chunk * chunk;
  const bool narrow = w.nm24 && k.nm24_narrow && n - whole <= kNarrowRows;
  const bool scalar_row = !w.nm24 && n - whole == 1;
  // The batch rows the vector kernels take, padded to whole vectors.
  const int64_t nv = narrow || scalar_row ? whole : (n + k.lanes - 1) / k.lanes * k.lanes;
  // Chunk by chunk, x^T [in + 1, width] (its last row zeros, for NM24's unused slots) and the
  // accumulators [out, width], each chunk's panel contiguous: as one [in, n] matrix, x^T's rows
  // lay n floats apart, and at n = 2048 (8 KiB) a block's rows all fell in the same few L1 sets
  // (CSR 90%, 2048 x 256 x 256: 1.78 ms against 1.40 dense). Allocated before y is written.
  float* const xt = xt_buffer.get((in + 1) * nv);
  float* const acc = acc_buffer.get(out * nv);
  const int64_t chunks = (nv + chunk - 1) / chunk;
#pragma omp parallel if (parallel)
  {
    const int threads = omp_get_num_threads(), t = omp_get_thread_num();
    // Each thread transposes its own chunks of x (the rows past n zeros) ...
    for (int64_t i = t; i < chunks; i += threads) {
      const int64_t r0 = i * chunk, width = std::min(chunk, nv - r0),
                    rows = std::min(width, n - r0);
      float* panel = xt + (in + 1) * r0;
      transpose_strided(panel, width, x + r0 * in, in, rows, in, true);
      for (int64_t c = 0; c < in; ++c)
        std::fill(panel + c * width + rows, panel + (c + 1) * width, 0.0f);
      std::fill(panel + in * width, panel + (in + 1) * width, 0.0f);
    }
#pragma omp barrier
    // ... then computes its own output rows of every chunk.
    const int64_t o0 = out * t / threads, o1 = out * (t + 1) / threads;
    thread_local std::vector<int64_t> cursor;  // CSR: each row's next entry
    cursor.resize(static_cast<size_t>(o1 - o0));
    for (int64_t r0 = 0; r0 < nv; r0 += chunk) {
      const int64_t width = std::min(chunk, nv - r0), rows = std::min(width, n - r0);
      float* a = acc + out * r0;
      k.kernels[width / k.lanes - 1](a, xt + (in + 1) * r0, w, width, 0, o0, o1, cursor.data());
      transpose_strided(y + r0 * out + o0, out, a + o0 * width, width, o1 - o0, rows, true);
      if (bias)
        for (int64_t r = r0; r < r0 + rows; ++r)
          for (int64_t o = o0; o < o1; ++o) y[r * out + o] += bias[o];
    }
    if (narrow && whole < n) k.nm24_narrow(y, x, w, bias, n, whole, o0, o1);
    if (scalar_row)
      for (int64_t o = o0; o < o1; ++o) csr_row(y, x, w, bias ? bias[o] : 0.0f, whole, o);
  }
}

}  // namespace nnops::detail
