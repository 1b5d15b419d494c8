// Tile helpers shared by the mma.sync GEMMs (gemm_bf16_mma.cu, fp8/gemm_fp8_mma.cu): a block
// of 16 warps computes a 128 x 128 tile of D = A B^T from k-tiles of 128 bytes per row (128
// e4m3 or 64 bf16 values) staged in shared memory, rows padded to 144 bytes so the 8 rows a
// fragment load touches start in 8 different bank groups (row r at bank 4r: no conflicts).
//
// Fragment layouts (PTX ISA, "Matrix fragments for mma.m16n8k32" (8-bit) and "mma.m16n8k16"
// (16-bit); g = lane / 4, t = lane % 4), all taken as 32-bit words from shared memory:
//   A (16 x kK, row-major): reg0 = A[g][w t], reg1 = A[g+8][w t], reg2 = A[g][kK/2 + w t],
//                           reg3 = A[g+8][kK/2 + w t], where w = 4 / element bytes elements
//                           per word (lowest k in the low bits)
//   B (kK x 8, "col"):      reg0 = B[w t][g], reg1 = B[kK/2 + w t][g]; with B[k][n] = b[n][k]
//                           (b stored (N, K) row-major) each word is w consecutive k of row g
//   C (16 x 8 f32):         c0, c1 = C[g][2t], C[g][2t+1]; c2, c3 = C[g+8][2t], C[g+8][2t+1]
// In bytes both element sizes read the same offsets: word t at byte 4t, the second half of
// the k-step at byte kStepBytes / 2. That is what lets one staging and one fragment loader
// serve both GEMMs.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "engine/convert.h"

