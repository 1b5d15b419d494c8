// CUDA fp8 quantization (DeepSeek-V3 block scaling): quantize_fp8_rows (one scale per 1x128
// tile) and quantize_fp8_blocks (one per 128x128 block). Contracts in engine/kernels.h; the
// CPU versions (kernels/cpu/fp8.cc) are the reference and these match them bit for bit
// (tests/test_fp8.cc): the amax is a max (exact, in any order), the scale one IEEE f32
// division (nvcc's default -prec-div=true), q one IEEE division and the e4m3 rounding of
// engine/convert.h's f32_to_e4m3 (by the hardware's cvt, fp8::e4m3x2_rn), with the same fmax
// semantics for NaN as the host.
//
// Memory bound: rows read x once (a tile lives in registers between its amax and its q);
// blocks read w twice (amax, then q; the second read mostly hits L2). Bit-identity with the
// CPU verified on an H200 (tests/test_fp8.cc); speed in bench_cuda_kernels (QuantizeFp8*).
#include <algorithm>
#include <cstdint>

#include "engine/convert.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"
#include "engine/kernels.h"
#include "kernels/cuda/fp8/fp8_common.cuh"

namespace r1::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;
// By value: std::min takes references, an odr-use that namespace constants lack on device.
__device__ inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

using fp8::kPerLane;
using fp8::load4;
using fp8::load_f32;
using fp8::scale_from_amax;
using fp8::warp_max;

// x (m, k) -> q (m, k), scales (m, kb_count). One warp per 1x128 tile, kRowTiles tiles per
// warp at a time (grid-stride over groups of tiles): the group's loads go out before any
// tile's amax, twice the bytes in flight of a warp per tile (which, with 8 bytes per lane for
// bf16, held 16 KB per SM: 0.29 of the copy bandwidth on the H200 at e5d6f34) at the same 8
// blocks per SM (4 tiles took 57 registers, halving the blocks: no gain in bytes in flight).
// kVector (k a multiple of 4, x 16-byte aligned): lane l holds columns 4l..4l+3 of a tile,
// one vector load and one 4-byte store of q per lane (whole tiles; a partial last tile of a
// row takes the scalar path). Otherwise lane l holds columns l, l + 32, l + 64, l + 96.
// The amax is a max, so either assignment gives the CPU's bits.
constexpr int kRowTiles = 2;
template <class T, bool kVector>
__global__ void __launch_bounds__(kThreads, 8)
    quantize_rows_kernel(const T* x, uint8_t* q, float* scales, int64_t m, int64_t k,
                         int64_t kb_count) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int64_t tiles = m * kb_count;
  const int64_t stride = int64_t{gridDim.x} * kWarps * kRowTiles;
  for (int64_t t0 = (int64_t{blockIdx.x} * kWarps + threadIdx.x / 32) * kRowTiles; t0 < tiles;
       t0 += stride) {
    float v[kRowTiles][kPerLane];
    int64_t base[kRowTiles], len[kRowTiles];
#pragma unroll
    for (int u = 0; u < kRowTiles; ++u) {
      const int64_t t = t0 + u;
      const int64_t r = t / kb_count, kb = t - r * kb_count;
      base[u] = r * k + kb * kFp8Block;
      len[u] = t < tiles ? min64(kFp8Block, k - kb * kFp8Block) : 0;
      if (kVector && len[u] == kFp8Block) {  // uniform over the warp
        load4(x, base[u] + 4 * lane, v[u]);
      } else {
#pragma unroll
        for (int i = 0; i < kPerLane; ++i) {
          const int c = i * 32 + lane;
          v[u][i] = c < len[u] ? load_f32(x, base[u] + c) : 0.0f;
        }
      }
    }
#pragma unroll
    for (int u = 0; u < kRowTiles; ++u) {
      if (len[u] == 0) break;  // past the last tile (uniform)
      const bool vec = kVector && len[u] == kFp8Block;
      fp8::quantize_tile(v[u], vec, len[u], lane, q + base[u], scales + t0 + u);
    }
  }
}

