// CPU GEMM after BLIS / Goto: op(b) is packed into NR-wide panels and op(a) into MR-tall panels
// (edges zero-padded), and an MR x NR register-blocked micro-kernel runs over them. Two
// micro-kernels, picked at run time: a portable loop nest the compiler vectorizes for baseline
// x86-64, and an AVX2+FMA one in intrinsics whose accumulators stay in registers. Threads split
// the output's 16-column panels only. With beta == 0, c is never read.
#include <omp.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <vector>

#include "cpu_backend.hpp"

namespace nnops::detail {

namespace {

constexpr int kMR = 6;  // 6 x 16 accumulators = 12 AVX2 registers
constexpr int kNR = 16;
constexpr int64_t kKC = 256;   // a 6 x 256 A panel (6 KiB) and 256 x 16 B panel (16 KiB) fit L1/L2
constexpr int64_t kMC = 96;    // A block of 96 x 256 floats (96 KiB) stays in L2
constexpr int64_t kNC = 2048;  // B block of 256 x 2048 floats (2 MiB) lives in L3

// c[mr, nr] (row stride ldc) = alpha * (a_panel * b_panel) + beta * c; only the valid mr x nr
// corner is written. beta == 0 writes without reading c. The portable reference kernel.
void micro_kernel_generic(int64_t kc, const float* __restrict a, const float* __restrict b,
                          float* c, int64_t ldc, float alpha, float beta, int mr, int nr) {
  float acc[kMR][kNR] = {};
  for (int64_t p = 0; p < kc; ++p) {
    const float* ap = a + p * kMR;
    const float* bp = b + p * kNR;
#pragma GCC unroll 6
    for (int i = 0; i < kMR; ++i) {
      const float ai = ap[i];
#pragma GCC unroll 16
      for (int j = 0; j < kNR; ++j) acc[i][j] += ai * bp[j];
    }
  }
  for (int i = 0; i < mr; ++i) {
    float* ci = c + i * ldc;
    if (beta == 0.0f) {
      for (int j = 0; j < nr; ++j) ci[j] = alpha * acc[i][j];
    } else {
      for (int j = 0; j < nr; ++j) ci[j] = alpha * acc[i][j] + beta * ci[j];
    }
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
// The same computation with AVX2 intrinsics: the 6 x 16 accumulators live in 12 ymm
// registers, each step broadcasts one A value per row and issues two FMAs per row against two
// B vectors. Per element the sum still runs over p in order, with one fused multiply-add each
// (the portable kernel, built without FMA, rounds the product and the sum separately).
__attribute__((target("avx2,fma"))) void micro_kernel_avx2(int64_t kc, const float* a,
                                                           const float* b, float* c, int64_t ldc,
                                                           float alpha, float beta, int mr,
                                                           int nr) {
  static_assert(kMR == 6 && kNR == 16, "the AVX2 kernel is written for 6 x 16 tiles");
  // Twelve named accumulators: GCC keeps named __m256 locals in registers, an array it spills.
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (int64_t p = 0; p < kc; ++p) {
    const __m256 b0 = _mm256_loadu_ps(b + p * kNR);
    const __m256 b1 = _mm256_loadu_ps(b + p * kNR + 8);
    const float* ap = a + p * kMR;
    __m256 ai = _mm256_broadcast_ss(ap + 0);
    c00 = _mm256_fmadd_ps(ai, b0, c00);
    c01 = _mm256_fmadd_ps(ai, b1, c01);
    ai = _mm256_broadcast_ss(ap + 1);
    c10 = _mm256_fmadd_ps(ai, b0, c10);
    c11 = _mm256_fmadd_ps(ai, b1, c11);
    ai = _mm256_broadcast_ss(ap + 2);
    c20 = _mm256_fmadd_ps(ai, b0, c20);
    c21 = _mm256_fmadd_ps(ai, b1, c21);
    ai = _mm256_broadcast_ss(ap + 3);
    c30 = _mm256_fmadd_ps(ai, b0, c30);
    c31 = _mm256_fmadd_ps(ai, b1, c31);
    ai = _mm256_broadcast_ss(ap + 4);
    c40 = _mm256_fmadd_ps(ai, b0, c40);
    c41 = _mm256_fmadd_ps(ai, b1, c41);
    ai = _mm256_broadcast_ss(ap + 5);
    c50 = _mm256_fmadd_ps(ai, b0, c50);
    c51 = _mm256_fmadd_ps(ai, b1, c51);
  }
  const __m256 acc[kMR][2] = {{c00, c01}, {c10, c11}, {c20, c21},
                              {c30, c31}, {c40, c41}, {c50, c51}};
  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  if (mr == kMR && nr == kNR) {
    for (int i = 0; i < kMR; ++i) {
      float* ci = c + i * ldc;
      for (int h = 0; h < 2; ++h) {
        __m256 r = _mm256_mul_ps(va, acc[i][h]);
        // alpha*acc + beta*c, rounded like the portable kernel's `alpha * acc + beta * c`.
        if (beta != 0.0f) r = _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci + 8 * h), r);
        _mm256_storeu_ps(ci + 8 * h, r);
      }
    }
    return;
  }
  alignas(32) float tile[kMR][kNR];  // edge tile: write only the valid corner
  for (int i = 0; i < kMR; ++i) {
    _mm256_store_ps(tile[i], acc[i][0]);
    _mm256_store_ps(tile[i] + 8, acc[i][1]);
  }
  for (int i = 0; i < mr; ++i) {
    float* ci = c + i * ldc;
    for (int j = 0; j < nr; ++j) {
      ci[j] = beta == 0.0f ? alpha * tile[i][j] : std::fma(beta, ci[j], alpha * tile[i][j]);
    }
  }
}
#endif

using MicroKernel = void (*)(int64_t, const float*, const float*, float*, int64_t, float, float,
                             int, int);

CpuIsa isa_from_env() {
  const char* env = std::getenv("NNOPS_CPU_ISA");
  if (env && std::strcmp(env, "generic") == 0) return CpuIsa::Generic;
  if (env && std::strcmp(env, "avx2") == 0) return CpuIsa::AVX2;
  return CpuIsa::Auto;
}

std::atomic<CpuIsa>& requested_isa() {
  static std::atomic<CpuIsa> isa{isa_from_env()};
  return isa;
}

MicroKernel select_micro_kernel() {
#if defined(__x86_64__) && defined(__GNUC__)
  if (active_cpu_isa() == CpuIsa::AVX2) return micro_kernel_avx2;
#endif
  return micro_kernel_generic;
}

// op(a)[i, p] for rows [i0, i0+mc) and depth [p0, p0+kc) into MR-tall panels, zero-padded.
void pack_a(float* dst, const float* a, bool trans, int64_t m, int64_t k, int64_t i0, int64_t mc,
            int64_t p0, int64_t kc, int64_t panel) {
  float* out = dst + panel * kMR * kc;
  const int64_t row0 = i0 + panel * kMR;
  const int64_t rows = std::min<int64_t>(kMR, i0 + mc - row0);
  for (int64_t p = 0; p < kc; ++p) {
    for (int64_t i = 0; i < kMR; ++i) {
      float v = 0.0f;
      if (i < rows) v = trans ? a[(p0 + p) * m + row0 + i] : a[(row0 + i) * k + p0 + p];
      out[p * kMR + i] = v;
    }
  }
}

// Panel `panel` of a transposed b block (op(b)[p, j] = b[j, p]): each of its 16 columns is a
// contiguous run of one row of b. Zero-padded past column nc.
void pack_b_transposed(float* dst, const float* b, int64_t k, int64_t p0, int64_t kc, int64_t j0,
                       int64_t nc, int64_t panel) {
  float* out = dst + panel * kNR * kc;
  const int64_t col0 = j0 + panel * kNR;
  const int64_t cols = std::min<int64_t>(kNR, j0 + nc - col0);
  for (int64_t p = 0; p < kc; ++p) {
    float* o = out + p * kNR;
    for (int64_t j = 0; j < cols; ++j) o[j] = b[(col0 + j) * k + p0 + p];
    for (int64_t j = cols; j < kNR; ++j) o[j] = 0.0f;
  }
}

// Row p of a non-transposed b block into every panel: the row is read once, contiguously,
// and scattered in 16-float pieces. Packing panel by panel instead reads 64 bytes from each of
// kc rows per panel, and took ~40% of a batch-64 GEMM.
void pack_b_row(float* dst, const float* b, int64_t n, int64_t p0, int64_t kc, int64_t j0,
                int64_t nc, int64_t p) {
  const float* src = b + (p0 + p) * n + j0;
  const int64_t full = nc / kNR;
  for (int64_t jp = 0; jp < full; ++jp) {
    std::memcpy(dst + jp * kNR * kc + p * kNR, src + jp * kNR, sizeof(float) * kNR);
  }
  const int64_t rest = nc - full * kNR;
  if (rest > 0) {
    float* o = dst + full * kNR * kc + p * kNR;
    for (int64_t j = 0; j < kNR; ++j) o[j] = j < rest ? src[full * kNR + j] : 0.0f;
  }
}

// Packing buffers of the calling thread, kept between calls: a fresh 2 MiB allocation per
// GEMM is an mmap plus page faults every time, in a training loop's hottest call.
struct PackingBuffer {
  struct Free {
    void operator()(float* p) const { std::free(p); }
  };
  std::unique_ptr<float, Free> data;
  int64_t capacity = 0;
  float* get(int64_t count) {
    if (count > capacity) {
      const size_t bytes = (static_cast<size_t>(count) * sizeof(float) + 63) / 64 * 64;
      data.reset(static_cast<float*>(std::aligned_alloc(64, bytes)));
      capacity = data ? count : 0;
      if (!data) throw OutOfMemory("host", bytes);
    }
    return data.get();
  }
};

}  // namespace

bool cpu_supports_avx2() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool supported = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return supported;
#else
  return false;
#endif
}

