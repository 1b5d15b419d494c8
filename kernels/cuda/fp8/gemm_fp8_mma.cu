// FP8 block-scaled GEMM on tensor cores through mma.sync (see gemm_fp8_mma.h).
//
// Schedule (one block of 16 warps per 128x128 tile of d):
//   for each k-block kb of 128:
//     stage a[m0:m0+128, kb] and b[n0:n0+128, kb] (16 KB each) into shared memory
//     each warp (4 x 4 warps; a warp owns 32 rows x 32 columns = 2 x 4 mma tiles of 16x8):
//       part = sum of 4 mma.m16n8k32 steps over the block         (fp32, on tensor cores)
//       acc += part * a_scales[row, kb] * b_scales[n0 / 128, kb]  (fp32, CUDA cores)
// A 128-column tile is one 128-row block of b, so b's scale is one number per k-block.
// Rows of shared memory are padded from 128 to 144 bytes: the 8 rows a fragment load reads
// then start in 8 different bank groups (row r at bank 4r), with no conflicts.
//
// Fragment layouts (PTX ISA, mma.m16n8k32 with 8-bit A/B; g = lane / 4, t = lane % 4):
//   A (16 x 32, row): reg0 = A[g][4t..4t+3], reg1 = A[g+8][4t..], reg2 = A[g][16+4t..],
//                     reg3 = A[g+8][16+4t..]   (4 consecutive k bytes, lowest k in the low byte)
//   B (32 x 8, col):  reg0 = B[4t..4t+3][g], reg1 = B[16+4t..][g]; B[k][n] = b_q[n][k], so
//                     each is 4 consecutive bytes of row g of the b tile.
//   C (16 x 8 f32):   c0, c1 = C[g][2t], C[g][2t+1]; c2, c3 = C[g+8][2t], C[g+8][2t+1].
//
// Two variants: one shared-memory stage (load, sync, compute) and two (cp.async copies k-block
// kb + 1 while the tensor cores work on kb). No TMA, no warp specialization, no wgmma yet: the
// step after this is DeepGEMM's structure. Not yet run on a GPU.
#include "kernels/cuda/fp8/gemm_fp8_mma.h"

#include <cstdint>

#include "engine/convert.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"
#include "engine/kernels.h"

namespace r1::cuda {
namespace {

constexpr int kTileM = 128, kTileN = 128;
// 16 warps of 32 x 32 outputs: 32 fp32 partials + 32 accumulators per thread. (8 warps of
// 64 x 32 needed 128 of them and spilled at ptxas's 255-register limit.)
constexpr int kWarps = 16, kBlockThreads = kWarps * 32;
constexpr int kWarpRows = 32, kWarpCols = 32;     // 4 x 4 warps cover the tile
constexpr int kMmaM = 16, kMmaN = 8, kMmaK = 32;  // mma.m16n8k32
constexpr int kFragsM = kWarpRows / kMmaM;        // 2
constexpr int kFragsN = kWarpCols / kMmaN;        // 4
constexpr int kRowBytes = 128 + 16;               // padded shared-memory row (bank spread)
static_assert(kTileN == kFp8Block, "a tile's columns are one block of b's scales");
static_assert((kTileM / kWarpRows) * (kTileN / kWarpCols) == kWarps, "warps cover the tile");

__device__ inline uint32_t lds32(const uint8_t* p) { return *reinterpret_cast<const uint32_t*>(p); }

__device__ inline void mma_e4m3(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2,
                                uint32_t a3, uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

// Shared memory per stage: the a tile then the b tile, 128 rows of kRowBytes each.
constexpr int kTileBytes = kTileM * kRowBytes;
constexpr int kStageBytes = 2 * kTileBytes;
constexpr int kChunks = kTileM * (kFp8Block / 16);  // 16-byte chunks per tile: 1024
static_assert(kChunks % kBlockThreads == 0, "whole chunks per thread");

// 16 bytes global -> shared without passing through registers (sm_80+); src_size 0 when
// !pred writes zeros and reads nothing.
__device__ inline void cp_async16(uint8_t* dst, const uint8_t* src, bool pred) {
  const auto d = static_cast<uint32_t>(__cvta_generic_to_shared(dst));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(d), "l"(src),
               "r"(pred ? 16 : 0));
}
__device__ inline void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int kPending>
__device__ inline void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(kPending));
}

