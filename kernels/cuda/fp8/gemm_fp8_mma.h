// The first tensor-core FP8 block-scaled GEMM: warp-level mma.sync (m16n8k32, e4m3 x e4m3 ->
// f32, sm_89+), one 128x128 output tile per block, k-blocks of 128 staged through shared
// memory, the DeepSeek-V3 promotion (each k-block's fp32 tensor-core partial scaled and added
// to an fp32 register accumulator). The same function as gemm_fp8_blockscaled
// (engine/kernels.h); the simple kernel (gemm_fp8_simple.cu) stays the registered CUDA
// implementation until this one has passed its tests on a GPU (tests/test_fp8.cc,
// Fp8Cuda.MmaGemmMatchesReference), and it is the step before the wgmma/TMA kernel.
#pragma once
#include "engine/tensor.h"

namespace r1::cuda {

// a_q (M, K) e4m3, a_scales (M, KB) f32, b_q (N, K) e4m3, b_scales (NB, KB) f32 or (N, KB)
// (1D1D, see engine/kernels.h) -> d (M, N) f32 or bf16, on the current stream. K must be a multiple of 16 (16-byte rows); any M, N.
// stages: 1 (load then compute) or 2 (cp.async double buffering); the same result.
void gemm_fp8_blockscaled_mma(const Tensor& a_q, const Tensor& a_scales, const Tensor& b_q,
                              const Tensor& b_scales, Tensor& d, int stages = 2);

// The grouped forms (contracts: gemm_fp8_grouped_contiguous / _masked, engine/kernels.h) on
// the two-stage kernel, one launch for all groups, offsets or counts read on the device; K a
// multiple of 16, 16-byte aligned a_q and b_q. Not yet run on a GPU (the dispatch keeps the
// simple kernel for grouped products until Fp8Cuda.MmaGroupedGemmsMatchReference passes).
void gemm_fp8_grouped_contiguous_mma(const Tensor& a_q, const Tensor& a_scales,
                                     const Tensor& b_q, const Tensor& b_scales,
                                     const Tensor& offsets, Tensor& d);
void gemm_fp8_grouped_masked_mma(const Tensor& a_q, const Tensor& a_scales, const Tensor& b_q,
                                 const Tensor& b_scales, const Tensor& counts, Tensor& d);

// The k-grouped form (contract: gemm_fp8_kgrouped, engine/kernels.h), one launch for all
// groups (z), the k offsets read on the device; Kt a multiple of 128, 16-byte aligned a_q
// and b_q. The CUDA registration of gemm_fp8_kgrouped. Not yet run on a GPU.
void gemm_fp8_kgrouped_mma(const Tensor& a_q, const Tensor& a_scales, const Tensor& b_q,
                           const Tensor& b_scales, const Tensor& k_offsets, Tensor& d);

}  // namespace r1::cuda
