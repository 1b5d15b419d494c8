// FP8 block-scaled GEMM on tensor cores through mma.sync (see gemm_fp8_mma.h).
//
// Schedule (one block of 16 warps per 128x128 tile of d):
//   for each k-block kb of 128:
//     stage a[m0:m0+128, kb] and b[n0:n0+128, kb] (16 KB each) into shared memory
//     each warp (4 x 4 warps; a warp owns 32 rows x 32 columns = 2 x 4 mma tiles of 16x8):
//       part = sum of 4 mma.m16n8k32 steps over the block         (fp32, on tensor cores)
//       acc += part * a_scales[row, kb] * b_scales[n0 / 128, kb]  (fp32, CUDA cores)
// A 128-column tile is one 128-row block of b, so b's scale is one number per k-block; with
// 1x128 row scales on b (1D1D, wgrad) each column has its own, read per k-block for the
// thread's 2 x kFragsN columns.
// Tile shapes, shared-memory layout and fragment layouts: kernels/cuda/common/mma.cuh.
//
// Two variants: one shared-memory stage (load, sync, compute) and two (cp.async copies k-block
// kb + 1 while the tensor cores work on kb). No TMA, no warp specialization, no wgmma yet: the
// step after this is DeepGEMM's structure. Not yet run on a GPU.
#include "kernels/cuda/fp8/gemm_fp8_mma.h"

#include <cstdint>

#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"
#include "engine/kernels.h"
#include "kernels/cuda/common/launch.cuh"
#include "kernels/cuda/common/mma.cuh"
#include "kernels/cuda/fp8/fp8_common.cuh"

