// CUDA gemm_fp8_blockscaled, the simple version: the on-GPU oracle for the fast FP8 GEMM
// (STYLE.md, "the simple version stays"). Contract in engine/kernels.h; the CPU version
// (kernels/cpu/fp8.cc, f64) is the reference (tests/test_fp8.cc).
//
// The schedule is the DeepSeek-V3 promotion recipe written out plainly, on CUDA cores:
//   for each 128-wide k-block kb:
//     part = sum over the block of a_q[m, k] * b_q[n, k]     (fp32; each product is exact)
//     acc += part * (a_scales[m, kb] * b_scales[n / 128, kb])  (fp32)
// (b_scales[n, kb] when b has 1x128 row scales: the 1D1D form, per output column.)
// A 256-thread block owns a 64x64 tile of d, each thread a 4x4 sub-tile. The k-block is
// staged through shared memory 32 columns at a time, decoded from e4m3 to f32 on the way.
// Out-of-range rows and columns (M, N, K tails) load as zero; only in-range outputs are
// written, every one of them once. A 64-wide tile never straddles a 128-row block of b, so
// the tile uses one b scale per k-block.
//
// Correctness over speed: no tensor cores, no async copies (21 TFLOP/s on an H200). The
// grouped GEMMs of MoE experts (contiguous and masked layouts) run the same tile, one launch
// for all groups: the oracle for a fast grouped kernel, and a correct one meanwhile.
#include <cstdint>

#include "engine/convert.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"
#include "engine/kernels.h"
#include "kernels/cuda/fp8/fp8_common.cuh"
#include "kernels/cuda/fp8/gemm_fp8_simple.h"

