// FP8 training for linear layers (DeepSeek-V3's recipe, arXiv 2412.19437 sec. 3.3): fprop,
// dgrad and wgrad all run the block-scaled E4M3 GEMM (engine/kernels.h, gemm_fp8_blockscaled);
// master weights and every other op stay in the caller's precision.
//
//   fprop  y  = x w^T     : x quantized per 1x128 tile (rows, along K), w per 128x128 block
//   dgrad  dx = dy w      : dy per 1x128 tile (along N), w^T (K, N) per 128x128 block (fprop's
//                           quantized w, transposed: the same blocks, so the same bits)
//   wgrad  dw = dy^T x    : dy^T and x^T both per 1x128 tile along the tokens (M), read in
//                           place (quantize_fp8_rows_transposed), the 1D1D GEMM
// Each GEMM's fp32 partial sums are promoted every 128 of its K (for wgrad, every 128 tokens).
// This is the paper's tiling for all three (sec. 3.3: activations and gradients in 1x128
// tiles, weights in 128x128 blocks; the activations the backward reads are "converted from a
// 1x128 quantization tile to a 128x1 tile", i.e. x^T along the tokens). Until 2026-11-30 wgrad's x^T took 128x128 blocks
// (coarser); docs/fp8.md gives what the change measured.
#pragma once
#include "engine/ops.h"
#include "engine/tensor.h"

namespace r1 {

// x (..., K), w (N, K), both f32 (CPU, CUDA) or bf16 (CUDA) -> (..., N) of x's dtype.
// Differentiable w.r.t. x and w (the gradients are the FP8 GEMMs above, not the exact ones).
// x_quantized: x's quantization when the producer already made it (swiglu with an Fp8Rows
// output: the fused kernel), skipping fprop's quantize of x; it must be exactly what
// quantize_fp8_rows gives for x viewed as (rows, K).
Tensor linear_fp8(const Tensor& x, const Tensor& w, const Fp8Rows* x_quantized = nullptr);

// MoE experts as one grouped layer: x (M, K) holds G groups of rows, group g at rows
// [offsets[g], offsets[g+1]) (offsets: G + 1 values from 0 to M, on the host; empty groups
// allowed), ws the G weights (N, K), one dtype and device with x -> (M, N), group g's rows
// times ws[g]^T. Per row the bits of linear_fp8(x_g, ws[g]) and its gradients (fprop and
// dgrad: the contiguous grouped GEMM, one launch for all groups where the backend prefers it
// (gemm_fp8_grouped_preferred), else a dense GEMM per group on row slices; wgrad: the 1D1D
// GEMM per group, its tokens tiled from the group's first row). Differentiable w.r.t. x and
// each ws[g]; an empty group's weight gets no gradient (as an expert no token chose).
// x_quantized as linear_fp8's (quantize_fp8_rows of x (M, K)).
Tensor grouped_linear_fp8(const Tensor& x, const std::vector<Tensor>& ws,
                          const std::vector<int64_t>& offsets,
                          const Fp8Rows* x_quantized = nullptr);

// G weights (N, K), one shape, dtype and device -> q (G, N, K) e4m3, scales (G, NB, KB) f32:
// each slice the 128x128 quantization linear_fp8 makes of that weight (the grouped GEMMs'
// b operand: grouped_linear_fp8, and the fp8 decode's stacked experts).
struct Fp8Blocks {
  Tensor q, scales;
};
Fp8Blocks fp8_quantize_weight_stack(const std::vector<Tensor>& ws);

// x (..., K) f32 or bf16 -> its 1x128 quantization as linear_fp8 makes it (rows = numel / K),
// for several linear_fp8 calls that share an input (q_a and kv_a, gate and up): one quantize.
Fp8Rows fp8_quantize_rows(const Tensor& x);

// The values an FP8 GEMM multiplies, as a tensor of dtype dt: each code times its tile's
// scale (rows: q (M, K) with scales (M, KB), quantize_fp8_rows; blocks: q (N, K) with scales
// (NB, KB), quantize_fp8_blocks). For a form of a layer that does not run the GEMM itself
// (the absorbed MLA decode multiplies kv_b's weight in another order): the same operands, so
// the same function up to the rounding of the arithmetic. Forward only.
Tensor fp8_dequantize_rows(const Fp8Rows& q, DType dt);
Tensor fp8_dequantize_blocks(const Tensor& q, const Tensor& scales, DType dt);
// w (N, K) f32/bf16 -> fp8_dequantize_blocks of its quantize_fp8_blocks, in w's dtype: the
// weight linear_fp8 multiplies.
Tensor fp8_weight_as_used(const Tensor& w);

// The bf16 baseline the FP8 recipe is measured against (DeepSeek-V3 compares FP8 training
// with BF16 training), for the same layers: every GEMM of the layer (fprop, dgrad, wgrad)
// takes bf16 operands, accumulates in fp32 and writes a bf16 result, as a bf16 GEMM under
// mixed precision does (PyTorch autocast: the weight's gradient comes out of the bf16 GEMM
// too); master weights stay in their own dtype. f32 tensors: each operand and result is
// rounded to bf16 (RNE) around an f32 GEMM, i.e. a bf16 GEMM with fp32 accumulation emulated
// exactly up to the accumulation order; bf16 tensors: plain linear.
Tensor linear_bf16(const Tensor& x, const Tensor& w);

}  // namespace r1
