// CUDA FP32 GEMM written here (cuBLAS is only a baseline in the benchmarks): 128 x 128 output
// tiles per block of 256 threads, 8-deep slices of op(a) and op(b) staged in shared memory, and
// an 8 x 8 register block of accumulators per thread (the classic SIMT SGEMM of CUTLASS and
// siboehm's SGEMM_CUDA). Every transpose case is a template instance; loads are bounds-checked,
// so any m, n, k works. Each element sums over k in order: the same bits on every run. With
// GemmOptions::allow_tf32 a WMMA tensor-core kernel (TF32 inputs, FP32 sums) runs instead.
// BF16 operands always take tensor cores (WMMA m16n16k16, compiled to mma.sync m16n8k16 on
// sm_80+), with FP32 sums. Outputs are F32 or BF16 (rounded once, in the epilogue).
// linear_forward fuses the bias into the epilogue; db is a column sum in row order.
#include <cuda_bf16.h>
#include <mma.h>

#include <type_traits>

#include "cuda_backend.hpp"
#include "elementwise.cuh"

namespace nnops::detail {

namespace {

constexpr int kBM = 128, kBN = 128, kBK = 8, kTM = 8, kTN = 8, kThreads = 256;
static_assert((kBM / kTM) * (kBN / kTN) == kThreads, "one thread per 8 x 8 register block");
static_assert(kBM * kBK == 4 * kThreads && kBN * kBK == 4 * kThreads, "4 loads per thread");

// op(a) is [m, k]: a is [m, k] row-major, or [k, m] when trans_a.
template <bool kTransA, bool kTransB, class TOut>
__global__ void __launch_bounds__(kThreads)
    sgemm_kernel(TOut* __restrict__ d_c, const float* __restrict__ d_a,
                 const float* __restrict__ d_b, const float* __restrict__ d_bias, int64_t m,
                 int64_t n, int64_t k, float alpha, float beta) {
  // Two shared buffers: while the block multiplies one k-slice, the next slice's values are
  // already in flight from global memory into registers (one barrier per slice).
  __shared__ __align__(16) float as[2][kBK][kBM];  // op(a) slice, k-major: rows read as float4s
  __shared__ __align__(16) float bs[2][kBK][kBN];
  const int tid = threadIdx.x;
  const int64_t row0 = int64_t(blockIdx.x) * kBM, col0 = int64_t(blockIdx.y) * kBN;
  const int ty = tid / (kBN / kTN), tx = tid % (kBN / kTN);
  float acc[kTM][kTN] = {};

  // This thread's 4 + 4 elements of a slice; consecutive threads walk the contiguous dimension
  // of each matrix, so the global loads coalesce.
  // (Indices are recomputed from tid rather than kept: registers are the scarce resource.)
  auto a_row = [&](int l) {
    const int idx = tid + l * kThreads;
    return kTransA ? idx % kBM : idx / kBK;
  };
  auto a_dep = [&](int l) {
    const int idx = tid + l * kThreads;
    return kTransA ? idx / kBM : idx % kBK;
  };
  auto b_col = [&](int l) {
    const int idx = tid + l * kThreads;
    return kTransB ? idx / kBK : idx % kBN;
  };
  auto b_dep = [&](int l) {
    const int idx = tid + l * kThreads;
    return kTransB ? idx % kBK : idx / kBN;
  };
  float a_next[4], b_next[4];
  auto fetch = [&](int64_t k0) {
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      const int64_t gi = row0 + a_row(l), gp = k0 + a_dep(l);
      a_next[l] = (gi < m && gp < k) ? (kTransA ? d_a[gp * m + gi] : d_a[gi * k + gp]) : 0.0f;
      const int64_t gj = col0 + b_col(l), gq = k0 + b_dep(l);
      b_next[l] = (gj < n && gq < k) ? (kTransB ? d_b[gj * k + gq] : d_b[gq * n + gj]) : 0.0f;
    }
  };
  auto stage = [&](int buf) {
#pragma unroll
    for (int l = 0; l < 4; ++l) {
      as[buf][a_dep(l)][a_row(l)] = a_next[l];
      bs[buf][b_dep(l)][b_col(l)] = b_next[l];
    }
  };

