// The CPU's 2-D matrix product in its two forms: OpenBLAS's (kernels/cpu/gemm.cc) and the
// batch-invariant one (kernels/cpu/gemm_invariant.cc), taken under r1::batch_invariant().
#pragma once
#include <cstdint>

namespace r1::cpu {

// One row-major 2-D product: c (m, n) = alpha * op(a) @ op(b) + beta * c, where op(a) is
// (m, k) and op(b) is (k, n); lda/ldb/ldc are the row strides of a, b, c as stored.
struct ProductShape {
  bool trans_a, trans_b;
  int64_t m, n, k, lda, ldb, ldc;
};

// The invariant product, f32 or f64. Every c[i, j] is
//     s = 0;  for k = 0 .. K-1: s = s + op(a)[i, k] * op(b)[k, j]
//     t = alpha * s                  (skipped when alpha == 1: the same bits)
//     c[i, j] = t                    (beta == 0: c is not read, NaN there does not propagate)
//     c[i, j] = t + beta * c[i, j]   (beta != 0)
// where each `x + y * z` is one FMA (avx2, avx512) or a multiply then an add (sse2),
// with the same instructions for every element, tile position and thread count, so the bits
// of c[i, j] depend on row i of op(a), column j of op(b), alpha, beta and c[i, j] only.
// Needs m, n, k > 0 and alpha != 0 (gemm.cc's matrix_product handles the empty cases, as
// BLAS does: alpha == 0 or k == 0 give c = beta * c). Runs on the OpenMP threads from 2^18
// flops up; keeps its packing buffers per thread, grown to the largest call, never freed
// (the packed op(b) of a call with more than ~100 rows: k x n rounded up to the panel width).
void invariant_product(const ProductShape& s, float alpha, const float* a, const float* b,
                       float beta, float* c);
void invariant_product(const ProductShape& s, double alpha, const double* a, const double* b,
                       double beta, double* c);

// The same contract one element at a time, plain loops: what the kernels mean, and their
// oracle in tests (equal bit for bit). fused: one rounding per term, as the avx2 and avx512
// kernels do; else a multiply then an add, as sse2 does.
void invariant_product_reference(const ProductShape& s, float alpha, const float* a,
                                 const float* b, float beta, float* c, bool fused);
void invariant_product_reference(const ProductShape& s, double alpha, const double* a,
                                 const double* b, double beta, double* c, bool fused);

// The vector ISA of the invariant kernels ("avx512", "avx2" or "sse2"), chosen once per process
// (the widest the CPU has; R1_INVARIANT_GEMM_ISA may name a narrower one). avx512 and avx2
// give the same bits (both one FMA per term, the same order); sse2 rounds twice per term.
const char* invariant_product_isa();

}  // namespace r1::cpu
