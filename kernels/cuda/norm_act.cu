// CUDA: RMSNorm forward and backward, SwiGLU forward and backward, RoPE (interleaved or
// half-split pairs, forward or inverse). Contracts in engine/kernels.h; the CPU versions
// (kernels/cpu/{rmsnorm,swiglu,rope}.cc) are the reference (tests/test_cuda_model_ops.cc).
// f32 or bf16 data (bf16 as uint16_t bits), fp32 math, rmsnorm's rstd in f32 (stat_dtype).
//
// All memory bound: the ceiling is HBM bandwidth (H200 ~4.8 TB/s). Data moves in 16-byte
// chunks (4 f32 or 8 bf16); a chunk whose address is not 16-byte aligned, or that runs past
// the end of a row, is read element by element with the same arithmetic. Measured: bench/results
// (nvidia-h200-*), the shapes of the reducing kernels tuned per dtype (launch.cuh).
//
// Batch invariance (DESIGN.md): a row's reduction order is a function of D alone. The
// threads per row come from D, thread `lane` owns chunks lane, lane + tpr, ... and sums them
// in that order whether they arrive as vectors or as scalars, then the row's threads combine
// in a fixed tree. Neither N, the grid nor a row's alignment changes a row's bits.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "engine/convert.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"
#include "engine/kernels.h"
#include "kernels/cuda/common/launch.cuh"
#include "kernels/cuda/common/rmsnorm_math.cuh"
#include "kernels/cuda/fp8/fp8_common.cuh"
#include "kernels/cuda/norm_pipe.h"

