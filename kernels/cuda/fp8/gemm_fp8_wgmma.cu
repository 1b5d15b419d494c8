// FP8 block-scaled GEMM on Hopper: TMA, wgmma, warp specialization, persistent tiles (see
// gemm_fp8_wgmma.h). DeepGEMM's structure, written here from the PTX ISA.
//
// A block = one producer warpgroup + C consumer warpgroups (C = 1 or 2, block_m = 64 C).
//   producer (one thread): for each of the block's tiles, for each k-block kb of 128:
//     wait until stage s is empty; announce its bytes on full[s]; TMA a[rows, kb] (block_m x
//     128 bytes) and b[cols, kb] (block_n x 128) into stage s, both 128-byte swizzled.
//   consumer warpgroup c (rows 64 c .. 64 c + 63 of the tile): for each k-block:
//     wait full[s]; part = 4 wgmma m64nNk32 over the stage (fp32, tensor cores; the first
//     overwrites); wait for them; release stage s (one arrival per warp on empty[s]; 1D1D:
//     after the promotion, which reads the stage's column scales);
//     acc += part * a_scales[row, kb] * b_scales[n0 / 128, kb]   (the V3 promotion, fp32)
//   then stores its 64 x block_n piece of d straight from registers (in-range elements).
//   The 256-column tile is two slices of 128 (N 256 would need 128 partial registers beside
//   128 accumulators): per k-block, slice 0's wgmmas, promotion, then slice 1's, with b's
//   scale block n0 / 128 + slice. Its a tile is loaded once per 256 columns: 1.5 bytes from L2
//   per output and k-block against the 128 x 128 tile's 2 (a quarter less).
//   1D1D (b with 1x128 row scales, wgrad): the producer also copies the k-block's column scales
//   of the tile into the stage (one 1-d bulk copy), read from there at promotion.
// Clusters (the "c2" configurations, dense only): two CTAs of a thread block cluster take the
// two m tiles of one pair with the same n tile, and each loads half of the b tile's rows and
// multicasts it into both CTAs' stage, so b comes from L2 once per pair: with 128x256, 1 byte
// per output and k-block instead of 1.5. Each CTA's full barrier expects the whole stage
// (its a, both halves of b); its empty barrier takes the arrivals of both CTAs' consumer
// warps (a peer's remotely), since its producer refills the stage in both. A CTA whose m
// tile lies past M still loads (zeros for a) and multicasts its half, and stores nothing.
// The stages form a ring that runs on across tiles: the producer fetches the next tile's
// k-blocks while the consumers finish and store the current one. Two consumer warpgroups
// overlap one's promotion with the other's tensor-core work.
//
// Tiles: a persistent grid (at most one block per multiprocessor) walks tile indices t =
// blockIdx.x, + gridDim.x, ...; t maps to (m tile, n tile) in bands of 8 n tiles (all m tiles
// of a band before the next), so the tiles in flight at once share their b rows and a rows in
// L2. Grouped layouts (MoE experts) add a level: each block first turns the device-side
// offsets / counts into per-group row ranges and an m-tile prefix sum in shared memory (no
// host sync: graph-safe), and an m tile index is looked up to (group, rows) by binary search.
// Rows past a group's end are loaded (the next group's rows, or zeros past the matrix) and
// computed but never stored; b's rows of group g start at g N in the (G N, K) view.
#include "kernels/cuda/fp8/gemm_fp8_wgmma.h"

#include <cuda.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <sstream>
#include <tuple>

#include "engine/convert.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"
#include "engine/kernels.h"
#include "engine/log.h"
#include "engine/tuned_table.h"
#include "kernels/cuda/common/launch.cuh"
#include "kernels/cuda/common/hopper.cuh"
#include "kernels/cuda/common/tma.h"
#include "kernels/cuda/fp8/gemm_fp8_schedule.h"

#ifndef R1_TUNED_DIR_DEFAULT
#define R1_TUNED_DIR_DEFAULT "bench/tuned"
#endif

