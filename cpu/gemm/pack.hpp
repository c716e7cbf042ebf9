// Packing for the CPU GEMM: op(a) into MR-tall panels and op(b) into NR-wide panels (edges
// zero-padded) that the micro-kernels read, from F32 or BF16 operands; and BF16 operands packed
// in depth pairs for the VDPBF16PS kernel. Included by cpu/gemm/driver.cpp only.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "../transpose.hpp"
#include "nnops/detail/bf16_math.hpp"

namespace nnops::detail {

// How many rows ahead pack_b_row prefetches.
constexpr int64_t kPrefetchRows = 32;
// For a short A, B panels are packed this many at a time (256 contiguous bytes of each row of
// a non-transposed b for 16-wide panels) into a buffer that stays in L2.
constexpr int64_t kPanelsAtOnce = 4;

// Inputs are F32 (float) or BF16 (its bits, uint16_t); packing widens BF16 to float, so one
// F32 micro-kernel serves both and the products of BF16 values are exact in FP32.
inline float to_f32(float v) {
  return v;
}
inline float to_f32(uint16_t v) {
  return bf16_bits_to_float(v);
}

// op(a)[i, p] for rows [i0, i0+mc) and depth [p0, p0+kc) into MR-tall panels, zero-padded.
template <class T, int MR>
void pack_a(float* dst, const void* a_data, bool trans, int64_t m, int64_t k, int64_t i0,
            int64_t mc, int64_t p0, int64_t kc, int64_t panel) {
  const T* a = static_cast<const T*>(a_data);
  float* out = dst + panel * MR * kc;
  const int64_t row0 = i0 + panel * MR;
  const int64_t rows = std::min<int64_t>(MR, i0 + mc - row0);
  for (int64_t p = 0; p < kc; ++p) {
    for (int64_t i = 0; i < MR; ++i) {
      float v = 0.0f;
      if (i < rows) v = to_f32(trans ? a[(p0 + p) * m + row0 + i] : a[(row0 + i) * k + p0 + p]);
      out[p * MR + i] = v;
    }
  }
}

// Panel `panel` of a transposed b block (op(b)[p, j] = b[j, p]): each of its 16 columns is a
// contiguous run of one row of b. Zero-padded past column nc.
template <class T, int NR>
void pack_b_transposed(float* dst, const void* b_data, int64_t k, int64_t p0, int64_t kc,
                       int64_t j0, int64_t nc, int64_t panel) {
  const T* b = static_cast<const T*>(b_data);
  float* out = dst + panel * NR * kc;
  const int64_t col0 = j0 + panel * NR;
  const int64_t cols = std::min<int64_t>(NR, j0 + nc - col0);
  // Column by column: each is one contiguous run of a row of b (one stream for the prefetcher).
  for (int64_t j = 0; j < NR; ++j) {
    const T* src = b + (col0 + j) * k + p0;
    if (j < cols) {
      for (int64_t p = 0; p < kc; ++p) out[p * NR + j] = to_f32(src[p]);
    } else {
      for (int64_t p = 0; p < kc; ++p) out[p * NR + j] = 0.0f;
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)

// The same panel through 8 x 8 register transposes: eight rows of b are read 8 floats at a
// time and written as eight 8-float pieces of packed rows. Scalar stores of the loop above
// took a third of a batch-64 x * w^T product. Depth blocks of 8 are the outer loop, so each
// packed row is written whole, once: with the column groups outer, every 128-byte packed row
// was written in four 32-byte pieces by four passes over a panel larger than L1 (a 1000-deep
// panel: 9.9 -> 5.9 us in L2, 11.1 -> 7.1 us from L3; Intel Xeon). An edge panel transposes
// its whole groups of 8 columns too and zero-pads the rest.
template <int NR>
__attribute__((target("avx2,fma"))) void pack_b_transposed_avx2(float* dst, const void* b_data,
                                                                int64_t k, int64_t p0, int64_t kc,
                                                                int64_t j0, int64_t nc,
                                                                int64_t panel) {
  static_assert(NR % 8 == 0, "whole groups of 8 columns");
  constexpr int kNR = NR;  // the loop below is written for any multiple of 8
  const float* b = static_cast<const float*>(b_data);
  const int64_t col0 = j0 + panel * kNR;
  const int cols = static_cast<int>(std::min<int64_t>(kNR, j0 + nc - col0));
  const int groups = cols / 8;  // whole groups of 8 valid columns
  float* out = dst + panel * kNR * kc;
  const float* src = b + col0 * k + p0;
  const int64_t kc8 = kc / 8 * 8;
  for (int64_t p = 0; p < kc8; p += 8) {
    for (int g = 0; g < groups; ++g)
      transpose_8x8(src + 8 * g * k + p, k, out + p * kNR + 8 * g, kNR);
  }
  for (int64_t p = kc8; p < kc; ++p) {
    for (int j = 0; j < 8 * groups; ++j) out[p * kNR + j] = src[j * k + p];
  }
  for (int j = 8 * groups; j < kNR; ++j) {  // the columns past the last whole group
    if (j < cols) {
      for (int64_t p = 0; p < kc; ++p) out[p * kNR + j] = src[j * k + p];
    } else {
      for (int64_t p = 0; p < kc; ++p) out[p * kNR + j] = 0.0f;
    }
  }
}
#endif

#if defined(__x86_64__) && defined(__GNUC__)
// Panel `panel` of a non-transposed F32 a block (rows of a are the panel's MR columns) through
// the same register transposes: 8 rows at a time, then 4. The scalar pack_a above took a tenth
// of a transformer step (products of 2048 tokens by 256 to 1024 columns).
template <int MR>
__attribute__((target("avx2,fma"))) void pack_a_avx2(float* dst, const void* a_data, bool trans,
                                                     int64_t m, int64_t k, int64_t i0, int64_t mc,
                                                     int64_t p0, int64_t kc, int64_t panel) {
  static_assert(MR % 4 == 0, "whole groups of 4 rows");
  const int64_t row0 = i0 + panel * MR;
  if (i0 + mc - row0 < MR) {  // an edge panel to zero-pad
    pack_a<float, MR>(dst, a_data, trans, m, k, i0, mc, p0, kc, panel);
    return;
  }
  if (trans) {  // each depth's MR values are contiguous already: one copy per depth
    const float* a = static_cast<const float*>(a_data) + p0 * m + row0;
    float* out = dst + panel * MR * kc;
    for (int64_t p = 0; p < kc; ++p) std::memcpy(out + p * MR, a + p * m, sizeof(float) * MR);
    return;
  }
  const float* a = static_cast<const float*>(a_data) + row0 * k + p0;
  float* out = dst + panel * MR * kc;
  const int64_t kc8 = kc / 8 * 8;
  // Depth blocks outer, as in pack_b_transposed_avx2: each packed row is written whole, once.
  for (int64_t p = 0; p < kc8; p += 8) {
    int group = 0;
    for (; group + 8 <= MR; group += 8)
      transpose_8x8(a + group * k + p, k, out + p * MR + group, MR);
    for (; group < MR; group += 4) {
      const float* src = a + group * k;
      const __m256 r0 = _mm256_loadu_ps(src + 0 * k + p), r1 = _mm256_loadu_ps(src + 1 * k + p);
      const __m256 r2 = _mm256_loadu_ps(src + 2 * k + p), r3 = _mm256_loadu_ps(src + 3 * k + p);
      const __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
      const __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
      // u_j holds column j (low half) and column j + 4 (high half) of the 4 rows.
      const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
      const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
      float* o = out + p * MR + group;
      _mm_storeu_ps(o + 0 * MR, _mm256_castps256_ps128(u0));
      _mm_storeu_ps(o + 1 * MR, _mm256_castps256_ps128(u1));
      _mm_storeu_ps(o + 2 * MR, _mm256_castps256_ps128(u2));
      _mm_storeu_ps(o + 3 * MR, _mm256_castps256_ps128(u3));
      _mm_storeu_ps(o + 4 * MR, _mm256_extractf128_ps(u0, 1));
      _mm_storeu_ps(o + 5 * MR, _mm256_extractf128_ps(u1, 1));
      _mm_storeu_ps(o + 6 * MR, _mm256_extractf128_ps(u2, 1));
      _mm_storeu_ps(o + 7 * MR, _mm256_extractf128_ps(u3, 1));
    }
  }
  for (int64_t p = kc8; p < kc; ++p) {
    for (int i = 0; i < MR; ++i) out[p * MR + i] = a[i * k + p];
  }
}
#endif

// Row p of a non-transposed b block into every panel: the row is read once, contiguously,
// and scattered in 16-float pieces. Packing panel by panel instead reads 64 bytes from each of
// kc rows per panel, and took ~40% of a batch-64 GEMM.
template <class T, int NR>
void pack_b_row(float* dst, const void* b_data, int64_t n, int64_t p0, int64_t kc, int64_t j0,
                int64_t nc, int64_t p) {
  constexpr int kNR = NR;
  const T* src = static_cast<const T*>(b_data) + (p0 + p) * n + j0;
  // Rows of b lie n elements apart; the hardware prefetcher follows them poorly: fetch ahead.
  // Narrower elements mean less work per row, so BF16 fetches further ahead.
  constexpr int64_t ahead_rows = kPrefetchRows * static_cast<int64_t>(4 / sizeof(T));
  if (p + ahead_rows < kc) {
    const T* ahead = src + ahead_rows * n;
    const int64_t line = 64 / sizeof(T);
    for (int64_t j = 0; j < std::min<int64_t>(nc, kPanelsAtOnce * kNR); j += line) {
      __builtin_prefetch(ahead + j);
    }
  }
  const int64_t full = nc / kNR;
  for (int64_t jp = 0; jp < full; ++jp) {
    float* o = dst + jp * kNR * kc + p * kNR;
    if constexpr (std::is_same_v<T, float>) {
      std::memcpy(o, src + jp * kNR, sizeof(float) * kNR);
    } else {
      for (int64_t j = 0; j < kNR; ++j) o[j] = to_f32(src[jp * kNR + j]);
    }
  }
  const int64_t rest = nc - full * kNR;
  if (rest > 0) {
    float* o = dst + full * kNR * kc + p * kNR;
    for (int64_t j = 0; j < kNR; ++j) o[j] = j < rest ? to_f32(src[full * kNR + j]) : 0.0f;
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// BF16 operands for the pair kernels: the values at depths 2q and 2q + 1 of one row of op(a)
// (or one column of op(b)) in one 32-bit word, the even depth in the low half; zeros past the
// edges and past an odd depth. A panel keeps the float layout's offsets (it uses half of them).
inline uint32_t bf16_pair(uint16_t even, uint16_t odd) {
  return even | (static_cast<uint32_t>(odd) << 16);
}

// out[j] = bf16_pair(even[j], odd[j]) for j < full (a multiple of 4) by 16-bit unpacks, 16,
// 8 and 4 values at a time. The pair packers run only where the pair kernels do (AVX512_BF16,
// or their AVX2 emulation), so AVX2 is there. The compiler's own vectorization of the scalar
// loop (baseline x86-64: SSE2) had packing B at a quarter of the batch-64 BF16 products.
template <int64_t full>
__attribute__((target("avx2"))) void interleave_full_rows_avx2(uint32_t* out, const uint16_t* even,
                                                               const uint16_t* odd) {
  static_assert(full % 4 == 0, "whole groups of 4");
  int64_t j = 0;
  for (; j + 16 <= full; j += 16) {
    const __m256i e = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(even + j));
    const __m256i o = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(odd + j));
    // Within each 128-bit lane: lo holds words j..j+3 and j+8..j+11, hi j+4..j+7, j+12..j+15.
    const __m256i lo = _mm256_unpacklo_epi16(e, o), hi = _mm256_unpackhi_epi16(e, o);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j),
                        _mm256_permute2x128_si256(lo, hi, 0x20));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + j + 8),
                        _mm256_permute2x128_si256(lo, hi, 0x31));
  }
  if (j + 8 <= full) {
    const __m128i e = _mm_loadu_si128(reinterpret_cast<const __m128i*>(even + j));
    const __m128i o = _mm_loadu_si128(reinterpret_cast<const __m128i*>(odd + j));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), _mm_unpacklo_epi16(e, o));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j + 4), _mm_unpackhi_epi16(e, o));
    j += 8;
  }
  if (j + 4 <= full) {
    const __m128i e = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(even + j));
    const __m128i o = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(odd + j));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(out + j), _mm_unpacklo_epi16(e, o));
  }
}

