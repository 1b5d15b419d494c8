// cuBLASLt FP8 GEMM baselines on raw device pointers, for the FP8 GEMM's tests and benchmark
// (bench/bench_fp8_gemm.cc): the same function as gemm_fp8_blockscaled (engine/kernels.h)
// through cuBLASLt's Hopper block scaling (cuBLAS >= 12.9), and the older per-tensor FP8.
//
// Shapes are a linear layer's forward, row-major: d (M, N) = a (M, K) @ b (N, K)^T, a and b
// e4m3. cuBLASLt needs FP8 operands in "TN" form, which is exactly this (see the .cu).
//
// Scale layouts. cuBLASLt does not read r1's scale tensors as they are:
//  - a's 1x128 scales (CUBLASLT_MATMUL_MATRIX_SCALE_VEC128_32F): r1 stores (M, KB) row-major;
//    cuBLASLt wants them outer-dimension-major, element (m, kb) at kb * M + m.
//  - b's 128x128 scales (CUBLASLT_MATMUL_MATRIX_SCALE_BLK128x128_32F): r1 stores (NB, KB)
//    row-major; cuBLASLt wants element (nb, kb) at nb * round_up(KB, 4) + kb (each block
//    row padded to a multiple of 4 floats, 16 bytes).
// Sources: PyTorch aten/src/ATen/native/cuda/ScaledBlas.cpp (_scaled_block1x128_block128x128
// checks scale_a strides (1, M) and scale_b shape (round_up(KB, 4), NB) strides
// (1, round_up(KB, 4)), for the same memory as r1's a and b), and NVIDIA
// CUDALibrarySamples cuBLASLt/Common/helpers.h (getScaleTensorSize: VEC128 ceil(K/128) * M
// floats, BLK128x128 round_up(ceil(K/128), 4) * ceil(N/128)). cublaslt_fp8_scales_from_r1
// rewrites r1's scales into these layouts.
//
// Not batch invariant (the heuristic picks the algorithm from the whole shape; see
// kernels/cuda/gemm_cublaslt.h). Accumulation: CUBLASLT_MATMUL_DESC_FAST_ACCUM stays 0.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "engine/dtype.h"

namespace r1::cuda {

// Floats in cuBLASLt's scale tensors for a (M, K) (VEC128) and b (N, K) (BLK128x128).
int64_t cublaslt_vec128_scales_size(int64_t m, int64_t k);
int64_t cublaslt_blk128_scales_size(int64_t n, int64_t k);

// a_scales (M, KB), b_scales (NB, KB) (r1's layouts, device) -> a_lt
// (cublaslt_vec128_scales_size floats), b_lt (cublaslt_blk128_scales_size floats; the padding
// is written as 0), on `stream`.
void cublaslt_fp8_scales_from_r1(const float* a_scales, const float* b_scales, float* a_lt,
                                 float* b_lt, int64_t m, int64_t n, int64_t k,
                                 cudaStream_t stream);

// d (M, N) `out` (BF16 or F32) := the block-scaled product of gemm_fp8_blockscaled, with the
// scales in cuBLASLt's layouts (cublaslt_fp8_scales_from_r1). Raw device pointers on the
// current device, 16-byte aligned; K a multiple of 16 (FP8 leading dimensions are 16-byte
// multiples). Throws naming the shape when cuBLASLt has no algorithm for it.
void cublaslt_gemm_fp8_blockscaled(const void* a_q, const float* a_scales_lt, const void* b_q,
                                   const float* b_scales_lt, void* d, DType out, int64_t m,
                                   int64_t n, int64_t k, cudaStream_t stream);

// The 1D1D form (engine/kernels.h: b with 1x128 row scales, wgrad's product): both operands'
// scales in the VEC128 layout. scales (rows, KB) r1 layout -> lt (cublaslt_vec128_scales_size
// (rows, k) floats), on `stream`; then d := the product with VEC128 scales on both sides.
// Whether cuBLASLt has an algorithm for VEC128 x VEC128 is its own business: when it has
// none, the call throws naming the shape (the benchmark row says so).
void cublaslt_vec128_scales_from_r1(const float* scales, float* lt, int64_t rows, int64_t k,
                                    cudaStream_t stream);
void cublaslt_gemm_fp8_1d1d(const void* a_q, const float* a_scales_lt, const void* b_q,
                            const float* b_scales_lt, void* d, DType out, int64_t m, int64_t n,
                            int64_t k, cudaStream_t stream);

// d (M, N) `out` (BF16 or F32) := a_scale * b_scale * (a_q @ b_q^T): one fp32 scale per
// tensor (device pointers to one float each). Same pointer and shape rules as above.
void cublaslt_gemm_fp8_tensorwise(const void* a_q, const float* a_scale, const void* b_q,
                                  const float* b_scale, void* d, DType out, int64_t m, int64_t n,
                                  int64_t k, cudaStream_t stream);

}  // namespace r1::cuda