namespace r1::cuda {
namespace {

// rmsnorm_backward: rows per block (default; R1_RMSNORM_BWD_ROWS overrides it, see
// rmsnorm_backward_rows), each block keeps one dw partial (D f32) in shared memory.
constexpr int64_t kRmsRowBlock = 32;
constexpr int kColLanes = 16;  // dw column sum: partial rows summed by 16 lanes per column

// ---- rmsnorm -----------------------------------------------------------------------------

// Asks L2 for bytes [0, bytes) at p, one 128-byte line per thread of a tpr-thread group.
__device__ inline void prefetch_l2(const void* p, int64_t bytes, int lane, int tpr) {
  const char* c = static_cast<const char*>(p);
  for (int64_t off = int64_t{lane} * 128; off < bytes; off += int64_t{tpr} * 128)
    asm volatile("prefetch.global.L2 [%0];" ::"l"(c + off));
}

// Pass 1 of both RMSNorm forward kernels: the row's sum of squares in steps of C chunks (C
// loads in flight), each thread's chunks in row order, then the row group's fixed tree. Leaves
// the last step's chunks in c (the whole row when it fits in one step). Dead rows (!live) load
// nothing but join the block's syncs.
template <class T, int C>
__device__ __forceinline__ float row_sum_squares(const T* xr, bool live, int64_t D, int64_t base,
                                                 int64_t step, int tpr, RowChunks<T, C>& c,
                                                 float* smem) {
  float ss = 0;
  for (int64_t b0 = base; live && b0 < D; b0 += step) {
    load_row_chunks(xr, b0, D, tpr, c);
    // Elements past a chunk's count are +0 (load_row_chunks), and ss (from +0, adding squares)
    // is never -0, so adding their squares leaves ss's bits as they were: no test per element.
#pragma unroll
    for (int u = 0; u < C; ++u)
#pragma unroll
      for (int k = 0; k < kVec<T>; ++k) ss = rms::sumsq(ss, c.at(u, k));
  }
  return group_reduce(ss, Add{}, smem, tpr);
}

// Pass 2's chunk of both: wf := x chunk u of c * r * w at i0, stored to yr (wf keeps the
// values before their rounding to T).
template <class T, int C>
__device__ __forceinline__ void normalize_chunk(const RowChunks<T, C>& c, int u, const T* w,
                                                int64_t i0, int64_t D, float r, T* yr,
                                                float (&wf)[kVec<T>]) {
  load_chunk(w, i0, D, wf);
#pragma unroll
  for (int k = 0; k < kVec<T>; ++k) wf[k] = rms::y(c.at(u, k), r, wf[k]);
  store_chunk(yr, i0, D, wf);
}

// x (N, D), w (D) -> y (N, D), rstd (N) f32. A group of tpr threads per row, 256 / tpr rows
// per block when tpr < 256. The row is walked in steps of C chunks per thread (RowChunks,
// launch.cuh, raw: 4 registers per chunk): pass 1 sums x^2, pass 2 writes y from the step
// still in registers when the row is one step (D <= tpr * C * kVec), else re-reads the row
// (from L2) in steps. Either way a thread sums its chunks in the same order: the bits do not
// depend on which path ran. C, the occupancy hint and the cap on tpr are the tuned shape
// (kRowDefaults); the H200 sweep and what it taught are in launch.cuh and docs/cuda.md.
//
// kPersist (R1_ROW_PREFETCH=1, an A/B variant until the H200 says): a grid of only the blocks
// that fit at once, each walking rows block, block + grid, ...; before a row group reduces
// and writes its row it asks L2 for its next row (prefetch.global.L2, one line per thread),
// so that row's loads do not start from HBM latency when the group gets to it. The bf16 rows
// of V3 (D = 7168: 14 KB) took 0.55 of the copy bandwidth against f32's 0.85 with the same
// kernel, and no row shape of the sweep changed that: a latency chain per row (load, block
// reduction, store) rather than bandwidth. The same arithmetic per row, so the same bits.
template <class T, int C, int MinBlocks, bool kPersist>
__global__ void __launch_bounds__(kMaxRowThreads, MinBlocks)
    rmsnorm_forward_kernel(const T* x, const T* w, T* y, float* rstd, int64_t N, int64_t D,
                           float eps, int tpr) {
  constexpr int kV = kVec<T>;
  __shared__ float smem[kMaxRowThreads / 32];
  const int lane = threadIdx.x % tpr;
  const int64_t rpb = blockDim.x / tpr;  // rows per block
  const int64_t base = int64_t{lane} * kV, step = int64_t{tpr} * C * kV;
  const bool cached = D <= step;  // the row in one step: kept in registers; uniform
  const int64_t stride = kPersist ? int64_t{gridDim.x} * rpb : 0;
  for (int64_t b0 = int64_t{blockIdx.x} * rpb; b0 < N; b0 += stride) {  // uniform over the block
    const int64_t n = b0 + threadIdx.x / tpr;
    const bool live = n < N;  // dead rows still join the block's syncs
    const T* xr = x + (live ? n : 0) * D;
    if constexpr (kPersist) {
      if (n + stride < N) prefetch_l2(x + (n + stride) * D, D * int64_t{sizeof(T)}, lane, tpr);
    }
    RowChunks<T, C> c;
    const float ss = row_sum_squares(xr, live, D, base, step, tpr, c, smem);
    if (live) {
      const float r = rms::rstd(ss, D, eps);
      if (lane == 0) rstd[n] = r;
      T* yr = y + n * D;
      // Pass 2: the chunks still in registers, or the row again (from L2) in steps.
      for (int64_t b1 = base; b1 < D; b1 += step) {
        if (!cached) load_row_chunks(xr, b1, D, tpr, c);
#pragma unroll
        for (int u = 0; u < C; ++u) {
          if (c.cnt[u] == 0) continue;
          const int64_t i0 = b1 + int64_t{u} * tpr * kV;
          float wf[kV];
          normalize_chunk(c, u, w, i0, D, r, yr, wf);
        }
      }
    }
    if constexpr (!kPersist) break;  // the grid covers the rows: one pass
  }
}

// rmsnorm_forward_kernel fused with quantize_fp8_rows of y as stored (rmsnorm_quantize_fp8):
// the same row walk, sums and launch shape, so the same y and rstd bits; a separate kernel so
// that the plain one keeps its registers (the fused pass 2 below, folded into it, cost the
// bf16 default shape 56 more bytes of spills). A step's chunk slabs start at multiples of
// tpr * kV (a multiple of 128), so a 1x128 tile is the chunks of 128 / kV consecutive lanes of
// one warp: its amax is a shuffle max over them, and the quantization is
// quantize_rows_kernel's (the same scale and division). Every lane walks the same steps (the
// shuffles need the whole warp), its chunks past the row's end zeros.
template <class T, int C, int MinBlocks>
__global__ void __launch_bounds__(kMaxRowThreads, MinBlocks)
    rmsnorm_quantize_fp8_kernel(const T* x, const T* w, T* y, float* rstd, uint8_t* q,
                                float* scales, int64_t N, int64_t D, float eps, int tpr) {
  constexpr int kV = kVec<T>;
  constexpr int kTileLanes = kFp8Block / kV;  // 32 (f32) or 16 (bf16)
  __shared__ float smem[kMaxRowThreads / 32];
  const int lane = threadIdx.x % tpr;
  const int64_t n = int64_t{blockIdx.x} * (blockDim.x / tpr) + threadIdx.x / tpr;
  const bool live = n < N;
  const T* xr = x + (live ? n : 0) * D;
  const int64_t base = int64_t{lane} * kV, step = int64_t{tpr} * C * kV;
  const bool cached = D <= step;
  RowChunks<T, C> c;
#pragma unroll
  for (int u = 0; u < C; ++u) {  // lanes past the row's end never load: zeros
    c.raw[u] = make_uint4(0, 0, 0, 0);
    c.cnt[u] = 0;
  }
  const float ss = row_sum_squares(xr, live, D, base, step, tpr, c, smem);
  if (!live) return;  // whole row groups (tpr >= 32): whole warps
  const float r = rms::rstd(ss, D, eps);
  if (lane == 0) rstd[n] = r;
  T* yr = y + n * D;
  uint8_t* qr = q + n * D;
  float* sr = scales + n * ((D + kFp8Block - 1) / kFp8Block);
  for (int64_t s0 = 0; s0 < D; s0 += step) {  // uniform over the warp
    const int64_t b0 = s0 + base;
    if (!cached) load_row_chunks(xr, b0, D, tpr, c);
#pragma unroll
    for (int u = 0; u < C; ++u) {
      const int64_t i0 = b0 + int64_t{u} * tpr * kV;
      float wf[kV];
      normalize_chunk(c, u, w, i0, D, r, yr, wf);
      float amax = 0.0f;
#pragma unroll
      for (int k = 0; k < kV; ++k) {
        wf[k] = i0 + k < D ? to_f32(from_f32<T>(wf[k])) : 0.0f;  // as stored
        amax = fmaxf(amax, fabsf(wf[k]));
      }
#pragma unroll
      for (int off = kTileLanes / 2; off > 0; off /= 2)
        amax = fmaxf(amax, __shfl_xor_sync(0xffffffffu, amax, off));
      const float sc = fp8::scale_from_amax(amax);
      if (i0 < D && lane % kTileLanes == 0) sr[i0 / kFp8Block] = sc;
#pragma unroll
      for (int k = 0; k < kV; ++k)
        if (i0 + k < D) qr[i0 + k] = fp8::e4m3_rn(wf[k] / sc);
    }
  }
}

// The block's dw partial in shared memory: chunk c's h-th float4 at acc[h * nch + c], so a
// warp's float4 accesses are consecutive (conflict-free) for bf16's two float4 per chunk too.
__device__ inline void zero_partial(float4* acc, int64_t nch, int kV, int lane, int tpr) {
  for (int64_t c = lane; c < nch; c += tpr)
    for (int h = 0; h < kV / 4; ++h) acc[h * nch + c] = make_float4(0, 0, 0, 0);
}

// acc's chunk c += dy x rstd over the chunk's kV elements (this thread owns chunk c).
template <int kV>
__device__ inline void add_partial(float4* acc, int64_t nch, int64_t c, const float (&g)[kV],
                                   const float (&xv)[kV], float r) {
#pragma unroll
  for (int h = 0; h < kV / 4; ++h) {
    float4 a = acc[h * nch + c];
    a.x = rms::dw(a.x, g[4 * h], xv[4 * h], r);
    a.y = rms::dw(a.y, g[4 * h + 1], xv[4 * h + 1], r);
    a.z = rms::dw(a.z, g[4 * h + 2], xv[4 * h + 2], r);
    a.w = rms::dw(a.w, g[4 * h + 3], xv[4 * h + 3], r);
    acc[h * nch + c] = a;
  }
}

// The block's dw partial from shared memory to pr[0, D).
__device__ inline void write_partial(const float4* acc, float* pr, int64_t D, int64_t nch,
                                     int kV, int lane, int tpr) {
  for (int64_t c = lane; c < nch; c += tpr)
    for (int h = 0; h < kV / 4; ++h) {
      const float4 a = acc[h * nch + c];
      const float v[4] = {a.x, a.y, a.z, a.w};
      for (int k = 0; k < 4; ++k)
        if (c * kV + 4 * h + k < D) pr[c * kV + 4 * h + k] = v[k];
    }
}

// The same for rows that fit in one step of C chunks per thread (D <= tpr * C * kVec): x and
// dy are read once (kept raw, 4 registers per chunk), w's chunks come from L1, and the dw
// partial accumulates in shared memory as below. The sums run in the same order as in the
// kernel below. (A dw partial in registers instead: 98-123 registers, one or two blocks per
// SM; fp32 chunks in registers: 153, ee1d294's 0.22 of the copy bandwidth. The best shape
// on the H200 reached 0.46 of the copy bandwidth for bf16; f32 rows of D = 7168 take the
// two-read kernel at its tuned shape, 0.67.)
template <class T, int C, int MinBlocks>
__global__ void __launch_bounds__(kMaxRowThreads, MinBlocks)
    rmsnorm_backward_reg_kernel(const T* x, const T* w, const float* rstd, const T* dy, T* dx,
                                float* partial, int64_t N, int64_t D, int64_t rows,
                                bool prefetch) {
  constexpr int kV = kVec<T>, kC = C;
  extern __shared__ float4 acc[];
  __shared__ float smem[kMaxRowThreads / 32];
  const int tpr = blockDim.x, lane = threadIdx.x;
  const int64_t base = int64_t{lane} * kV, nch = (D + kV - 1) / kV;
  zero_partial(acc, nch, kV, lane, tpr);
  RowChunks<T, kC> xc, gc;
  const int64_t r0 = int64_t{blockIdx.x} * rows;
  const int64_t r1 = r0 + rows < N ? r0 + rows : N;
#pragma unroll 1
  for (int64_t n = r0; n < r1; ++n) {
    if (prefetch && n + 1 < r1) {  // R1_ROW_PREFETCH: the next row's x and dy toward L2
      prefetch_l2(x + (n + 1) * D, D * int64_t{sizeof(T)}, lane, tpr);
      prefetch_l2(dy + (n + 1) * D, D * int64_t{sizeof(T)}, lane, tpr);
    }
    load_row_chunks(x + n * D, base, D, tpr, xc);
    load_row_chunks(dy + n * D, base, D, tpr, gc);
    const float r = rstd[n];
    float dot = 0;
#pragma unroll
    for (int u = 0; u < kC; ++u) {
      if (xc.cnt[u] == 0) continue;
      float wf[kV];
      load_chunk(w, base + int64_t{u} * tpr * kV, D, wf);
#pragma unroll
      for (int k = 0; k < kV; ++k)  // +0 past the count (x, dy and w): adds +0 (see below)
        dot = rms::dot(dot, wf[k], gc.at(u, k), xc.at(u, k));
    }
    dot = group_reduce(dot, Add{}, smem, tpr);
    const float cf = rms::coef(dot, r, D);
#pragma unroll
    for (int u = 0; u < kC; ++u) {
      if (xc.cnt[u] == 0) continue;
      float out[kV], gf[kV], xf[kV];
      load_chunk(w, base + int64_t{u} * tpr * kV, D, out);
#pragma unroll
      for (int k = 0; k < kV; ++k) {
        gf[k] = gc.at(u, k);
        xf[k] = xc.at(u, k);
        out[k] = rms::dx(r, out[k], gf[k], xf[k], cf);
      }
      add_partial(acc, nch, int64_t{lane} + int64_t{u} * tpr, gf, xf, r);  // gf, xf die first
      store_chunk(dx + n * D, base + int64_t{u} * tpr * kV, D, out);
    }
  }
  write_partial(acc, partial + int64_t{blockIdx.x} * D, D, nch, kV, lane, tpr);
}

// Rows too long for registers (D > kMaxRowThreads * C * kVec): one block of tpr
// threads walks rows [b * rows, ...) in order, reading each row twice (the dot, then
// dx): dx per row, and this block's dw partial (sum over its rows of dy x rstd) kept in shared
// memory, each thread owning its own chunks (no races, no syncs). The partial goes to
// partial[b, :] at the end (zero_partial, add_partial, write_partial above).
// dx_i = rstd (w_i dy_i - x_i rstd^2 / D sum_j w_j dy_j x_j).
template <class T>
__global__ void __launch_bounds__(kMaxRowThreads)
    rmsnorm_backward_kernel(const T* x, const T* w, const float* rstd, const T* dy, T* dx,
                            float* partial, int64_t N, int64_t D, int64_t rows, bool prefetch) {
  constexpr int kV = kVec<T>;
  extern __shared__ float4 acc[];
  __shared__ float smem[kMaxRowThreads / 32];
  const int tpr = blockDim.x, lane = threadIdx.x;
  const int64_t nch = (D + kV - 1) / kV, step = int64_t{tpr} * kV;
  zero_partial(acc, nch, kV, lane, tpr);
  const int64_t r0 = int64_t{blockIdx.x} * rows;
  const int64_t r1 = r0 + rows < N ? r0 + rows : N;
  for (int64_t n = r0; n < r1; ++n) {
    const T* xr = x + n * D;
    const T* gr = dy + n * D;
    if (prefetch && n + 1 < r1) {  // R1_ROW_PREFETCH: the next row's x and dy toward L2
      prefetch_l2(xr + D, D * int64_t{sizeof(T)}, lane, tpr);
      prefetch_l2(gr + D, D * int64_t{sizeof(T)}, lane, tpr);
    }
    const float r = rstd[n];
    float dot = 0;
    for (int64_t i0 = int64_t{lane} * kV; i0 < D; i0 += step) {
      float xf[kV], gf[kV], wf[kV];
      load_chunk(xr, i0, D, xf);
      load_chunk(gr, i0, D, gf);
      load_chunk(w, i0, D, wf);
#pragma unroll
      // +0 past cnt adds +0: the same bits, except that a dot of -0 (an underflowed negative
      // product and nothing else) turns +0, which only changes the sign of a zero cf.
      for (int k = 0; k < kV; ++k) dot = rms::dot(dot, wf[k], gf[k], xf[k]);
    }
    dot = group_reduce(dot, Add{}, smem, tpr);  // uniform trip count: every thread reaches it
    const float cf = rms::coef(dot, r, D);
    for (int64_t i0 = int64_t{lane} * kV; i0 < D; i0 += step) {
      float xf[kV], gf[kV], wf[kV], out[kV];
      load_chunk(xr, i0, D, xf);
      load_chunk(gr, i0, D, gf);
      load_chunk(w, i0, D, wf);
#pragma unroll
      for (int k = 0; k < kV; ++k) out[k] = rms::dx(r, wf[k], gf[k], xf[k], cf);
      store_chunk(dx + n * D, i0, D, out);
      add_partial(acc, nch, i0 / kV, gf, xf, r);
    }
  }
  write_partial(acc, partial + int64_t{blockIdx.x} * D, D, nch, kV, lane, tpr);
}

// partial (G, D) f32 -> dw (D): dw[d] = sum over g of partial[g, d] in a fixed order (lane
// y sums g = y, y + kColLanes, ...; then lanes 0..kColLanes-1 in order). Block (32, kColLanes):
// a warp reads 32 consecutive columns of one partial row.
template <class T>
__global__ void column_sum_kernel(const float* partial, int64_t G, int64_t D, T* dw) {
  __shared__ float s[kColLanes][32];
  const int64_t d = int64_t{blockIdx.x} * 32 + threadIdx.x;
  float a = 0;
  if (d < D)
    for (int64_t g = threadIdx.y; g < G; g += kColLanes) a += partial[g * D + d];
  s[threadIdx.y][threadIdx.x] = a;
  __syncthreads();
  if (threadIdx.y != 0 || d >= D) return;
  float t = s[0][threadIdx.x];
  for (int k = 1; k < kColLanes; ++k) t += s[k][threadIdx.x];
  dw[d] = from_f32<T>(t);
}

void check_rmsnorm(const char* op, const Tensor& x, const Tensor& w, const Tensor& rstd) {
  R1_CHECK(x.dim() == 2 && w.dim() == 1 && w.size(0) == x.size(1) &&
               rstd.numel() == x.size(0) && w.dtype() == x.dtype() &&
               rstd.dtype() == stat_dtype(x.dtype()),
           "{}: x {}, w {}, rstd {} (rstd must be {})", op, x.str(), w.str(), rstd.str(),
           dtype_name(stat_dtype(x.dtype())));
}

// R1_ROW_PREFETCH=1: the plain RMSNorm forward as a persistent grid that prefetches each row
// group's next row into L2 (rmsnorm_forward_kernel's kPersist), and the backward's blocks,
// which walk their rows in order, prefetching the next row's x and dy; read once. An A/B
// variant (scripts/gpu-check.sh R1_GPU_AB) until measured.
bool row_prefetch() {
  static const bool v = [] {
    const char* e = std::getenv("R1_ROW_PREFETCH");
    return e != nullptr && std::strcmp(e, "1") == 0;
  }();
  return v;
}

// Both RMSNorm forward kernels at one launch shape (the tuned row variant), so the fused
// kernel's y and rstd are the plain kernel's bits. q, scales: null for the plain kernel.
void launch_rmsnorm_forward(const Tensor& x, const Tensor& w, double eps, Tensor& y,
                            Tensor& rstd, Tensor* q, Tensor* scales) {
  const int64_t N = x.size(0), D = x.size(1);
  if (N == 0) return;
  const int dev = x.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  dispatch_float(x.dtype(), "rmsnorm_forward", [&](auto tag) {
    using T = decltype(tag);
    constexpr RowKernel kKernel = RowKernel::RmsNormForward;
    dispatch_row_variant<T>(kKernel, [&]<int C, int MinBlocks>(int max_tpr) {
      const int tpr = row_threads_capped((D + kVec<T> - 1) / kVec<T>, C, max_tpr);
      const int rows = tpr >= kThreads ? 1 : kThreads / tpr;
      const auto blocks = static_cast<unsigned>((N + rows - 1) / rows);
      const auto* xp = static_cast<const T*>(x.data_ptr());
      const auto* wp = static_cast<const T*>(w.data_ptr());
      auto* yp = static_cast<T*>(y.data_ptr());
      if (q) {
        rmsnorm_quantize_fp8_kernel<T, C, MinBlocks><<<blocks, tpr * rows, 0, s>>>(
            xp, wp, yp, rstd.data<float>(), q->data<uint8_t>(), scales->data<float>(), N, D,
            static_cast<float>(eps), tpr);
      } else if (rmsnorm_forward_pipe(x, w, eps, y, rstd, tpr)) {
        return;  // R1_ROW_PIPE=1 (norm_pipe.cu): the same bits at the same tpr
      } else if (row_prefetch()) {
        const auto kernel = rmsnorm_forward_kernel<T, C, MinBlocks, true>;
        int per_sm = 0;
        R1_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, kernel, tpr * rows, 0));
        const auto resident = static_cast<unsigned>(std::max(per_sm, 1) * sm_count(dev));
        kernel<<<std::min(blocks, resident), tpr * rows, 0, s>>>(
            xp, wp, yp, rstd.data<float>(), N, D, static_cast<float>(eps), tpr);
      } else {
        rmsnorm_forward_kernel<T, C, MinBlocks, false><<<blocks, tpr * rows, 0, s>>>(
            xp, wp, yp, rstd.data<float>(), N, D, static_cast<float>(eps), tpr);
      }
      R1_CUDA_CHECK_LAUNCH();
    });
  });
}

