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
// A gemm call's sizes, checked against the contract above (3-d a, b, c of one dtype on one
// device, contiguous, op(a) @ op(b) giving c, a and b batches B or 1): each backend's gemm
// (and the CUDA batch-invariant one) starts here.
struct GemmDims {
  int64_t batch, batch_a, batch_b, m, n, k;
};
inline GemmDims check_gemm_operands(const Tensor& a, const Tensor& b, const Tensor& c, bool ta,
                                    bool tb) {
  R1_CHECK(a.dim() == 3 && b.dim() == 3 && c.dim() == 3,
           "gemm: needs 3-d a, b, c, got a {} b {} c {}", shape_str(a.shape()),
           shape_str(b.shape()), shape_str(c.shape()));
  R1_CHECK(a.dtype() == c.dtype() && b.dtype() == c.dtype(), "gemm: dtypes a {} b {} c {}",
           dtype_name(a.dtype()), dtype_name(b.dtype()), dtype_name(c.dtype()));
  R1_CHECK(a.device() == c.device() && b.device() == c.device(),
           "gemm: devices a {} b {} c {}", a.device().str(), b.device().str(), c.device().str());
  R1_CHECK(a.is_contiguous() && b.is_contiguous() && c.is_contiguous(),
           "gemm: needs contiguous a, b, c");
  const GemmDims d{c.size(0), a.size(0), b.size(0), c.size(1), c.size(2),
                   ta ? a.size(1) : a.size(2)};
  const int64_t am = ta ? a.size(2) : a.size(1);
  const int64_t bk = tb ? b.size(2) : b.size(1), bn = tb ? b.size(1) : b.size(2);
  R1_CHECK(am == d.m && bk == d.k && bn == d.n && (d.batch_a == d.batch || d.batch_a == 1) &&
               (d.batch_b == d.batch || d.batch_b == 1),
           "gemm: a {}{} @ b {}{} does not give c {}", shape_str(a.shape()), ta ? "^T" : "",
           shape_str(b.shape()), tb ? "^T" : "", shape_str(c.shape()));
  return d;
}

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
// MLA's attention inputs from its projections, in one pass (the split, RoPE and concat of
// the unfused graph each cost a copy). q (B, T, H, n + r), kv (B, T, H, n + v), k_rope
// (B, T, r), positions (B, T) int, cos/sin (P, r/2) ->
//   qo (B, T, H, n + r) = [q[..., :n], rope(q[..., n:])],
//   ko (B, T, H, n + r) = [kv[..., :n], rope(k_rope)] (the one RoPE key shared by every head),
//   vo (B, T, H, v)     = kv[..., n:].
// n = qo.size(3) - k_rope.size(2); pairs as in rope.
R1_KERNEL(mla_qkv_forward, void(const Tensor& q, const Tensor& kv, const Tensor& k_rope,
                                const Tensor& positions, const Tensor& cos, const Tensor& sin,
                                bool interleaved, Tensor& qo, Tensor& ko, Tensor& vo))
// Its backward: dq = [dqo[..., :n], rope^-1(dqo[..., n:])], dkv = [dko[..., :n], dvo],
// dk_rope = rope^-1(sum over heads of dko[..., n:]) (heads summed in order 0..H-1), all written.
R1_KERNEL(mla_qkv_backward, void(const Tensor& dqo, const Tensor& dko, const Tensor& dvo,
                                 const Tensor& positions, const Tensor& cos, const Tensor& sin,
                                 bool interleaved, Tensor& dq, Tensor& dkv, Tensor& dk_rope))
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