namespace r1::cuda::mma {

inline constexpr int kTileM = 128, kTileN = 128;
inline constexpr int kTileKBytes = 128;              // bytes of a row per k-tile
inline constexpr int kRowBytes = kTileKBytes + 16;  // padded shared-memory row
inline constexpr int kWarps = 16, kBlockThreads = kWarps * 32;
inline constexpr int kWarpRows = 32, kWarpCols = 32;  // 4 x 4 warps cover the tile
inline constexpr int kMmaM = 16, kMmaN = 8;
inline constexpr int kStepBytes = 32;  // one mma's k extent in bytes (32 e4m3 or 16 bf16)
inline constexpr int kFragsM = kWarpRows / kMmaM;  // 2
inline constexpr int kFragsN = kWarpCols / kMmaN;  // 4
inline constexpr int kTileBytes = kTileM * kRowBytes;
inline constexpr int kStageBytes = 2 * kTileBytes;  // the a tile, then the b tile
inline constexpr int kChunks = kTileM * (kTileKBytes / 16);  // 16-byte chunks per tile
static_assert(kChunks % kBlockThreads == 0, "whole chunks per thread");
static_assert((kTileM / kWarpRows) * (kTileN / kWarpCols) == kWarps, "warps cover the tile");

__device__ inline uint32_t lds32(const uint8_t* p) {
  return *reinterpret_cast<const uint32_t*>(p);
}

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

// Rows [r0, r0 + 128) x bytes [kt * 128, kt * 128 + 128) of x (rows, row_bytes; row r at
// x + r * pitch) -> s (128 x kRowBytes), zero outside the matrix. row_bytes and pitch are
// multiples of 16, so a 16-byte chunk is wholly inside or outside. kAsync: through cp.async
// (the caller commits and waits), else plain loads and stores.
template <bool kAsync>
__device__ inline void stage_tile(const uint8_t* x, int64_t rows, int64_t row_bytes,
                                  int64_t pitch, int64_t r0, int64_t kt, uint8_t* s) {
#pragma unroll
  for (int i = 0; i < kChunks / kBlockThreads; ++i) {
    const int idx = static_cast<int>(threadIdx.x) + i * kBlockThreads;
    const int row = idx / (kTileKBytes / 16), c16 = idx % (kTileKBytes / 16);
    const int64_t gr = r0 + row, gb = kt * kTileKBytes + c16 * 16;
    const bool in = gr < rows && gb < row_bytes;
    uint8_t* dst = s + row * kRowBytes + c16 * 16;
    if constexpr (kAsync) {
      cp_async16(dst, in ? x + gr * pitch + gb : x, in);
    } else {
      uint4 v = make_uint4(0, 0, 0, 0);
      if (in) v = *reinterpret_cast<const uint4*>(x + gr * pitch + gb);
      *reinterpret_cast<uint4*>(dst) = v;
    }
  }
}

// This warp's A and B fragments for the k-step at byte offset kb of the staged tiles.
struct Frags {
  uint32_t a[kFragsM][4];
  uint32_t b[kFragsN][2];
};

__device__ inline void load_frags(const uint8_t* as, const uint8_t* bs, int wm, int wn, int g,
                                  int t, int kb, Frags& f) {
#pragma unroll
  for (int i = 0; i < kFragsM; ++i) {
    const uint8_t* r = as + (wm * kWarpRows + i * kMmaM + g) * kRowBytes + kb + 4 * t;
    f.a[i][0] = lds32(r);
    f.a[i][1] = lds32(r + 8 * kRowBytes);
    f.a[i][2] = lds32(r + kStepBytes / 2);
    f.a[i][3] = lds32(r + 8 * kRowBytes + kStepBytes / 2);
  }
#pragma unroll
  for (int j = 0; j < kFragsN; ++j) {
    const uint8_t* r = bs + (wn * kWarpCols + j * kMmaN + g) * kRowBytes + kb + 4 * t;
    f.b[j][0] = lds32(r);
    f.b[j][1] = lds32(r + kStepBytes / 2);
  }
}

// c += A B for one 16 x 8 tile: e4m3 x e4m3 (k 32) or bf16 x bf16 (k 16), fp32 accumulate.
__device__ inline void mma_e4m3(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
__device__ inline void mma_bf16(float (&c)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0, %1, %2, %3}, "
      "{%4, %5, %6, %7}, {%8, %9}, {%0, %1, %2, %3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}

// This thread's place in the block: lane parts g, t and the warp's tile row and column.
struct WarpPos {
  int g, t, wm, wn;
};
__device__ inline WarpPos warp_pos() {
  const int lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
  return {lane / 4, lane % 4, warp / (kTileN / kWarpCols), warp % (kTileN / kWarpCols)};
}

// The k loop of a tile: k-tiles kt = 0 .. kts-1 of a rows [m0, m0 + 128) and b rows
// [n0, n0 + 128) (both row_bytes per row) staged into smem, then compute(as, bs, kt) on them
// between two block barriers. kStages = 1: load, sync, compute, sync. kStages = 2: k-tile
// kt + 1 is copied (cp.async) into the other buffer while compute works on kt; smem holds
// kStages * kStageBytes.
// (mainloop_pitched: the rows row_bytes long but pitch bytes apart: a column range of wider
// matrices, the k-grouped GEMM's per-group slices of K.)
template <int kStages, class Compute>
__device__ inline void mainloop_pitched(const uint8_t* a, int64_t m, const uint8_t* b, int64_t n,
                                        int64_t row_bytes, int64_t pitch, int64_t m0,
                                        int64_t n0, int64_t kts, uint8_t* smem,
                                        Compute&& compute) {
  static_assert(kStages == 1 || kStages == 2, "one or two shared-memory stages");
  if constexpr (kStages == 2) {
    if (kts > 0) {
      stage_tile<true>(a, m, row_bytes, pitch, m0, 0, smem);
      stage_tile<true>(b, n, row_bytes, pitch, n0, 0, smem + kTileBytes);
    }
    cp_async_commit();
  }
  for (int64_t kt = 0; kt < kts; ++kt) {
    uint8_t* as = smem + (kStages == 2 ? (kt & 1) * kStageBytes : 0);
    uint8_t* bs = as + kTileBytes;
    if constexpr (kStages == 2) {
      if (kt + 1 < kts) {  // the other buffer was released by the previous iteration's sync
        uint8_t* next = smem + ((kt + 1) & 1) * kStageBytes;
        stage_tile<true>(a, m, row_bytes, pitch, m0, kt + 1, next);
        stage_tile<true>(b, n, row_bytes, pitch, n0, kt + 1, next + kTileBytes);
      }
      cp_async_commit();
      cp_async_wait<1>();  // all but the newest group: k-tile kt has landed
    } else {
      stage_tile<false>(a, m, row_bytes, pitch, m0, kt, as);
      stage_tile<false>(b, n, row_bytes, pitch, n0, kt, bs);
    }
    __syncthreads();
    compute(static_cast<const uint8_t*>(as), static_cast<const uint8_t*>(bs), kt);
    __syncthreads();  // the next stage overwrites this buffer
  }
}

template <int kStages, class Compute>
__device__ inline void mainloop(const uint8_t* a, int64_t m, const uint8_t* b, int64_t n,
                                int64_t row_bytes, int64_t m0, int64_t n0, int64_t kts,
                                uint8_t* smem, Compute&& compute) {
  mainloop_pitched<kStages>(a, m, b, n, row_bytes, row_bytes, m0, n0, kts, smem,
                            static_cast<Compute&&>(compute));
}

__device__ inline void store_out(float* d, int64_t i, float v) { d[i] = v; }
__device__ inline void store_out(uint16_t* d, int64_t i, float v) { d[i] = f32_to_bf16(v); }

// The warp's accumulators -> d (m, n) at the tile (m0, n0), in-range elements only.
template <class OutT>
__device__ inline void store_tile(OutT* d, int64_t m, int64_t n, int64_t m0, int64_t n0,
                                  const WarpPos& p, const float (&acc)[kFragsM][kFragsN][4]) {
#pragma unroll
  for (int i = 0; i < kFragsM; ++i) {
    const int64_t r_lo = m0 + p.wm * kWarpRows + i * kMmaM + p.g, r_hi = r_lo + 8;
#pragma unroll
    for (int j = 0; j < kFragsN; ++j) {
      const int64_t c = n0 + p.wn * kWarpCols + j * kMmaN + 2 * p.t;
      if (r_lo < m && c < n) store_out(d, r_lo * n + c, acc[i][j][0]);
      if (r_lo < m && c + 1 < n) store_out(d, r_lo * n + c + 1, acc[i][j][1]);
      if (r_hi < m && c < n) store_out(d, r_hi * n + c, acc[i][j][2]);
      if (r_hi < m && c + 1 < n) store_out(d, r_hi * n + c + 1, acc[i][j][3]);
    }
  }
}

}  // namespace r1::cuda::mma