// Depths 2q and 2q + 1 from two rows of the stored matrix (a transposed a, a non-transposed
// b): `width` valid values of each row interleaved into words, zeros up to `full`.
template <int64_t full>
inline void interleave_rows(uint32_t* out, const uint16_t* even, const uint16_t* odd,
                            int64_t width) {
  if (width == full && odd) {
    interleave_full_rows_avx2<full>(out, even, odd);
    return;
  }
  for (int64_t j = 0; j < full; ++j)
    out[j] = j < width ? bf16_pair(even[j], odd ? odd[j] : uint16_t(0)) : 0u;
}

// With an even depth the pair of depths 2q, 2q + 1 of a row of a non-transposed a (or of a
// transposed b) is one 32-bit word of the stored row, and every depth block starts and ends on
// a pair: the F32 packers' 8 x 8 register transposes move those words unchanged. They are
// called on the word view (half the depth) and placed at the pair layout's panel offsets.
template <int MR>
void pack_a_pairs(float* dst, const void* a_data, bool trans, int64_t m, int64_t k, int64_t i0,
                  int64_t mc, int64_t p0, int64_t kc, int64_t panel) {
  const uint16_t* a = static_cast<const uint16_t*>(a_data);
  uint32_t* out = reinterpret_cast<uint32_t*>(dst + panel * MR * kc);
  const int64_t row0 = i0 + panel * MR;
  const int64_t rows = std::min<int64_t>(MR, i0 + mc - row0);
  if constexpr (MR % 4 == 0) {
    if (!trans && k % 2 == 0) {
      float* const base = dst + panel * MR * (kc - kc / 2);  // + panel * MR * kc / 2 inside
      pack_a_avx2<MR>(base, a_data, false, m, k / 2, i0, mc, p0 / 2, kc / 2, panel);
      return;
    }
  }
  if (trans) {  // the pair's two values lie in consecutive rows of the stored a
    for (int64_t q = 0; q < (kc + 1) / 2; ++q) {
      const uint16_t* even = a + (p0 + 2 * q) * m + row0;
      interleave_rows<MR>(out + q * MR, even, 2 * q + 1 < kc ? even + m : nullptr, rows);
    }
    return;
  }
  auto at = [&](int64_t i, int64_t p) -> uint16_t {
    if (i >= rows || p >= kc) return 0;
    return trans ? a[(p0 + p) * m + row0 + i] : a[(row0 + i) * k + p0 + p];
  };
  for (int64_t q = 0; q < (kc + 1) / 2; ++q) {
    for (int64_t i = 0; i < MR; ++i) out[q * MR + i] = bf16_pair(at(i, 2 * q), at(i, 2 * q + 1));
  }
}