// x (N, D), w (D) -> y (N, D), rstd (N) f32.
void rmsnorm_forward_cuda(const Tensor& x, const Tensor& w, double eps, Tensor& y,
                          Tensor& rstd) {
  check_rmsnorm("rmsnorm_forward", x, w, rstd);
  R1_CHECK(y.shape() == x.shape() && y.dtype() == x.dtype(), "rmsnorm_forward: y {} for x {}",
           y.str(), x.str());
  launch_rmsnorm_forward(x, w, eps, y, rstd, nullptr, nullptr);
}

// rmsnorm_forward and quantize_fp8_rows of y in one kernel (rmsnorm_quantize_fp8_kernel).
void rmsnorm_quantize_fp8_cuda(const Tensor& x, const Tensor& w, double eps, Tensor& y,
                               Tensor& rstd, Tensor& q, Tensor& scales) {
  check_rmsnorm("rmsnorm_quantize_fp8", x, w, rstd);
  R1_CHECK(y.shape() == x.shape() && y.dtype() == x.dtype(),
           "rmsnorm_quantize_fp8: y {} for x {}", y.str(), x.str());
  R1_CHECK(x.dtype() == DType::F32 || x.dtype() == DType::BF16,
           "rmsnorm_quantize_fp8: f32 or bf16, got {}", dtype_name(x.dtype()));
  check_quantize_fp8("rmsnorm_quantize_fp8", y, q, scales, 1);
  launch_rmsnorm_forward(x, w, eps, y, rstd, &q, &scales);
}

