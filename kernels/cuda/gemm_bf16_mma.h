// A batch-invariant bf16 GEMM for the linear-layer forward: d (M, N) = a (M, K) @ b (N, K)^T,
// bf16 inputs, fp32 accumulation on tensor cores (mma.sync m16n8k16), d bf16 or f32.
//
// Why it exists beside cuBLASLt: DESIGN.md's batch invariance. cuBLASLt picks its algorithm
// (tile shape, split-K, the order of the K sum) from the whole problem, M included, so a
// rollout that decodes 1 row and a trainer that recomputes 4096 rows can differ in the last
// bits. Here every output element is one fp32 accumulator walking K in 64-wide tiles in
// order, whatever M is, where the row sits in the batch, or what its neighbours are: row m of
// the result is a function of row m of a and of b only. Tested bitwise (tests/
// test_cuda_gemm.cc) and benchmarked beside cuBLASLt (bench/bench_cuda_kernels.cc).
// Not registered as the engine's gemm until it has passed on a GPU.
#pragma once
#include "engine/tensor.h"

namespace r1::cuda {

// a (M, K) bf16, b (N, K) bf16, both contiguous and 16-byte aligned, K a multiple of 8 (rows
// of whole 16-byte chunks) -> d (M, N) bf16 or f32, on the current stream. stages: 1 (load,
// then compute) or 2 (cp.async double buffering); the same bits either way.
void gemm_bf16_nt_invariant(const Tensor& a, const Tensor& b, Tensor& d, int stages = 2);

}  // namespace r1::cuda
