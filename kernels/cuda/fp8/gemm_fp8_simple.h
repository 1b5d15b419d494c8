// The simple CUDA FP8 GEMMs (CUDA cores, one 64x64 tile per block): the on-GPU oracle of the
// tensor-core kernels, and the fallback for shapes they refuse. Contracts: gemm_fp8_blockscaled,
// gemm_fp8_grouped_contiguous, gemm_fp8_grouped_masked in engine/kernels.h.
#pragma once
#include "engine/tensor.h"

namespace r1::cuda {

void gemm_fp8_blockscaled_simple(const Tensor& a_q, const Tensor& a_scales, const Tensor& b_q,
                                 const Tensor& b_scales, Tensor& d);
void gemm_fp8_grouped_contiguous_simple(const Tensor& a_q, const Tensor& a_scales,
                                        const Tensor& b_q, const Tensor& b_scales,
                                        const Tensor& offsets, Tensor& d);
void gemm_fp8_grouped_masked_simple(const Tensor& a_q, const Tensor& a_scales, const Tensor& b_q,
                                    const Tensor& b_scales, const Tensor& counts, Tensor& d);

}  // namespace r1::cuda
