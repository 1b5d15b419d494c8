// The tile schedule of the wgmma FP8 GEMM (gemm_fp8_wgmma.cu), host- and device-callable so
// that the CPU tests can check it (tests/test_fp8.cc, Fp8Schedule.*): every output tile of
// every group visited exactly once, in bands of kRasterN n-tiles.
//
// Groups (dense: one group of all rows): rows [row_begin[g], row_end[g]) of the 2-d view of a
// belong to group g; its m tiles are [tile_start[g], tile_start[g + 1]) of the virtual m axis
// (tile_start is the prefix sum of ceil(rows / block_m)). Tile t of tiles_m * tiles_n walks
// bands of kRasterN n tiles: all m tiles of a band, n fastest within it, then the next band.
#pragma once
#include <cstdint>

#if defined(__CUDACC__)
#define R1_SCHED_HD __host__ __device__
#else
#define R1_SCHED_HD
#endif

namespace r1::cuda::fp8_schedule {

inline constexpr int kMaxGroups = 256;
inline constexpr int kRasterN = 8;

struct Groups {
  int tile_start[kMaxGroups + 1];
  int row_begin[kMaxGroups];
  int row_end[kMaxGroups];
};

struct Tile {
  int g, row0, row_end, n0;
};

// Tile t -> its group, first row, the group's row end and first column.
R1_SCHED_HD inline Tile tile_at(int t, const Groups& gs, int groups, int tiles_m, int tiles_n,
                                int block_m, int block_n) {
  const int per_band = kRasterN * tiles_m;
  const int band = t / per_band, first_n = band * kRasterN;
  const int width = tiles_n - first_n < kRasterN ? tiles_n - first_n : kRasterN;
  const int local = t - band * per_band;
  const int vm = local / width, tn = first_n + local % width;
  int lo = 0, hi = groups - 1;  // the last group whose first tile is <= vm (never empty)
  while (lo < hi) {
    const int mid = (lo + hi + 1) / 2;
    if (gs.tile_start[mid] <= vm) lo = mid;
    else hi = mid - 1;
  }
  return Tile{lo, gs.row_begin[lo] + (vm - gs.tile_start[lo]) * block_m, gs.row_end[lo],
              tn * block_n};
}

}  // namespace r1::cuda::fp8_schedule
