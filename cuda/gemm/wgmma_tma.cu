// The sm_90a BF16 GEMM with TMA loads and warp specialization, for K-major operands (a [m, k]
// not transposed, b [n, k] transposed: linear_forward's x w^T): the design of CUTLASS's sm90
// warp-specialized kernels, written here.
//
// A block of three warpgroups computes a 128 x kN tile of c (kN = 128, or 256 for large
// products). Warpgroup 0 is the producer: one of its threads issues the tensor-memory-accelerator
// copies (cp.async.bulk.tensor) of 64-deep slices of a and b into a shared-memory ring (5 stages
// at kN = 128, 4 at 256), each stage guarded by two mbarriers: `full` completes when the stage's
// bytes have landed (the copies count them), `empty` when both consumer warpgroups have finished
// reading it. Warpgroups 1 and 2 are the consumers: each multiplies its 64 rows of a by all kN
// columns of b with wgmma.mma_async m64nNk16 straight from shared memory, keeping one slice's
// MMAs in flight while it releases the slice before. TMA writes the tiles in the 128-byte
// swizzled layout (each 128-byte row of 64 BF16 has its 16-byte chunks XOR-permuted by the row's
// index within 8 rows), which the MMA descriptors read without bank conflicts; the unswizzled
// layout of wgmma.cu leaves conflicts in them. TMA fills rows and depths past the matrix with
// zeros, so edge tiles need no bounds checks until the epilogue (alpha, beta never reading c at
// 0, bias, F32 or BF16 out, as every family).
//
// Chosen with NNOPS_CUDA_GEMM=wgmma_tma on compute capability 9.0 where it applies (K-major
// operands, k a multiple of 8, 16-byte aligned bases); other products take wgmma.cu's kernel.
// Not yet run on a GPU.
#include <cuda.h>  // CUtensorMap (the driver itself is reached through the runtime's entry point)
#include <cudaTypedefs.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "../elementwise.cuh"
#include "cp_async.cuh"
#include "kernels.hpp"
#include "wgmma.cuh"

namespace nnops::detail::gemm {

namespace {

constexpr int kConsumers = 2;                     // warpgroups of 64 rows each
constexpr int kThreads = 128 * (kConsumers + 1);  // + the producer warpgroup
constexpr int kBK = 64;                           // 64 BF16 = one 128-byte swizzled row
constexpr int kATileBytes = kTileM * kBK * 2;     // 16 KiB per stage
static_assert(kTileM == 64 * kConsumers, "each consumer takes 64 rows of the tile");

// The ring for kN columns per block (128, or 256 for large products): each stage holds a's
// 128 x 64 and b's kN x 64 tiles; 5 stages of 32 KiB or 4 of 48 KiB, plus slack to align the
// ring to 1 KiB.
template <int kN>
struct Ring {
  static constexpr int kBTileBytes = kN * kBK * 2;
  static constexpr int kStageBytes = kATileBytes + kBTileBytes;
  static constexpr int kStages = kN == 128 ? 5 : 4;
  static constexpr int kSharedBytes = kStages * kStageBytes + 1024;
};

__device__ inline void mbarrier_init(uint64_t* bar, unsigned count) {
  asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(shared_address(bar)), "r"(count)
               : "memory");
}
// One arrival that also tells the barrier how many bytes the phase's copies will bring.
__device__ inline void mbarrier_arrive_expect_bytes(uint64_t* bar, unsigned bytes) {
  asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(
                   shared_address(bar)),
               "r"(bytes)
               : "memory");
}
__device__ inline void mbarrier_arrive(uint64_t* bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(shared_address(bar)) : "memory");
}
// Waits until the barrier's phase of this parity has completed.
__device__ inline void mbarrier_wait(uint64_t* bar, unsigned parity) {
  unsigned done = 0;
  do {
    asm volatile(
        "{\n"
        ".reg .pred p;\n"
        "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n"
        "selp.u32 %0, 1, 0, p;\n"
        "}\n"
        : "=r"(done)
        : "r"(shared_address(bar)), "r"(parity)
        : "memory");
  } while (!done);
}

// The box at (depth k0, row row0) of the map's matrix into shared memory, its bytes counted on bar.
__device__ inline void tma_load_tile(void* dst, const CUtensorMap* map, uint64_t* bar, int k0,
                                     int row0) {
  asm volatile(
      "cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
      " [%0], [%1, {%3, %4}], [%2];\n" ::"r"(shared_address(dst)),
      "l"(reinterpret_cast<uint64_t>(map)), "r"(shared_address(bar)), "r"(k0), "r"(row0)
      : "memory");
}

