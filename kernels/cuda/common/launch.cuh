// Launch and load/store helpers shared by the CUDA kernels: grid sizing, grid-stride indices,
// the f32/bf16 storage types (bf16 as uint16_t bits, rounded RNE as engine/convert.h does on
// the CPU), the dtype dispatch, and 16-byte chunk loads/stores for per-row kernels.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "engine/convert.h"
#include "engine/cuda/stream.h"
#include "engine/error.h"

namespace r1::cuda {

inline constexpr int kThreads = 256;
// 8 resident blocks of 256 threads fill Hopper's 2048 threads per SM; a grid-stride loop
// covers the rest, so no launch is larger than the machine.
inline constexpr int kBlocksPerSm = 8;

// Blocks of kThreads for `items` work items, capped at kBlocksPerSm per SM.
inline int grid_for(int64_t items, int device) {
  const int64_t want = (items + kThreads - 1) / kThreads;
  const int64_t cap = int64_t{sm_count(device)} * kBlocksPerSm;
  return static_cast<int>(std::clamp<int64_t>(want, 1, cap));
}

__host__ __device__ inline bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15) == 0;
}

__device__ inline int64_t global_thread() {
  return int64_t{blockIdx.x} * blockDim.x + threadIdx.x;
}
__device__ inline int64_t grid_threads() { return int64_t{gridDim.x} * blockDim.x; }

// Storage type <-> fp32: f32 as is, bf16 bits rounded RNE, the same bits as engine/convert.h
// on the CPU. The rounding is the hardware's cvt.rn (one instruction for a value, one for a
// pair) instead of convert.h's integer sequence (about 8 instructions a value): in the bf16
// row kernels that sequence doubled the instructions per element, and their time per element
// was nearly f32's at half the bytes (H200, e5d6f34: RMSNorm forward 202-223 us bf16 against
// 260 us f32 for the same N x D) -- per-element work, not bandwidth. cvt.rn is IEEE RNE for
// every finite value and infinity (subnormals kept: no .ftz), so only a NaN differs: cvt
// gives the canonical 0x7fff, convert.h keeps the sign and the payload's top with the quiet
// bit set. A NaN takes convert.h's value here too.
__device__ inline float to_f32(float v) { return v; }
__device__ inline float to_f32(uint16_t v) { return bf16_to_f32(v); }
__device__ __forceinline__ uint16_t bf16_rn(float v) {
  uint16_t h;
  asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(v));
  return v != v ? static_cast<uint16_t>((__float_as_uint(v) >> 16) | 0x40u) : h;
}
// lo and hi as one word of two bf16 (lo in the low half: element 2j of a little-endian
// pair), RNE; a NaN's half is the cvt's canonical one (pack_chunk mends it).
__device__ __forceinline__ uint32_t bf16x2_rn(float lo, float hi) {
  uint32_t r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
}
template <class T>
__device__ inline T from_f32(float v) {
  if constexpr (std::is_same_v<T, float>) return v;
  else return bf16_rn(v);
}

// Calls fn(float{}) or fn(uint16_t{}) (bf16 bits) for the dtype; others are an error naming op.
template <class Fn>
void dispatch_float(DType t, const char* op, Fn&& fn) {
  switch (t) {
    case DType::F32: return fn(float{});
    case DType::BF16: return fn(uint16_t{});
    default: break;
  }
  R1_CHECK(false, "{}: CUDA kernels take f32 or bf16, got {}", op, dtype_name(t));
}

// ---- per-row kernels: 16-byte chunks -------------------------------------------------------

template <class T>
inline constexpr int kVec = 16 / sizeof(T);  // elements per 16-byte chunk

inline constexpr int kChunksPerThread = 4;  // about 4 chunks per thread before tpr doubles
// At most 512 threads per row group, and per-row kernels declare __launch_bounds__ of it: at
// 1024 threads a kernel over 64 registers cannot launch ("too many resources requested",
// which the H200 run of ee1d294 hit in softmax backward and cross-entropy forward).
inline constexpr int kMaxRowThreads = 512;