namespace r1::cuda {
namespace {

constexpr int kTile = 64;                 // output tile edge, M and N
constexpr int kChunk = 32;                // K columns staged in shared memory at a time
constexpr int kThreads = 256;             // 16 x 16 threads
constexpr int kSub = 4;                   // each thread's kSub x kSub outputs
constexpr int kLoadBytes = 8;             // e4m3 bytes each thread stages per operand
static_assert(kTile / kSub * (kTile / kSub) == kThreads, "one thread per 4x4 sub-tile");
static_assert(kTile * kChunk == kThreads * kLoadBytes, "staging covers the chunk exactly");
static_assert(kFp8Block % kChunk == 0 && kFp8Block % kTile == 0, "tiles nest in blocks");

__device__ inline void store_out(float* d, int64_t i, float v) { d[i] = v; }
__device__ inline void store_out(uint16_t* d, int64_t i, float v) { d[i] = f32_to_bf16(v); }

// The 64x64 tile at (m0, n0) of d = a b^T: a (m, k) e4m3, sa (m, kb_count), b (n, k) e4m3,
// sb (ceil(n/128), kb_count), or (n, kb_count) when b_rows -> d (m, n). Every thread of the
// block calls it.
template <class OutT>
__device__ void simple_tile(const uint8_t* a, const float* sa, const uint8_t* b, const float* sb,
                            OutT* d, int64_t m, int64_t n, int64_t k, int64_t kb_count,
                            int64_t m0, int64_t n0, bool b_rows) {
  // Transposed ([k][row]) so a thread's 4 rows (or columns) of one k are adjacent.
  __shared__ float as[kChunk][kTile];
  __shared__ float bs[kChunk][kTile];
  const int tx = static_cast<int>(threadIdx.x % (kTile / kSub));  // output columns tx*4..+3
  const int ty = static_cast<int>(threadIdx.x / (kTile / kSub));  // output rows ty*4..+3
  // Staging: thread t copies kLoadBytes consecutive k of row t / 4 (of a and of b).
  const int lrow = static_cast<int>(threadIdx.x / (kChunk / kLoadBytes));
  const int lcol = static_cast<int>(threadIdx.x % (kChunk / kLoadBytes)) * kLoadBytes;
  const int64_t a_row = m0 + lrow, b_row = n0 + lrow;
  const int64_t b_block = n0 / kFp8Block;

  float acc[kSub][kSub] = {};
  for (int64_t kb = 0; kb < kb_count; ++kb) {
    float part[kSub][kSub] = {};  // this k-block's fp32 partial sums, before scaling
    for (int kc = 0; kc < kFp8Block; kc += kChunk) {
      const int64_t k0 = kb * kFp8Block + kc;
      if (k0 >= k) break;  // the same for the whole block: the barriers stay matched
#pragma unroll
      for (int e = 0; e < kLoadBytes; ++e) {
        const int64_t kk = k0 + lcol + e;
        as[lcol + e][lrow] = a_row < m && kk < k ? e4m3_to_f32(a[a_row * k + kk]) : 0.0f;
        bs[lcol + e][lrow] = b_row < n && kk < k ? e4m3_to_f32(b[b_row * k + kk]) : 0.0f;
      }
      __syncthreads();
#pragma unroll 4
      for (int kk = 0; kk < kChunk; ++kk) {
        float av[kSub], bv[kSub];
#pragma unroll
        for (int i = 0; i < kSub; ++i) {
          av[i] = as[kk][ty * kSub + i];
          bv[i] = bs[kk][tx * kSub + i];
        }
#pragma unroll
        for (int i = 0; i < kSub; ++i)
#pragma unroll
          for (int j = 0; j < kSub; ++j) part[i][j] = fmaf(av[i], bv[j], part[i][j]);
      }
      __syncthreads();
    }
    // Promotion: the block's partial sums, scaled, into the fp32 accumulator. b's scale is
    // the tile's block's, or each column's own (b_rows).
    float sbc[kSub];
    if (b_rows) {
#pragma unroll
      for (int j = 0; j < kSub; ++j) {
        const int64_t c = n0 + tx * kSub + j;
        sbc[j] = c < n ? sb[c * kb_count + kb] : 0.0f;
      }
    } else {
      const float sbv = sb[b_block * kb_count + kb];
#pragma unroll
      for (int j = 0; j < kSub; ++j) sbc[j] = sbv;
    }
#pragma unroll
    for (int i = 0; i < kSub; ++i) {
      const int64_t r = m0 + ty * kSub + i;
      const float s = r < m ? sa[r * kb_count + kb] : 0.0f;
#pragma unroll
      for (int j = 0; j < kSub; ++j) acc[i][j] = fmaf(part[i][j], s * sbc[j], acc[i][j]);
    }
  }
#pragma unroll
  for (int i = 0; i < kSub; ++i) {
    const int64_t r = m0 + ty * kSub + i;
#pragma unroll
    for (int j = 0; j < kSub; ++j) {
      const int64_t c = n0 + tx * kSub + j;
      if (r < m && c < n) store_out(d, r * n + c, acc[i][j]);
    }
  }
}

// a (m, k) e4m3, sa (m, kb_count), b (n, k) e4m3, sb (ceil(n/128), kb_count) or (n, kb_count)
// (b_rows) -> d (m, n).
template <class OutT>
__global__ void __launch_bounds__(kThreads)
    gemm_fp8_simple_kernel(const uint8_t* a, const float* sa, const uint8_t* b, const float* sb,
                           OutT* d, int64_t m, int64_t n, int64_t k, int64_t kb_count,
                           bool b_rows) {
  simple_tile(a, sa, b, sb, d, m, n, k, kb_count, int64_t{blockIdx.y} * kTile,
              int64_t{blockIdx.x} * kTile, b_rows);
}

// Grouped, contiguous layout (engine/kernels.h): blockIdx.y enumerates the groups' row tiles
// in order (group g has ceil(rows_g / 64) of them; a tile never straddles two groups), read
// from the device-side offsets, so the launch needs no host sync; blocks past the last tile
// return. grid.y = ceil(M / 64) + G bounds the tile count.
template <class OutT, class I>
__global__ void __launch_bounds__(kThreads)
    gemm_fp8_grouped_contiguous_kernel(const uint8_t* a, const float* sa, const uint8_t* b,
                                       const float* sb, const I* offsets, OutT* d, int64_t groups,
                                       int64_t n, int64_t k, int64_t kb_count) {
  int64_t t = blockIdx.y, g = 0, begin = 0, rows = 0;
  if (!fp8::contiguous_tile(offsets, groups, int64_t{kTile}, t, g, begin, rows))
    return;  // uniform over the block
  const int64_t nb = (n + kFp8Block - 1) / kFp8Block;
  simple_tile(a + begin * k, sa + begin * kb_count, b + g * n * k, sb + g * nb * kb_count,
              d + begin * n, rows, n, k, kb_count, t * kTile, int64_t{blockIdx.x} * kTile,
              /*b_rows=*/false);
}

// Grouped, masked layout: blockIdx.z is the group, rows at or past counts[g] are not touched.
template <class OutT, class I>
__global__ void __launch_bounds__(kThreads)
    gemm_fp8_grouped_masked_kernel(const uint8_t* a, const float* sa, const uint8_t* b,
                                   const float* sb, const I* counts, OutT* d, int64_t mmax,
                                   int64_t n, int64_t k, int64_t kb_count) {
  const int64_t g = blockIdx.z, m0 = int64_t{blockIdx.y} * kTile;
  // A count past the slots (a caller's broken promise) stays inside its group's slots.
  const int64_t rows = min(static_cast<int64_t>(counts[g]), mmax);
  if (m0 >= rows) return;  // uniform over the block
  const int64_t nb = (n + kFp8Block - 1) / kFp8Block;
  simple_tile(a + g * mmax * k, sa + g * mmax * kb_count, b + g * n * k,
              sb + g * nb * kb_count, d + g * mmax * n, rows, n, k, kb_count, m0,
              int64_t{blockIdx.x} * kTile, /*b_rows=*/false);
}

}  // namespace

void gemm_fp8_blockscaled_simple(const Tensor& a_q, const Tensor& a_scales, const Tensor& b_q,
                               const Tensor& b_scales, Tensor& d) {
  check_gemm_fp8_blockscaled(a_q, a_scales, b_q, b_scales, d,
                             d.dtype() == DType::F32 || d.dtype() == DType::BF16);
  const int64_t m = a_q.size(0), k = a_q.size(1), n = b_q.size(0);
  if (m == 0 || n == 0) return;
  const int64_t grid_x = (n + kTile - 1) / kTile, grid_y = (m + kTile - 1) / kTile;
  R1_CHECK(grid_y <= 65535 && grid_x <= 0x7fffffff,
           "gemm_fp8_blockscaled: M {} N {} exceed the simple kernel's grid", m, n);
  const int dev = d.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  const dim3 grid(static_cast<unsigned>(grid_x), static_cast<unsigned>(grid_y));
  const auto* ap = a_q.data<uint8_t>();
  const auto* bp = b_q.data<uint8_t>();
  const float* sap = a_scales.data<float>();
  const float* sbp = b_scales.data<float>();
  const bool b_rows = fp8_b_row_scales(b_q, b_scales);
  if (d.dtype() == DType::F32)
    gemm_fp8_simple_kernel<float><<<grid, kThreads, 0, s>>>(ap, sap, bp, sbp, d.data<float>(),
                                                            m, n, k, fp8_blocks(k), b_rows);
  else
    gemm_fp8_simple_kernel<uint16_t><<<grid, kThreads, 0, s>>>(
        ap, sap, bp, sbp, d.data<uint16_t>(), m, n, k, fp8_blocks(k), b_rows);
  R1_CUDA_CHECK_LAUNCH();
}

void gemm_fp8_grouped_contiguous_simple(const Tensor& a_q, const Tensor& a_scales,
                                      const Tensor& b_q, const Tensor& b_scales,
                                      const Tensor& offsets, Tensor& d) {
  check_gemm_fp8_grouped(a_q, a_scales, b_q, b_scales, offsets, d, /*masked=*/false,
                         d.dtype() == DType::F32 || d.dtype() == DType::BF16);
  const int64_t m = a_q.size(0), k = a_q.size(1), g = b_q.size(0), n = b_q.size(1);
  if (m == 0 || n == 0) return;
  const int64_t tiles = (m + kTile - 1) / kTile + g, grid_x = (n + kTile - 1) / kTile;
  R1_CHECK(tiles <= 65535, "gemm_fp8_grouped_contiguous: M {} with {} groups exceeds the "
           "simple kernel's grid", m, g);
  const int dev = d.device().index;
  DeviceGuard guard(dev);
  const dim3 grid(static_cast<unsigned>(grid_x), static_cast<unsigned>(tiles));
  fp8::dispatch_out_index(d, offsets, [&](auto otag, auto itag) {
    using OutT = decltype(otag);
    using I = decltype(itag);
    gemm_fp8_grouped_contiguous_kernel<OutT, I><<<grid, kThreads, 0, current_stream(dev)>>>(
        a_q.data<uint8_t>(), a_scales.data<float>(), b_q.data<uint8_t>(),
        b_scales.data<float>(), static_cast<const I*>(offsets.data_ptr()),
        static_cast<OutT*>(d.data_ptr()), g, n, k, fp8_blocks(k));
    R1_CUDA_CHECK_LAUNCH();
  });
}

void gemm_fp8_grouped_masked_simple(const Tensor& a_q, const Tensor& a_scales, const Tensor& b_q,
                                  const Tensor& b_scales, const Tensor& counts, Tensor& d) {
  check_gemm_fp8_grouped(a_q, a_scales, b_q, b_scales, counts, d, /*masked=*/true,
                         d.dtype() == DType::F32 || d.dtype() == DType::BF16);
  const int64_t g = a_q.size(0), mmax = a_q.size(1), k = a_q.size(2), n = b_q.size(1);
  if (g == 0 || mmax == 0 || n == 0) return;
  const int64_t grid_y = (mmax + kTile - 1) / kTile, grid_x = (n + kTile - 1) / kTile;
  R1_CHECK(grid_y <= 65535 && g <= 65535, "gemm_fp8_grouped_masked: Mmax {} or {} groups "
           "exceed the simple kernel's grid", mmax, g);
  const int dev = d.device().index;
  DeviceGuard guard(dev);
  const dim3 grid(static_cast<unsigned>(grid_x), static_cast<unsigned>(grid_y),
                  static_cast<unsigned>(g));
  fp8::dispatch_out_index(d, counts, [&](auto otag, auto itag) {
    using OutT = decltype(otag);
    using I = decltype(itag);
    gemm_fp8_grouped_masked_kernel<OutT, I><<<grid, kThreads, 0, current_stream(dev)>>>(
        a_q.data<uint8_t>(), a_scales.data<float>(), b_q.data<uint8_t>(),
        b_scales.data<float>(), static_cast<const I*>(counts.data_ptr()),
        static_cast<OutT*>(d.data_ptr()), mmax, n, k, fp8_blocks(k));
    R1_CUDA_CHECK_LAUNCH();
  });
}

}  // namespace r1::cuda