template <int NR>
void pack_b_pairs(float* dst, const void* b_data, bool trans_b, int64_t k, int64_t n, int64_t p0,
                  int64_t kc, int64_t j0, int64_t nc, int64_t panel) {
  const uint16_t* b = static_cast<const uint16_t*>(b_data);
  uint32_t* out = reinterpret_cast<uint32_t*>(dst + panel * NR * kc);
  const int64_t col0 = j0 + panel * NR, cols = std::min<int64_t>(NR, j0 + nc - col0);
  if (trans_b && k % 2 == 0) {
    float* const base = dst + panel * NR * (kc - kc / 2);
    pack_b_transposed_avx2<NR>(base, b_data, k / 2, p0 / 2, kc / 2, j0, nc, panel);
    return;
  }
  if (!trans_b) {  // the pair's two values lie in consecutive rows of b
    for (int64_t q = 0; q < (kc + 1) / 2; ++q) {
      const uint16_t* even = b + (p0 + 2 * q) * n + col0;
      interleave_rows<NR>(out + q * NR, even, 2 * q + 1 < kc ? even + n : nullptr, cols);
    }
    return;
  }
  auto at = [&](int64_t p, int64_t j) -> uint16_t {
    if (j >= cols || p >= kc) return 0;
    return trans_b ? b[(col0 + j) * k + p0 + p] : b[(p0 + p) * n + col0 + j];
  };
  for (int64_t q = 0; q < (kc + 1) / 2; ++q) {
    for (int64_t j = 0; j < NR; ++j) out[q * NR + j] = bf16_pair(at(2 * q, j), at(2 * q + 1, j));
  }
}
#endif

}  // namespace nnops::detail