// ---- fp8 (DeepSeek-V3 block scaling) ----------------------------------------------------
// E4M3 quantization with fp32 scales and the block-scaled GEMM of the DeepSeek-V3 recipe
// (arXiv 2412.19437, sec. 3.3): activations get one scale per 1x128 tile (per row, per 128
// columns), weights one per 128x128 block; the product's partial sums are promoted to fp32
// at least every 128 K. A scale s means x ~ q * s (the dequantized value is e4m3(q) * s).
//  - Scale of a tile or block: s = amax / 448 (kE4M3Max) in f32 arithmetic (one IEEE
//    division, so every backend gets the same bits), amax = the largest |x| of the tile
//    (fmax semantics) over its in-range elements only (edge tiles are partial, nothing is
//    padded). s = 0 (an all-zero tile, or an f32 amax below 224 * 2^-149, whose division
//    underflows) gives s = 1 instead: any scale represents zeros (and such subnormals, as
//    zero codes) exactly, and 1 keeps x / s from being 0 / 0 = NaN (whose sign differs
//    between backends) and 1 / s finite for readers of it.
//  - q = f32_to_e4m3(x / s) (one f32 division, then RNE with saturation; engine/convert.h).
//    x / s may exceed 448 by an f32 rounding; it saturates to 448. bf16 x is widened first
//    (exact). The result is bit-identical on every backend for finite x; non-finite x
//    gives unspecified scales and NaN codes.
// Shapes: KB = fp8_blocks(K) = ceil(K / 128), NB = fp8_blocks(N).
inline constexpr int64_t kFp8Block = 128;
inline int64_t fp8_blocks(int64_t n) { return (n + kFp8Block - 1) / kFp8Block; }
// Whether gemm_fp8_blockscaled's b_scales are per 1x128 row tile (N, KB) rather than per
// 128x128 block (NB, KB); N = 1 counts as blocks (the same numbers either way).
inline bool fp8_b_row_scales(const Tensor& b_q, const Tensor& b_scales) {
  return b_q.dim() == 2 && b_scales.dim() == 2 && b_q.size(0) > 1 &&
         b_scales.size(0) == b_q.size(0);
}

// x (M, K) f32 or bf16 -> q (M, K) e4m3, scales (M, KB) f32; scales[m, kb] covers
// x[m, kb*128 : min(K, kb*128 + 128)].
R1_KERNEL(quantize_fp8_rows, void(const Tensor& x, Tensor& q, Tensor& scales))
// w (N, K) f32 or bf16 -> q (N, K) e4m3, scales (NB, KB) f32; scales[nb, kb] covers the
// block w[nb*128 : nb*128 + 128, kb*128 : kb*128 + 128] (clipped to the matrix).
R1_KERNEL(quantize_fp8_blocks, void(const Tensor& w, Tensor& q, Tensor& scales))
// x (M, K) f32 or bf16 -> quantize_fp8_rows of x^T without forming x^T: q (K, M) e4m3,
// scales (K, MB = ceil(M / 128)) f32; scales[j, mb] covers x[mb*128 : min(M, mb*128 + 128), j]
// (1x128 tiles along M: the wgrad GEMM's dy^T operand). Bit-identical to
// quantize_fp8_rows(x^T) on every backend.
R1_KERNEL(quantize_fp8_rows_transposed, void(const Tensor& x, Tensor& q, Tensor& scales))
// The FP8 recipe's producer fusion for the MLP: gate, up (M, F) f32/bf16 -> out (M, F) =
// swiglu_forward(gate, up) and q (M, F) e4m3, scales (M, FB) f32 = quantize_fp8_rows(out), in
// one pass over the data; the same bits as the two kernels run one after the other on the
// same backend (q is quantized from out as stored, i.e. after its rounding to out's dtype).
R1_KERNEL(swiglu_quantize_fp8, void(const Tensor& gate, const Tensor& up, Tensor& out,
                                    Tensor& q, Tensor& scales))
// The same in the grouped GEMMs' masked layout (the MoE decode step): gate, up, out, q
// (G, Mmax, F), scales (G, Mmax, FB), counts (G) i32/i64 on the device with 0 <= counts[g]
// <= Mmax: rows i < counts[g] of group g get swiglu_quantize_fp8's bits; every other row of
// out, q and scales is left as it is (and gate/up's are never read: they may hold anything).
R1_KERNEL(swiglu_quantize_fp8_masked, void(const Tensor& gate, const Tensor& up,
                                           const Tensor& counts, Tensor& out, Tensor& q,
                                           Tensor& scales))
