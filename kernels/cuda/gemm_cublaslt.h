// The cuBLASLt GEMM on raw device pointers, for benchmarks that measure the bf16 ceiling the
// hand-written GEMM aims at. The tensor kernel (r1::kernels::gemm on CUDA) goes through the
// same code in gemm_cublaslt.cu, so what this times is what training runs today.
//
// Not batch invariant: cuBLASLt's heuristic picks the algorithm (tile shape, split-K, K
// order) from M among other things, so one row of D can change in its last bits when other
// rows are added to the batch. DESIGN.md ("Batch invariance") wants a K order that does not
// depend on M; a hand-written GEMM will replace this path for that reason.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace r1::cuda {

// d (M, N) bf16 := a (M, K) bf16 @ b (N, K)^T bf16, row-major, fp32 accumulation (the
// shape of a linear layer's forward: x @ w^T). Raw device pointers on the current device,
// enqueued on `stream`; the workspace comes from the caching allocator on that stream. The
// algorithm is looked up once per shape and cached, so a timed loop measures the matmul only.
void cublaslt_gemm_bf16_bench(const void* a, const void* b, void* d, int64_t m, int64_t n,
                              int64_t k, cudaStream_t stream);

}  // namespace r1::cuda
