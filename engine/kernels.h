// Kernel contracts: what every backend implements. The ops in engine/ops.h call these after
// checking shapes and making inputs contiguous, so a kernel may assume:
//  - every tensor argument is contiguous, on the same device, and of the stated dtypes;
//  - "float" tensors are all one dtype: f32 or f64 on CPU (the CPU backend computes in that
//    type), bf16/f32 on CUDA (fp32 accumulation); "int" tensors are i32 or i64;
//  - outputs are allocated to the stated shapes; a kernel writes every element of them
//    unless the contract says "accumulates".
// Shapes are written (dim, dim); N = rows (all leading dims flattened).
//  - per-row statistics (rmsnorm's rstd, cross-entropy's loss and lse, and the dloss that
//    comes back) are in stat_dtype(x): f32 for bf16/f32 inputs, f64 for f64. A bf16 lse
//    (8 mantissa bits at |lse| ~ 10) would put a few percent of error into every
//    probability of the backward.
#pragma once
#include <cstdint>

#include "engine/op_table.h"
#include "engine/tensor.h"

namespace r1 {

// The dtype of per-row statistics for inputs of dtype x (see the contract above).
inline DType stat_dtype(DType x) { return x == DType::F64 ? DType::F64 : DType::F32; }

enum class BinaryOp : uint8_t { Add, Sub, Mul, Div };
enum class ReduceOp : uint8_t { Sum, Max };

// ---- basic -----------------------------------------------------------------------------
// out (any dtype) := value.
R1_KERNEL(fill, void(Tensor& out, double value))
// dst := src, elementwise over equal shapes; both may be strided (not contiguous) and of any
// dtypes (converted as engine/convert.h says). The one kernel exempt from contiguity.
R1_KERNEL(copy_strided, void(const Tensor& src, Tensor& dst))
// y += alpha * x, same shape (float). Gradient accumulation.
R1_KERNEL(add_scaled, void(Tensor& y, const Tensor& x, double alpha))
// out := s * x + b (float).
R1_KERNEL(affine, void(const Tensor& x, double s, double b, Tensor& out))
// out := a (op) b, where a and b may be broadcast *views* of out's shape (stride 0 on
// broadcast dims; otherwise contiguous strides). out contiguous. Exempt from contiguity for
// a and b in that one way.
R1_KERNEL(binary, void(BinaryOp op, const Tensor& a, const Tensor& b, Tensor& out))
// x: (outer, R, inner) -> out: (outer, inner). For Max, argmax: (outer, inner) i64 (first
// index of the maximum), else argmax is undefined.
R1_KERNEL(reduce, void(ReduceOp op, const Tensor& x, Tensor& out, Tensor& argmax))
// Returns sum(x^2) accumulated in f64 (grad-norm clipping).
R1_KERNEL(sum_squares, double(const Tensor& x))

// ---- matrix products -------------------------------------------------------------------
// c (B, M, N) := alpha * op(a) @ op(b) + beta * c, where a is (Ba, M, K) or (Ba, K, M) when
// trans_a, b is (Bb, K, N) or (Bb, N, K) when trans_b, and Ba, Bb are B or 1 (broadcast).
R1_KERNEL(gemm, void(const Tensor& a, const Tensor& b, Tensor& c, bool trans_a, bool trans_b,
                     double alpha, double beta))

// ---- indexing --------------------------------------------------------------------------
// torch.gather on the middle dim: x (outer, Dx, inner), index (outer, Di, inner) int,
// out (outer, Di, inner): out[o, i, n] = x[o, index[o, i, n], n].
R1_KERNEL(gather, void(const Tensor& x, const Tensor& index, Tensor& out))
// Accumulates: dx[o, index[o, i, n], n] += dout[o, i, n]. dx (outer, Dx, inner).
R1_KERNEL(scatter_add, void(const Tensor& dout, const Tensor& index, Tensor& dx))
// x (outer, Dx, inner), index (n) int, out (outer, n, inner): out[o, i, :] = x[o, index[i], :].
R1_KERNEL(index_select, void(const Tensor& x, const Tensor& index, Tensor& out))
// Accumulates: dx[o, index[i], :] += dout[o, i, :].
R1_KERNEL(index_add, void(const Tensor& dout, const Tensor& index, Tensor& dx))

// ---- model ops -------------------------------------------------------------------------
// ids (N) int, table (V, D) -> out (N, D). An id outside [0, V) is an error.
R1_KERNEL(embedding_forward, void(const Tensor& ids, const Tensor& table, Tensor& out))
// Accumulates: dtable[ids[n], :] += dout[n, :]. dtable (V, D).
R1_KERNEL(embedding_backward, void(const Tensor& ids, const Tensor& dout, Tensor& dtable))
// x (N, D), w (D) -> y (N, D), rstd (N) (stat_dtype): y = x * rstd * w,
// rstd = 1 / sqrt(mean(x^2) + eps).
R1_KERNEL(rmsnorm_forward, void(const Tensor& x, const Tensor& w, double eps, Tensor& y,
                                Tensor& rstd))
// dx (N, D) written; dw (D) written (sum over rows).
R1_KERNEL(rmsnorm_backward, void(const Tensor& x, const Tensor& w, const Tensor& rstd,
                                 const Tensor& dy, Tensor& dx, Tensor& dw))
// x (B, T, H, D), positions (B, T) int, cos/sin (P, D/2) -> y (B, T, H, D): pair j of each
// head rotated by angle(positions[b, t], j); pairs are (2j, 2j+1) when interleaved, else
// (j, j + D/2). inverse rotates by the negative angle (the backward of the forward).
R1_KERNEL(rope, void(const Tensor& x, const Tensor& positions, const Tensor& cos,
                     const Tensor& sin, bool interleaved, bool inverse, Tensor& y))
// gate, up (N, F) -> out (N, F) = silu(gate) * up.
R1_KERNEL(swiglu_forward, void(const Tensor& gate, const Tensor& up, Tensor& out))
R1_KERNEL(swiglu_backward, void(const Tensor& gate, const Tensor& up, const Tensor& dout,
                                Tensor& dgate, Tensor& dup))
// x (N, V) -> y (N, V): softmax over V, or log-softmax when log.
R1_KERNEL(softmax_forward, void(const Tensor& x, bool log, Tensor& y))
// From the forward's output y: dx = y * (dy - sum(dy * y)) (softmax) or
// dx = dy - exp(y) * sum(dy) (log-softmax).
R1_KERNEL(softmax_backward, void(const Tensor& y, const Tensor& dy, bool log, Tensor& dx))
// logits (N, V), targets (N) int -> loss (N), lse (N) (both stat_dtype):
// loss = lse - logit[target] (0 where target ==
// ignore_index), lse (N) = logsumexp of the row. Computed in vocabulary chunks: no (N, V)
// temporary. A target outside [0, V) other than ignore_index is an error.
R1_KERNEL(cross_entropy_forward, void(const Tensor& logits, const Tensor& targets,
                                      int64_t ignore_index, Tensor& loss, Tensor& lse))
// dlogits (N, V) = dloss[n] * (softmax(logits[n]) - onehot(target[n])), 0 on ignored rows.
// lse and dloss (N) are stat_dtype; dlogits has the logits' dtype.
R1_KERNEL(cross_entropy_backward, void(const Tensor& logits, const Tensor& targets,
                                       const Tensor& lse, const Tensor& dloss,
                                       int64_t ignore_index, Tensor& dlogits))

// ---- optimizer -------------------------------------------------------------------------
// One fused AdamW step on a parameter (PyTorch semantics, decoupled weight decay):
// p *= 1 - lr*wd; m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2;
// p -= lr / (1 - b1^step) * m / (sqrt(v) / sqrt(1 - b2^step) + eps).  p, g, m, v same shape.
// g may be scaled first by grad_scale (global-norm clipping folded in).
R1_KERNEL(adamw_step, void(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, double lr,
                           double beta1, double beta2, double eps, double weight_decay,
                           int64_t step, double grad_scale))

}  // namespace r1