// R1_RMSNORM_BWD=smem forces the two-read kernel where the register one would run (for the
// benchmark's A/B: bench_cuda_kernels RmsNormBackward); read once.
int rmsnorm_backward_variant() {
  static const int v = [] {
    const char* e = std::getenv("R1_RMSNORM_BWD");
    return e && std::strcmp(e, "smem") == 0 ? 1 : 0;
  }();
  return v;
}

// R1_RMSNORM_BWD_ROWS=n: rows per backward block (1..1024; default kRmsRowBlock), read once.
// Fewer rows per block put more blocks (and more rows' loads) in flight and write more dw
// partials; the H200 sweep (scripts/gpu-check.sh variants) decides the default.
int64_t rmsnorm_backward_rows() {
  static const int64_t v = [] {
    const char* e = std::getenv("R1_RMSNORM_BWD_ROWS");
    if (!e || !*e) return kRmsRowBlock;
    char* end = nullptr;
    const long r = std::strtol(e, &end, 10);
    R1_CHECK(*end == 0 && r >= 1 && r <= 1024, "R1_RMSNORM_BWD_ROWS={}: want 1..1024", e);
    return static_cast<int64_t>(r);
  }();
  return v;
}

// x, dy (N, D), w (D), rstd (N) f32 -> dx (N, D), dw (D). dw through an f32 (G, D) partial
// per block of rmsnorm_backward_rows() rows and a fixed-order column sum: deterministic, no atomics.
void rmsnorm_backward_cuda(const Tensor& x, const Tensor& w, const Tensor& rstd,
                           const Tensor& dy, Tensor& dx, Tensor& dw) {
  check_rmsnorm("rmsnorm_backward", x, w, rstd);
  R1_CHECK(dy.shape() == x.shape() && dy.dtype() == x.dtype() && dx.shape() == x.shape() &&
               dx.dtype() == x.dtype() && dw.shape() == w.shape() && dw.dtype() == w.dtype(),
           "rmsnorm_backward: x {}, dy {}, dx {}, w {}, dw {}", x.str(), dy.str(), dx.str(),
           w.str(), dw.str());
  const int64_t N = x.size(0), D = x.size(1);
  if (D == 0) return;
  if (N == 0) {
    dw.zero_();
    return;
  }
  const int dev = x.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  const int64_t rows = rmsnorm_backward_rows();
  const int64_t G = (N + rows - 1) / rows;
  Tensor partial = Tensor::empty({G, D}, DType::F32, x.device());
  dispatch_float(x.dtype(), "rmsnorm_backward", [&](auto tag) {
    using T = decltype(tag);
    constexpr int kV = kVec<T>;
    const int64_t nch = (D + kV - 1) / kV;
    const T* px = static_cast<const T*>(x.data_ptr());
    const T* pw = static_cast<const T*>(w.data_ptr());
    const T* pg = static_cast<const T*>(dy.data_ptr());
    T* pd = static_cast<T*>(dx.data_ptr());
    const size_t smem = static_cast<size_t>(nch * kV) * sizeof(float);
    int optin = 0;
    R1_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
    R1_CHECK(smem + sizeof(float) * kMaxRowThreads / 32 <= static_cast<size_t>(optin),
             "rmsnorm_backward: D {} needs {} bytes of shared memory for dw; the device has {}",
             D, smem, optin);
    // max_tpr applies to the forward kernels only: a backward block walks `rows` rows
    // one after another, and a warp per block would leave most of the GPU idle.
    dispatch_row_variant<T>(RowKernel::RmsNormBackward, [&]<int C, int MinBlocks>(int) {
      const int tpr_reg = row_threads(nch, C);
      const bool reg = nch <= int64_t{tpr_reg} * C && rmsnorm_backward_variant() != 1;
      // R1_ROW_PIPE=1 (norm_pipe.cu): the same bits at the tpr of the kernel it replaces.
      if (rmsnorm_backward_pipe(x, w, rstd, dy, dx, partial, rows,
                                reg ? tpr_reg : row_threads_for<T>(nch)))
        return;
      const auto kernel =
          reg ? rmsnorm_backward_reg_kernel<T, C, MinBlocks> : rmsnorm_backward_kernel<T>;
      opt_in_dynamic_smem(reinterpret_cast<const void*>(kernel), static_cast<int>(smem));
      kernel<<<static_cast<unsigned>(G), reg ? tpr_reg : row_threads_for<T>(nch), smem, s>>>(
          px, pw, rstd.data<float>(), pg, pd, partial.data<float>(), N, D, rows,
          row_prefetch());
      R1_CUDA_CHECK_LAUNCH();
    });
    column_sum_kernel<T><<<static_cast<unsigned>((D + 31) / 32), dim3(32, kColLanes), 0, s>>>(
        partial.data<float>(), G, D, static_cast<T*>(dw.data_ptr()));
    R1_CUDA_CHECK_LAUNCH();
  });
}

// ---- swiglu ------------------------------------------------------------------------------

__device__ inline float sigmoid(float g) {
  return 1.0f / (1.0f + __expf(-g));  // exp overflow gives 1/inf = 0: the right limit
}

// gate, up (n) -> out (n) = silu(gate) * up; one chunk per thread per grid-stride step.
template <class T>
__global__ void swiglu_forward_kernel(const T* gate, const T* up, T* out, int64_t n) {
  constexpr int kV = kVec<T>;
  for (int64_t i0 = global_thread() * kV; i0 < n; i0 += grid_threads() * kV) {
    float g[kV], u[kV], o[kV];
    load_chunk(gate, i0, n, g);
    load_chunk(up, i0, n, u);
#pragma unroll
    for (int k = 0; k < kV; ++k) o[k] = g[k] * sigmoid(g[k]) * u[k];
    store_chunk(out, i0, n, o);
  }
}

// swiglu_forward fused with quantize_fp8_rows of its output (engine/kernels.h): one warp per
// 1x128 tile of a row. Each lane computes its elements exactly as swiglu_forward_kernel does
// (the same expression and sigmoid), stores them in out's dtype, and quantizes the stored
// values as quantize_rows_kernel does (quantize.cu): the same bits as the two kernels back to
// back, with gate and up read once and out never re-read.
// kVector (F a multiple of 4, every pointer 16-byte aligned): 4 consecutive elements per lane,
// vector loads and stores; else lane l takes elements l, l + 32, l + 64, l + 96 of the tile.
// Tile (r, b): row r's columns [128 b, 128 b + 128) of an (., F) matrix with fb tiles a row.
template <class T, bool kVector>
__device__ __forceinline__ void swiglu_quantize_tile(const T* gate, const T* up, T* out,
                                                     uint8_t* q, float* scales, int64_t f,
                                                     int64_t fb, int64_t r, int64_t b,
                                                     int lane) {
  constexpr int kP = fp8::kPerLane;
  const int64_t base = r * f + b * kFp8Block;
  const int64_t len = f - b * kFp8Block < kFp8Block ? f - b * kFp8Block : kFp8Block;
  const bool vec = kVector && len == kFp8Block;  // uniform over the warp
  float v[kP];
  if (vec) {
    float g[kP], u[kP];
    fp8::load4(gate, base + kP * lane, g);
    fp8::load4(up, base + kP * lane, u);
#pragma unroll
    for (int k = 0; k < kP; ++k) v[k] = g[k] * sigmoid(g[k]) * u[k];
    fp8::store4(out, base + kP * lane, v);
  } else {
#pragma unroll
    for (int i = 0; i < kP; ++i) {
      const int64_t c = i * 32 + lane;
      v[i] = 0.0f;
      if (c < len) {
        const float g = fp8::load_f32(gate, base + c), u = fp8::load_f32(up, base + c);
        v[i] = g * sigmoid(g) * u;
        fp8::store1(out, base + c, v[i]);
      }
    }
  }
  fp8::quantize_tile(v, vec, len, lane, q + base, scales + r * fb + b);
}