namespace r1::cuda {
namespace {

using namespace hopper;

constexpr int kBK = 128;      // bytes per row of a k-block (kFp8Block e4m3)
using fp8_schedule::Groups;
using fp8_schedule::kMaxGroups;
using fp8_schedule::Tile;
static_assert(kMaxGroups == kFp8WgmmaMaxGroups, "one group limit");
static_assert(kBK == kFp8Block, "a stage holds one k-block");

enum Mode : int { kDense = 0, kContiguous = 1, kMasked = 2 };

struct Args {
  const float* sa;      // (rows_total, kbs)
  const float* sb;      // (groups, nbs, kbs)
  const float* sbt;     // 1D1D (dense only): b's 1x128 row scales transposed, (kbs, sbt_pitch),
                        // zero past n; row kb's tile columns are bulk-copied into the stage
  int sbt_pitch;        // a multiple of 256 (every tile's columns lie inside a row)
  void* d;              // (rows_total, n)
  const void* index;    // offsets (G + 1) or counts (G), i32 or i64; unused when dense
  int index64;          // index is int64
  int mode;             // Mode
  int groups;           // 1 when dense
  int rows_total;       // rows of the 2-d view of a (M, or G Mmax)
  int mmax;             // masked: rows per group slot
  int n, kbs, nbs;      // columns of d, k-blocks, 128-row blocks of b per group
  int tiles_n;          // ceil(n / block_n)
  int vec_store;        // d rows admit 2-element vector stores (n even, d aligned)
};

// kBN: the columns of one wgmma (64 or 128); kSplit: how many such column slices a tile has
// (1, or 2 for the 256-column tile: each consumer warpgroup multiplies its 64 rows by the
// slices one after another into the same partial registers, promoting each before the next,
// so it holds 64 x 256 accumulators with 64 x 128 partials: 192 registers, not 256).
template <int kConsumers, int kBN, int kStages, int kSplit = 1, int kCluster = 1>
struct Cfg {
  static constexpr int kBM = 64 * kConsumers;
  static constexpr int kTileN = kBN * kSplit;
  static constexpr int kThreads = 128 * (kConsumers + 1);
  static constexpr int kABytes = kBM * kBK, kBBytes = kTileN * kBK;
  static constexpr int kSliceBytes = kBN * kBK;  // one slice of b in a stage
  // Cluster: the rows of the b tile (and its bytes) each CTA loads and multicasts.
  static constexpr int kBRowsPerCta = kTileN / kCluster, kBBytesPerCta = kBBytes / kCluster;
  static constexpr int kStageBytes = kABytes + kBBytes;
  static constexpr int kScaleBytes = kTileN * 4;  // 1D1D: a k-block's column scales of the tile
  static constexpr int kAcc = kBN / 2;  // fp32 accumulators per thread and slice (m64 x kBN / 128)
  // stages, the 1D1D column scales of each stage, their full and empty barriers, and slack to
  // align the stages to 1024 bytes
  static constexpr int kSmem = kStages * (kStageBytes + kScaleBytes) + 2 * kStages * 8 + 1024;
  static_assert(kStageBytes % 1024 == 0, "every stage's tiles stay 1024-byte aligned");
  static_assert(kSmem + sizeof(Groups) <= 227 * 1024,
                "with the static group table, fits Hopper's shared memory per block");
  static_assert(kFp8Block % kBN == 0, "a slice's columns share one block of b's scales");
  static_assert(kSplit == 1 || kBN == kFp8Block, "slice s of a tile is b's scale block n0/128 + s");
  static_assert(kTileN <= 256, "a TMA box has at most 256 rows");
  static_assert(kCluster == 1 || kCluster == 2, "pairs of CTAs");
  static_assert(kBBytesPerCta % 1024 == 0, "each CTA's part of b starts on a swizzle atom");
};

__device__ inline int64_t index_at(const Args& a, int i) {
  return a.index64 ? static_cast<const int64_t*>(a.index)[i]
                   : static_cast<const int32_t*>(a.index)[i];
}

__device__ inline int64_t clamp64(int64_t v, int64_t lo, int64_t hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

// Tile t of this block's walk. kCluster 2 (dense): t counts pairs of m tiles (block_m 2 kBM)
// by n tiles, and CTA rank r of the cluster takes m tile 2 pair + r.
template <int kCluster>
__device__ __forceinline__ fp8_schedule::Tile block_tile(int t, const Groups& gs, const Args& a,
                                                         int tiles_m, int kBM, int kTileN,
                                                         uint32_t rank) {
  fp8_schedule::Tile tl =
      fp8_schedule::tile_at(t, gs, a.groups, tiles_m, a.tiles_n, kBM * kCluster, kTileN);
  tl.row0 += static_cast<int>(rank) * kBM;
  return tl;
}

// Fills the group tables (all threads of the block call it; ends with a barrier).
template <int kBM>
__device__ void build_groups(const Args& a, Groups& gs) {
  const int tid = static_cast<int>(threadIdx.x);
  const int G = a.groups;
  for (int g = tid; g < G; g += static_cast<int>(blockDim.x)) {
    int64_t lo, hi;
    if (a.mode == kDense) {
      lo = 0;
      hi = a.rows_total;
    } else if (a.mode == kContiguous) {
      lo = index_at(a, g);
      hi = index_at(a, g + 1);
    } else {
      lo = int64_t{g} * a.mmax;
      hi = lo + clamp64(index_at(a, g), 0, a.mmax);
    }
    lo = clamp64(lo, 0, a.rows_total);
    hi = clamp64(hi, lo, a.rows_total);
    gs.row_begin[g] = static_cast<int>(lo);
    gs.row_end[g] = static_cast<int>(hi);
    gs.tile_start[g + 1] = static_cast<int>((hi - lo + kBM - 1) / kBM);  // counts for now
  }
  __syncthreads();
  if (tid < 32) {  // warp 0: prefix sum of the counts, one contiguous chunk per lane
    const int per = (G + 31) / 32, first = tid * per, last = min(G, first + per);
    int sum = 0;
    for (int g = first; g < last; ++g) sum += gs.tile_start[g + 1];
    int incl = sum;
#pragma unroll
    for (int off = 1; off < 32; off <<= 1) {
      const int v = __shfl_up_sync(0xffffffffu, incl, off);
      if (tid >= off) incl += v;
    }
    int run = incl - sum;  // exclusive prefix of this lane's chunk
    for (int g = first; g < last; ++g) {
      run += gs.tile_start[g + 1];
      gs.tile_start[g + 1] = run;
    }
    if (tid == 0) gs.tile_start[0] = 0;
  }
  __syncthreads();
}

__device__ inline void store2(float* d, int64_t i, float v0, float v1, bool both, bool vec) {
  if (both && vec) {
    *reinterpret_cast<float2*>(d + i) = make_float2(v0, v1);
  } else {
    d[i] = v0;
    if (both) d[i + 1] = v1;
  }
}
__device__ inline void store2(uint16_t* d, int64_t i, float v0, float v1, bool both, bool vec) {
  const uint16_t h0 = f32_to_bf16(v0), h1 = f32_to_bf16(v1);
  if (both && vec) {
    *reinterpret_cast<uint32_t*>(d + i) = uint32_t{h0} | (uint32_t{h1} << 16);
  } else {
    d[i] = h0;
    if (both) d[i + 1] = h1;
  }
}

// kRowScales: b has 1x128 row scales (1D1D, wgrad), one per output column and k-block, copied
// with each stage from a.sbt; else one 128x128 block scale per 128 columns and k-block.
template <int kConsumers, int kBN, int kStages, int kSplit, int kCluster, class OutT,
          bool kRowScales>
__global__ void __launch_bounds__(Cfg<kConsumers, kBN, kStages, kSplit, kCluster>::kThreads, 1)
    gemm_fp8_wgmma_kernel(const __grid_constant__ CUtensorMap tm_a,
                          const __grid_constant__ CUtensorMap tm_b, const Args a) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
  using C = Cfg<kConsumers, kBN, kStages, kSplit, kCluster>;
  constexpr bool kMulticast = kCluster > 1;
  constexpr int kTileN = C::kTileN;
  constexpr int kBM = C::kBM;
  extern __shared__ __align__(16) uint8_t smem_raw[];
  __shared__ Groups gs;
  uint8_t* smem = smem_raw + ((1024 - (smem_u32(smem_raw) & 1023)) & 1023);
  auto* col_scales = reinterpret_cast<float*>(smem + kStages * C::kStageBytes);  // 1D1D only
  auto* full = reinterpret_cast<uint64_t*>(smem + kStages * (C::kStageBytes + C::kScaleBytes));
  uint64_t* empty = full + kStages;

  if (threadIdx.x == 0) {
    tma_prefetch_descriptor(&tm_a);
    tma_prefetch_descriptor(&tm_b);
    for (int s = 0; s < kStages; ++s) {
      mbar_init(&full[s], 1);  // the producer's expect_tx arrival
      mbar_init(&empty[s], 4 * kConsumers * kCluster);  // each consumer warp of the cluster
    }
    fence_barrier_init();
  }
  build_groups<kBM>(a, gs);  // ends with __syncthreads: the barriers are visible too
  // A peer's multicasts and arrivals reach this CTA's barriers only once they are initialized.
  if constexpr (kMulticast) cluster_sync();
  const uint32_t rank = kMulticast ? cluster_ctarank() : 0;
  // Work units: tiles, or (cluster) pairs of m tiles by n tiles, walked by blocks or clusters.
  const int tiles_m = (gs.tile_start[a.groups] + kCluster - 1) / kCluster;
  const int tiles = tiles_m * a.tiles_n;
  const int first = kMulticast ? static_cast<int>(cluster_id_x()) : static_cast<int>(blockIdx.x);
  const int stride = kMulticast ? static_cast<int>(cluster_count_x()) : static_cast<int>(gridDim.x);
  const int wg = static_cast<int>(threadIdx.x / 128);

  if (wg == 0) {  // producer warpgroup: one thread issues every copy
    if constexpr (kConsumers == 2) setmaxnreg_dec<40>();
    if (threadIdx.x == 0) {
      uint32_t it = 0;
      for (int t = first; t < tiles; t += stride) {
        const Tile tl = block_tile<kCluster>(t, gs, a, tiles_m, kBM, kTileN, rank);
        // this CTA's rows of the b tile (all of them without a cluster); a cluster's second
        // half wholly past N (its columns are not stored) reads valid rows instead, as a does
        int b_row = tl.g * a.n + tl.n0 + static_cast<int>(rank) * C::kBRowsPerCta;
        if (kMulticast && b_row >= a.n) b_row = 0;
        for (int kb = 0; kb < a.kbs; ++kb, ++it) {
          const uint32_t s = it % kStages, phase = (it / kStages) & 1;
          mbar_wait<kMulticast>(&empty[s], phase ^ 1);
          uint8_t* st = smem + s * C::kStageBytes;
          // The whole stage arrives here: a, this CTA's half of b and the peer's multicast half.
          mbar_arrive_expect_tx(&full[s], C::kStageBytes + (kRowScales ? C::kScaleBytes : 0));
          // A cluster's m tile past M (the odd last one) reads rows it will not store:
          // valid ones, not a box wholly outside the matrix.
          tma_load_2d(st, &tm_a, &full[s], kb * kBK,
                      kMulticast && tl.row0 >= a.rows_total ? 0 : tl.row0);
          if constexpr (kMulticast)
            tma_load_2d_multicast(st + C::kABytes + rank * C::kBBytesPerCta, &tm_b, &full[s],
                                  kb * kBK, b_row, static_cast<uint16_t>((1u << kCluster) - 1));
          else
            tma_load_2d(st + C::kABytes, &tm_b, &full[s], kb * kBK, b_row);
          if constexpr (kRowScales)
            bulk_load_1d(col_scales + s * kTileN, a.sbt + int64_t{kb} * a.sbt_pitch + tl.n0,
                         C::kScaleBytes, &full[s]);
        }
      }
    }
  } else {  // consumer warpgroup c: rows 64 c .. 64 c + 63 of each tile
    if constexpr (kConsumers == 2) setmaxnreg_inc<232>();
    const int c = wg - 1;
    const int warp = static_cast<int>(threadIdx.x / 32) % 4, lane = static_cast<int>(threadIdx.x % 32);
    const int g8 = lane / 4, t4 = lane % 4;
    OutT* d = static_cast<OutT*>(a.d);
    float part[C::kAcc];
#pragma unroll
    for (int i = 0; i < C::kAcc; ++i) part[i] = 0.0f;
    uint32_t it = 0;
    for (int t = first; t < tiles; t += stride) {
      const Tile tl = block_tile<kCluster>(t, gs, a, tiles_m, kBM, kTileN, rank);
      const int r_lo = tl.row0 + 64 * c + 16 * warp + g8, r_hi = r_lo + 8;
      const float* sa_lo = a.sa + int64_t{min(r_lo, a.rows_total - 1)} * a.kbs;
      const float* sa_hi = a.sa + int64_t{min(r_hi, a.rows_total - 1)} * a.kbs;
      const int nb0 = tl.n0 / kFp8Block;  // b's scale block of slice 0; slice h has nb0 + h
      const float* sbp = a.sb + (int64_t{tl.g} * a.nbs + nb0) * a.kbs;
      float acc[kSplit][C::kAcc];
#pragma unroll
      for (int h = 0; h < kSplit; ++h)
#pragma unroll
        for (int i = 0; i < C::kAcc; ++i) acc[h][i] = 0.0f;
      for (int kb = 0; kb < a.kbs; ++kb, ++it) {
        const uint32_t s = it % kStages, phase = (it / kStages) & 1;
        // The scales first: their loads are in flight while the tensor cores work.
        const float a_lo = __ldg(sa_lo + kb), a_hi = __ldg(sa_hi + kb);
        float b_s[kSplit];
#pragma unroll
        for (int h = 0; h < kSplit; ++h)  // a slice past b's last block (past N) is not stored
          b_s[h] = !kRowScales && nb0 + h < a.nbs ? __ldg(sbp + int64_t{h} * a.kbs + kb) : 0.0f;
        mbar_wait(&full[s], phase);
        const uint8_t* st = smem + s * C::kStageBytes;
        const uint64_t da = smem_desc_sw128(st + 64 * c * kBK);
#pragma unroll
        for (int h = 0; h < kSplit; ++h) {
          const uint64_t db = smem_desc_sw128(st + C::kABytes + h * C::kSliceBytes);
          fence_operands(part);
          wgmma_fence();
#pragma unroll
          for (int kk = 0; kk < kBK / 32; ++kk)
            WgmmaE4M3<kBN>::mma(part, desc_advance(da, 32 * kk), desc_advance(db, 32 * kk), kk);
          wgmma_commit();
          wgmma_wait<0>();
          fence_operands(part);
          // This warp is done with stage s once its last slice's wgmma has read it, and (1D1D)
          // once it has read the column scales there; a reader's generic loads are ordered
          // before the copy engine's refill by fence.proxy.async (PTX ISA, proxies).
          // (no lambda for the release: a call between wgmmas would make ptxas serialize them)
          if (!kRowScales && h == kSplit - 1) {
            __syncwarp();
            if (lane == 0) {
              mbar_arrive(&empty[s]);
              if constexpr (kMulticast) mbar_arrive_cluster(&empty[s], rank ^ 1u);
            }
          }
          float* ac = acc[h];
          if constexpr (kRowScales) {
            // columns n0 + h kBN + 8 j + 2 t4 + {0, 1}: float2 4 j + t4 of the slice's scales
            const auto* bc = reinterpret_cast<const float2*>(col_scales + s * kTileN + h * kBN);
#pragma unroll
            for (int j = 0; j < kBN / 8; ++j) {
              const float2 b_col = bc[4 * j + t4];
              ac[4 * j + 0] = fmaf(part[4 * j + 0], a_lo * b_col.x, ac[4 * j + 0]);
              ac[4 * j + 1] = fmaf(part[4 * j + 1], a_lo * b_col.y, ac[4 * j + 1]);
              ac[4 * j + 2] = fmaf(part[4 * j + 2], a_hi * b_col.x, ac[4 * j + 2]);
              ac[4 * j + 3] = fmaf(part[4 * j + 3], a_hi * b_col.y, ac[4 * j + 3]);
            }
            if (h == kSplit - 1) {
              fence_proxy_async_smem();
              __syncwarp();
              if (lane == 0) {
                mbar_arrive(&empty[s]);
                if constexpr (kMulticast) mbar_arrive_cluster(&empty[s], rank ^ 1u);
              }
            }
          } else {
            const float s_lo = a_lo * b_s[h], s_hi = a_hi * b_s[h];
#pragma unroll
            for (int j = 0; j < kBN / 8; ++j) {
              ac[4 * j + 0] = fmaf(part[4 * j + 0], s_lo, ac[4 * j + 0]);
              ac[4 * j + 1] = fmaf(part[4 * j + 1], s_lo, ac[4 * j + 1]);
              ac[4 * j + 2] = fmaf(part[4 * j + 2], s_hi, ac[4 * j + 2]);
              ac[4 * j + 3] = fmaf(part[4 * j + 3], s_hi, ac[4 * j + 3]);
            }
          }
        }
      }
      const bool lo_in = r_lo < tl.row_end, hi_in = r_hi < tl.row_end;
      const bool vec = a.vec_store != 0;
#pragma unroll
      for (int h = 0; h < kSplit; ++h)
#pragma unroll
        for (int j = 0; j < kBN / 8; ++j) {
          const int col = tl.n0 + h * kBN + 8 * j + 2 * t4;
          if (col >= a.n) continue;
          const bool both = col + 1 < a.n;
          const float* ac = acc[h];
          if (lo_in) store2(d, int64_t{r_lo} * a.n + col, ac[4 * j], ac[4 * j + 1], both, vec);
          if (hi_in)
            store2(d, int64_t{r_hi} * a.n + col, ac[4 * j + 2], ac[4 * j + 3], both, vec);
        }
    }
  }
  // No CTA leaves while its peer may still arrive on its barriers (the last stages' releases).
  if constexpr (kMulticast) cluster_sync();
#else
  // Built for another architecture: wgmma does not exist there; the host never launches this.
  (void)tm_a;
  (void)tm_b;
  (void)a;
  __trap();
#endif
}

// units: output tiles, or (cluster) pairs of m tiles by n tiles. The grid: one block per
// multiprocessor at most, or as many clusters as can be resident at once (cudaOccupancyMax-
// ActiveClusters, asked once per kernel and device).
template <int kConsumers, int kBN, int kStages, int kSplit, int kCluster, class OutT,
          bool kRowScales>
void launch(const CUtensorMap& ta, const CUtensorMap& tb, const Args& args, int64_t units,
            int dev, cudaStream_t s) {
  using C = Cfg<kConsumers, kBN, kStages, kSplit, kCluster>;
  auto* kernel = gemm_fp8_wgmma_kernel<kConsumers, kBN, kStages, kSplit, kCluster, OutT, kRowScales>;
  opt_in_dynamic_smem(reinterpret_cast<const void*>(kernel), C::kSmem);
  if constexpr (kCluster == 1) {
    const int grid = static_cast<int>(std::min<int64_t>(units, sm_count(dev)));
    kernel<<<grid, C::kThreads, C::kSmem, s>>>(ta, tb, args);
    R1_CUDA_CHECK_LAUNCH();
  } else {
    cudaLaunchAttribute attr;
    cudaLaunchConfig_t cfg = cluster_launch_config(
        static_cast<unsigned>(sm_count(dev) / kCluster * kCluster), C::kThreads, C::kSmem, s,
        kCluster, attr);
    static std::array<std::atomic<int>, kMaxDevices> resident{};  // clusters; 0: not asked yet
    std::atomic<int>& r = resident.at(static_cast<size_t>(dev));
    if (r.load(std::memory_order_relaxed) == 0) {
      int n = 0;  // with the grid of one block per multiprocessor set above
      R1_CUDA_CHECK(cudaOccupancyMaxActiveClusters(&n, kernel, &cfg));
      R1_CHECK(n > 0, "gemm_fp8_wgmma: no cluster of {} blocks of {} bytes of shared memory "
               "fits this GPU", kCluster, C::kSmem);
      r.store(n, std::memory_order_relaxed);
    }
    cfg.gridDim = dim3(static_cast<unsigned>(
        kCluster * std::min<int64_t>(units, r.load(std::memory_order_relaxed))));
    R1_CUDA_CHECK(cudaLaunchKernelEx(&cfg, kernel, ta, tb, args));
  }
}

// The compiled configurations (block_m, block_n, stages, cluster): 2 or 1 consumer
// warpgroups, 256 (two slices of 128), 128 or 64 columns; stages fill about 192 KB of shared
// memory; clusters of 2 (dense only) for the two largest tiles.
template <class OutT, bool kRowScales>
void launch_config(const Fp8WgmmaConfig& c, const CUtensorMap& ta, const CUtensorMap& tb,
                   const Args& args, int64_t units, int dev, cudaStream_t s) {
  if (c == Fp8WgmmaConfig{128, 256, 4}) launch<2, 128, 4, 2, 1, OutT, kRowScales>(ta, tb, args, units, dev, s);
  else if (c == Fp8WgmmaConfig{128, 128, 6}) launch<2, 128, 6, 1, 1, OutT, kRowScales>(ta, tb, args, units, dev, s);
  else if (c == Fp8WgmmaConfig{128, 64, 8}) launch<2, 64, 8, 1, 1, OutT, kRowScales>(ta, tb, args, units, dev, s);
  else if (c == Fp8WgmmaConfig{64, 128, 8}) launch<1, 128, 8, 1, 1, OutT, kRowScales>(ta, tb, args, units, dev, s);
  else if (c == Fp8WgmmaConfig{64, 64, 8}) launch<1, 64, 8, 1, 1, OutT, kRowScales>(ta, tb, args, units, dev, s);
  else if (c == Fp8WgmmaConfig{128, 256, 4, 2}) launch<2, 128, 4, 2, 2, OutT, kRowScales>(ta, tb, args, units, dev, s);
  else if (c == Fp8WgmmaConfig{128, 128, 6, 2}) launch<2, 128, 6, 1, 2, OutT, kRowScales>(ta, tb, args, units, dev, s);
  else R1_CHECK(false, "gemm_fp8_wgmma: configuration {} is not compiled", c.name());
}

// ---- configuration choice: tuned table or default -------------------------------------------

std::string gpu_slug(int device) {
  cudaDeviceProp p{};
  R1_CUDA_CHECK(cudaGetDeviceProperties(&p, device));
  std::string s;
  for (const char* c = p.name; *c; ++c) {
    const char ch = *c;
    if ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9')) s += ch;
    else if (ch >= 'A' && ch <= 'Z') s += static_cast<char>(ch - 'A' + 'a');
    else if (!s.empty() && s.back() != '-') s += '-';
  }
  while (!s.empty() && s.back() == '-') s.pop_back();
  return s;
}

std::optional<Fp8WgmmaConfig> parse_config(const std::string& s) {
  Fp8WgmmaConfig c;
  char x1 = 0, x2 = 0;
  std::istringstream in(s);
  if (!(in >> c.block_m >> x1 >> c.block_n >> x2 >> c.stages) || x1 != 'x' || x2 != 'x')
    return std::nullopt;
  if (in.peek() == 'c' && !(in.get() && in >> c.cluster)) return std::nullopt;  // "...c2"
  if (in.peek() != std::char_traits<char>::eof()) return std::nullopt;  // nothing after it
  const auto& all = fp8_wgmma_configs();
  // Compiled, and spelled as name() spells it (not "...c1" or "...c 2").
  if (std::find(all.begin(), all.end(), c) == all.end() || c.name() != s) return std::nullopt;
  return c;
}

// The table for `device` (fp8_wgmma_table_path), read once per process; an empty table when
// there is none. A malformed table is bad input (InputError naming the file and line).
const TunedTable& table_for(int device) {
  static std::mutex mu;
  static std::map<int, TunedTable> tables;
  std::lock_guard<std::mutex> lock(mu);
  auto it = tables.find(device);
  if (it == tables.end()) {
    std::optional<TunedTable> t = load_tuned_table(
        fp8_wgmma_table_path(device),
        [](const std::string& name) { return parse_config(name).has_value(); });
    it = tables.emplace(device, t ? std::move(*t) : TunedTable{}).first;
  }
  return it->second;
}

Fp8WgmmaConfig default_config(int device, int64_t m, int64_t n) {
  // The largest tile whose count fills every multiprocessor; else the most tiles (ties: the
  // smaller block_m, which wastes fewer rows of a short M).
  const int64_t sms = sm_count(device);
  const Fp8WgmmaConfig order[] = {{128, 128, 6}, {64, 128, 8}, {128, 64, 8}, {64, 64, 8}};
  auto tiles = [&](const Fp8WgmmaConfig& c) {
    return ((m + c.block_m - 1) / c.block_m) * ((n + c.block_n - 1) / c.block_n);
  };
  for (const auto& c : order)
    if (tiles(c) >= sms) return c;
  Fp8WgmmaConfig best = order[0];
  for (const auto& c : order)
    if (tiles(c) > tiles(best) || (tiles(c) == tiles(best) && c.block_m < best.block_m))
      best = c;
  return best;
}

CUtensorMap map_rows(const Tensor& x, int64_t rows, int64_t k, int box_rows) {
  return make_tma_map_u8(x.data_ptr(), static_cast<uint64_t>(rows), static_cast<uint64_t>(k),
                         static_cast<uint64_t>(k), static_cast<uint32_t>(box_rows), kBK);
}

// Shared by the dense and grouped entry points: a (rows_total, k), b (groups n, k).
void run(const Tensor& a_q, const Tensor& a_scales, const Tensor& b_q, const Tensor& b_scales,
         Tensor& d, int mode, const Tensor* index, int64_t rows_total, int64_t mmax,
         int64_t groups, int64_t n, int64_t k, int64_t tile_bound_m, const char* what,
         const Fp8WgmmaConfig* config) {
  const int dev = d.device().index;
  R1_CHECK(fp8_wgmma_supported(dev), "{}: needs an sm_90 GPU (wgmma)", what);
  R1_CHECK(k % 16 == 0 && k > 0, "{}: K {} must be a positive multiple of 16 (TMA row pitch)",
           what, k);
  R1_CHECK(reinterpret_cast<uintptr_t>(a_q.data_ptr()) % 16 == 0 &&
               reinterpret_cast<uintptr_t>(b_q.data_ptr()) % 16 == 0,
           "{}: a_q and b_q must be 16-byte aligned", what);
  R1_CHECK(groups >= 1 && groups <= kMaxGroups, "{}: {} groups (at most {})", what, groups,
           kMaxGroups);
  R1_CHECK(rows_total < (int64_t{1} << 31) && groups * n < (int64_t{1} << 31) &&
               k < (int64_t{1} << 31),
           "{}: sizes exceed 32-bit tile coordinates", what);
  Fp8WgmmaConfig c = config ? *config : fp8_wgmma_choose(dev, rows_total / groups, n, k);
  // A cluster's pairs of m tiles are dense rows: the grouped forms run its tile alone.
  if (mode != kDense) c.cluster = 1;
  DeviceGuard guard(dev);
  const cudaStream_t s = current_stream(dev);
  const size_t out_bytes = d.dtype() == DType::F32 ? 4 : 2;
  Args args{};
  args.sa = a_scales.data<float>();
  args.sb = b_scales.data<float>();
  args.d = d.data_ptr();
  args.index = index ? index->data_ptr() : nullptr;
  args.index64 = index && index->dtype() == DType::I64;
  args.mode = mode;
  args.groups = static_cast<int>(groups);
  args.rows_total = static_cast<int>(rows_total);
  args.mmax = static_cast<int>(mmax);
  args.n = static_cast<int>(n);
  args.kbs = static_cast<int>(fp8_blocks(k));
  args.nbs = static_cast<int>(fp8_blocks(n));
  args.tiles_n = static_cast<int>((n + c.block_n - 1) / c.block_n);
  args.vec_store = n % 2 == 0 && reinterpret_cast<uintptr_t>(d.data_ptr()) % (2 * out_bytes) == 0;
  // Work units (tiles; a cluster's pairs of m tiles), an upper bound for the grid.
  const int64_t m_units = (tile_bound_m + c.block_m - 1) / c.block_m;
  const int64_t units = ((m_units + c.cluster - 1) / c.cluster + (mode == kDense ? 0 : groups)) *
                        args.tiles_n;
  if (units == 0) return;
  const CUtensorMap ta = map_rows(a_q, rows_total, k, c.block_m);
  // b's box: each CTA of a cluster loads (and multicasts) its share of the tile's rows.
  const CUtensorMap tb = map_rows(b_q, groups * n, k, c.block_n / c.cluster);
  // 1D1D: the row scales (n, kbs) transposed, so a k-block's column scales are contiguous,
  // and padded with zeros to a pitch of whole 256-column tiles, so that the producer copies a
  // tile's scales as one aligned 1-d bulk copy (a small copy; freed in stream order after the
  // launch).
  const bool rows = mode == kDense && fp8_b_row_scales(b_q, b_scales);
  Tensor sbt;
  if (rows) {
    const int64_t pitch = (n + 255) / 256 * 256;
    sbt = Tensor::zeros({args.kbs, pitch}, DType::F32, d.device());
    sbt.narrow(1, 0, n).copy_(b_scales.transpose(0, 1));
    args.sbt = sbt.data<float>();
    args.sbt_pitch = static_cast<int>(pitch);
  }
  if (d.dtype() == DType::F32) {
    if (rows) launch_config<float, true>(c, ta, tb, args, units, dev, s);
    else launch_config<float, false>(c, ta, tb, args, units, dev, s);
  } else {
    if (rows) launch_config<uint16_t, true>(c, ta, tb, args, units, dev, s);
    else launch_config<uint16_t, false>(c, ta, tb, args, units, dev, s);
  }
}

}  // namespace

std::string Fp8WgmmaConfig::name() const {
  std::string s =
      std::to_string(block_m) + "x" + std::to_string(block_n) + "x" + std::to_string(stages);
  if (cluster > 1) {  // appended, not "c" + to_string: GCC 12 warns (-Wrestrict) on that
    s += 'c';
    s += std::to_string(cluster);
  }
  return s;
}

const std::vector<Fp8WgmmaConfig>& fp8_wgmma_configs() {
  // The newest last: the tests and the sweep run them in this order, and a fault in one
  // (before it has run on a GPU) should not hide the others' results.
  static const std::vector<Fp8WgmmaConfig> all = {
      {128, 128, 6}, {128, 64, 8}, {64, 128, 8}, {64, 64, 8}, {128, 256, 4},
      {128, 128, 6, 2}, {128, 256, 4, 2}};
  return all;
}

std::string fp8_wgmma_table_path(int device) {
  if (const char* f = std::getenv("R1_FP8_TUNED"); f && *f) return f;
  const char* dir = std::getenv("R1_TUNED_DIR");
  return std::string(dir && *dir ? dir : R1_TUNED_DIR_DEFAULT) + "/fp8_gemm-" + gpu_slug(device) +
         ".tsv";
}

bool fp8_wgmma_supported(int device) {
  // Per device, asked once: every GEMM call (and the dispatcher before it) checks.
  static std::array<std::atomic<int>, kMaxDevices> cache{};  // 0 unknown, 1 no, 2 yes
  std::atomic<int>& c = cache.at(static_cast<size_t>(device));
  if (c.load(std::memory_order_relaxed) == 0) {
    int major = 0, minor = 0;
    R1_CUDA_CHECK(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device));
    R1_CUDA_CHECK(cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, device));
    c.store(major == 9 && minor == 0 ? 2 : 1, std::memory_order_relaxed);
  }
  return c.load(std::memory_order_relaxed) == 2;
}