// The same for RMSNorm (the attention projections' and dense MLPs' input): x (N, D), w (D)
// f32/bf16 -> y, rstd = rmsnorm_forward(x, w, eps) and q (N, D) e4m3, scales (N, DB) f32 =
// quantize_fp8_rows(y) as stored; the same bits as the two kernels on the same backend.
R1_KERNEL(rmsnorm_quantize_fp8, void(const Tensor& x, const Tensor& w, double eps, Tensor& y,
                                     Tensor& rstd, Tensor& q, Tensor& scales))
// a_q (M, K) e4m3, a_scales (M, KB) f32 (quantize_fp8_rows), b_q (N, K) e4m3, b_scales
// (NB, KB) f32 (quantize_fp8_blocks) -> d (M, N):
//   d[m, n] = sum_kb (sum_{k in block kb} a_q[m, k] b_q[n, k]) * a_scales[m, kb]
//                                                        * b_scales[n / 128, kb],
// i.e. D = A B^T of the dequantized operands (x @ w^T of a linear layer). b_scales may
// instead be (N, KB), one scale per 1x128 tile of b's rows (quantize_fp8_rows): then the
// factor is b_scales[n, kb] ("1D1D", DeepGEMM's form for wgrad, where both operands are
// activations, dy^T and x^T, quantized along the tokens); the two shapes differ unless
// N = 1, where they mean the same. The grouped forms below take block scales only. CUDA: d f32 or
// bf16; each k-block's partial sum is formed in fp32 (the products of two e4m3 are exact;
// on the tensor cores, mma.sync and wgmma, the FP8 accumulator keeps fewer mantissa bits than
// fp32, about 14 by the V3 report's sec. 3.3.2, the reason the partials are promoted every
// 128 K), scaled, and added to an fp32 accumulator. CPU (the reference): d f64, f32 or bf16; the
// partial sums are exact in f64 (128 products of e4m3 values, multiples of 2^-18 below
// 2^18, fit in 43 bits), the result is rounded once to d's dtype. K = 0 gives d = 0.
R1_KERNEL(gemm_fp8_blockscaled, void(const Tensor& a_q, const Tensor& a_scales,
                                     const Tensor& b_q, const Tensor& b_scales, Tensor& d))

// Grouped block-scaled FP8 GEMMs for MoE experts (DeepGEMM's two layouts): G groups share N
// and K, group g has its own weight b_q[g] (N, K) e4m3 with b_scales[g] (NB, KB), and each of
// its rows is the dense product above with that weight.
//  - contiguous (training, prefill): a_q (M, K) holds the groups' rows one after another
//    (tokens sorted by expert), a_scales (M, KB); offsets (G + 1) i32/i64 on a_q's device,
//    0 = offsets[0] <= offsets[1] <= ... <= offsets[G] = M: rows offsets[g] .. offsets[g+1]
//    use group g (an empty group is allowed); d (M, N).
//  - masked (decode under CUDA graphs: fixed shapes, the counts on the device): a_q
//    (G, Mmax, K), a_scales (G, Mmax, KB), counts (G) i32/i64 with 0 <= counts[g] <= Mmax:
//    rows r < counts[g] of group g are computed into d (G, Mmax, N); the rest of d is left
//    as it is.
// b_q (G, N, K), b_scales (G, NB, KB). Offsets and counts are the caller's promise: the
// CPU kernels check them (they read them anyway); the CUDA kernels read them on the device
// and do not (a host check would cost a sync per call, which decode under a graph cannot
// have). Output dtypes as gemm_fp8_blockscaled's.
R1_KERNEL(gemm_fp8_grouped_contiguous,
          void(const Tensor& a_q, const Tensor& a_scales, const Tensor& b_q,
               const Tensor& b_scales, const Tensor& offsets, Tensor& d))
R1_KERNEL(gemm_fp8_grouped_masked,
          void(const Tensor& a_q, const Tensor& a_scales, const Tensor& b_q,
               const Tensor& b_scales, const Tensor& counts, Tensor& d))