// Threads per row: a power of two in [32, kMaxRowThreads] giving each about `per_thread`
// chunks.
// A function of the row length only, so a row's reduction order never depends on N.
inline int row_threads(int64_t chunks, int per_thread = kChunksPerThread) {
  int t = 32;
  while (t < kMaxRowThreads && int64_t{t} * per_thread < chunks) t *= 2;
  return t;
}

// Word i (0..3, a compile-time constant once unrolled) of a 16-byte chunk.
__device__ __forceinline__ uint32_t chunk_word(const uint4& r, int i) {
  return i == 0 ? r.x : i == 1 ? r.y : i == 2 ? r.z : r.w;
}

// Element k of a raw 16-byte chunk of T as fp32: one shift or mask for bf16 (element 2j is
// word j's low half).
template <class T>
__device__ __forceinline__ float chunk_elem(const uint4& raw, int k) {
  if constexpr (sizeof(T) == 4) {
    return __uint_as_float(chunk_word(raw, k));
  } else {
    const uint32_t w = chunk_word(raw, k / 2);
    return __uint_as_float(k % 2 == 0 ? w << 16 : w & 0xffff0000u);
  }
}

template <class T>
__device__ __forceinline__ void unpack_chunk(const uint4& raw, float (&f)[kVec<T>]) {
#pragma unroll
  for (int k = 0; k < kVec<T>; ++k) f[k] = chunk_elem<T>(raw, k);
}

// kVec<T> fp32 values as a raw chunk of T: for bf16 four cvt.rn.bf16x2 and, only when a value
// is NaN, convert.h's NaN bits (bf16_rn) in place of the cvt's canonical one.
template <class T>
__device__ __forceinline__ uint4 pack_chunk(const float (&f)[kVec<T>]) {
  if constexpr (sizeof(T) == 4) {
    return make_uint4(__float_as_uint(f[0]), __float_as_uint(f[1]), __float_as_uint(f[2]),
                      __float_as_uint(f[3]));
  } else {
    uint4 u = make_uint4(bf16x2_rn(f[0], f[1]), bf16x2_rn(f[2], f[3]), bf16x2_rn(f[4], f[5]),
                         bf16x2_rn(f[6], f[7]));
    bool nan = false;
#pragma unroll
    for (int k = 0; k < 8; ++k) nan |= f[k] != f[k];
    if (nan) {
      u = make_uint4(bf16_rn(f[0]) | uint32_t{bf16_rn(f[1])} << 16,
                     bf16_rn(f[2]) | uint32_t{bf16_rn(f[3])} << 16,
                     bf16_rn(f[4]) | uint32_t{bf16_rn(f[5])} << 16,
                     bf16_rn(f[6]) | uint32_t{bf16_rn(f[7])} << 16);
    }
    return u;
  }
}

// f[k] := p[i0 + k] as fp32 for the chunk's elements below n; returns how many (<= kVec).
// One 16-byte load when the chunk is whole and aligned, else scalar loads (same values).
template <class T>
__device__ inline int load_chunk(const T* p, int64_t i0, int64_t n, float (&f)[kVec<T>]) {
  constexpr int kV = kVec<T>;
  if (i0 + kV <= n && aligned16(p + i0)) {
    unpack_chunk<T>(*reinterpret_cast<const uint4*>(p + i0), f);
    return kV;
  }
  const int cnt = static_cast<int>(n - i0 < kV ? n - i0 : kV);
#pragma unroll
  for (int k = 0; k < kV; ++k) f[k] = k < cnt ? to_f32(p[i0 + k]) : 0.0f;
  return cnt;
}

// p[i0 + k] := f[k] for the chunk's elements below n (the mirror of load_chunk).
template <class T>
__device__ inline void store_chunk(T* p, int64_t i0, int64_t n, const float (&f)[kVec<T>]) {
  constexpr int kV = kVec<T>;
  if (i0 + kV <= n && aligned16(p + i0)) {
    *reinterpret_cast<uint4*>(p + i0) = pack_chunk<T>(f);
    return;
  }
#pragma unroll
  for (int k = 0; k < kV; ++k)
    if (i0 + k < n) p[i0 + k] = from_f32<T>(f[k]);
}