  fetch(0);
  stage(0);
  __syncthreads();
  int buf = 0;
  for (int64_t k0 = 0; k0 < k; k0 += kBK) {
    const bool more = k0 + kBK < k;
    if (more) fetch(k0 + kBK);
#pragma unroll
    for (int p = 0; p < kBK; ++p) {
      // 16-byte shared loads: half the instructions, and no two threads of a quarter-warp in
      // the same banks.
      float ar[kTM], br[kTN];
      *reinterpret_cast<float4*>(ar) = *reinterpret_cast<const float4*>(&as[buf][p][ty * kTM]);
      *reinterpret_cast<float4*>(ar + 4) =
          *reinterpret_cast<const float4*>(&as[buf][p][ty * kTM + 4]);
      *reinterpret_cast<float4*>(br) = *reinterpret_cast<const float4*>(&bs[buf][p][tx * kTN]);
      *reinterpret_cast<float4*>(br + 4) =
          *reinterpret_cast<const float4*>(&bs[buf][p][tx * kTN + 4]);
#pragma unroll
      for (int i = 0; i < kTM; ++i)
#pragma unroll
        for (int j = 0; j < kTN; ++j) acc[i][j] = fmaf(ar[i], br[j], acc[i][j]);
    }
    if (more) stage(buf ^ 1);  // the other buffer was last read before the previous barrier
    __syncthreads();
    buf ^= 1;
  }
#pragma unroll
  for (int i = 0; i < kTM; ++i) {
    const int64_t gi = row0 + ty * kTM + i;
    if (gi >= m) continue;
#pragma unroll
    for (int j = 0; j < kTN; ++j) {
      const int64_t gj = col0 + tx * kTN + j;
      if (gj >= n) continue;
      float v = alpha * acc[i][j];
      if (beta != 0.0f) v = fmaf(beta, load_elem(d_c, gi * n + gj), v);  // beta == 0: not read
      if (d_bias) v += d_bias[gj];
      store_elem(d_c, gi * n + gj, v);
    }
  }
}

// The tensor-core kernels' tiling: 128 x 128 outputs per block of 8 warps, each warp 32 x 64
// (2 x 4 WMMA fragments).
constexpr int kTcBM = 128, kTcBN = 128;
constexpr int kTcWarps = 8, kTcThreads = kTcWarps * 32;

// The tensor-core epilogue: a warp's 2 x 4 accumulator fragments (32 x 64 outputs from
// (r0, c0)) through a 16 x 16 staging tile, so edges, alpha, beta, bias and the output dtype
// are handled element by element.
template <class Acc, class TOut>
__device__ void store_tiles(Acc (&acc)[2][4], float* st, int lane, TOut* __restrict__ d_c,
                            const float* __restrict__ d_bias, int64_t r0, int64_t c0, int64_t m,
                            int64_t n, float alpha, float beta) {
  using namespace nvcuda;
#pragma unroll
  for (int i = 0; i < 2; ++i) {
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      wmma::store_matrix_sync(st, acc[i][j], 16, wmma::mem_row_major);
      __syncwarp();
      for (int e = lane; e < 256; e += 32) {
        const int64_t gi = r0 + i * 16 + e / 16, gj = c0 + j * 16 + e % 16;
        if (gi < m && gj < n) {
          float v = alpha * st[e];
          if (beta != 0.0f) v = fmaf(beta, load_elem(d_c, gi * n + gj), v);
          if (d_bias) v += d_bias[gj];
          store_elem(d_c, gi * n + gj, v);
        }
      }
      __syncwarp();
    }
  }
}