// The k-grouped form (the MoE experts' weight gradients in one launch: DeepGEMM's k-grouped
// GEMM): a_q (M, Kt) e4m3, a_scales (M, Kt/128), b_q (N, Kt) e4m3, b_scales (N, Kt/128) f32
// (1x128 tiles along K on both: the 1D1D form), k_offsets (G + 1) i32/i64 rising from 0 to
// Kt in multiples of 128 (Kt a multiple of 128) -> d (G, M, N) f32 or bf16: d[g] = the 1D1D
// product over K columns [k_offsets[g], k_offsets[g+1]) (zeros when that range is empty).
// The CPU checks the offsets; CUDA reads them on the device and trusts them.
R1_KERNEL(gemm_fp8_kgrouped,
          void(const Tensor& a_q, const Tensor& a_scales, const Tensor& b_q,
               const Tensor& b_scales, const Tensor& k_offsets, Tensor& d))
// Whether one gemm_fp8_grouped_contiguous launch is the backend's faster way to run a grouped
// product whose offsets the host knows, rather than a gemm_fp8_blockscaled per group on row
// slices (the same function). CPU: yes (one pass, no per-call overhead). CUDA: once the
// grouped kernel auto picks runs on tensor cores (validated on a GPU), else no.
R1_KERNEL(gemm_fp8_grouped_preferred, bool())

// Checks the operands of quantize_fp8_rows (block_rows = 1), quantize_fp8_blocks
// (block_rows = 128) or quantize_fp8_rows_transposed (transposed: q and scales describe x^T)
// against their contract; every backend calls it first.
inline void check_quantize_fp8(const char* what, const Tensor& x, const Tensor& q,
                               const Tensor& scales, int64_t block_rows,
                               bool transposed = false) {
  const int64_t r = x.dim() == 2 ? x.size(transposed ? 1 : 0) : -1;
  const int64_t c = x.dim() == 2 ? x.size(transposed ? 0 : 1) : -1;
  R1_CHECK(x.dim() == 2 && q.shape() == Shape({r, c}) && scales.dim() == 2 &&
               scales.size(0) == (r + block_rows - 1) / block_rows &&
               scales.size(1) == fp8_blocks(c),
           "{}: x {} q {} scales {} do not fit", what, shape_str(x.shape()),
           shape_str(q.shape()), shape_str(scales.shape()));
  R1_CHECK((x.dtype() == DType::F32 || x.dtype() == DType::BF16) && q.dtype() == DType::E4M3 &&
               scales.dtype() == DType::F32,
           "{}: dtypes x {} (f32 or bf16) q {} (e4m3) scales {} (f32)", what,
           dtype_name(x.dtype()), dtype_name(q.dtype()), dtype_name(scales.dtype()));
  R1_CHECK(q.device() == x.device() && scales.device() == x.device(),
           "{}: operands on different devices", what);
  R1_CHECK(x.is_contiguous() && q.is_contiguous() && scales.is_contiguous(),
           "{}: needs contiguous operands", what);
}