// Chunks per thread in one step of a row walk (RowChunks) for the kernels without a tuned
// shape (softmax): 4 for f32 (64 bytes in flight per thread), 8 for bf16 (128 bytes); both
// keep 4 registers per chunk (the raw 16 bytes). Measured on an H200 (N = 16384, D = 7168):
// with 4 chunks of either type converted to fp32 on load, the bf16 RMSNorm backward held 153
// registers (one block per SM: 0.22 of the copy bandwidth).
template <class T>
inline constexpr int kRowChunks = sizeof(T) == 2 ? 8 : 4;

// Threads per row for rows of T walked in RowChunks steps (row_threads with kRowChunks<T>).
template <class T>
inline int row_threads_for(int64_t chunks) {
  return row_threads(chunks, kRowChunks<T>);
}

// Compile-time shapes of the row kernels with a reduction (RMSNorm forward and backward,
// cross-entropy forward):
//   C          16-byte chunks per thread per step of the row walk (RowChunks)
//   MinBlocks  the __launch_bounds__ occupancy hint for blocks of up to kMaxRowThreads
//              (2 caps a thread at 64 registers, 3 at 42, 4 at 32: all 2048 threads of an SM)
//   MaxTpr     the most threads per row (32: a warp per row, no block-wide syncs)
// Each kernel runs its tuned default per dtype (kRowDefaults) unless R1_ROW_VARIANT names a
// variant for all of them (read once), so that one GPU session can test and benchmark every
// variant (scripts/gpu-check.sh R1_GPU_AB) and the defaults come from numbers.
struct RowVariant {
  int chunks, min_blocks, max_tpr;
};
inline constexpr RowVariant kRowVariants[] = {
    {2, 4, kMaxRowThreads}, {4, 3, kMaxRowThreads}, {2, 4, 32}, {4, 3, 32},
    {8, 2, kMaxRowThreads}, {1, 4, kMaxRowThreads}, {2, 2, kMaxRowThreads}, {4, 2, 32}};
inline constexpr int kNumRowVariants = 8;
int row_variant();  // kernels/cuda/common/row_variant.cu: R1_ROW_VARIANT, -1 when unset

// Lets `kernel` launch with `bytes` of dynamic shared memory on the current device (above the
// default 48 KB a launch must opt in): the driver call happens once per kernel, device and
// larger size, not per launch (about a microsecond of host time each, which decided the
// time of small GEMMs launched back to back). kernels/cuda/common/smem_opt_in.cu.
void opt_in_dynamic_smem(const void* kernel, int bytes);

enum class RowKernel { RmsNormForward, RmsNormBackward, CrossEntropyForward };

// The default variant of each kernel for {f32, bf16}, from the sweep on an H200 at e5d6f34
// (bench/results/nvidia-h200-2026-11-30-e5d6f34.md; N = 16384 x D = 7168 RMSNorm,
// N = 4096 x V = 129280 cross-entropy), the fraction of the copy bandwidth it reached:
//   RMSNorm forward      f32: 5 (0.85)  bf16: 4 (0.55)
//   RMSNorm backward     f32: 6 (0.67)  bf16: 6 (0.46)
//   cross-entropy fwd    f32: 5 (0.92)  bf16: 5 (0.68)
inline constexpr int kRowDefaults[3][2] = {{5, 4}, {6, 6}, {5, 5}};

// Threads per row for a variant: row_threads capped at max_tpr.
inline int row_threads_capped(int64_t chunks, int per_thread, int max_tpr) {
  return std::min(row_threads(chunks, per_thread), max_tpr);
}