Fp8WgmmaConfig fp8_wgmma_choose(int device, int64_t m, int64_t n, int64_t k) {
  const TunedTable& t = table_for(device);
  const auto entry = t.lookup(m, n, k);
  const Fp8WgmmaConfig c = entry ? *parse_config(entry->second)  // checked when read
                                 : default_config(device, m, n);
  // Logged once per shape class (the table's key and the choice; a training run has a
  // handful), the message formatted only then: this runs on every GEMM call.
  static std::mutex mu;
  static std::set<std::tuple<int, int64_t, int64_t, int, int, int, int>> logged;
  bool first;
  {
    std::lock_guard<std::mutex> lock(mu);
    first = logged.insert({device, n, k, c.block_m, c.block_n, c.stages, c.cluster}).second;
  }
  if (first) {
    const std::string from =
        entry ? fmt::format("tuned table {} (entry M {})", t.path, entry->first)
        : t.path.empty() ? fmt::format("default rule: no tuned table for {} (r1-fp8-tune "
                                       "writes one)", gpu_slug(device))
                         : fmt::format("default rule: {} has no N {} K {}", t.path, n, k);
    log_info("gemm_fp8_wgmma: N {} K {} (M {}) runs {} from the {}", n, k, m, c.name(), from);
  }
  return c;
}