// Stages the BK-deep slice at depth k0 of op(a) (kTcBM rows from row0) and op(b) (kTcBN
// columns from col0) in shared memory, k-minor for a and k-major for b as the WMMA loads want
// them; zeros past the edges. Consecutive threads walk each matrix's contiguous dimension, so
// the global loads coalesce.
template <bool kTransA, bool kTransB, class T, int BK, int kPadA, int kPadB>
__device__ void stage_slice(T (&as)[kTcBM][kPadA], T (&bs)[BK][kPadB], const T* __restrict__ d_a,
                            const T* __restrict__ d_b, int64_t m, int64_t n, int64_t k,
                            int64_t row0, int64_t col0, int64_t k0, int tid) {
#pragma unroll
  for (int l = 0; l < (kTcBM * BK) / kTcThreads; ++l) {
    const int idx = tid + l * kTcThreads;
    int r, p;
    if (kTransA)
      r = idx % kTcBM, p = idx / kTcBM;
    else
      r = idx / BK, p = idx % BK;
    const int64_t gi = row0 + r, gp = k0 + p;
    as[r][p] = (gi < m && gp < k) ? (kTransA ? d_a[gp * m + gi] : d_a[gi * k + gp]) : T(0);
    int c, q;
    if (kTransB)
      c = idx / BK, q = idx % BK;
    else
      c = idx % kTcBN, q = idx / kTcBN;
    const int64_t gj = col0 + c, gq = k0 + q;
    bs[q][c] = (gj < n && gq < k) ? (kTransB ? d_b[gj * k + gq] : d_b[gq * n + gj]) : T(0);
  }
}

// The two tensor-core GEMMs differ only in what their tiles hold. TF32 (opt-in, with
// GemmOptions::allow_tf32): F32 in shared memory, rounded to TF32 as the fragments load, WMMA
// m16n16k8, 16-deep slices. BF16: BF16 bits in shared memory, WMMA m16n16k16, 32-deep slices.
// Both compile to mma.sync on sm_80+ and accumulate in FP32. WMMA pointers must be 32-byte
// aligned and strides multiples of 16 bytes: the padded strides keep every fragment start so.
struct Tf32Tiles {
  using Stored = float;
  static constexpr int kFragK = 8, kBK = 16, kPadA = kBK + 4, kPadB = kTcBN + 4;
  using FragA = nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 8,
                                       nvcuda::wmma::precision::tf32, nvcuda::wmma::row_major>;
  using FragB = nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 8,
                                       nvcuda::wmma::precision::tf32, nvcuda::wmma::row_major>;
  __device__ static const float* ptr(const float* p) { return p; }
  template <class Frag>
  __device__ static void convert(Frag& f) {
#pragma unroll
    for (int t = 0; t < f.num_elements; ++t) f.x[t] = nvcuda::wmma::__float_to_tf32(f.x[t]);
  }
};

struct Bf16Tiles {
  using Stored = uint16_t;  // the bits of __nv_bfloat16
  static constexpr int kFragK = 16, kBK = 32, kPadA = kBK + 8, kPadB = kTcBN + 8;
  using FragA = nvcuda::wmma::fragment<nvcuda::wmma::matrix_a, 16, 16, 16, __nv_bfloat16,
                                       nvcuda::wmma::row_major>;
  using FragB = nvcuda::wmma::fragment<nvcuda::wmma::matrix_b, 16, 16, 16, __nv_bfloat16,
                                       nvcuda::wmma::row_major>;
  __device__ static const __nv_bfloat16* ptr(const uint16_t* p) {
    return reinterpret_cast<const __nv_bfloat16*>(p);
  }
  template <class Frag>
  __device__ static void convert(Frag&) {}
};