// rows [r0, r0 + 128) x k-block kb of x (rows, k) e4m3 -> s (128 x kRowBytes), zero outside
// the matrix. k is a multiple of 16, so a 16-byte chunk is wholly inside or outside.
// kAsync: through cp.async (the caller commits and waits), else plain loads and stores.
template <bool kAsync>
__device__ inline void stage(const uint8_t* x, int64_t rows, int64_t k, int64_t r0, int64_t kb,
                             uint8_t* s) {
#pragma unroll
  for (int i = 0; i < kChunks / kBlockThreads; ++i) {
    const int idx = static_cast<int>(threadIdx.x) + i * kBlockThreads;
    const int row = idx / (kFp8Block / 16), c16 = idx % (kFp8Block / 16);
    const int64_t gr = r0 + row, gk = kb * kFp8Block + c16 * 16;
    const bool in = gr < rows && gk < k;
    uint8_t* dst = s + row * kRowBytes + c16 * 16;
    if constexpr (kAsync) {
      cp_async16(dst, in ? x + gr * k + gk : x, in);
    } else {
      uint4 v = make_uint4(0, 0, 0, 0);
      if (in) v = *reinterpret_cast<const uint4*>(x + gr * k + gk);
      *reinterpret_cast<uint4*>(dst) = v;
    }
  }
}

__device__ inline void store_out(float* d, int64_t i, float v) { d[i] = v; }
__device__ inline void store_out(uint16_t* d, int64_t i, float v) { d[i] = f32_to_bf16(v); }