// w (n, k) -> q (n, k), scales (nb_count, kb_count). One 256-thread block per 128x128 block:
// thread t owns column t % 128 of the rows r = t / 128 + 2j.
template <class T>
__global__ void __launch_bounds__(kThreads)
    quantize_blocks_kernel(const T* w, uint8_t* q, float* scales, int64_t n, int64_t k,
                           int64_t kb_count) {
  __shared__ float warp_amax[kWarps];
  const int64_t blk = blockIdx.x;
  const int64_t nb = blk / kb_count, kb = blk - nb * kb_count;
  const int64_t r0 = nb * kFp8Block, c0 = kb * kFp8Block;
  const int64_t rows = min64(kFp8Block, n - r0);
  const int64_t cols = min64(kFp8Block, k - c0);
  const int c = static_cast<int>(threadIdx.x % kFp8Block);
  const int rstart = static_cast<int>(threadIdx.x / kFp8Block);
  constexpr int kRowStep = kThreads / kFp8Block;
  float amax = 0.0f;
  if (c < cols)
#pragma unroll 8  // independent loads in flight; the max chain is cheap
    for (int64_t r = rstart; r < rows; r += kRowStep)
      amax = fmaxf(amax, fabsf(load_f32(w, (r0 + r) * k + c0 + c)));
  amax = warp_max(amax);
  if (threadIdx.x % 32 == 0) warp_amax[threadIdx.x / 32] = amax;
  __syncthreads();
  float block_amax = warp_amax[0];
#pragma unroll
  for (int i = 1; i < kWarps; ++i) block_amax = fmaxf(block_amax, warp_amax[i]);
  const float s = scale_from_amax(block_amax);
  if (threadIdx.x == 0) scales[blk] = s;  // blk = nb * kb_count + kb
  if (c < cols)
    for (int64_t r = rstart; r < rows; r += kRowStep) {
      const int64_t i = (r0 + r) * k + c0 + c;
      q[i] = fp8::e4m3_rn(load_f32(w, i) / s);
    }
}

// x (m, k) -> q (k, m), scales (k, mb_count): the rows quantizer on x^T. One block per 128 rows
// x 32 columns of x (a tile of 32 rows of x^T, one 1x128 tile each): the 128 x 32 values are
// read coalesced (a warp reads 32 consecutive columns of one row) into shared memory (rows
// padded to 33 floats: the column-wise reads below hit 32 different banks); warp w takes
// columns 4w .. 4w + 3, each lane 4 rows of a column, for the amax (a max: any order gives the
// CPU's bits); then thread t writes 16 consecutive bytes of q's row j0 + t / 8 (one 16-byte
// store when the row of q allows it).
constexpr int kTCols = 32;
template <class T>
__global__ void __launch_bounds__(kThreads)
    quantize_rows_transposed_kernel(const T* x, uint8_t* q, float* scales, int64_t m, int64_t k,
                                    int64_t mb_count, int64_t col_tiles, bool vec_store) {
  __shared__ float tile[kFp8Block][kTCols + 1];
  __shared__ float col_scale[kTCols];
  const int64_t mb = blockIdx.x / col_tiles, ct = blockIdx.x - mb * col_tiles;
  const int64_t r0 = mb * kFp8Block, j0 = ct * kTCols;
  const int rows = static_cast<int>(min64(kFp8Block, m - r0));
  const int cols = static_cast<int>(min64(kTCols, k - j0));
  const int lane = static_cast<int>(threadIdx.x % 32), warp = static_cast<int>(threadIdx.x / 32);
  for (int r = warp; r < kFp8Block; r += kWarps)
    tile[r][lane] = r < rows && lane < cols ? load_f32(x, (r0 + r) * k + j0 + lane) : 0.0f;
  __syncthreads();
#pragma unroll
  for (int cc = 0; cc < kTCols / kWarps; ++cc) {
    const int c = warp * (kTCols / kWarps) + cc;
    float amax = 0.0f;
#pragma unroll
    for (int i = 0; i < kFp8Block / 32; ++i) amax = fmaxf(amax, fabsf(tile[i * 32 + lane][c]));
    amax = warp_max(amax);
    const float s = scale_from_amax(amax);
    if (lane == 0) {
      col_scale[c] = s;
      if (c < cols) scales[(j0 + c) * mb_count + mb] = s;
    }
  }
  __syncthreads();
  const int c = static_cast<int>(threadIdx.x / 8), b0 = static_cast<int>(threadIdx.x % 8) * 16;
  if (c >= cols || b0 >= rows) return;
  const float s = col_scale[c];
  uint8_t* qr = q + (j0 + c) * m + r0 + b0;
  if (vec_store && b0 + 16 <= rows) {
    uint32_t w[4];
#pragma unroll
    for (int h = 0; h < 4; ++h) {
      const int b = b0 + 4 * h;
      w[h] = fp8::e4m3x4_rn(tile[b][c] / s, tile[b + 1][c] / s, tile[b + 2][c] / s,
                            tile[b + 3][c] / s);
    }
    *reinterpret_cast<uint4*>(qr) = make_uint4(w[0], w[1], w[2], w[3]);
  } else {
    for (int i = 0; i < 16 && b0 + i < rows; ++i) qr[i] = fp8::e4m3_rn(tile[b0 + i][c] / s);
  }
}