// Every tile of the m rows, grid-stride, one warp per tile.
template <class T, bool kVector>
__global__ void __launch_bounds__(kThreads)
    swiglu_quantize_fp8_kernel(const T* gate, const T* up, T* out, uint8_t* q, float* scales,
                               int64_t m, int64_t f, int64_t fb) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int64_t warps = int64_t{gridDim.x} * (kThreads / 32);
  for (int64_t t = int64_t{blockIdx.x} * (kThreads / 32) + threadIdx.x / 32; t < m * fb;
       t += warps) {
    const int64_t r = t / fb;
    swiglu_quantize_tile<T, kVector>(gate, up, out, q, scales, f, fb, r, t - r * fb, lane);
  }
}

// swiglu_quantize_fp8_masked: the rows are G groups of mmax; blockIdx.y is the group g, whose
// blocks stride over the tiles of its counted rows i < counts[g] only (counts32 or counts64,
// whichever is not null, on the device; clamped to [0, mmax]), so a decode step with a few
// tokens per expert walks its few tiles, not all G * mmax rows'. Nothing else is read or
// written.
template <class T, bool kVector>
__global__ void __launch_bounds__(kThreads)
    swiglu_quantize_fp8_masked_kernel(const T* gate, const T* up, T* out, uint8_t* q,
                                      float* scales, int64_t mmax, int64_t f, int64_t fb,
                                      const int32_t* counts32, const int64_t* counts64) {
  const int lane = static_cast<int>(threadIdx.x % 32);
  const int64_t g = blockIdx.y;
  const int64_t count = counts64 ? counts64[g] : int64_t{counts32[g]};
  const int64_t tiles = (count < 0 ? 0 : count > mmax ? mmax : count) * fb;
  const int64_t warps = int64_t{gridDim.x} * (kThreads / 32);
  for (int64_t t = int64_t{blockIdx.x} * (kThreads / 32) + threadIdx.x / 32; t < tiles;
       t += warps) {
    const int64_t i = t / fb;
    swiglu_quantize_tile<T, kVector>(gate, up, out, q, scales, f, fb, g * mmax + i, t - i * fb,
                                     lane);
  }
}

// dgate = dout up s (1 + g (1 - s)), dup = dout g s, s = sigmoid(g).
template <class T>
__global__ void swiglu_backward_kernel(const T* gate, const T* up, const T* dout, T* dgate,
                                       T* dup, int64_t n) {
  constexpr int kV = kVec<T>;
  for (int64_t i0 = global_thread() * kV; i0 < n; i0 += grid_threads() * kV) {
    float g[kV], u[kV], d[kV], dg[kV], du[kV];
    load_chunk(gate, i0, n, g);
    load_chunk(up, i0, n, u);
    load_chunk(dout, i0, n, d);
#pragma unroll
    for (int k = 0; k < kV; ++k) {
      const float sg = sigmoid(g[k]);
      dg[k] = d[k] * u[k] * sg * (1.0f + g[k] * (1.0f - sg));
      du[k] = d[k] * g[k] * sg;
    }
    store_chunk(dgate, i0, n, dg);
    store_chunk(dup, i0, n, du);
  }
}

void check_same(const char* op, const Tensor& a, const Tensor& b) {
  R1_CHECK(a.shape() == b.shape() && a.dtype() == b.dtype(), "{}: {} vs {}", op, a.str(),
           b.str());
}

// gate, up (N, F) -> out (N, F).
void swiglu_forward_cuda(const Tensor& gate, const Tensor& up, Tensor& out) {
  check_same("swiglu_forward", gate, up);
  check_same("swiglu_forward", gate, out);
  const int64_t n = gate.numel();
  if (n == 0) return;
  const int dev = gate.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  dispatch_float(gate.dtype(), "swiglu_forward", [&](auto tag) {
    using T = decltype(tag);
    swiglu_forward_kernel<T><<<grid_for((n + kVec<T> - 1) / kVec<T>, dev), kThreads, 0, s>>>(
        static_cast<const T*>(gate.data_ptr()), static_cast<const T*>(up.data_ptr()),
        static_cast<T*>(out.data_ptr()), n);
    R1_CUDA_CHECK_LAUNCH();
  });
}

// gate, up (M, F) -> out = swiglu, q, scales = quantize_fp8_rows(out), one pass; with counts
// (the masked form: gate, up, out, q, scales viewed as (G * Mmax, ...), M = G * Mmax) only the
// counted rows.
void launch_swiglu_quantize_fp8(const Tensor& gate, const Tensor& up, Tensor& out, Tensor& q,
                                Tensor& scales, const Tensor* counts, int64_t mmax) {
  const int64_t m = gate.size(0), f = gate.size(1), fb = fp8_blocks(f);
  if (m * fb == 0) return;
  const int dev = gate.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  auto aligned = [](const void* p, int a) { return reinterpret_cast<uintptr_t>(p) % a == 0; };
  dispatch_float(gate.dtype(), "swiglu_quantize_fp8", [&](auto tag) {
    using T = decltype(tag);
    const bool vector = f % 4 == 0 && aligned(gate.data_ptr(), 16) && aligned(up.data_ptr(), 16) &&
                        aligned(out.data_ptr(), 16) && aligned(q.data_ptr(), 4);
    const T* gp = static_cast<const T*>(gate.data_ptr());
    const T* up_p = static_cast<const T*>(up.data_ptr());
    T* op = static_cast<T*>(out.data_ptr());
    if (!counts) {
      const int grid = fp8::warp_per_tile_grid(m * fb, kThreads, dev);
      auto kernel =
          vector ? swiglu_quantize_fp8_kernel<T, true> : swiglu_quantize_fp8_kernel<T, false>;
      kernel<<<grid, kThreads, 0, s>>>(gp, up_p, op, q.data<uint8_t>(), scales.data<float>(), m,
                                       f, fb);
      R1_CUDA_CHECK_LAUNCH();
      return;
    }
    // The counts live on the device (a graph replays this launch): each group gets the blocks
    // its full mmax rows would need, within the whole grid's budget shared over the groups.
    const int64_t groups = m / mmax;
    R1_CHECK(groups <= 65535, "swiglu_quantize_fp8_masked: {} groups, at most 65535", groups);
    const int64_t per_group = fp8::warp_per_tile_grid(mmax * fb, kThreads, dev);
    const int64_t budget = fp8::warp_per_tile_grid(m * fb, kThreads, dev);
    const dim3 grid(static_cast<unsigned>(std::clamp<int64_t>(budget / groups, 1, per_group)),
                    static_cast<unsigned>(groups));
    const bool c64 = counts->dtype() == DType::I64;
    const int32_t* c32p = c64 ? nullptr : counts->data<int32_t>();
    const int64_t* c64p = c64 ? counts->data<int64_t>() : nullptr;
    auto kernel = vector ? swiglu_quantize_fp8_masked_kernel<T, true>
                         : swiglu_quantize_fp8_masked_kernel<T, false>;
    kernel<<<grid, kThreads, 0, s>>>(gp, up_p, op, q.data<uint8_t>(), scales.data<float>(), mmax,
                                     f, fb, c32p, c64p);
    R1_CUDA_CHECK_LAUNCH();
  });
}

void swiglu_quantize_fp8_cuda(const Tensor& gate, const Tensor& up, Tensor& out, Tensor& q,
                              Tensor& scales) {
  check_same("swiglu_quantize_fp8", gate, up);
  check_same("swiglu_quantize_fp8", gate, out);
  R1_CHECK(gate.dtype() == DType::F32 || gate.dtype() == DType::BF16,
           "swiglu_quantize_fp8: f32 or bf16, got {}", dtype_name(gate.dtype()));
  check_quantize_fp8("swiglu_quantize_fp8", out, q, scales, 1);
  launch_swiglu_quantize_fp8(gate, up, out, q, scales, nullptr, 1);
}

