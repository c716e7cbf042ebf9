// CUDA linear layer on compressed weights (nnops/sparse.hpp). The simplest correct form: one
// thread per output element, each summing its entries in stored order (the same bits on every
// run, no atomics). The forward also has a tiled kernel for batches of 8 rows or more (x
// transposed once, a warp per output row with the batch rows across its lanes, so every entry
// is one coalesced 128-byte read; outputs staged in shared memory and written row-wise); it sums
// in the same order, so it gives the same bits. NNOPS_CUDA_SPARSE=simple forces the simple
// kernels. None of them has run on a GPU yet; the 2:4 BF16 forward on sparse tensor cores is in
// sparse_mma.cu (opt-in).
#include <cstdlib>
#include <cstring>

#include "cuda_backend.hpp"
#include "nnops/detail/sparse_layout.hpp"

namespace nnops::detail {

namespace {

// The value of the stored entry at (row o, column c), 0 when there is none.
__device__ float entry_at(const SparseView& w, int64_t o, int64_t c) {
  if (w.nm24) {
    const Nm24Group g = nm24_group(w.metadata + o * nm24_metadata_cols(w.cols), c / 4);
    const int64_t slot = o * (w.cols / 2) + 2 * (c / 4);
    if (g.used0 && g.p0 == c % 4) return w.values[slot];
    if (g.used1 && g.p1 == c % 4) return w.values[slot + 1];
    return 0.0f;
  }
  int64_t lo = w.row_ptr[o], hi = w.row_ptr[o + 1];  // columns increase within a row
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    if (w.col[mid] < c) {
      lo = mid + 1;
    } else {
      hi = mid;
    }
  }
  return lo < w.row_ptr[o + 1] && w.col[lo] == c ? w.values[lo] : 0.0f;
}

// y[r, o] = bias[o] + the sum over row o's entries of value * x[r, column].
__global__ void sparse_forward_kernel(float* d_y, const float* d_x, SparseView w,
                                      const float* d_bias, int64_t n) {
  const int64_t total = n * w.rows;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = t / w.rows, o = t % w.rows;
    const float* xr = d_x + r * w.cols;
    float acc = 0.0f;
    if (w.nm24) {
      const uint8_t* meta = w.metadata + o * nm24_metadata_cols(w.cols);
      const float* v = w.values + o * (w.cols / 2);
      for (int64_t g = 0; g < w.cols / 4; ++g) {
        const Nm24Group grp = nm24_group(meta, g);
        // Unused slots skipped: 0 * x would let a NaN or inf of x at a pruned position in.
        if (grp.used0) acc += v[2 * g] * xr[4 * g + grp.p0];
        if (grp.used1) acc += v[2 * g + 1] * xr[4 * g + grp.p1];
      }
    } else {
      for (int64_t e = w.row_ptr[o]; e < w.row_ptr[o + 1]; ++e) acc += w.values[e] * xr[w.col[e]];
    }
    d_y[t] = acc + (d_bias ? d_bias[o] : 0.0f);
  }
}

// out [cols, rows] = in [rows, cols] transposed, through 32 x 32 shared tiles (padded against
// bank conflicts) so both the reads and the writes coalesce. Blocks of 32 x 8 threads.
__global__ void transpose_kernel(float* d_out, const float* d_in, int64_t rows, int64_t cols) {
  __shared__ float tile[32][33];
  const int64_t r0 = int64_t(blockIdx.y) * 32, c0 = int64_t(blockIdx.x) * 32;
  for (int i = threadIdx.y; i < 32; i += blockDim.y) {
    const int64_t r = r0 + i, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[i][threadIdx.x] = d_in[r * cols + c];
  }
  __syncthreads();
  for (int i = threadIdx.y; i < 32; i += blockDim.y) {
    const int64_t c = c0 + i, r = r0 + threadIdx.x;
    if (c < cols && r < rows) d_out[c * rows + r] = tile[threadIdx.x][i];
  }
}

// The tiled forward: a block computes 32 output rows x 32 batch rows, each of its 8 warps 4
// output rows, lane l batch row r0 + l; every lane walks the same entries (value and column
// broadcast) and reads x^T[column, r0 .. r0 + 31] in one transaction.
constexpr int kTileRows = 32, kTileBatch = 32, kTileThreads = 256;

__global__ void __launch_bounds__(kTileThreads)
    sparse_forward_tiled_kernel(float* d_y, const float* d_xt, SparseView w, const float* d_bias,
                                int64_t n) {
  __shared__ float tile[kTileBatch][kTileRows + 1];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t o0 = int64_t(blockIdx.x) * kTileRows, r0 = int64_t(blockIdx.y) * kTileBatch;
  const int64_t r = r0 + lane;
  const bool live = r < n;
  for (int k = warp; k < kTileRows; k += kTileThreads / 32) {
    const int64_t o = o0 + k;
    float acc = 0.0f;
    if (o < w.rows) {
      if (w.nm24) {
        const uint8_t* meta = w.metadata + o * nm24_metadata_cols(w.cols);
        const float* v = w.values + o * (w.cols / 2);
        for (int64_t g = 0; g < w.cols / 4; ++g) {
          const Nm24Group grp = nm24_group(meta, g);
          if (grp.used0) acc += v[2 * g] * (live ? d_xt[(4 * g + grp.p0) * n + r] : 0.0f);
          if (grp.used1) acc += v[2 * g + 1] * (live ? d_xt[(4 * g + grp.p1) * n + r] : 0.0f);
        }
      } else {
        for (int64_t e = w.row_ptr[o]; e < w.row_ptr[o + 1]; ++e)
          acc += w.values[e] * (live ? d_xt[int64_t(w.col[e]) * n + r] : 0.0f);
      }
    }
    tile[lane][k] = acc;
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < kTileBatch * kTileRows; idx += kTileThreads) {
    const int rr = idx / kTileRows, cc = idx % kTileRows;
    const int64_t ry = r0 + rr, oy = o0 + cc;
    if (ry < n && oy < w.rows) d_y[ry * w.rows + oy] = tile[rr][cc] + (d_bias ? d_bias[oy] : 0.0f);
  }
}