template <class Tiles, bool kTransA, bool kTransB, class TOut>
__global__ void __launch_bounds__(kTcThreads)
    tensor_core_gemm_kernel(TOut* __restrict__ d_c, const typename Tiles::Stored* __restrict__ d_a,
                            const typename Tiles::Stored* __restrict__ d_b,
                            const float* __restrict__ d_bias, int64_t m, int64_t n, int64_t k,
                            float alpha, float beta) {
#if !defined(__CUDA_ARCH__) || __CUDA_ARCH__ >= 800
  using namespace nvcuda;
  using T = typename Tiles::Stored;
  constexpr int kBK = Tiles::kBK, kPadA = Tiles::kPadA, kPadB = Tiles::kPadB;
  __shared__ __align__(128) T as[kTcBM][kPadA];
  __shared__ __align__(128) T bs[kBK][kPadB];
  __shared__ __align__(128) float staging[kTcWarps][16 * 16];
  const int tid = threadIdx.x, warp = tid / 32, lane = tid & 31;
  const int warp_m = warp / 2, warp_n = warp % 2;  // 4 x 2 warps of 32 x 64
  const int64_t row0 = int64_t(blockIdx.x) * kTcBM, col0 = int64_t(blockIdx.y) * kTcBN;
  wmma::fragment<wmma::accumulator, 16, 16, Tiles::kFragK, float> acc[2][4];
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 4; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

  for (int64_t k0 = 0; k0 < k; k0 += kBK) {
    stage_slice<kTransA, kTransB>(as, bs, d_a, d_b, m, n, k, row0, col0, k0, tid);
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; kk += Tiles::kFragK) {
      typename Tiles::FragA fa[2];
      typename Tiles::FragB fb[4];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        wmma::load_matrix_sync(fa[i], Tiles::ptr(&as[warp_m * 32 + i * 16][kk]), kPadA);
        Tiles::convert(fa[i]);
      }
#pragma unroll
      for (int j = 0; j < 4; ++j) {
        wmma::load_matrix_sync(fb[j], Tiles::ptr(&bs[kk][warp_n * 64 + j * 16]), kPadB);
        Tiles::convert(fb[j]);
      }
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) wmma::mma_sync(acc[i][j], fa[i], fb[j], acc[i][j]);
    }
    __syncthreads();
  }
  store_tiles(acc, staging[warp], lane, d_c, d_bias, row0 + warp_m * 32, col0 + warp_n * 64, m, n,
              alpha, beta);
#endif
}

// db[j] = sum over rows of dy[r, j], in row order (one thread per column, coalesced rows).
template <class TDb, class TDy>
__global__ void column_sum_kernel(TDb* d_db, const TDy* d_dy, int64_t rows, int64_t cols) {
  for (int64_t j = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; j < cols;
       j += int64_t(gridDim.x) * blockDim.x) {
    double s = 0.0;
    for (int64_t r = 0; r < rows; ++r) s += load_elem(d_dy, r * cols + j);
    store_elem(d_db, j, static_cast<float>(s));
  }
}

bool device_is_sm80_or_newer() {
  return current_compute_major() >= 8;  // per device: a process may drive GPUs of two kinds
}

// Calls launch(integral_constant trans_a, integral_constant trans_b) for the runtime pair.
template <class Launch>
void by_transpose(bool trans_a, bool trans_b, Launch launch) {
  using F = std::false_type;
  using T = std::true_type;
  if (!trans_a && !trans_b)
    launch(F{}, F{});
  else if (!trans_a && trans_b)
    launch(F{}, T{});
  else if (trans_a && !trans_b)
    launch(T{}, F{});
  else
    launch(T{}, T{});
}