void set_cpu_isa(CpuIsa isa) {
  requested_isa().store(isa);
}

CpuIsa active_cpu_isa() {
  const CpuIsa isa = requested_isa().load();
  if (isa == CpuIsa::Generic) return CpuIsa::Generic;
  return cpu_supports_avx2() ? CpuIsa::AVX2 : CpuIsa::Generic;
}

void cpu_sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha,
               const float* a, const float* b, float beta, float* c) {
  if (m == 0 || n == 0) return;
  if (k == 0 || alpha == 0.0f) {
    // Nothing to multiply: c = beta * c, and beta == 0 must not read c.
    for (int64_t i = 0; i < m * n; ++i) c[i] = beta == 0.0f ? 0.0f : beta * c[i];
    return;
  }
  const MicroKernel kernel = select_micro_kernel();
  const int64_t nc_max = std::min(kNC, (n + kNR - 1) / kNR * kNR);
  const int64_t kc_max = std::min(kKC, k);
  const int64_t mc_max = std::min(kMC, (m + kMR - 1) / kMR * kMR);
  thread_local PackingBuffer a_buffer, b_buffer;
  float* const b_pack = b_buffer.get(nc_max * kc_max);
  float* const a_pack = a_buffer.get(mc_max * kc_max);
  const bool parallel = m * n * k >= kParallelThreshold && omp_get_max_threads() > 1;

#pragma omp parallel if (parallel)
  for (int64_t jc = 0; jc < n; jc += kNC) {
    const int64_t nc = std::min(kNC, n - jc);
    const int64_t b_panels = (nc + kNR - 1) / kNR;
    for (int64_t pc = 0; pc < k; pc += kKC) {
      const int64_t kc = std::min(kKC, k - pc);
      const float beta_here = pc == 0 ? beta : 1.0f;  // later depth blocks accumulate
      if (trans_b) {
#pragma omp for schedule(static)
        for (int64_t jp = 0; jp < b_panels; ++jp) {
          pack_b_transposed(b_pack, b, k, pc, kc, jc, nc, jp);
        }
      } else {
#pragma omp for schedule(static)
        for (int64_t p = 0; p < kc; ++p) pack_b_row(b_pack, b, n, pc, kc, jc, nc, p);
      }
      for (int64_t ic = 0; ic < m; ic += kMC) {
        const int64_t mc = std::min(kMC, m - ic);
        const int64_t a_panels = (mc + kMR - 1) / kMR;
#pragma omp for schedule(static)
        for (int64_t ip = 0; ip < a_panels; ++ip) {
          pack_a(a_pack, a, trans_a, m, k, ic, mc, pc, kc, ip);
        }
        // Threads split the column panels; each B panel stays in its core's L1 across the A
        // panels of the block. The implicit barrier keeps a_pack alive until all are done.
#pragma omp for schedule(static)
        for (int64_t jp = 0; jp < b_panels; ++jp) {
          const int nr = static_cast<int>(std::min<int64_t>(kNR, nc - jp * kNR));
          for (int64_t ip = 0; ip < a_panels; ++ip) {
            const int mr = static_cast<int>(std::min<int64_t>(kMR, mc - ip * kMR));
            kernel(kc, a_pack + ip * kMR * kc, b_pack + jp * kNR * kc,
                   c + (ic + ip * kMR) * n + jc + jp * kNR, n, alpha, beta_here, mr, nr);
          }
        }
      }
    }
  }
}