bool simple_kernels_forced() {
  const char* env = std::getenv("NNOPS_CUDA_SPARSE");
  return env != nullptr && std::strcmp(env, "simple") == 0;
}

// dx[r, c] = the sum over rows o, in order, of w[o, c] * dy[r, o].
__global__ void sparse_dx_kernel(float* d_dx, const float* d_dy, SparseView w, int64_t n) {
  const int64_t total = n * w.cols;
  for (int64_t t = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; t < total;
       t += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = t / w.cols, c = t % w.cols;
    float acc = 0.0f;
    for (int64_t o = 0; o < w.rows; ++o) acc += entry_at(w, o, c) * d_dy[r * w.rows + o];
    d_dx[t] = acc;
  }
}

// dvalues[s] = the sum over batch rows of dy[r, o] * x[r, c] for slot s at (o, c); 0 for an
// unused NM24 slot.
__global__ void sparse_dvalues_kernel(float* d_dvalues, const float* d_x, const float* d_dy,
                                      SparseView w, int64_t n) {
  for (int64_t s = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; s < w.slots;
       s += int64_t(gridDim.x) * blockDim.x) {
    int64_t o = 0, c = 0;
    bool used = true;
    if (w.nm24) {
      o = s / (w.cols / 2);
      const int64_t local = s % (w.cols / 2), g = local / 2;
      const Nm24Group grp = nm24_group(w.metadata + o * nm24_metadata_cols(w.cols), g);
      used = local % 2 == 0 ? grp.used0 : grp.used1;
      c = 4 * g + (local % 2 == 0 ? grp.p0 : grp.p1);
    } else {
      int64_t lo = 0, hi = w.rows;  // the row whose range holds s
      while (hi - lo > 1) {
        const int64_t mid = lo + (hi - lo) / 2;
        if (w.row_ptr[mid] <= s) {
          lo = mid;
        } else {
          hi = mid;
        }
      }
      o = lo;
      c = w.col[s];
    }
    float acc = 0.0f;
    if (used)
      for (int64_t r = 0; r < n; ++r) acc += d_dy[r * w.rows + o] * d_x[r * w.cols + c];
    d_dvalues[s] = acc;
  }
}

// db[o] = the column sum of dy, in double, rows in order (as linear_backward's db).
__global__ void sparse_db_kernel(float* d_db, const float* d_dy, int64_t n, int64_t out) {
  for (int64_t o = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; o < out;
       o += int64_t(gridDim.x) * blockDim.x) {
    double sum = 0.0;
    for (int64_t r = 0; r < n; ++r) sum += d_dy[r * out + o];
    d_db[o] = static_cast<float>(sum);
  }
}

}  // namespace

void CudaBackend::sparse_linear_forward(float* y, const float* x, const SparseView& w,
                                        const float* bias, int64_t n) {
  const int64_t batch_tiles = (n + kTileBatch - 1) / kTileBatch;
  if (n >= 8 && batch_tiles <= 65535 && !simple_kernels_forced()) {
    DeviceScratch xt(sizeof(float) * n * w.cols);
    const dim3 tgrid(static_cast<unsigned>((w.cols + 31) / 32), static_cast<unsigned>(batch_tiles));
    transpose_kernel<<<tgrid, dim3(32, 8), 0, t_stream>>>(xt.as<float>(), x, n, w.cols);
    check_launch("transpose_kernel");
    const dim3 grid(static_cast<unsigned>((w.rows + kTileRows - 1) / kTileRows),
                    static_cast<unsigned>(batch_tiles));
    sparse_forward_tiled_kernel<<<grid, kTileThreads, 0, t_stream>>>(y, xt.as<float>(), w, bias, n);
    check_launch("sparse_forward_tiled_kernel");
    return;
  }
  sparse_forward_kernel<<<grid_for(n * w.rows, 256), 256, 0, t_stream>>>(y, x, w, bias, n);
  check_launch("sparse_forward_kernel");
}

void CudaBackend::sparse_linear_backward(float* dx, float* dvalues, float* db, const float* x,
                                         const SparseView& w, const float* dy, int64_t n) {
  if (dx && n * w.cols > 0) {
    sparse_dx_kernel<<<grid_for(n * w.cols, 256), 256, 0, t_stream>>>(dx, dy, w, n);
    check_launch("sparse_dx_kernel");
  }
  if (dvalues) {
    if (w.slots > 0) {
      sparse_dvalues_kernel<<<grid_for(w.slots, 256), 256, 0, t_stream>>>(dvalues, x, dy, w, n);
      check_launch("sparse_dvalues_kernel");
    }
  }
  if (db && w.rows > 0) {
    sparse_db_kernel<<<grid_for(w.rows, 256), 256, 0, t_stream>>>(db, dy, n, w.rows);
    check_launch("sparse_db_kernel");
  }
}

}  // namespace nnops::detail