// a (m, k), sa (m, kbs), b (n, k), sb (ceil(n/128), kbs) -> d (m, n). kStages = 1: load,
// sync, compute, sync. kStages = 2: k-block kb + 1 is copied (cp.async) into the other
// buffer while the tensor cores work on kb.
template <class OutT, int kStages>
__global__ void __launch_bounds__(kBlockThreads, 1)
    gemm_fp8_mma_kernel(const uint8_t* a, const float* sa, const uint8_t* b, const float* sb,
                        OutT* d, int64_t m, int64_t n, int64_t k, int64_t kbs) {
  static_assert(kStages == 1 || kStages == 2, "one or two shared-memory stages");
  extern __shared__ __align__(16) uint8_t smem[];
  const int lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
  const int g = lane / 4, t = lane % 4;
  const int wm = warp / (kTileN / kWarpCols), wn = warp % (kTileN / kWarpCols);
  const int64_t m0 = int64_t{blockIdx.y} * kTileM, n0 = int64_t{blockIdx.x} * kTileN;

  if constexpr (kStages == 2) {
    if (kbs > 0) {
      stage<true>(a, m, k, m0, 0, smem);
      stage<true>(b, n, k, n0, 0, smem + kTileBytes);
    }
    cp_async_commit();
  }
  float acc[kFragsM][kFragsN][4] = {};
  for (int64_t kb = 0; kb < kbs; ++kb) {
    uint8_t* as = smem + (kStages == 2 ? (kb & 1) * kStageBytes : 0);
    uint8_t* bs = as + kTileBytes;
    if constexpr (kStages == 2) {
      if (kb + 1 < kbs) {  // the other buffer was released by the previous iteration's sync
        uint8_t* next = smem + ((kb + 1) & 1) * kStageBytes;
        stage<true>(a, m, k, m0, kb + 1, next);
        stage<true>(b, n, k, n0, kb + 1, next + kTileBytes);
      }
      cp_async_commit();
      cp_async_wait<1>();  // all but the newest group: k-block kb has landed
    } else {
      stage<false>(a, m, k, m0, kb, as);
      stage<false>(b, n, k, n0, kb, bs);
    }
    __syncthreads();
    float part[kFragsM][kFragsN][4] = {};
#pragma unroll 1  // unrolled, the fragment loads of all 4 steps are hoisted and spill
    for (int kk = 0; kk < kFp8Block; kk += kMmaK) {
      uint32_t af[kFragsM][4], bf[kFragsN][2];
#pragma unroll
      for (int i = 0; i < kFragsM; ++i) {
        const uint8_t* r = as + (wm * kWarpRows + i * kMmaM + g) * kRowBytes + kk + 4 * t;
        af[i][0] = lds32(r);
        af[i][1] = lds32(r + 8 * kRowBytes);
        af[i][2] = lds32(r + 16);
        af[i][3] = lds32(r + 8 * kRowBytes + 16);
      }
#pragma unroll
      for (int j = 0; j < kFragsN; ++j) {
        const uint8_t* r = bs + (wn * kWarpCols + j * kMmaN + g) * kRowBytes + kk + 4 * t;
        bf[j][0] = lds32(r);
        bf[j][1] = lds32(r + 16);
      }
#pragma unroll
      for (int i = 0; i < kFragsM; ++i)
#pragma unroll
        for (int j = 0; j < kFragsN; ++j)
          mma_e4m3(part[i][j], af[i][0], af[i][1], af[i][2], af[i][3], bf[j][0], bf[j][1]);
    }
    __syncthreads();  // the next stage overwrites as/bs
    // Promotion: this k-block's partial sums, scaled, into the fp32 accumulator.
    const float sbv = sb[(n0 / kFp8Block) * kbs + kb];
#pragma unroll
    for (int i = 0; i < kFragsM; ++i) {
      const int64_t r_lo = m0 + wm * kWarpRows + i * kMmaM + g, r_hi = r_lo + 8;
      const float s_lo = r_lo < m ? sa[r_lo * kbs + kb] * sbv : 0.0f;
      const float s_hi = r_hi < m ? sa[r_hi * kbs + kb] * sbv : 0.0f;
#pragma unroll
      for (int j = 0; j < kFragsN; ++j) {
        acc[i][j][0] = fmaf(part[i][j][0], s_lo, acc[i][j][0]);
        acc[i][j][1] = fmaf(part[i][j][1], s_lo, acc[i][j][1]);
        acc[i][j][2] = fmaf(part[i][j][2], s_hi, acc[i][j][2]);
        acc[i][j][3] = fmaf(part[i][j][3], s_hi, acc[i][j][3]);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kFragsM; ++i) {
    const int64_t r_lo = m0 + wm * kWarpRows + i * kMmaM + g, r_hi = r_lo + 8;
#pragma unroll
    for (int j = 0; j < kFragsN; ++j) {
      const int64_t c = n0 + wn * kWarpCols + j * kMmaN + 2 * t;
      if (r_lo < m && c < n) store_out(d, r_lo * n + c, acc[i][j][0]);
      if (r_lo < m && c + 1 < n) store_out(d, r_lo * n + c + 1, acc[i][j][1]);
      if (r_hi < m && c < n) store_out(d, r_hi * n + c, acc[i][j][2]);
      if (r_hi < m && c + 1 < n) store_out(d, r_hi * n + c + 1, acc[i][j][3]);
    }
  }
}

// One launch of the kernel for d's dtype and the stage count, with its dynamic shared memory.
template <class OutT, int kStages>
void launch_mma(dim3 grid, cudaStream_t s, const uint8_t* ap, const float* sap,
                const uint8_t* bp, const float* sbp, OutT* dp, int64_t m, int64_t n, int64_t k) {
  constexpr int kSmem = kStages * kStageBytes;
  if constexpr (kSmem > 48 * 1024) {  // above the default per-block limit: opt in (idempotent)
    R1_CUDA_CHECK(cudaFuncSetAttribute(gemm_fp8_mma_kernel<OutT, kStages>,
                                       cudaFuncAttributeMaxDynamicSharedMemorySize, kSmem));
  }
  gemm_fp8_mma_kernel<OutT, kStages><<<grid, kBlockThreads, kSmem, s>>>(ap, sap, bp, sbp, dp, m,
                                                                         n, k, fp8_blocks(k));
  R1_CUDA_CHECK_LAUNCH();
}

}  // namespace

void gemm_fp8_blockscaled_mma(const Tensor& a_q, const Tensor& a_scales, const Tensor& b_q,
                              const Tensor& b_scales, Tensor& d, int stages) {
  check_gemm_fp8_blockscaled(a_q, a_scales, b_q, b_scales, d,
                             d.dtype() == DType::F32 || d.dtype() == DType::BF16);
  const int64_t m = a_q.size(0), k = a_q.size(1), n = b_q.size(0);
  R1_CHECK(k % 16 == 0, "gemm_fp8_blockscaled_mma: K {} must be a multiple of 16 (16-byte rows)",
           k);
  R1_CHECK(reinterpret_cast<uintptr_t>(a_q.data_ptr()) % 16 == 0 &&
               reinterpret_cast<uintptr_t>(b_q.data_ptr()) % 16 == 0,
           "gemm_fp8_blockscaled_mma: a_q and b_q must be 16-byte aligned");
  R1_CHECK(stages == 1 || stages == 2, "gemm_fp8_blockscaled_mma: stages {} (1 or 2)", stages);
  if (m == 0 || n == 0) return;
  const int64_t grid_x = (n + kTileN - 1) / kTileN, grid_y = (m + kTileM - 1) / kTileM;
  R1_CHECK(grid_y <= 65535, "gemm_fp8_blockscaled_mma: M {} exceeds the grid", m);
  const int dev = d.device().index;
  DeviceGuard guard(dev);
  const cudaStream_t s = current_stream(dev);
  const dim3 grid(static_cast<unsigned>(grid_x), static_cast<unsigned>(grid_y));
  const auto* ap = a_q.data<uint8_t>();
  const auto* bp = b_q.data<uint8_t>();
  const float* sap = a_scales.data<float>();
  const float* sbp = b_scales.data<float>();
  auto run = [&](auto out_tag, auto* dp) {
    using OutT = decltype(out_tag);
    if (stages == 1) launch_mma<OutT, 1>(grid, s, ap, sap, bp, sbp, dp, m, n, k);
    else launch_mma<OutT, 2>(grid, s, ap, sap, bp, sbp, dp, m, n, k);
  };
  if (d.dtype() == DType::F32) run(float{}, d.data<float>());
  else run(uint16_t{}, d.data<uint16_t>());
}

}  // namespace r1::cuda