// The masked layout's swiglu (decode): gate, up, out (G, Mmax, F), q (G, Mmax, F), scales
// (G, Mmax, FB), counts (G) on the device; rows i >= counts[g] untouched.
void swiglu_quantize_fp8_masked_cuda(const Tensor& gate, const Tensor& up, const Tensor& counts,
                                     Tensor& out, Tensor& q, Tensor& scales) {
  check_swiglu_quantize_fp8_masked(gate, up, counts, out, q, scales);
  const int64_t g = gate.size(0), mmax = gate.size(1), f = gate.size(2);
  Tensor o2 = out.view({g * mmax, f}), q2 = q.view({g * mmax, f});
  Tensor s2 = scales.view({g * mmax, fp8_blocks(f)});
  launch_swiglu_quantize_fp8(gate.view({g * mmax, f}), up.view({g * mmax, f}), o2, q2, s2, &counts,
                             mmax);
}

// gate, up, dout (N, F) -> dgate, dup (N, F).
void swiglu_backward_cuda(const Tensor& gate, const Tensor& up, const Tensor& dout,
                          Tensor& dgate, Tensor& dup) {
  check_same("swiglu_backward", gate, up);
  check_same("swiglu_backward", gate, dout);
  check_same("swiglu_backward", gate, dgate);
  check_same("swiglu_backward", gate, dup);
  const int64_t n = gate.numel();
  if (n == 0) return;
  const int dev = gate.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  dispatch_float(gate.dtype(), "swiglu_backward", [&](auto tag) {
    using T = decltype(tag);
    swiglu_backward_kernel<T><<<grid_for((n + kVec<T> - 1) / kVec<T>, dev), kThreads, 0, s>>>(
        static_cast<const T*>(gate.data_ptr()), static_cast<const T*>(up.data_ptr()),
        static_cast<const T*>(dout.data_ptr()), static_cast<T*>(dgate.data_ptr()),
        static_cast<T*>(dup.data_ptr()), n);
    R1_CUDA_CHECK_LAUNCH();
  });
}

// ---- rope --------------------------------------------------------------------------------

// x (B*T, H, D), pos (B*T) int, cos/sin (P, D/2) of Tc -> y (B*T, H, D). One block per token:
// its position is read once, its H * D elements are contiguous (coalesced), and the block
// size is a multiple of the chunks per head (when that is at most 256), so a thread keeps the
// same chunk of the head dim, and the same cos/sin entries (L1 hits), for every head it
// visits. Measured on an H200 before this layout (one chunk per thread over the flattened
// rows, a position and cos/sin lookup per chunk): 0.44 of the copy bandwidth at
// (4, 4096, 128, 64) bf16.
// A chunk: interleaved, kV elements = kV/2 pairs (a chunk never splits a pair: D and kV are
// even); halves, kV elements of each half = kV pairs. A position outside [0, P) turns its
// token's outputs into NaN: checking on the host would cost a sync per call, and the NaN
// cannot go unnoticed. In place (y == x) is safe: an item reads what it writes.
// Heads whose loads a rope thread has in flight at once. With 4, the bf16 kernel needs 78
// registers (70 bytes of spills at the 64 that 4 blocks per SM allow), hence 3 blocks of 256
// per SM: 48 KB of loads in flight per SM at (4, 4096, 128, 64), against 16 KB before (one
// head per step, 4 blocks), where it ran at 0.66 of the copy bandwidth on an H200.
constexpr int kRopeHeads = 4;

template <class T, class Tc, class P>
__global__ void __launch_bounds__(kThreads, 3)
    rope_kernel(const T* x, const P* pos, const Tc* cos, const Tc* sin, T* y, int64_t H,
                int64_t D, int64_t num_pos, bool interleaved, float sgn) {
  constexpr int kV = kVec<T>;
  const int64_t tok = blockIdx.x;
  const int64_t half = D / 2;
  const int64_t nch = ((interleaved ? D : half) + kV - 1) / kV;
  if (interleaved && blockDim.x % nch == 0) {
    // The usual case (rope_block): this thread's chunk of the head dim is the same in every
    // head it visits, so its cos/sin pairs are read once, not once per head (per head they
    // were kV scalar loads beside one 16-byte load: the ee1d294 kernel's 0.56 of the copy
    // bandwidth on the H200).
    const int64_t i0 = (threadIdx.x % nch) * kV;
    const int64_t hstep = blockDim.x / nch;
    // kRopeHeads heads' chunks are loaded (raw, 4 registers each) before any is stored: y
    // may be x, so the compiler cannot move a load above an earlier store, and one head per
    // step left a single 16-byte load in flight per thread. The first heads' loads go out
    // before the position is read: they do not depend on it, and a block's life was the
    // chain position -> cos/sin -> x -> y (at (4, 4096, 128, 64) a block is one step).
    uint4 raw[kRopeHeads];
    int64_t h0 = threadIdx.x / nch;
    auto load_heads = [&] {
#pragma unroll
      for (int u = 0; u < kRopeHeads; ++u) {
        const int64_t h = h0 + u * hstep;
        if (h < H) load_chunk_raw(x + (tok * H + h) * D, i0, D, raw[u]);
      }
    };
    load_heads();
    const int64_t p = static_cast<int64_t>(pos[tok]);
    const bool ok = p >= 0 && p < num_pos;
    const Tc* cr = cos + (ok ? p : 0) * half;
    const Tc* sr = sin + (ok ? p : 0) * half;
    float cj[kV / 2], sj[kV / 2];
#pragma unroll
    for (int k = 0; k < kV; k += 2) {
      const bool in = i0 + k < D;
      cj[k / 2] = in ? to_f32(cr[(i0 + k) / 2]) : 0.0f;
      sj[k / 2] = in ? sgn * to_f32(sr[(i0 + k) / 2]) : 0.0f;
    }
    // The next heads' loads at the top of each later pass (not at the bottom of the body:
    // raw live across the back edge cost the f32 kernel 160 bytes of spills).
    for (bool first = true;; first = false) {
      if (!first) load_heads();
#pragma unroll
      for (int u = 0; u < kRopeHeads; ++u) {
        const int64_t h = h0 + u * hstep;
        if (h >= H) break;
        float b[kV];
#pragma unroll
        for (int k = 0; k < kV; k += 2) {
          const float a0 = chunk_elem<T>(raw[u], k), a1 = chunk_elem<T>(raw[u], k + 1);
          b[k] = ok ? a0 * cj[k / 2] - a1 * sj[k / 2] : NAN;
          b[k + 1] = ok ? a0 * sj[k / 2] + a1 * cj[k / 2] : NAN;
        }
        store_chunk(y + (tok * H + h) * D, i0, D, b);
      }
      h0 += kRopeHeads * hstep;
      if (h0 >= H) break;
    }
    return;
  }
  const int64_t p = static_cast<int64_t>(pos[tok]);
  const bool ok = p >= 0 && p < num_pos;
  const Tc* cr = cos + (ok ? p : 0) * half;
  const Tc* sr = sin + (ok ? p : 0) * half;
#pragma unroll 4
  for (int64_t item = threadIdx.x; item < H * nch; item += blockDim.x) {
    const int64_t h = item / nch, i0 = (item - h * nch) * kV;
    const T* xr = x + (tok * H + h) * D;
    T* yr = y + (tok * H + h) * D;
    float a[kV], b[kV] = {};
    if (interleaved) {
      const int cnt = load_chunk(xr, i0, D, a);
#pragma unroll
      for (int k = 0; k < kV; k += 2) {
        if (k >= cnt) break;
        const int64_t j = (i0 + k) / 2;
        const float cj = to_f32(cr[j]), sj = sgn * to_f32(sr[j]);
        b[k] = ok ? a[k] * cj - a[k + 1] * sj : NAN;
        b[k + 1] = ok ? a[k] * sj + a[k + 1] * cj : NAN;
      }
      store_chunk(yr, i0, D, b);
    } else {
      const int cnt = load_chunk(xr, i0, half, a);
      load_chunk(xr + half, i0, half, b);
      float ya[kV], yb[kV];
#pragma unroll
      for (int k = 0; k < kV; ++k) {
        const bool in = k < cnt;
        const float cj = in ? to_f32(cr[i0 + k]) : 0.0f;
        const float sj = in ? sgn * to_f32(sr[i0 + k]) : 0.0f;
        ya[k] = ok ? a[k] * cj - b[k] * sj : NAN;
        yb[k] = ok ? a[k] * sj + b[k] * cj : NAN;
      }
      store_chunk(yr, i0, half, ya);
      store_chunk(yr + half, i0, half, yb);
    }
  }
}