// A descriptor of a K-major tile in the 128-byte swizzled layout: start address, stride byte
// offset 1024 (the next 8 rows), layout type 1 (128-byte swizzle); the leading byte offset is
// unused by swizzled K-major layouts. Units of 16 bytes. A 16-deep step inside the 64-deep row
// starts 32 bytes further: the hardware applies the swizzle to the address it forms, which is
// why the tiles start on 1 KiB.
__device__ inline uint64_t swizzled_descriptor(const void* tile) {
  uint64_t d = (shared_address(tile) & 0x3FFFF) >> 4;
  d |= uint64_t(1) << 16;
  d |= uint64_t(1024 >> 4) << 32;
  d |= uint64_t(1) << 62;
  return d;
}

// d += a * b for a tile of kN (128 or 256) columns.
__device__ inline void wgmma_step(float (&d)[64], uint64_t desc_a, uint64_t desc_b) {
  wgmma_m64n128k16(d, desc_a, desc_b, 1);
}
__device__ inline void wgmma_step(float (&d)[128], uint64_t desc_a, uint64_t desc_b) {
  wgmma_m64n256k16(d, desc_a, desc_b, 1);
}

template <int kN, class TOut>
__global__ void __launch_bounds__(kThreads, 1)
    wgmma_tma_gemm_kernel(const __grid_constant__ CUtensorMap map_a,
                          const __grid_constant__ CUtensorMap map_b, TOut* __restrict__ d_c,
                          const float* __restrict__ d_bias, int64_t m, int64_t n, int64_t k,
                          float alpha, float beta) {
  constexpr int kStages = Ring<kN>::kStages, kStageBytes = Ring<kN>::kStageBytes;
  extern __shared__ unsigned char smem_raw[];
  __shared__ uint64_t full[kStages], empty[kStages];
  unsigned char* const ring = smem_raw + ((1024 - (shared_address(smem_raw) & 1023)) & 1023);
  auto a_tile = [&](int s) { return ring + s * kStageBytes; };
  auto b_tile = [&](int s) { return ring + s * kStageBytes + kATileBytes; };
  const int tid = threadIdx.x, warpgroup = tid / 128;
  const int row0 = int(blockIdx.x) * kTileM, col0 = int(blockIdx.y) * kN;
  const int64_t slices = (k + kBK - 1) / kBK;

  if (tid == 0) {
    for (int s = 0; s < kStages; ++s) {
      mbarrier_init(&full[s], 1);                 // the producer's arrival (+ the bytes)
      mbarrier_init(&empty[s], 128 * kConsumers);  // every consumer thread's
    }
    // The initialized barriers visible to the copy engine (the async proxy).
    asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
  }
  __syncthreads();

  if (warpgroup == 0) {  // the producer: one thread issues every copy
    if (tid == 0) {
      for (int64_t kt = 0; kt < slices; ++kt) {
        const int s = int(kt % kStages);
        const int64_t use = kt / kStages;
        if (use > 0) mbarrier_wait(&empty[s], unsigned(use - 1) & 1u);  // its last readers done
        mbarrier_arrive_expect_bytes(&full[s], unsigned(kStageBytes));
        tma_load_tile(a_tile(s), &map_a, &full[s], int(kt * kBK), row0);
        tma_load_tile(b_tile(s), &map_b, &full[s], int(kt * kBK), col0);
      }
    }
    return;
  }

  const int consumer = warpgroup - 1, warp = (tid % 128) / 32, lane = tid % 32;
  float d[kN / 2];
#pragma unroll
  for (int i = 0; i < kN / 2; ++i) d[i] = 0.0f;
  for (int64_t kt = 0; kt < slices; ++kt) {
    const int s = int(kt % kStages);
    mbarrier_wait(&full[s], unsigned(kt / kStages) & 1u);
    pin(d);
    asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory");
#pragma unroll
    for (int step = 0; step < kBK / 16; ++step) {
      // This warpgroup's 64 rows of a (8 KiB in) and all kN columns of b, 32 bytes per step.
      wgmma_step(d, swizzled_descriptor(a_tile(s) + consumer * 8192 + step * 32),
                 swizzled_descriptor(b_tile(s) + step * 32));
    }
    asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory");
    // The previous slice's MMAs have finished: its stage goes back to the producer.
    asm volatile("wgmma.wait_group.sync.aligned 1;\n" ::: "memory");
    pin(d);
    if (kt > 0) mbarrier_arrive(&empty[(kt - 1) % kStages]);
  }
  asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
  pin(d);

  // The accumulator fragment of m64nNk16 (as wgmma.cu): warp w of the warpgroup holds rows
  // 16 w + g and 16 w + g + 8 (lane = 4 g + t); for each 8-column block j, d[4 j + e] is row
  // g + 8 (e / 2), column 8 j + 2 t + e % 2.
  const int g = lane >> 2, t = lane & 3;
#pragma unroll
  for (int j = 0; j < kN / 8; ++j) {
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int64_t gi = int64_t(row0) + consumer * 64 + warp * 16 + g + (e >> 1) * 8;
      const int64_t gj = int64_t(col0) + j * 8 + 2 * t + (e & 1);
      if (gi >= m || gj >= n) continue;
      float v = alpha * d[4 * j + e];
      if (beta != 0.0f) v = fmaf(beta, load_elem(d_c, gi * n + gj), v);  // beta 0: not read
      if (d_bias) v += d_bias[gj];
      store_elem(d_c, gi * n + gj, v);
    }
  }
}

