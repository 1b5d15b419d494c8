// The per-element arithmetic of the CUDA RMSNorm kernels, written with explicit _rn
// operations so that no FMA contraction is left to the compiler: every kernel that computes a
// row (the register and two-read kernels, the fused fp8 forward, the pipelined ones of
// norm_pipe.cu) gives the same bits for it, whichever of them a launcher picks (batch
// invariance, DESIGN.md: the pick may depend on pointer alignment or an A/B switch, never on
// a row's bits). The CPU reference (kernels/cpu/rmsnorm.cc) is matched within tolerance.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace r1::cuda::rms {

// The row's sum of squares, one element at a time in the thread's chunk order.
__device__ __forceinline__ float sumsq(float ss, float x) { return __fmaf_rn(x, x, ss); }
// rstd = 1 / sqrt(ss / D + eps), each step rounded once (IEEE division and square root).
__device__ __forceinline__ float rstd(float ss, int64_t D, float eps) {
  return __fdiv_rn(1.0f, __fsqrt_rn(__fadd_rn(__fdiv_rn(ss, static_cast<float>(D)), eps)));
}
// y = (x rstd) w.
__device__ __forceinline__ float y(float x, float r, float w) {
  return __fmul_rn(__fmul_rn(x, r), w);
}
// The backward's dot += (w dy) x.
__device__ __forceinline__ float dot(float d, float w, float g, float x) {
  return __fmaf_rn(__fmul_rn(w, g), x, d);
}
// cf = dot rstd^2 / D.
__device__ __forceinline__ float coef(float d, float r, int64_t D) {
  return __fdiv_rn(__fmul_rn(__fmul_rn(d, r), r), static_cast<float>(D));
}
// dx = rstd (w dy - x cf).
__device__ __forceinline__ float dx(float r, float w, float g, float x, float cf) {
  return __fmul_rn(r, __fsub_rn(__fmul_rn(w, g), __fmul_rn(x, cf)));
}
// A dw partial += (dy x) rstd.
__device__ __forceinline__ float dw(float a, float g, float x, float r) {
  return __fmaf_rn(__fmul_rn(g, x), r, a);
}

}  // namespace r1::cuda::rms