// Calls fn.template operator()<C, MinBlocks>(max_tpr) for kernel k's variant on rows of T.
template <class T, class Fn>
void dispatch_row_variant(RowKernel k, Fn&& fn) {
  constexpr auto v = kRowVariants;
  const int env = row_variant();
  const int i = env >= 0 ? env : kRowDefaults[static_cast<int>(k)][sizeof(T) == 2 ? 1 : 0];
  switch (i) {
    case 1: return fn.template operator()<v[1].chunks, v[1].min_blocks>(v[1].max_tpr);
    case 2: return fn.template operator()<v[2].chunks, v[2].min_blocks>(v[2].max_tpr);
    case 3: return fn.template operator()<v[3].chunks, v[3].min_blocks>(v[3].max_tpr);
    case 4: return fn.template operator()<v[4].chunks, v[4].min_blocks>(v[4].max_tpr);
    case 5: return fn.template operator()<v[5].chunks, v[5].min_blocks>(v[5].max_tpr);
    case 6: return fn.template operator()<v[6].chunks, v[6].min_blocks>(v[6].max_tpr);
    case 7: return fn.template operator()<v[7].chunks, v[7].min_blocks>(v[7].max_tpr);
    default: return fn.template operator()<v[0].chunks, v[0].min_blocks>(v[0].max_tpr);
  }
}

// A thread's kRowChunks<T> chunks of a row walk, loaded all at once (that many 16-byte loads
// in flight instead of one): chunks base, base + tpr * kVec, ... kept raw (4 registers each,
// converted to fp32 where used: at(u, k)), with their element counts (0 past the row's end
// n; elements past cnt read as 0). Per-row kernels keep them in registers between passes
// when the row fits (n <= tpr * kRowChunks<T> * kVec<T>).
template <class T, int C = kRowChunks<T>>
struct RowChunks {
  static constexpr int kC = C;
  uint4 raw[kC];
  int cnt[kC];
  __device__ float at(int u, int k) const { return chunk_elem<T>(raw[u], k); }
};

// raw := the 16 bytes at p + i0 (one vector load when whole and aligned, else element by
// element, zero past n); returns the element count (<= kVec).
template <class T>
__device__ inline int load_chunk_raw(const T* p, int64_t i0, int64_t n, uint4& raw) {
  constexpr int kV = kVec<T>;
  if (i0 + kV <= n && aligned16(p + i0)) {
    raw = *reinterpret_cast<const uint4*>(p + i0);
    return kV;
  }
  const int cnt = static_cast<int>(n - i0 < kV ? n - i0 : kV);
  T e[kV];
#pragma unroll
  for (int k = 0; k < kV; ++k) e[k] = k < cnt ? p[i0 + k] : T{};
  memcpy(&raw, e, 16);
  return cnt;
}

template <class T, int C>
__device__ inline void load_row_chunks(const T* p, int64_t base, int64_t n, int tpr,
                                       RowChunks<T, C>& c) {
#pragma unroll
  for (int u = 0; u < C; ++u) {
    const int64_t i0 = base + int64_t{u} * tpr * kVec<T>;
    c.cnt[u] = i0 < n ? load_chunk_raw(p, i0, n, c.raw[u]) : 0;
    if (i0 >= n) c.raw[u] = make_uint4(0, 0, 0, 0);
  }
}

// ---- per-row reductions ---------------------------------------------------------------------

// The value of the lane `k` away (xor) in the warp. Other value types (structs of floats)
// overload it beside their definition; group_reduce finds them by argument lookup.
__device__ inline float shfl_xor(float v, int k) { return __shfl_xor_sync(0xffffffffu, v, k); }

// Combines v over the tpr consecutive threads of a row group (tpr a power of two, 32..512)
// and returns it to all of them (bit for bit the same on all: op must be commutative in its
// rounding, as + and an explicitly rounded merge are): butterfly within warps, then the group's warp results in
// warp order from shared memory (broadcast reads). Every thread of the block must call it.
template <class V, class Op>
__device__ inline V group_reduce(V v, Op op, V* smem, int tpr) {
#pragma unroll
  for (int k = 16; k > 0; k /= 2) {
    v = op(v, shfl_xor(v, k));
  }
  if (tpr <= 32) return v;
  const int warp = threadIdx.x / 32, warps = tpr / 32, first = warp / warps * warps;
  __syncthreads();  // the previous call's readers are done with smem
  if (threadIdx.x % 32 == 0) smem[warp] = v;
  __syncthreads();
  V r = smem[first];
  for (int k = 1; k < warps; ++k) r = op(r, smem[first + k]);
  return r;
}

struct Add {
  __device__ float operator()(float a, float b) const { return a + b; }
};

}  // namespace r1::cuda