// cuTensorMapEncodeTiled from the driver the runtime loaded (null where it has none): linking
// libcuda itself would keep the library from loading on machines without a GPU driver.
PFN_cuTensorMapEncodeTiled_v12000 tensor_map_encoder() {
  static const PFN_cuTensorMapEncodeTiled_v12000 encoder = [] {
    void* fn = nullptr;
    cudaDriverEntryPointQueryResult found{};
    if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &fn, 12000, cudaEnableDefault,
                                         &found) != cudaSuccess ||
        found != cudaDriverEntryPointSuccess) {
      cudaGetLastError();  // not sticky: clear it for the next check_launch
      return PFN_cuTensorMapEncodeTiled_v12000(nullptr);
    }
    return reinterpret_cast<PFN_cuTensorMapEncodeTiled_v12000>(fn);
  }();
  return encoder;
}

// The map of a row-major BF16 matrix [rows, k]: boxes of box_rows rows x 64 depths, 128-byte
// swizzle, zeros past the edges. False where the driver refuses it.
bool encode_operand(CUtensorMap* map, const uint16_t* base, int64_t rows, int64_t k,
                    int box_rows) {
  const PFN_cuTensorMapEncodeTiled_v12000 encode = tensor_map_encoder();
  if (!encode) return false;
  const cuuint64_t dims[2] = {cuuint64_t(k), cuuint64_t(rows)};
  const cuuint64_t strides[1] = {cuuint64_t(k) * 2};  // bytes between rows
  const cuuint32_t box[2] = {kBK, cuuint32_t(box_rows)};
  const cuuint32_t element_strides[2] = {1, 1};
  return encode(map, CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 2, const_cast<uint16_t*>(base), dims,
                strides, box, element_strides, CU_TENSOR_MAP_INTERLEAVE_NONE,
                CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE) == CUDA_SUCCESS;
}

}  // namespace

template <class TOut>
bool launch_wgmma_tma_bf16(bool trans_a, bool trans_b, TOut* c, const uint16_t* a,
                           const uint16_t* b, const float* bias, int64_t m, int64_t n, int64_t k,
                           float alpha, float beta) {
  // TMA needs 16-byte aligned bases and row strides; its coordinates are 32-bit.
  constexpr int64_t kMaxCoordinate = int64_t(1) << 31;
  if (trans_a || !trans_b || k == 0 || k % 8 != 0 || !aligned16(a) || !aligned16(b) ||
      m + kTileM >= kMaxCoordinate || n + kTileN >= kMaxCoordinate || k + kBK >= kMaxCoordinate) {
    return false;
  }
  // 128 x 256 blocks where they still fill a GPU twice over (4096^3: 512 of them), else 128 x
  // 128: half the shared-memory traffic per multiply-add, at 128 accumulators per thread.
  const bool wide = n >= 256 && m * n >= (int64_t(1) << 24);
  const int box_b = wide ? 256 : 128;
  CUtensorMap map_a, map_b;
  if (!encode_operand(&map_a, a, m, k, kTileM) || !encode_operand(&map_b, b, n, k, box_b))
    return false;
  auto launch = [&](auto kn) {
    constexpr int kN = decltype(kn)::value;
    auto kernel = wgmma_tma_gemm_kernel<kN, TOut>;
    NNOPS_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                          Ring<kN>::kSharedBytes));
    const dim3 grid(static_cast<unsigned>((m + kTileM - 1) / kTileM),
                    static_cast<unsigned>((n + kN - 1) / kN));
    kernel<<<grid, kThreads, Ring<kN>::kSharedBytes, t_stream>>>(map_a, map_b, c, bias, m, n, k,
                                                                 alpha, beta);
  };
  if (wide)
    launch(std::integral_constant<int, 256>{});
  else
    launch(std::integral_constant<int, 128>{});
  check_launch("wgmma_tma_gemm_kernel (BF16)");
  return true;
}

template bool launch_wgmma_tma_bf16<float>(bool, bool, float*, const uint16_t*, const uint16_t*,
                                           const float*, int64_t, int64_t, int64_t, float, float);
template bool launch_wgmma_tma_bf16<uint16_t>(bool, bool, uint16_t*, const uint16_t*,
                                              const uint16_t*, const float*, int64_t, int64_t,
                                              int64_t, float, float);

}  // namespace nnops::detail::gemm