// Threads per rope block: a multiple of the chunks per head nch (up to 256 threads), so each
// thread stays on one chunk of the head dim; 256 when a head has more chunks than that.
int rope_block(int64_t nch, int64_t H) {
  if (nch > kThreads) return kThreads;
  const int64_t heads = std::max<int64_t>(1, std::min<int64_t>(H, kThreads / nch));
  return static_cast<int>(nch * heads);
}

// x (B, T, H, D), positions (B, T) i32/i64, cos/sin (P, D/2) f32 or x's dtype -> y.
void rope_cuda(const Tensor& x, const Tensor& positions, const Tensor& cos, const Tensor& sin,
               bool interleaved, bool inverse, Tensor& y) {
  R1_CHECK(x.dim() == 4 && x.size(3) % 2 == 0 && positions.dim() == 2 &&
               positions.size(0) == x.size(0) && positions.size(1) == x.size(1) &&
               cos.dim() == 2 && cos.shape() == sin.shape() && cos.size(1) * 2 == x.size(3) &&
               cos.dtype() == sin.dtype() && y.shape() == x.shape() && y.dtype() == x.dtype(),
           "rope: x {}, positions {}, cos {}, sin {}, y {}", x.str(), positions.str(), cos.str(),
           sin.str(), y.str());
  R1_CHECK(cos.dtype() == x.dtype() || cos.dtype() == DType::F32,
           "rope: cos/sin {} must be f32 or x's dtype {}", dtype_name(cos.dtype()),
           dtype_name(x.dtype()));
  R1_CHECK(positions.dtype() == DType::I32 || positions.dtype() == DType::I64,
           "rope: positions must be i32 or i64, got {}", dtype_name(positions.dtype()));
  const int64_t H = x.size(2), D = x.size(3), rows = x.size(0) * x.size(1) * H;
  if (rows == 0 || D == 0) return;
  const int dev = x.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  const float sgn = inverse ? -1.0f : 1.0f;
  dispatch_float(x.dtype(), "rope", [&](auto xtag) {
    using T = decltype(xtag);
    auto with_table = [&](auto ctag) {
      using Tc = decltype(ctag);
      auto with_pos = [&](auto ptag) {
        using P = decltype(ptag);
        const int64_t half_or_d = interleaved ? D : D / 2;
        const int64_t nch = (half_or_d + kVec<T> - 1) / kVec<T>;
        rope_kernel<T, Tc, P><<<static_cast<unsigned>(rows / H), rope_block(nch, H), 0, s>>>(
            static_cast<const T*>(x.data_ptr()), static_cast<const P*>(positions.data_ptr()),
            static_cast<const Tc*>(cos.data_ptr()), static_cast<const Tc*>(sin.data_ptr()),
            static_cast<T*>(y.data_ptr()), H, D, cos.size(0), interleaved, sgn);
        R1_CUDA_CHECK_LAUNCH();
      };
      if (positions.dtype() == DType::I32) with_pos(int32_t{});
      else with_pos(int64_t{});
    };
    if (cos.dtype() == DType::F32) with_table(float{});
    else with_table(T{});
  });
}

// ---- mla_qkv -------------------------------------------------------------------------------

// Element j of a RoPE block of r features (pairs as in rope): its pair index, whether it is the
// pair's first member, and where the pair's two members live.
struct RopeSlot {
  int64_t pair, first, second;
  bool is_first;
};
__device__ inline RopeSlot rope_slot(int64_t j, int64_t r, bool interleaved) {
  const int64_t half = r / 2;
  RopeSlot s;
  if (interleaved) {
    s.pair = j / 2;
    s.first = 2 * s.pair;
    s.second = s.first + 1;
  } else {
    s.pair = j < half ? j : j - half;
    s.first = s.pair;
    s.second = s.pair + half;
  }
  s.is_first = j == s.first;
  return s;
}
// The rotated value of a slot from the pair (a, b) and the angle's cos c and sin s (negated for
// the inverse rotation).
__device__ inline float rope_value(const RopeSlot& sl, float a, float b, float c, float s) {
  return sl.is_first ? a * c - b * s : a * s + b * c;
}

// One block per token. q (BT, H, Dq), kv (BT, H, Dkv), kr (BT, r) -> qo, ko (BT, H, Dq), vo
// (BT, H, vd); Dq = n + r, Dkv = n + vd. Element-wise: each output element reads what it needs
// (a RoPE element reads its pair). A position outside [0, P) gives NaN (as rope).
template <class T, class Tc, class P>
__global__ void mla_qkv_forward_kernel(const T* q, const T* kv, const T* kr, const P* pos,
                                       const Tc* cos, const Tc* sin, T* qo, T* ko, T* vo,
                                       int64_t H, int64_t n, int64_t r, int64_t vd,
                                       int64_t num_pos, bool interleaved) {
  const int64_t tok = blockIdx.x, Dq = n + r, Dkv = n + vd, half = r / 2;
  const int64_t p = static_cast<int64_t>(pos[tok]);
  const bool ok = p >= 0 && p < num_pos;
  const Tc* cr = cos + (ok ? p : 0) * half;
  const Tc* sr = sin + (ok ? p : 0) * half;
  for (int64_t e = threadIdx.x; e < H * Dq; e += blockDim.x) {
    const int64_t h = e / Dq, d = e - h * Dq;
    const T* qrow = q + (tok * H + h) * Dq;
    const T* kvrow = kv + (tok * H + h) * Dkv;
    if (d < n) {
      qo[tok * H * Dq + e] = qrow[d];
      ko[tok * H * Dq + e] = kvrow[d];
    } else {
      const RopeSlot sl = rope_slot(d - n, r, interleaved);
      const float c = to_f32(cr[sl.pair]), s = to_f32(sr[sl.pair]);
      const float qv = rope_value(sl, to_f32(qrow[n + sl.first]), to_f32(qrow[n + sl.second]), c, s);
      const T* k = kr + tok * r;
      const float kvv = rope_value(sl, to_f32(k[sl.first]), to_f32(k[sl.second]), c, s);
      qo[tok * H * Dq + e] = from_f32<T>(ok ? qv : NAN);
      ko[tok * H * Dq + e] = from_f32<T>(ok ? kvv : NAN);
    }
  }
  for (int64_t e = threadIdx.x; e < H * vd; e += blockDim.x) {
    const int64_t h = e / vd, d = e - h * vd;
    vo[tok * H * vd + e] = kv[(tok * H + h) * Dkv + n + d];
  }
}

// Its backward, one block per token: dq, dkv element-wise; dk_rope[j] = rope^-1 of the heads'
// sum (fp32, heads in order) of dko's RoPE features.
template <class T, class Tc, class P>
__global__ void mla_qkv_backward_kernel(const T* dqo, const T* dko, const T* dvo, const P* pos,
                                        const Tc* cos, const Tc* sin, T* dq, T* dkv, T* dkr,
                                        int64_t H, int64_t n, int64_t r, int64_t vd,
                                        int64_t num_pos, bool interleaved) {
  const int64_t tok = blockIdx.x, Dq = n + r, Dkv = n + vd, half = r / 2;
  const int64_t p = static_cast<int64_t>(pos[tok]);
  const bool ok = p >= 0 && p < num_pos;
  const Tc* cr = cos + (ok ? p : 0) * half;
  const Tc* sr = sin + (ok ? p : 0) * half;
  for (int64_t e = threadIdx.x; e < H * Dq; e += blockDim.x) {
    const int64_t h = e / Dq, d = e - h * Dq;
    const T* g = dqo + (tok * H + h) * Dq;
    if (d < n) {
      dq[tok * H * Dq + e] = g[d];
    } else {
      const RopeSlot sl = rope_slot(d - n, r, interleaved);
      const float c = to_f32(cr[sl.pair]), s = -to_f32(sr[sl.pair]);
      const float v = rope_value(sl, to_f32(g[n + sl.first]), to_f32(g[n + sl.second]), c, s);
      dq[tok * H * Dq + e] = from_f32<T>(ok ? v : NAN);
    }
  }
  for (int64_t e = threadIdx.x; e < H * Dkv; e += blockDim.x) {
    const int64_t h = e / Dkv, d = e - h * Dkv;
    dkv[tok * H * Dkv + e] = d < n ? dko[(tok * H + h) * Dq + d] : dvo[(tok * H + h) * vd + d - n];
  }
  for (int64_t j = threadIdx.x; j < r; j += blockDim.x) {
    const RopeSlot sl = rope_slot(j, r, interleaved);
    float a = 0.0f, b = 0.0f;
    for (int64_t h = 0; h < H; ++h) {
      a += to_f32(dko[(tok * H + h) * Dq + n + sl.first]);
      b += to_f32(dko[(tok * H + h) * Dq + n + sl.second]);
    }
    const float c = to_f32(cr[sl.pair]), s = -to_f32(sr[sl.pair]);
    dkr[tok * r + j] = from_f32<T>(ok ? rope_value(sl, a, b, c, s) : NAN);
  }
}

