// The batch-invariance switch (DESIGN.md, "Batch invariance"): process-wide, read by the
// kernels that have a second, fixed-order path.
//
// Under it, every CPU product c = alpha * op(a) @ op(b) + beta * c (kernels::gemm, hence
// matmul and linear, forward and backward) computes each element c[i, j] as one chain over
// k = 0, 1, ..., K-1 in order, whose operations depend only on K: not on M, N, i, j, the
// batch, the rows or columns that share the call, the number of threads, or the memory
// layout (transposes included). A row of the result is then bit-identical whatever rows
// share the call (alone, in a batch, padded, permuted). The RL rollout and the trainer both
// run under it, so the logprobs recorded while sampling equal the ones recomputed for the
// loss bit for bit. Off (the default), the CPU product is OpenBLAS's: not invariant, its
// blocking and kernel choice follow M (measured in DESIGN.md). On the RL model's shapes it
// is faster only at M = 1 (its gemv) and on a transposed a with long K (weight gradients),
// and slower elsewhere (bench/bench_gemm_cpu.cc).
//
// The bits still depend on the machine: the chain's operation is fixed once per process by
// the CPU's vector ISA (with FMA, avx2 or avx512: one rounding per term; sse2 without: two),
// so a rollout and a trainer that must agree run on CPUs of the same class
// (kernels/cpu/gemm_invariant.h). CUDA's invariant GEMM is a separate kernel with its own
// order; CPU and GPU bits differ.
#pragma once

namespace r1 {

// Whether the batch-invariant path is on (default off). Thread-safe; the flag is global,
// not per thread, so a parallel region sees the value its caller set.
bool batch_invariant();
void set_batch_invariant(bool on);

// Turns the invariant path on (or off) for a scope and restores the previous setting.
// Scopes nest; overlapping scopes on different threads are not supported (the flag is one).
class BatchInvariantScope {
 public:
  explicit BatchInvariantScope(bool on = true);
  ~BatchInvariantScope();
  BatchInvariantScope(const BatchInvariantScope&) = delete;
  BatchInvariantScope& operator=(const BatchInvariantScope&) = delete;

 private:
  bool prev_;
};

}  // namespace r1