namespace r1::cuda {
namespace {

using namespace mma;  // the tile shape and helpers shared with the bf16 mma GEMM
static_assert(kTileN == kFp8Block && kTileKBytes == kFp8Block,
              "a tile's columns are one block of b's scales, a k-tile one k-block");

// a (m, k), sa (m, kbs), b (n, k), sb (ceil(n/128), kbs) or (n, kbs) (b_rows) -> d (m, n).
// Per k-block: the tensor cores' fp32 partial (4 mma steps), then the promotion into the
// accumulator.
// The tile at (m0, n0); every thread of the block calls it (the dense and grouped kernels).
// mma_tile_pitched: a and b rows k bytes long, pitch bytes apart, kts k-blocks, the scales'
// rows sstride floats apart (the k-grouped kernel's column slices); mma_tile: the plain
// matrices (pitch = k, sstride = kts = kbs).
template <class OutT, int kStages>
__device__ __forceinline__ void mma_tile_pitched(const uint8_t* a, const float* sa,
                                                 const uint8_t* b, const float* sb, OutT* d,
                                                 int64_t m, int64_t n, int64_t k, int64_t pitch,
                                                 int64_t kts, int64_t sstride, bool b_rows,
                                                 int64_t m0, int64_t n0, uint8_t* smem) {
  const int64_t kbs = sstride;  // the scales' row stride (the promotion below indexes by it)
  const WarpPos p = warp_pos();
  float acc[kFragsM][kFragsN][4] = {};
  mainloop_pitched<kStages>(a, m, b, n, k, pitch, m0, n0, kts, smem,
                    [&](const uint8_t* as, const uint8_t* bs, int64_t kb) {
    float part[kFragsM][kFragsN][4] = {};
#pragma unroll 1  // unrolled, the fragment loads of all 4 steps are hoisted and spill
    for (int kk = 0; kk < kTileKBytes; kk += kStepBytes) {
      Frags f;
      load_frags(as, bs, p.wm, p.wn, p.g, p.t, kk, f);
#pragma unroll
      for (int i = 0; i < kFragsM; ++i)
#pragma unroll
        for (int j = 0; j < kFragsN; ++j) mma_e4m3(part[i][j], f.a[i], f.b[j]);
    }
    // Promotion: this k-block's partial sums, scaled, into the fp32 accumulator.
    if (!b_rows) {
      const float sbv = sb[(n0 / kFp8Block) * kbs + kb];
#pragma unroll
      for (int i = 0; i < kFragsM; ++i) {
        const int64_t r_lo = m0 + p.wm * kWarpRows + i * kMmaM + p.g, r_hi = r_lo + 8;
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
    } else {
      // 1D1D: column c of fragment j's pair (c, c + 1) has its own scale (store_tile's map).
      float sbc[kFragsN][2];
#pragma unroll
      for (int j = 0; j < kFragsN; ++j) {
        const int64_t c = n0 + p.wn * kWarpCols + j * kMmaN + 2 * p.t;
        sbc[j][0] = c < n ? sb[c * kbs + kb] : 0.0f;
        sbc[j][1] = c + 1 < n ? sb[(c + 1) * kbs + kb] : 0.0f;
      }
#pragma unroll
      for (int i = 0; i < kFragsM; ++i) {
        const int64_t r_lo = m0 + p.wm * kWarpRows + i * kMmaM + p.g, r_hi = r_lo + 8;
        const float s_lo = r_lo < m ? sa[r_lo * kbs + kb] : 0.0f;
        const float s_hi = r_hi < m ? sa[r_hi * kbs + kb] : 0.0f;
#pragma unroll
        for (int j = 0; j < kFragsN; ++j) {
          acc[i][j][0] = fmaf(part[i][j][0], s_lo * sbc[j][0], acc[i][j][0]);
          acc[i][j][1] = fmaf(part[i][j][1], s_lo * sbc[j][1], acc[i][j][1]);
          acc[i][j][2] = fmaf(part[i][j][2], s_hi * sbc[j][0], acc[i][j][2]);
          acc[i][j][3] = fmaf(part[i][j][3], s_hi * sbc[j][1], acc[i][j][3]);
        }
      }
    }
  });
  store_tile(d, m, n, m0, n0, p, acc);
}

template <class OutT, int kStages>
__device__ __forceinline__ void mma_tile(const uint8_t* a, const float* sa, const uint8_t* b,
                                         const float* sb, OutT* d, int64_t m, int64_t n,
                                         int64_t k, int64_t kbs, bool b_rows, int64_t m0,
                                         int64_t n0, uint8_t* smem) {
  mma_tile_pitched<OutT, kStages>(a, sa, b, sb, d, m, n, k, k, kbs, kbs, b_rows, m0, n0, smem);
}

template <class OutT, int kStages>
__global__ void __launch_bounds__(kBlockThreads, 1)
    gemm_fp8_mma_kernel(const uint8_t* a, const float* sa, const uint8_t* b, const float* sb,
                        OutT* d, int64_t m, int64_t n, int64_t k, int64_t kbs, bool b_rows) {
  extern __shared__ __align__(16) uint8_t smem[];
  mma_tile<OutT, kStages>(a, sa, b, sb, d, m, n, k, kbs, b_rows, int64_t{blockIdx.y} * kTileM,
                          int64_t{blockIdx.x} * kTileN, smem);
}

// Grouped, contiguous layout (engine/kernels.h): blockIdx.y enumerates the groups' row tiles
// in order, read from the device-side offsets (as the simple grouped kernel does: no host
// sync); grid.y = ceil(M / 128) + G bounds their count, blocks past the last return.
template <class OutT, class I, int kStages>
__global__ void __launch_bounds__(kBlockThreads, 1)
    gemm_fp8_mma_contiguous_kernel(const uint8_t* a, const float* sa, const uint8_t* b,
                                   const float* sb, const I* offsets, OutT* d, int64_t groups,
                                   int64_t n, int64_t k, int64_t kbs) {
  extern __shared__ __align__(16) uint8_t smem[];
  int64_t t = blockIdx.y, g = 0, begin = 0, rows = 0;
  if (!fp8::contiguous_tile(offsets, groups, int64_t{kTileM}, t, g, begin, rows))
    return;  // uniform over the block
  const int64_t nb = (n + kFp8Block - 1) / kFp8Block;
  mma_tile<OutT, kStages>(a + begin * k, sa + begin * kbs, b + g * n * k, sb + g * nb * kbs,
                          d + begin * n, rows, n, k, kbs, false, t * kTileM,
                          int64_t{blockIdx.x} * kTileN, smem);
}

// k-grouped (gemm_fp8_kgrouped, the MoE wgrad): blockIdx.z is the group; its K columns
// [k_offsets[g], k_offsets[g+1]) (multiples of 128) of a (m, kt) and b (n, kt), 1D1D scales
// (m, kt/128) and (n, kt/128) -> d[g] (m, n); the dense tile on pitched column slices. An
// empty range stores zeros (no k-block: the accumulator stays 0).
template <class OutT, class I, int kStages>
__global__ void __launch_bounds__(kBlockThreads, 1)
    gemm_fp8_mma_kgrouped_kernel(const uint8_t* a, const float* sa, const uint8_t* b,
                                 const float* sb, const I* k_offsets, OutT* d, int64_t m,
                                 int64_t n, int64_t kt) {
  extern __shared__ __align__(16) uint8_t smem[];
  const int64_t g = blockIdx.z;
  // Offsets past Kt (a broken promise) are kept inside the matrix.
  const int64_t k1 = min(static_cast<int64_t>(k_offsets[g + 1]), kt);
  const int64_t k0 = min(static_cast<int64_t>(k_offsets[g]), k1);
  const int64_t kb0 = k0 / kFp8Block, kts = (k1 - k0) / kFp8Block;
  mma_tile_pitched<OutT, kStages>(a + k0, sa + kb0, b + k0, sb + kb0, d + g * m * n, m, n,
                                  k1 - k0, kt, kts, kt / kFp8Block, /*b_rows=*/true,
                                  int64_t{blockIdx.y} * kTileM, int64_t{blockIdx.x} * kTileN,
                                  smem);
}

// Grouped, masked layout: blockIdx.z is the group; tiles at or past counts[g] return.
template <class OutT, class I, int kStages>
__global__ void __launch_bounds__(kBlockThreads, 1)
    gemm_fp8_mma_masked_kernel(const uint8_t* a, const float* sa, const uint8_t* b,
                               const float* sb, const I* counts, OutT* d, int64_t mmax,
                               int64_t n, int64_t k, int64_t kbs) {
  extern __shared__ __align__(16) uint8_t smem[];
  const int64_t g = blockIdx.z, m0 = int64_t{blockIdx.y} * kTileM;
  // A count past the slots (a caller's broken promise) stays inside its group's slots.
  const int64_t rows = min(static_cast<int64_t>(counts[g]), mmax);
  if (m0 >= rows) return;  // uniform over the block
  const int64_t nb = (n + kFp8Block - 1) / kFp8Block;
  mma_tile<OutT, kStages>(a + g * mmax * k, sa + g * mmax * kbs, b + g * n * k,
                          sb + g * nb * kbs, d + g * mmax * n, rows, n, k, kbs, false, m0,
                          int64_t{blockIdx.x} * kTileN, smem);
}

// One launch of the kernel for d's dtype and the stage count, with its dynamic shared memory.
template <class OutT, int kStages>
void launch_mma(dim3 grid, cudaStream_t s, const uint8_t* ap, const float* sap,
                const uint8_t* bp, const float* sbp, OutT* dp, int64_t m, int64_t n, int64_t k,
                bool b_rows) {
  constexpr int kSmem = kStages * kStageBytes;
  opt_in_dynamic_smem(reinterpret_cast<const void*>(gemm_fp8_mma_kernel<OutT, kStages>), kSmem);
  gemm_fp8_mma_kernel<OutT, kStages><<<grid, kBlockThreads, kSmem, s>>>(
      ap, sap, bp, sbp, dp, m, n, k, fp8_blocks(k), b_rows);
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
  const bool b_rows = fp8_b_row_scales(b_q, b_scales);
  auto run = [&](auto out_tag, auto* dp) {
    using OutT = decltype(out_tag);
    if (stages == 1) launch_mma<OutT, 1>(grid, s, ap, sap, bp, sbp, dp, m, n, k, b_rows);
    else launch_mma<OutT, 2>(grid, s, ap, sap, bp, sbp, dp, m, n, k, b_rows);
  };
  if (d.dtype() == DType::F32) run(float{}, d.data<float>());
  else run(uint16_t{}, d.data<uint16_t>());
}

// The grouped forms on the two-stage kernel (contracts: gemm_fp8_grouped_contiguous /
// _masked in engine/kernels.h), with the dense form's operand rules (K a multiple of 16,
// aligned operands). Each tile is the dense kernel's tile code on the group's rows, so a row's
// result is the dense kernel's for that row and weight.
namespace {

void check_grouped_mma(const char* what, const Tensor& a_q, const Tensor& b_q, int64_t k) {
  R1_CHECK(k % 16 == 0 && reinterpret_cast<uintptr_t>(a_q.data_ptr()) % 16 == 0 &&
               reinterpret_cast<uintptr_t>(b_q.data_ptr()) % 16 == 0,
           "{}: the mma kernel needs K ({}) a multiple of 16 and 16-byte aligned operands", what,
           k);
}

// The grid of a per-group launch: (N tiles, row tiles, groups), each within CUDA's limits.
dim3 group_grid(const char* what, int64_t rows, int64_t n, int64_t groups) {
  const int64_t grid_y = (rows + kTileM - 1) / kTileM, grid_x = (n + kTileN - 1) / kTileN;
  R1_CHECK(grid_y <= 65535 && groups <= 65535, "{}: {} rows or {} groups exceed the grid", what,
           rows, groups);
  return dim3(static_cast<unsigned>(grid_x), static_cast<unsigned>(grid_y),
              static_cast<unsigned>(groups));
}

}  // namespace

void gemm_fp8_grouped_contiguous_mma(const Tensor& a_q, const Tensor& a_scales,
                                     const Tensor& b_q, const Tensor& b_scales,
                                     const Tensor& offsets, Tensor& d) {
  check_gemm_fp8_grouped(a_q, a_scales, b_q, b_scales, offsets, d, /*masked=*/false,
                         d.dtype() == DType::F32 || d.dtype() == DType::BF16);
  const int64_t m = a_q.size(0), k = a_q.size(1), g = b_q.size(0), n = b_q.size(1);
  check_grouped_mma("gemm_fp8_grouped_contiguous_mma", a_q, b_q, k);
  if (m == 0 || n == 0) return;
  const int64_t tiles = (m + kTileM - 1) / kTileM + g, grid_x = (n + kTileN - 1) / kTileN;
  R1_CHECK(tiles <= 65535, "gemm_fp8_grouped_contiguous_mma: M {} with {} groups exceeds the "
           "grid", m, g);
  const int dev = d.device().index;
  DeviceGuard guard(dev);
  const dim3 grid(static_cast<unsigned>(grid_x), static_cast<unsigned>(tiles));
  constexpr int kSmem = 2 * kStageBytes;
  fp8::dispatch_out_index(d, offsets, [&](auto otag, auto itag) {
    using OutT = decltype(otag);
    using I = decltype(itag);
    auto* kernel = gemm_fp8_mma_contiguous_kernel<OutT, I, 2>;
    opt_in_dynamic_smem(reinterpret_cast<const void*>(kernel), kSmem);
    kernel<<<grid, kBlockThreads, kSmem, current_stream(dev)>>>(
        a_q.data<uint8_t>(), a_scales.data<float>(), b_q.data<uint8_t>(),
        b_scales.data<float>(), static_cast<const I*>(offsets.data_ptr()),
        static_cast<OutT*>(d.data_ptr()), g, n, k, fp8_blocks(k));
    R1_CUDA_CHECK_LAUNCH();
  });
}

void gemm_fp8_grouped_masked_mma(const Tensor& a_q, const Tensor& a_scales, const Tensor& b_q,
                                 const Tensor& b_scales, const Tensor& counts, Tensor& d) {
  check_gemm_fp8_grouped(a_q, a_scales, b_q, b_scales, counts, d, /*masked=*/true,
                         d.dtype() == DType::F32 || d.dtype() == DType::BF16);
  const int64_t g = a_q.size(0), mmax = a_q.size(1), k = a_q.size(2), n = b_q.size(1);
  check_grouped_mma("gemm_fp8_grouped_masked_mma", a_q, b_q, k);
  if (g == 0 || mmax == 0 || n == 0) return;
  const dim3 grid = group_grid("gemm_fp8_grouped_masked_mma", mmax, n, g);
  const int dev = d.device().index;
  DeviceGuard guard(dev);
  constexpr int kSmem = 2 * kStageBytes;
  fp8::dispatch_out_index(d, counts, [&](auto otag, auto itag) {
    using OutT = decltype(otag);
    using I = decltype(itag);
    auto* kernel = gemm_fp8_mma_masked_kernel<OutT, I, 2>;
    opt_in_dynamic_smem(reinterpret_cast<const void*>(kernel), kSmem);
    kernel<<<grid, kBlockThreads, kSmem, current_stream(dev)>>>(
        a_q.data<uint8_t>(), a_scales.data<float>(), b_q.data<uint8_t>(),
        b_scales.data<float>(), static_cast<const I*>(counts.data_ptr()),
        static_cast<OutT*>(d.data_ptr()), mmax, n, k, fp8_blocks(k));
    R1_CUDA_CHECK_LAUNCH();
  });
}

void gemm_fp8_kgrouped_mma(const Tensor& a_q, const Tensor& a_scales, const Tensor& b_q,
                           const Tensor& b_scales, const Tensor& k_offsets, Tensor& d) {
  check_gemm_fp8_kgrouped(a_q, a_scales, b_q, b_scales, k_offsets, d);
  const int64_t m = a_q.size(0), kt = a_q.size(1), n = b_q.size(0), g = d.size(0);
  check_grouped_mma("gemm_fp8_kgrouped_mma", a_q, b_q, kt == 0 ? 16 : kt);
  if (m == 0 || n == 0 || g == 0) return;
  const dim3 grid = group_grid("gemm_fp8_kgrouped_mma", m, n, g);
  const int dev = d.device().index;
  DeviceGuard guard(dev);
  constexpr int kSmem = 2 * kStageBytes;
  fp8::dispatch_out_index(d, k_offsets, [&](auto otag, auto itag) {
    using OutT = decltype(otag);
    using I = decltype(itag);
    auto* kernel = gemm_fp8_mma_kgrouped_kernel<OutT, I, 2>;
    opt_in_dynamic_smem(reinterpret_cast<const void*>(kernel), kSmem);
    kernel<<<grid, kBlockThreads, kSmem, current_stream(dev)>>>(
        a_q.data<uint8_t>(), a_scales.data<float>(), b_q.data<uint8_t>(),
        b_scales.data<float>(), static_cast<const I*>(k_offsets.data_ptr()),
        static_cast<OutT*>(d.data_ptr()), m, n, kt);
    R1_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace r1::cuda