// c = alpha * op(a) * op(b) + beta * c (+ bias per column) for F32 or BF16 operands (a and b
// alike) into an F32 or BF16 c.
template <class TOut>
void launch_gemm(bool trans_a, bool trans_b, TOut* c, ConstView a, ConstView b, const float* bias,
                 int64_t m, int64_t n, int64_t k, float alpha, float beta, bool allow_tf32) {
  if (alpha == 0.0f) k = 0;  // BLAS: with alpha == 0, a and b are not read (no NaN from them)
  static_assert(kTcBM == kBM && kTcBN == kBN, "every kernel tiles the output alike");
  // Row tiles in grid.x (up to 2^31 - 1), column tiles in grid.y (up to 65535): a token batch
  // of any length fits, and outputs up to 8.4M columns.
  const int64_t grid_x = (m + kBM - 1) / kBM, grid_y = (n + kBN - 1) / kBN;
  if (grid_y > 65535 || grid_x > 2147483647) {
    throw Error("nnops::matmul: [" + std::to_string(m) + ", " + std::to_string(n) +
                "] output exceeds one CUDA launch");
  }
  const dim3 grid(static_cast<unsigned>(grid_x), static_cast<unsigned>(grid_y));
  if (a.dtype == DType::BF16) {
    if (!device_is_sm80_or_newer()) {
      throw Error("nnops::matmul: BF16 products need a GPU of compute capability 8.0 or newer");
    }
    const auto* a16 = static_cast<const uint16_t*>(a.data);
    const auto* b16 = static_cast<const uint16_t*>(b.data);
    by_transpose(trans_a, trans_b, [&](auto ta, auto tb) {
      tensor_core_gemm_kernel<Bf16Tiles, decltype(ta)::value, decltype(tb)::value, TOut>
          <<<grid, kTcThreads, 0, t_stream>>>(c, a16, b16, bias, m, n, k, alpha, beta);
    });
    check_launch("tensor_core_gemm_kernel (BF16)");
    return;
  }
  const auto* a32 = static_cast<const float*>(a.data);
  const auto* b32 = static_cast<const float*>(b.data);
  if (allow_tf32 && device_is_sm80_or_newer() && k > 0) {
    by_transpose(trans_a, trans_b, [&](auto ta, auto tb) {
      tensor_core_gemm_kernel<Tf32Tiles, decltype(ta)::value, decltype(tb)::value, TOut>
          <<<grid, kTcThreads, 0, t_stream>>>(c, a32, b32, bias, m, n, k, alpha, beta);
    });
    check_launch("tensor_core_gemm_kernel (TF32)");
    return;
  }
  by_transpose(trans_a, trans_b, [&](auto ta, auto tb) {
    sgemm_kernel<decltype(ta)::value, decltype(tb)::value, TOut>
        <<<grid, kThreads, 0, t_stream>>>(c, a32, b32, bias, m, n, k, alpha, beta);
  });
  check_launch("sgemm_kernel");
}

void launch_gemm(bool trans_a, bool trans_b, View c, ConstView a, ConstView b, const float* bias,
                 int64_t m, int64_t n, int64_t k, float alpha, float beta,
                 bool allow_tf32 = false) {
  with_type(c, [&](auto* typed_c) {
    launch_gemm(trans_a, trans_b, typed_c, a, b, bias, m, n, k, alpha, beta, allow_tf32);
  });
}

}  // namespace

void CudaBackend::gemm(View c, ConstView a, ConstView b, int64_t m, int64_t n, int64_t k,
                       const GemmOptions& options) {
  launch_gemm(options.trans_a, options.trans_b, c, a, b, nullptr, m, n, k, options.alpha,
              options.beta, options.allow_tf32);
}

void CudaBackend::linear_forward(View y, ConstView x, ConstView w, ConstView bias, int64_t rows,
                                 int64_t in, int64_t out) {
  // The epilogue adds an F32 bias; a BF16 one is widened first (out elements).
  const float* bias32 = static_cast<const float*>(bias.data);
  DeviceScratch widened(bias.data && bias.dtype == DType::BF16 ? sizeof(float) * out : 0);
  if (bias.data && bias.dtype == DType::BF16) {
    cast(widened.as<float>(), DType::F32, bias.data, DType::BF16, out);
    bias32 = widened.as<float>();
  }
  launch_gemm(false, true, y, x, w, bias32, rows, out, in, 1.0f, 0.0f);
}

void CudaBackend::linear_backward(View dx, View dw, View db, ConstView x, ConstView w, ConstView dy,
                                  int64_t rows, int64_t in, int64_t out) {
  if (dx.data && rows > 0 && in > 0)
    launch_gemm(false, false, dx, dy, w, nullptr, rows, in, out, 1.0f, 0.0f);
  if (out > 0 && in > 0) launch_gemm(true, false, dw, dy, x, nullptr, out, in, rows, 1.0f, 0.0f);
  if (db.data && out > 0) {
    with_type(db, [&](auto* typed_db) {
      with_type(dy, [&](auto* typed_dy) {
        column_sum_kernel<<<grid_for(out, 256), 256, 0, t_stream>>>(typed_db, typed_dy, rows, out);
      });
    });
    check_launch("column_sum_kernel");
  }
}

}  // namespace nnops::detail