// Checks the operands of gemm_fp8_kgrouped against its contract (not k_offsets' values);
// every backend calls it first.
inline void check_gemm_fp8_kgrouped(const Tensor& a_q, const Tensor& a_scales, const Tensor& b_q,
                                    const Tensor& b_scales, const Tensor& k_offsets,
                                    const Tensor& d) {
  const bool ranks = a_q.dim() == 2 && b_q.dim() == 2 && a_scales.dim() == 2 &&
                     b_scales.dim() == 2 && k_offsets.dim() == 1 && d.dim() == 3;
  R1_CHECK(ranks, "gemm_fp8_kgrouped: operand ranks a_q {} b_q {} k_offsets {} d {}",
           shape_str(a_q.shape()), shape_str(b_q.shape()), shape_str(k_offsets.shape()),
           shape_str(d.shape()));
  const int64_t m = a_q.size(0), kt = a_q.size(1), n = b_q.size(0), g = d.size(0);
  R1_CHECK(kt % kFp8Block == 0 && b_q.size(1) == kt &&
               a_scales.shape() == Shape({m, kt / kFp8Block}) &&
               b_scales.shape() == Shape({n, kt / kFp8Block}) && k_offsets.size(0) == g + 1 &&
               d.shape() == Shape({g, m, n}),
           "gemm_fp8_kgrouped: a_q {} a_scales {} b_q {} b_scales {} k_offsets {} d {} do not "
           "fit (Kt a multiple of 128)", shape_str(a_q.shape()), shape_str(a_scales.shape()),
           shape_str(b_q.shape()), shape_str(b_scales.shape()), shape_str(k_offsets.shape()),
           shape_str(d.shape()));
  R1_CHECK(a_q.dtype() == DType::E4M3 && b_q.dtype() == DType::E4M3 &&
               a_scales.dtype() == DType::F32 && b_scales.dtype() == DType::F32 &&
               (k_offsets.dtype() == DType::I32 || k_offsets.dtype() == DType::I64) &&
               (d.dtype() == DType::F32 || d.dtype() == DType::BF16),
           "gemm_fp8_kgrouped: dtypes a_q {} a_scales {} b_q {} b_scales {} k_offsets {} d {}",
           dtype_name(a_q.dtype()), dtype_name(a_scales.dtype()), dtype_name(b_q.dtype()),
           dtype_name(b_scales.dtype()), dtype_name(k_offsets.dtype()), dtype_name(d.dtype()));
  for (const Tensor* t : {&a_q, &a_scales, &b_q, &b_scales, &k_offsets})
    R1_CHECK(t->device() == d.device(), "gemm_fp8_kgrouped: operands on different devices");
  for (const Tensor* t : {&a_q, &a_scales, &b_q, &b_scales, &k_offsets, &d})
    R1_CHECK(t->is_contiguous(), "gemm_fp8_kgrouped: needs contiguous operands");
}

// Checks the operands of swiglu_quantize_fp8_masked against its contract (not counts'
// values); every backend calls it first.
inline void check_swiglu_quantize_fp8_masked(const Tensor& gate, const Tensor& up,
                                             const Tensor& counts, const Tensor& out,
                                             const Tensor& q, const Tensor& scales) {
  const bool shapes = gate.dim() == 3 && up.shape() == gate.shape() &&
                      out.shape() == gate.shape() && q.shape() == gate.shape() &&
                      scales.shape() == Shape({gate.size(0), gate.size(1),
                                               fp8_blocks(gate.size(2))}) &&
                      counts.shape() == Shape({gate.size(0)});
  R1_CHECK(shapes, "swiglu_quantize_fp8_masked: gate {} up {} counts {} out {} q {} scales {} "
           "do not fit (G, Mmax, F)", shape_str(gate.shape()), shape_str(up.shape()),
           shape_str(counts.shape()), shape_str(out.shape()), shape_str(q.shape()),
           shape_str(scales.shape()));
  R1_CHECK((gate.dtype() == DType::F32 || gate.dtype() == DType::BF16) &&
               up.dtype() == gate.dtype() && out.dtype() == gate.dtype() &&
               q.dtype() == DType::E4M3 && scales.dtype() == DType::F32 &&
               (counts.dtype() == DType::I32 || counts.dtype() == DType::I64),
           "swiglu_quantize_fp8_masked: dtypes gate {} up {} out {} (f32 or bf16, one) q {} "
           "scales {} counts {}", dtype_name(gate.dtype()), dtype_name(up.dtype()),
           dtype_name(out.dtype()), dtype_name(q.dtype()), dtype_name(scales.dtype()),
           dtype_name(counts.dtype()));
  for (const Tensor* t : {&up, &counts, &out, &q, &scales})
    R1_CHECK(t->device() == gate.device(), "swiglu_quantize_fp8_masked: operands on different "
             "devices");
  for (const Tensor* t : {&gate, &up, &counts, &out, &q, &scales})
    R1_CHECK(t->is_contiguous(), "swiglu_quantize_fp8_masked: needs contiguous operands");
}

