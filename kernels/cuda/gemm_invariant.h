// The CUDA gemm under r1::batch_invariant() (engine/determinism.h): the whole gemm contract
// (engine/kernels.h: batched, broadcast, either operand transposed, alpha, beta; f32 or bf16)
// with every element of c one chain over k in order,
//     s = 0;  for k = 0 .. K-1: s = fma(op(a)[i, k], op(b)[k, j], s)
//     t = alpha == 1 ? s : alpha * s;  c[i, j] = beta == 0 ? t : fma(beta, c[i, j], t)
// in fp32 (bf16 operands widened exactly, the result rounded to bf16 once). That is the CPU's
// invariant product with FMA (kernels/cpu/gemm_invariant.h), so for f32 the CUDA bits equal
// the CPU's (avx2/avx512) bit for bit, and a row of c depends on its own row of op(a), op(b),
// alpha, beta and c only: not on M, N, the batch or the rows that share the launch. cuBLASLt
// (the gemm otherwise) chooses its algorithm from the whole problem, so the rollout's decode
// and the trainer's recomputation differed in the last bits on CUDA (the H200 GRPO run of
// ee1d294: logprob_mismatch_max 1.5e-5, against 0 on the CPU).
//
// CUDA cores (fp32 FMA), not tensor cores: a 64x64 tile per block, 4x4 elements per thread,
// k in steps of 16 through shared memory. The rollout and scoring path of the tiny models;
// gemm_bf16_nt_invariant (tensor cores, its own fixed order) is the faster bf16 linear
// forward, not wired in (its bits differ from this chain, and every product of a logical
// computation must take one kernel).
#pragma once
#include "engine/tensor.h"

namespace r1::cuda {

// c (B, M, N) := alpha op(a) op(b) + beta c, as the gemm kernel (engine/kernels.h); f32 or
// bf16, on the current stream. The launch only: the caller (the CUDA gemm, gemm_cublaslt.cu)
// has checked the operands (check_gemm_operands) and handled the cases without a product
// term, so B, M, N, K > 0 and alpha != 0 here.
void gemm_invariant(const Tensor& a, const Tensor& b, Tensor& c, bool trans_a, bool trans_b,
                    double alpha, double beta);

// Whether the CUDA gemm takes gemm_invariant under batch_invariant(): once it has passed on
// a GPU (kInvariantGemmValidated in gemm_cublaslt.cu), or R1_INVARIANT_GEMM=1; cuBLASLt
// otherwise. set_invariant_gemm(1 / 0) forces it on or off (tests), -1 restores the default.
bool invariant_gemm_enabled();
void set_invariant_gemm(int mode);

}  // namespace r1::cuda