template <class Fn>
void with_table_and_pos(const Tensor& cos, const Tensor& positions, Fn&& fn) {
  R1_CHECK(positions.dtype() == DType::I32 || positions.dtype() == DType::I64,
           "mla_qkv: positions must be i32 or i64, got {}", dtype_name(positions.dtype()));
  auto with_pos = [&](auto ctag) {
    if (positions.dtype() == DType::I32) fn(ctag, int32_t{});
    else fn(ctag, int64_t{});
  };
  if (cos.dtype() == DType::F32) with_pos(float{});
  else with_pos(uint16_t{});
}

void mla_qkv_forward_cuda(const Tensor& q, const Tensor& kv, const Tensor& k_rope,
                          const Tensor& positions, const Tensor& cos, const Tensor& sin,
                          bool interleaved, Tensor& qo, Tensor& ko, Tensor& vo) {
  R1_CHECK(q.dim() == 4 && kv.dim() == 4 && k_rope.dim() == 3 && qo.shape() == q.shape() &&
               ko.shape() == q.shape() && vo.dim() == 4 && k_rope.size(2) % 2 == 0 &&
               q.size(3) > k_rope.size(2) && q.is_contiguous() && kv.is_contiguous() &&
               k_rope.is_contiguous() && kv.dtype() == q.dtype() && k_rope.dtype() == q.dtype() &&
               qo.dtype() == q.dtype() && ko.dtype() == q.dtype() && vo.dtype() == q.dtype() &&
               positions.numel() == q.size(0) * q.size(1) && cos.dim() == 2 &&
               cos.shape() == sin.shape() && cos.dtype() == sin.dtype() &&
               cos.size(1) * 2 == k_rope.size(2) &&
               (cos.dtype() == DType::F32 || cos.dtype() == q.dtype()),
           "mla_qkv: q {}, kv {}, k_rope {}, positions {}, cos {}, qo {}, ko {}, vo {}", q.str(),
           kv.str(), k_rope.str(), positions.str(), cos.str(), qo.str(), ko.str(), vo.str());
  const int64_t BT = q.size(0) * q.size(1), H = q.size(2), r = k_rope.size(2), n = q.size(3) - r;
  const int64_t vd = vo.size(3);
  R1_CHECK(kv.size(3) == n + vd, "mla_qkv: kv {} for n {} and v {}", kv.str(), n, vd);
  if (BT == 0 || H == 0) return;
  const int dev = q.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  dispatch_float(q.dtype(), "mla_qkv", [&](auto xtag) {
    using T = decltype(xtag);
    with_table_and_pos(cos, positions, [&](auto ctag, auto ptag) {
      using Tc = decltype(ctag);
      using P = decltype(ptag);
      mla_qkv_forward_kernel<T, Tc, P><<<static_cast<unsigned>(BT), 128, 0, s>>>(
          static_cast<const T*>(q.data_ptr()), static_cast<const T*>(kv.data_ptr()),
          static_cast<const T*>(k_rope.data_ptr()), static_cast<const P*>(positions.data_ptr()),
          static_cast<const Tc*>(cos.data_ptr()), static_cast<const Tc*>(sin.data_ptr()),
          static_cast<T*>(qo.data_ptr()), static_cast<T*>(ko.data_ptr()),
          static_cast<T*>(vo.data_ptr()), H, n, r, vd, cos.size(0), interleaved);
      R1_CUDA_CHECK_LAUNCH();
    });
  });
}

void mla_qkv_backward_cuda(const Tensor& dqo, const Tensor& dko, const Tensor& dvo,
                           const Tensor& positions, const Tensor& cos, const Tensor& sin,
                           bool interleaved, Tensor& dq, Tensor& dkv, Tensor& dk_rope) {
  R1_CHECK(dqo.dim() == 4 && dko.shape() == dqo.shape() && dvo.dim() == 4 && dk_rope.dim() == 3 &&
               dq.shape() == dqo.shape() && dkv.dim() == 4 && dk_rope.size(2) % 2 == 0 &&
               dqo.size(3) > dk_rope.size(2) && dqo.is_contiguous() && dko.is_contiguous() &&
               dvo.is_contiguous() && dko.dtype() == dqo.dtype() && dvo.dtype() == dqo.dtype() &&
               dq.dtype() == dqo.dtype() && dkv.dtype() == dqo.dtype() &&
               dk_rope.dtype() == dqo.dtype() && positions.numel() == dqo.size(0) * dqo.size(1) &&
               cos.dim() == 2 && cos.shape() == sin.shape() && cos.dtype() == sin.dtype() &&
               cos.size(1) * 2 == dk_rope.size(2) &&
               (cos.dtype() == DType::F32 || cos.dtype() == dqo.dtype()),
           "mla_qkv backward: dqo {}, dko {}, dvo {}, positions {}, cos {}, dq {}, dkv {}, dk_rope {}",
           dqo.str(), dko.str(), dvo.str(), positions.str(), cos.str(), dq.str(), dkv.str(),
           dk_rope.str());
  const int64_t BT = dqo.size(0) * dqo.size(1), H = dqo.size(2), r = dk_rope.size(2);
  const int64_t n = dqo.size(3) - r, vd = dvo.size(3);
  R1_CHECK(dkv.size(3) == n + vd, "mla_qkv backward: dkv {} for n {} and v {}", dkv.str(), n, vd);
  if (BT == 0) return;
  const int dev = dqo.device().index;
  DeviceGuard g(dev);
  const cudaStream_t s = current_stream(dev);
  dispatch_float(dqo.dtype(), "mla_qkv backward", [&](auto xtag) {
    using T = decltype(xtag);
    with_table_and_pos(cos, positions, [&](auto ctag, auto ptag) {
      using Tc = decltype(ctag);
      using P = decltype(ptag);
      mla_qkv_backward_kernel<T, Tc, P><<<static_cast<unsigned>(BT), 128, 0, s>>>(
          static_cast<const T*>(dqo.data_ptr()), static_cast<const T*>(dko.data_ptr()),
          static_cast<const T*>(dvo.data_ptr()), static_cast<const P*>(positions.data_ptr()),
          static_cast<const Tc*>(cos.data_ptr()), static_cast<const Tc*>(sin.data_ptr()),
          static_cast<T*>(dq.data_ptr()), static_cast<T*>(dkv.data_ptr()),
          static_cast<T*>(dk_rope.data_ptr()), H, n, r, vd, cos.size(0), interleaved);
      R1_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace

R1_REGISTER_KERNEL(rmsnorm_forward, CUDA, rmsnorm_forward_cuda);
R1_REGISTER_KERNEL(rmsnorm_backward, CUDA, rmsnorm_backward_cuda);
R1_REGISTER_KERNEL(swiglu_forward, CUDA, swiglu_forward_cuda);
R1_REGISTER_KERNEL(swiglu_quantize_fp8, CUDA, swiglu_quantize_fp8_cuda);
R1_REGISTER_KERNEL(swiglu_quantize_fp8_masked, CUDA, swiglu_quantize_fp8_masked_cuda);
R1_REGISTER_KERNEL(rmsnorm_quantize_fp8, CUDA, rmsnorm_quantize_fp8_cuda);
R1_REGISTER_KERNEL(swiglu_backward, CUDA, swiglu_backward_cuda);
R1_REGISTER_KERNEL(rope, CUDA, rope_cuda);
R1_REGISTER_KERNEL(mla_qkv_forward, CUDA, mla_qkv_forward_cuda);
R1_REGISTER_KERNEL(mla_qkv_backward, CUDA, mla_qkv_backward_cuda);

}  // namespace r1::cuda