// Checks the operands of gemm_fp8_blockscaled against its contract (shapes, dtypes, one
// device, contiguous); every backend calls it first. `out_ok` says whether d's dtype is one
// the backend writes.
inline void check_gemm_fp8_blockscaled(const Tensor& a_q, const Tensor& a_scales,
                                       const Tensor& b_q, const Tensor& b_scales,
                                       const Tensor& d, bool out_ok) {
  R1_CHECK(a_q.dim() == 2 && b_q.dim() == 2 && d.dim() == 2 && a_scales.dim() == 2 &&
               b_scales.dim() == 2,
           "gemm_fp8_blockscaled: needs 2-d operands, got a_q {} b_q {} d {}",
           shape_str(a_q.shape()), shape_str(b_q.shape()), shape_str(d.shape()));
  const int64_t m = a_q.size(0), k = a_q.size(1), n = b_q.size(0);
  R1_CHECK(b_q.size(1) == k && d.size(0) == m && d.size(1) == n &&
               a_scales.shape() == Shape({m, fp8_blocks(k)}) &&
               (b_scales.shape() == Shape({fp8_blocks(n), fp8_blocks(k)}) ||
                b_scales.shape() == Shape({n, fp8_blocks(k)})),
           "gemm_fp8_blockscaled: a_q {} a_scales {} b_q {} b_scales {} d {} do not fit",
           shape_str(a_q.shape()), shape_str(a_scales.shape()), shape_str(b_q.shape()),
           shape_str(b_scales.shape()), shape_str(d.shape()));
  R1_CHECK(a_q.dtype() == DType::E4M3 && b_q.dtype() == DType::E4M3 &&
               a_scales.dtype() == DType::F32 && b_scales.dtype() == DType::F32 && out_ok,
           "gemm_fp8_blockscaled: dtypes a_q {} a_scales {} b_q {} b_scales {} d {}",
           dtype_name(a_q.dtype()), dtype_name(a_scales.dtype()), dtype_name(b_q.dtype()),
           dtype_name(b_scales.dtype()), dtype_name(d.dtype()));
  R1_CHECK(a_q.device() == d.device() && b_q.device() == d.device() &&
               a_scales.device() == d.device() && b_scales.device() == d.device(),
           "gemm_fp8_blockscaled: operands on different devices");
  R1_CHECK(a_q.is_contiguous() && b_q.is_contiguous() && a_scales.is_contiguous() &&
               b_scales.is_contiguous() && d.is_contiguous(),
           "gemm_fp8_blockscaled: needs contiguous operands");
}

