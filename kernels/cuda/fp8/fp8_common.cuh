// Device helpers shared by the FP8 quantizers (quantize.cu) and the kernels that quantize
// their own output (norm_act.cu's swiglu_quantize_fp8): the contract's scale, a warp max, and
// 4-element vector loads and stores of f32 or bf16 data.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdint>

#include "engine/convert.h"
#include "engine/cuda/stream.h"
#include "engine/kernels.h"

namespace r1::cuda::fp8 {

// fn(OutT{}, I{}) for a grouped GEMM's output dtype (f32: float, bf16: uint16_t bits) and its
// offsets' or counts' index dtype (i32 or i64): the launch of one instantiation.
template <class Fn>
void dispatch_out_index(const Tensor& d, const Tensor& idx, Fn&& fn) {
  auto with_index = [&](auto otag) {
    if (idx.dtype() == DType::I32) fn(otag, int32_t{});
    else fn(otag, int64_t{});
  };
  if (d.dtype() == DType::F32) with_index(float{});
  else with_index(uint16_t{});
}

// The contiguous layout's row tiles, numbered in group order (group g has ceil(rows_g /
// tile_m) of them; a tile never straddles two groups), found from the device-side offsets
// (G + 1): tile t -> its group g, the group's first row and row count, and t := the tile's
// index within the group. False past the last tile (the grid bounds the count from above).
template <class I>
__device__ inline bool contiguous_tile(const I* offsets, int64_t groups, int64_t tile_m,
                                       int64_t& t, int64_t& g, int64_t& begin, int64_t& rows) {
  for (g = 0; g < groups; ++g) {
    begin = static_cast<int64_t>(offsets[g]);
    rows = static_cast<int64_t>(offsets[g + 1]) - begin;
    const int64_t tiles = (rows + tile_m - 1) / tile_m;
    if (t < tiles) return true;
    t -= tiles;
  }
  return false;
}

// A 1x128 tile is 4 elements per lane of one warp.
inline constexpr int kPerLane = kFp8Block / 32;

// The grid of a kernel with one warp per 1x128 tile in blocks of `threads` that walks the tiles
// grid-stride: 8 resident blocks per SM fill Hopper's 2048 threads.
inline int warp_per_tile_grid(int64_t tiles, int threads, int device) {
  const int64_t warps = threads / 32, want = (tiles + warps - 1) / warps;
  return static_cast<int>(std::clamp<int64_t>(want, 1, int64_t{sm_count(device)} * 8));
}

// The contract's scale: amax / 448 in f32, 1 for an all-zero tile (as kernels/cpu/fp8.cc).
__device__ inline float scale_from_amax(float amax) {
  const float s = amax / kE4M3Max;  // 0 also when an f32 amax < 224 * 2^-149 underflows
  return s == 0.0f ? 1.0f : s;
}

// f32 -> e4m3 code, the bits of engine/convert.h's f32_to_e4m3 (RNE, subnormals kept, |f| >=
// 448 and inf saturating to +-448, NaN -> sign | 0x7f) from the hardware's
// cvt.rn.satfinite.e4m3x2.f32 (one instruction per pair; convert.h's integer rounding is about
// 20, which with the IEEE division left the quantizers instruction-bound: 0.29-0.39 of the
// copy bandwidth on the H200 at e5d6f34). cvt's NaN is canonical, so a pair holding a NaN
// takes convert.h's codes. e4m3x2_rn: lo in the low byte.
__device__ __forceinline__ uint32_t e4m3x2_rn(float lo, float hi) {
  uint16_t r;
  asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;" : "=h"(r) : "f"(hi), "f"(lo));
  if (lo != lo || hi != hi) return f32_to_e4m3(lo) | uint32_t{f32_to_e4m3(hi)} << 8;
  return r;
}
__device__ __forceinline__ uint8_t e4m3_rn(float v) {
  return static_cast<uint8_t>(e4m3x2_rn(v, 0.0f) & 0xffu);
}
// Four codes in a word, byte i from v[i].
__device__ __forceinline__ uint32_t e4m3x4_rn(float v0, float v1, float v2, float v3) {
  return e4m3x2_rn(v0, v1) | e4m3x2_rn(v2, v3) << 16;
}

__device__ inline float warp_max(float v) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}

// A 1x128 tile held by one warp quantized: v are the lane's values (vec: elements
// kPerLane * lane ..; else lane, lane + 32, ...; zeros past len), q the tile's first code,
// scale its entry. The amax over the warp, the scale (lane 0 writes it), the codes (one 4-byte
// store per lane when vec). quantize_rows_kernel and the kernels that quantize their own
// output call it, so their bits agree by construction.
__device__ __forceinline__ void quantize_tile(const float (&v)[kPerLane], bool vec, int64_t len,
                                              int lane, uint8_t* q, float* scale) {
  float amax = 0.0f;
#pragma unroll
  for (int i = 0; i < kPerLane; ++i) amax = fmaxf(amax, fabsf(v[i]));
  const float s = scale_from_amax(warp_max(amax));
  if (lane == 0) *scale = s;
  if (vec) {
    static_assert(kPerLane == 4);
    *reinterpret_cast<uint32_t*>(q + kPerLane * lane) =
        e4m3x4_rn(v[0] / s, v[1] / s, v[2] / s, v[3] / s);
  } else {
#pragma unroll
    for (int i = 0; i < kPerLane; ++i) {
      const int c = i * 32 + lane;
      if (c < len) q[c] = e4m3_rn(v[i] / s);
    }
  }
}

__device__ inline float load_f32(const float* p, int64_t i) { return p[i]; }
__device__ inline float load_f32(const uint16_t* p, int64_t i) { return bf16_to_f32(p[i]); }

// Four consecutive elements of x at i (16 bytes of f32, 8 of bf16), as f32. i is a multiple of
// 4 and x 16-byte aligned (the caller checks): one vector load.
__device__ inline void load4(const float* x, int64_t i, float (&v)[4]) {
  const float4 u = *reinterpret_cast<const float4*>(x + i);
  v[0] = u.x, v[1] = u.y, v[2] = u.z, v[3] = u.w;
}
__device__ inline void load4(const uint16_t* x, int64_t i, float (&v)[4]) {
  const uint2 u = *reinterpret_cast<const uint2*>(x + i);
  v[0] = bf16_to_f32(static_cast<uint16_t>(u.x)), v[1] = bf16_to_f32(static_cast<uint16_t>(u.x >> 16));
  v[2] = bf16_to_f32(static_cast<uint16_t>(u.y)), v[3] = bf16_to_f32(static_cast<uint16_t>(u.y >> 16));
}

// Stores v rounded to x's dtype and leaves in v the stored values (what a reader gets back).
__device__ inline void store4(float* x, int64_t i, float (&v)[4]) {
  *reinterpret_cast<float4*>(x + i) = make_float4(v[0], v[1], v[2], v[3]);
}
__device__ inline void store4(uint16_t* x, int64_t i, float (&v)[4]) {
  uint16_t h[4];
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    h[k] = f32_to_bf16(v[k]);
    v[k] = bf16_to_f32(h[k]);
  }
  *reinterpret_cast<uint2*>(x + i) = make_uint2(uint32_t{h[0]} | (uint32_t{h[1]} << 16),
                                                uint32_t{h[2]} | (uint32_t{h[3]} << 16));
}
__device__ inline void store1(float* x, int64_t i, float& v) { x[i] = v; }
__device__ inline void store1(uint16_t* x, int64_t i, float& v) {
  const uint16_t h = f32_to_bf16(v);
  x[i] = h;
  v = bf16_to_f32(h);
}

}  // namespace r1::cuda::fp8