// Calls fn(float{}) or fn(uint16_t{}) for an f32 or bf16 x.
template <class Fn>
void dispatch_f32_bf16(DType t, Fn&& fn) {
  if (t == DType::F32) fn(float{});
  else fn(uint16_t{});
}

// x (M, K) f32/bf16 -> q (M, K) e4m3, scales (M, KB) f32.
void quantize_fp8_rows_cuda(const Tensor& x, Tensor& q, Tensor& scales) {
  check_quantize_fp8("quantize_fp8_rows", x, q, scales, 1);
  const int64_t m = x.size(0), k = x.size(1), kb_count = fp8_blocks(k);
  if (m * kb_count == 0) return;
  const int dev = x.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  const int grid =
      fp8::warp_per_tile_grid((m * kb_count + kRowTiles - 1) / kRowTiles, kThreads, dev);
  dispatch_f32_bf16(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    const bool vector = k % 4 == 0 && reinterpret_cast<uintptr_t>(x.data_ptr()) % 16 == 0 &&
                        reinterpret_cast<uintptr_t>(q.data_ptr()) % 4 == 0;
    auto launch = [&](auto kernel) {
      kernel<<<grid, kThreads, 0, s>>>(static_cast<const T*>(x.data_ptr()), q.data<uint8_t>(),
                                       scales.data<float>(), m, k, kb_count);
      R1_CUDA_CHECK_LAUNCH();
    };
    if (vector) launch(quantize_rows_kernel<T, true>);
    else launch(quantize_rows_kernel<T, false>);
  });
}

// w (N, K) f32/bf16 -> q (N, K) e4m3, scales (NB, KB) f32.
void quantize_fp8_blocks_cuda(const Tensor& w, Tensor& q, Tensor& scales) {
  check_quantize_fp8("quantize_fp8_blocks", w, q, scales, kFp8Block);
  const int64_t n = w.size(0), k = w.size(1), blocks = fp8_blocks(n) * fp8_blocks(k);
  if (blocks == 0) return;
  R1_CHECK(blocks <= int64_t{0x7fffffff}, "quantize_fp8_blocks: {} blocks exceed the grid",
           blocks);
  const int dev = w.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  dispatch_f32_bf16(w.dtype(), [&](auto tag) {
    using T = decltype(tag);
    quantize_blocks_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(
        static_cast<const T*>(w.data_ptr()), q.data<uint8_t>(), scales.data<float>(), n, k,
        fp8_blocks(k));
    R1_CUDA_CHECK_LAUNCH();
  });
}

// x (M, K) f32/bf16 -> q (K, M) e4m3, scales (K, MB) f32.
void quantize_fp8_rows_transposed_cuda(const Tensor& x, Tensor& q, Tensor& scales) {
  check_quantize_fp8("quantize_fp8_rows_transposed", x, q, scales, 1, /*transposed=*/true);
  const int64_t m = x.size(0), k = x.size(1), mb_count = fp8_blocks(m);
  const int64_t col_tiles = (k + kTCols - 1) / kTCols, blocks = mb_count * col_tiles;
  if (blocks == 0) return;
  R1_CHECK(blocks <= int64_t{0x7fffffff}, "quantize_fp8_rows_transposed: {} blocks exceed the "
           "grid", blocks);
  const int dev = x.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  const bool vec_store = m % 16 == 0 && reinterpret_cast<uintptr_t>(q.data_ptr()) % 16 == 0;
  dispatch_f32_bf16(x.dtype(), [&](auto tag) {
    using T = decltype(tag);
    quantize_rows_transposed_kernel<T><<<static_cast<unsigned>(blocks), kThreads, 0, s>>>(
        static_cast<const T*>(x.data_ptr()), q.data<uint8_t>(), scales.data<float>(), m, k,
        mb_count, col_tiles, vec_store);
    R1_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace

R1_REGISTER_KERNEL(quantize_fp8_rows_transposed, CUDA, quantize_fp8_rows_transposed_cuda);
R1_REGISTER_KERNEL(quantize_fp8_rows, CUDA, quantize_fp8_rows_cuda);
R1_REGISTER_KERNEL(quantize_fp8_blocks, CUDA, quantize_fp8_blocks_cuda);

}  // namespace r1::cuda