// Checks the operands of gemm_fp8_grouped_contiguous (masked = false; idx = offsets) or
// gemm_fp8_grouped_masked (masked = true; idx = counts): shapes, dtypes, one device,
// contiguous. Not the values of idx (see the contract).
inline void check_gemm_fp8_grouped(const Tensor& a_q, const Tensor& a_scales, const Tensor& b_q,
                                   const Tensor& b_scales, const Tensor& idx, const Tensor& d,
                                   bool masked, bool out_ok) {
  const char* what = masked ? "gemm_fp8_grouped_masked" : "gemm_fp8_grouped_contiguous";
  const int64_t ad = masked ? 3 : 2;
  R1_CHECK(a_q.dim() == ad && a_scales.dim() == ad && d.dim() == ad && b_q.dim() == 3 &&
               b_scales.dim() == 3 && idx.dim() == 1,
           "{}: operand ranks a_q {} a_scales {} b_q {} b_scales {} {} {} d {}", what,
           shape_str(a_q.shape()), shape_str(a_scales.shape()), shape_str(b_q.shape()),
           shape_str(b_scales.shape()), masked ? "counts" : "offsets", shape_str(idx.shape()),
           shape_str(d.shape()));
  const int64_t g = b_q.size(0), n = b_q.size(1), k = b_q.size(2);
  const Shape rows = masked ? Shape{a_q.size(0), a_q.size(1)} : Shape{a_q.size(0)};
  auto with = [&](int64_t last) {
    Shape s = rows;
    s.push_back(last);
    return s;
  };
  R1_CHECK(a_q.size(-1) == k && a_scales.shape() == with(fp8_blocks(k)) &&
               b_scales.shape() == Shape({g, fp8_blocks(n), fp8_blocks(k)}) &&
               d.shape() == with(n) && idx.size(0) == (masked ? g : g + 1) &&
               (!masked || a_q.size(0) == g),
           "{}: a_q {} a_scales {} b_q {} b_scales {} {} {} d {} do not fit", what,
           shape_str(a_q.shape()), shape_str(a_scales.shape()), shape_str(b_q.shape()),
           shape_str(b_scales.shape()), masked ? "counts" : "offsets", shape_str(idx.shape()),
           shape_str(d.shape()));
  R1_CHECK(a_q.dtype() == DType::E4M3 && b_q.dtype() == DType::E4M3 &&
               a_scales.dtype() == DType::F32 && b_scales.dtype() == DType::F32 &&
               (idx.dtype() == DType::I32 || idx.dtype() == DType::I64) && out_ok,
           "{}: dtypes a_q {} a_scales {} b_q {} b_scales {} index {} d {}", what,
           dtype_name(a_q.dtype()), dtype_name(a_scales.dtype()), dtype_name(b_q.dtype()),
           dtype_name(b_scales.dtype()), dtype_name(idx.dtype()), dtype_name(d.dtype()));
  for (const Tensor* t : {&a_q, &a_scales, &b_q, &b_scales, &idx})
    R1_CHECK(t->device() == d.device(), "{}: operands on different devices", what);
  for (const Tensor* t : {&a_q, &a_scales, &b_q, &b_scales, &idx, &d})
    R1_CHECK(t->is_contiguous(), "{}: needs contiguous operands", what);
}

// ---- sampling ----------------------------------------------------------------------------
// The decode step's sampler. Per row n of logits x = logits[n] (V entries), with T =
// temperature, top_k and top_p as given (the float values; an f64 backend widens them
// exactly):
//  - T = 0 (greedy): token = the first index of max(x). logprob = log_softmax(x)[token].
//  - T > 0: q = softmax(x / T), formed as exp((x_j - max x) / T) / sum_i exp((x_i - max x) / T).
//    Rank order: x descending, ties by index ascending (by the stored logit values, never by
//    rounded probabilities, so every backend ranks alike). The kept set is a prefix of it:
//     . top-k (0 < top_k < V) keeps the first top_k tokens of the rank order (of tied logits
//       at the boundary, the lowest indices); top_k = 0 or >= V keeps all V;
//     . top-p (top_p < 1), applied after top-k to q renormalized over the top-k set (as Hugging
//       Face's and vLLM's samplers do): keeps the shortest prefix of the top-k set, in rank
//       order, whose mass reaches top_p (cumulative >= top_p * mass of the top-k set); the
//       first token is always kept. top_p = 1 keeps the top-k set.
//    The draw: u = uniform01(w0) = (w0 >> 8) * 2^-24, 24 bits from w0 = word 0 (v[0]) of
//    philox_bits(seed, seq[n], pos[n]) (engine/rng.h); token = the first kept index i in
//    *index* order (not rank order) whose kept cumulative sum C(i) = sum_{kept j <= i} q_j
//    exceeds u * sum_{kept} q_j: the inverse CDF of q truncated to the kept set and
//    renormalized. A token of zero probability (a -inf logit, or exp underflow) is never drawn.
//    logprob = log q(token) = (x_token - max x) / T - log sum_i exp((x_i - max x) / T): the
//    log-probability under the *untruncated* tempered softmax, what a trainer recomputing
//    log_softmax(logits / T) gets, not the log of the truncated renormalized probability the
//    draw used.
//  Row n's token and logprob depend on (x, seq[n], pos[n], seed, p) only, never on N or the
//  other rows, and are bit-identical on repeated calls (batch invariance, DESIGN.md).
//  Logits must be finite or -inf with at least one finite entry per row; a row with a NaN
//  or +inf logit, or all -inf, gets token 0 and logprob NaN.
//  Precision: the CPU computes in the logits' dtype (f32 or f64). CUDA takes f32/bf16 logits,
//  computes q in fp32 and sums the masses the selection and the draw compare in 64-bit fixed
//  point (exact, order-free). Greedy and top-k sets are exact and equal on every backend; a
//  top-p boundary or a draw whose cumulative sum lies within the compute type's rounding of
//  top_p or of u may differ between backends (tests/test_sampling.cc bounds how often).
// T >= 0 and finite; top_k >= 0 (0 = off); top_p in (0, 1] (1 = off).
struct SamplingParams {
  float temperature = 1;
  int64_t top_k = 0;
  float top_p = 1;
};
// logits (N, V) float, seq (N) i64 (sequence id), pos (N) i64 (position), seed ->
// tokens (N) i64, logprobs (N) stat_dtype. V in [1, 2^31).
R1_KERNEL(sample_tokens, void(const Tensor& logits, const Tensor& seq, const Tensor& pos,
                              uint64_t seed, const SamplingParams& p, Tensor& tokens,
                              Tensor& logprobs))