void gemm_fp8_blockscaled_wgmma(const Tensor& a_q, const Tensor& a_scales, const Tensor& b_q,
                                const Tensor& b_scales, Tensor& d, const Fp8WgmmaConfig* config) {
  check_gemm_fp8_blockscaled(a_q, a_scales, b_q, b_scales, d,
                             d.dtype() == DType::F32 || d.dtype() == DType::BF16);
  const int64_t m = a_q.size(0), k = a_q.size(1), n = b_q.size(0);
  if (m == 0 || n == 0) return;
  run(a_q, a_scales, b_q, b_scales, d, kDense, nullptr, m, 0, 1, n, k, m,
      "gemm_fp8_blockscaled_wgmma", config);
}

void gemm_fp8_grouped_contiguous_wgmma(const Tensor& a_q, const Tensor& a_scales,
                                       const Tensor& b_q, const Tensor& b_scales,
                                       const Tensor& offsets, Tensor& d,
                                       const Fp8WgmmaConfig* config) {
  check_gemm_fp8_grouped(a_q, a_scales, b_q, b_scales, offsets, d, /*masked=*/false,
                         d.dtype() == DType::F32 || d.dtype() == DType::BF16);
  const int64_t m = a_q.size(0), k = a_q.size(1), g = b_q.size(0), n = b_q.size(1);
  if (m == 0 || n == 0 || g == 0) return;
  run(a_q, a_scales, b_q, b_scales, d, kContiguous, &offsets, m, 0, g, n, k, m,
      "gemm_fp8_grouped_contiguous_wgmma", config);
}

void gemm_fp8_grouped_masked_wgmma(const Tensor& a_q, const Tensor& a_scales, const Tensor& b_q,
                                   const Tensor& b_scales, const Tensor& counts, Tensor& d,
                                   const Fp8WgmmaConfig* config) {
  check_gemm_fp8_grouped(a_q, a_scales, b_q, b_scales, counts, d, /*masked=*/true,
                         d.dtype() == DType::F32 || d.dtype() == DType::BF16);
  const int64_t g = a_q.size(0), mmax = a_q.size(1), k = a_q.size(2), n = b_q.size(1);
  if (g == 0 || mmax == 0 || n == 0) return;
  // Each group's tiles stay inside its Mmax slot: bound the grid by G ceil(Mmax / block_m).
  run(a_q, a_scales, b_q, b_scales, d, kMasked, &counts, g * mmax, mmax, g, n, k,
      g * mmax, "gemm_fp8_grouped_masked_wgmma", config);
}

}  // namespace r1::cuda