void CpuBackend::gemm(float* c, const float* a, const float* b, int64_t m, int64_t n, int64_t k,
                      const GemmOptions& options) {
  cpu_sgemm(options.trans_a, options.trans_b, m, n, k, options.alpha, a, b, options.beta, c);
}

void CpuBackend::linear_forward(float* y, const float* x, const float* w, const float* bias,
                                int64_t rows, int64_t in, int64_t out) {
  // Broadcast the bias into y, then accumulate x * w^T on top of it (beta = 1).
  if (bias) {
#pragma omp parallel for if (rows * out >= kParallelThreshold)
    for (int64_t r = 0; r < rows; ++r) std::memcpy(y + r * out, bias, sizeof(float) * out);
  }
  cpu_sgemm(false, true, rows, out, in, 1.0f, x, w, bias ? 1.0f : 0.0f, y);
}

void CpuBackend::linear_backward(float* dx, float* dw, float* db, const float* x, const float* w,
                                 const float* dy, int64_t rows, int64_t in, int64_t out) {
  if (dx) cpu_sgemm(false, false, rows, in, out, 1.0f, dy, w, 0.0f, dx);  // [rows,out]*[out,in]
  cpu_sgemm(true, false, out, in, rows, 1.0f, dy, x, 0.0f, dw);           // [out,rows]*[rows,in]
  if (db) {
    // Column sums of dy, accumulated in double so long batches lose nothing.
#pragma omp parallel for if (rows * out >= kParallelThreshold)
    for (int64_t o = 0; o < out; ++o) {
      double sum = 0.0;
      for (int64_t r = 0; r < rows; ++r) sum += dy[r * out + o];
      db[o] = static_cast<float>(sum);
    }
  }
}

}  // namespace nnops::detail