// Checks sample_tokens' operands and parameters against its contract (shapes, dtypes, one
// device, contiguous); every backend calls it first. `float_ok` says whether the logits'
// dtype is one the backend takes.
inline void check_sample_tokens(const Tensor& logits, const Tensor& seq, const Tensor& pos,
                                const SamplingParams& p, const Tensor& tokens,
                                const Tensor& logprobs, bool float_ok) {
  R1_CHECK(p.temperature >= 0 && p.temperature <= 3.4e38f, "sample_tokens: temperature {} "
           "must be finite and >= 0", p.temperature);
  R1_CHECK(p.top_k >= 0, "sample_tokens: top_k {} must be >= 0 (0 = off)", p.top_k);
  R1_CHECK(p.top_p > 0 && p.top_p <= 1, "sample_tokens: top_p {} must be in (0, 1]", p.top_p);
  R1_CHECK(logits.dim() == 2 && logits.size(1) >= 1 && logits.size(1) < (int64_t{1} << 31),
           "sample_tokens: logits {} must be (N, V) with V in [1, 2^31)", logits.str());
  const int64_t n = logits.size(0);
  R1_CHECK(seq.dim() == 1 && seq.size(0) == n && pos.dim() == 1 && pos.size(0) == n &&
               tokens.dim() == 1 && tokens.size(0) == n && logprobs.dim() == 1 &&
               logprobs.size(0) == n,
           "sample_tokens: logits {}, seq {}, pos {}, tokens {}, logprobs {} do not fit",
           logits.str(), seq.str(), pos.str(), tokens.str(), logprobs.str());
  R1_CHECK(float_ok && seq.dtype() == DType::I64 && pos.dtype() == DType::I64 &&
               tokens.dtype() == DType::I64 && logprobs.dtype() == stat_dtype(logits.dtype()),
           "sample_tokens: dtypes logits {} seq {} (i64) pos {} (i64) tokens {} (i64) "
           "logprobs {} ({})", dtype_name(logits.dtype()), dtype_name(seq.dtype()),
           dtype_name(pos.dtype()), dtype_name(tokens.dtype()), dtype_name(logprobs.dtype()),
           dtype_name(stat_dtype(logits.dtype())));
  R1_CHECK(seq.device() == logits.device() && pos.device() == logits.device() &&
               tokens.device() == logits.device() && logprobs.device() == logits.device(),
           "sample_tokens: operands on different devices");
  R1_CHECK(logits.is_contiguous() && seq.is_contiguous() && pos.is_contiguous() &&
               tokens.is_contiguous() && logprobs.is_contiguous(),
           "sample_tokens: needs contiguous operands");
}

}  // namespace r1
