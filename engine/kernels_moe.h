// Kernel contracts of the MoE router ops (engine/ops_moe.h). The general conventions of
// engine/kernels.h apply (contiguous operands on one device; CPU computes in f32 or f64, CUDA
// takes f32/bf16 logits and computes in fp32; statistics in stat_dtype(logits)).
//
// Same experts on every backend. The choice of experts is a comparison of biased scores, so
// one ulp of difference in s can swap two experts. Every backend therefore forms
//   s = (compute type) (1.0 / (1.0 + exp(-(double) x)))
// in f64 and rounds it once (f32 for f32/bf16 logits: the f64 error of exp, <= 1 ulp, is
// below f32's rounding except with probability ~2^-29 per value), then b = s + bias as one
// IEEE add, group score = top1 + top2 as one IEEE add, and compares (b, e) pairs by b
// descending, ties by lower index (e). CUDA f32 thus picks exactly the experts the CPU f32
// kernel picks for the same (rounded) logits. Weights are s / S, then times
// routed_scaling_factor (two roundings, as DeepSeek), S = the sum of the chosen s in
// selection order.
#pragma once
#include <cstdint>

#include "engine/kernels.h"
#include "engine/ops_moe.h"

namespace r1 {

// logits (N, E) float, bias (E) stat_dtype -> indices (N, K) i64, weights (N, K)
// stat_dtype, denom (N) stat_dtype (S, the sum of the K chosen s, whatever norm_topk_prob),
// load (E) i64 (written: zeroed, then counted). K = cfg.top_k; cfg is validated for E.
// CUDA: E <= kMoeMaxExpertsCuda (one warp per token, 8 experts per lane).
R1_KERNEL(moe_route_forward, void(const Tensor& logits, const Tensor& bias,
                                  const MoeRouteConfig& cfg, Tensor& indices, Tensor& weights,
                                  Tensor& denom, Tensor& load))
// logits (N, E), indices (N, K) i64, denom (N), dweights (N, K) stat_dtype -> dlogits (N, E)
// of the logits' dtype, zero outside the chosen experts. With c = routed_scaling_factor,
// s_k = s[indices[k]]: ds_k = c (g_k - sum_j g_j s_j / S) / S (norm_topk_prob) or c g_k,
// and dlogits[indices[k]] = ds_k s_k (1 - s_k).
R1_KERNEL(moe_route_backward, void(const Tensor& logits, const Tensor& indices,
                                   const Tensor& denom, const Tensor& dweights,
                                   const MoeRouteConfig& cfg, Tensor& dlogits))

// The balance loss (engine/ops_moe.h) in two kernels plus the reduce kernel's sum of terms.
// offsets (B + 1) i64: sequence b is rows [offsets[b], offsets[b + 1]), offsets[0] = 0,
// offsets[B] = N, each sequence non-empty (the op checks on the host).
// logits (N, E), indices (N, K) int in [0, E) -> f (B, E) stat_dtype,
//   f[b, i] = E / (K T_b) * count of i in the indices of b's rows,
// and terms (N) stat_dtype, terms[t] = alpha / (B T_b) * sum_i f[b, i] s_{t,i} / S_t,
// S_t = sum_j s_{t,j}; the loss is sum_t terms[t].
R1_KERNEL(moe_balance_loss_forward, void(const Tensor& logits, const Tensor& indices,
                                         const Tensor& offsets, double alpha, Tensor& f,
                                         Tensor& terms))
// dloss () stat_dtype (read on the device) -> dlogits (N, E) of the logits' dtype:
//   dlogits[t, i] = dloss * alpha / (B T_b) * (f[b, i] - u_t) / S_t * s_{t,i} (1 - s_{t,i}),
//   u_t = sum_i f[b, i] s_{t,i} / S_t.
R1_KERNEL(moe_balance_loss_backward, void(const Tensor& logits, const Tensor& offsets,
                                          const Tensor& f, const Tensor& dloss, double alpha,
                                          Tensor& dlogits))

// bias (E) float (in place), load (E) int: bias_i += gamma * sign(sum(load) - E * load_i)
// (the sign of mean - load_i, exact in integers).
R1_KERNEL(moe_update_bias, void(Tensor& bias, const Tensor& load, double gamma))

// The weighted sum of the routed experts' outputs (engine/ops_moe.h moe_combine). ys: the
// experts' outputs, each (n_j, D) contiguous, float; w (P) float (P = N * K pairs, token-major);
// part, row (P) i64: pair p reads ys[part[p]][row[p]] (row undefined: row p / K, the pair's own
// token's, as when every expert ran on every token; part is then not checked on the device,
// where checking needs a host read) -> y (N, D):
//   y[t, d] = w[t K] * ys[..][d] + w[t K + 1] * ys[..][d] + ...   (each product rounded, then
//   added left to right from k = 0: no FMA), so a row depends on its own K pairs only.
R1_KERNEL(moe_combine_forward, void(const std::vector<Tensor>& ys, const Tensor& w,
                                    const Tensor& part, const Tensor& row, Tensor& y))
// dy (N, D) -> dys (each like ys; every row of every ys is read by exactly one pair, which
// the op checks): dys[part[p]][row[p], d] = w[p] * dy[t, d]; dw (P), when defined:
// dw[p] = sum over d in order of dy[t, d] * ys[part[p]][row[p], d] (product rounded, then
// added, from d = 0).
R1_KERNEL(moe_combine_backward, void(const std::vector<Tensor>& ys, const Tensor& w,
                                     const Tensor& part, const Tensor& row, const Tensor& dy,
                                     std::vector<Tensor>& dys, Tensor& dw))

// The masked layout of the routed pairs (decode under CUDA graphs: the grouped FP8 GEMM's
// masked form, engine/kernels.h gemm_fp8_grouped_masked, takes an expert's rows from fixed
// slots and its row count from the device). indices (P) i64: the expert of pair p (token-major,
// K pairs per token, distinct within a token, in [0, E)); cap: slots per expert ->
// dest (P) i64 = e * cap + (the pairs before p that chose the same e), counts (E) i64 = the
// pairs that chose e. An expert's slots hold its tokens in token order, as the routed path
// gathers them. The caller promises counts[e] <= cap (cap >= N with distinct choices per
// token): the CPU kernel checks that the indices lie in [0, E) and that no count exceeds cap
// (not that a token's experts are distinct: a repeated one takes two slots, in pair order,
// on both backends); the CUDA one cannot check without a host read and trusts them.
R1_KERNEL(moe_masked_slots, void(const Tensor& indices, int64_t cap, Tensor& dest,
                                 Tensor& counts))
// src (N, C) of any dtype, contiguous; dest (P) i64, P a multiple of N (K = P / N) -> dst (R,
// C), src's dtype, contiguous: dst[dest[p]] := src[p / K] (the bytes); the other rows of dst
// are not written. dest distinct and in [0, R): checked on the CPU, trusted on CUDA.
R1_KERNEL(moe_scatter_rows, void(const Tensor& src, const Tensor& dest, Tensor& dst))

inline constexpr int64_t kMoeMaxExpertsCuda = 256;

namespace moe_detail {

inline void check_tensor(const char* what, const char* name, const Tensor& t, const Shape& shape,
                         DType dt, Device dev) {
  R1_CHECK(t.defined() && t.shape() == shape && t.dtype() == dt && t.device() == dev &&
               t.is_contiguous(),
           "{}: {} is {}, expected a contiguous {} {} on {}", what, name,
           t.defined() ? t.str() : "undefined", shape_str(shape), dtype_name(dt), dev.str());
}

inline void check_logits(const char* what, const Tensor& logits, bool float_ok) {
  R1_CHECK(logits.defined() && logits.dim() == 2 && logits.is_contiguous(),
           "{}: logits {} must be a contiguous (N, E) tensor", what,
           logits.defined() ? logits.str() : "undefined");
  R1_CHECK(float_ok, "{}: logits dtype {} not taken by this backend", what,
           dtype_name(logits.dtype()));
}

inline void check_index(const char* what, const char* name, const Tensor& t, const Shape& shape,
                        Device dev) {
  R1_CHECK(t.defined() && (t.dtype() == DType::I32 || t.dtype() == DType::I64),
           "{}: {} must be i32 or i64, got {}", what, name, t.defined() ? t.str() : "undefined");
  check_tensor(what, name, t, shape, t.dtype(), dev);
}

}  // namespace moe_detail

// Checks of each kernel's operands against its contract; every backend calls them first.
inline void check_moe_route_forward(const Tensor& logits, const Tensor& bias,
                                    const MoeRouteConfig& cfg, const Tensor& indices,
                                    const Tensor& weights, const Tensor& denom,
                                    const Tensor& load, bool float_ok) {
  const char* what = "moe_route_forward";
  moe_detail::check_logits(what, logits, float_ok);
  const int64_t N = logits.size(0), E = logits.size(1);
  cfg.validate(E);
  const DType sd = stat_dtype(logits.dtype());
  const Device dev = logits.device();
  moe_detail::check_tensor(what, "bias", bias, {E}, sd, dev);
  moe_detail::check_tensor(what, "indices", indices, {N, cfg.top_k}, DType::I64, dev);
  moe_detail::check_tensor(what, "weights", weights, {N, cfg.top_k}, sd, dev);
  moe_detail::check_tensor(what, "denom", denom, {N}, sd, dev);
  moe_detail::check_tensor(what, "load", load, {E}, DType::I64, dev);
}

inline void check_moe_route_backward(const Tensor& logits, const Tensor& indices,
                                     const Tensor& denom, const Tensor& dweights,
                                     const MoeRouteConfig& cfg, const Tensor& dlogits,
                                     bool float_ok) {
  const char* what = "moe_route_backward";
  moe_detail::check_logits(what, logits, float_ok);
  const int64_t N = logits.size(0), E = logits.size(1);
  cfg.validate(E);
  const DType sd = stat_dtype(logits.dtype());
  const Device dev = logits.device();
  moe_detail::check_tensor(what, "indices", indices, {N, cfg.top_k}, DType::I64, dev);
  moe_detail::check_tensor(what, "denom", denom, {N}, sd, dev);
  moe_detail::check_tensor(what, "dweights", dweights, {N, cfg.top_k}, sd, dev);
  moe_detail::check_tensor(what, "dlogits", dlogits, logits.shape(), logits.dtype(), dev);
}

inline void check_moe_balance_loss(const char* what, const Tensor& logits,
                                   const Tensor& offsets, const Tensor& f, bool float_ok) {
  moe_detail::check_logits(what, logits, float_ok);
  R1_CHECK(offsets.defined() && offsets.dim() == 1 && offsets.size(0) >= 2,
           "{}: offsets must be (B + 1) with B >= 1", what);
  moe_detail::check_tensor(what, "offsets", offsets, offsets.shape(), DType::I64,
                           logits.device());
  moe_detail::check_tensor(what, "f", f, {offsets.size(0) - 1, logits.size(1)},
                           stat_dtype(logits.dtype()), logits.device());
}

inline void check_moe_masked_slots(const Tensor& indices, int64_t cap, const Tensor& dest,
                                   const Tensor& counts) {
  const char* what = "moe_masked_slots";
  R1_CHECK(indices.defined() && indices.dim() == 1 && counts.defined() && counts.dim() == 1 &&
               counts.size(0) >= 1 && cap >= 0,
           "{}: indices (P), counts (E >= 1), cap >= 0; got indices {}, counts {}, cap {}", what,
           indices.defined() ? indices.str() : "undefined",
           counts.defined() ? counts.str() : "undefined", cap);
  const Device dev = indices.device();
  moe_detail::check_tensor(what, "indices", indices, indices.shape(), DType::I64, dev);
  moe_detail::check_tensor(what, "dest", dest, indices.shape(), DType::I64, dev);
  moe_detail::check_tensor(what, "counts", counts, counts.shape(), DType::I64, dev);
}

inline void check_moe_scatter_rows(const Tensor& src, const Tensor& dest, const Tensor& dst) {
  const char* what = "moe_scatter_rows";
  R1_CHECK(src.defined() && src.dim() == 2 && dst.defined() && dst.dim() == 2 &&
               dst.size(1) == src.size(1) && dst.dtype() == src.dtype() && dest.defined() &&
               dest.dim() == 1 && (src.size(0) == 0 ? dest.size(0) == 0
                                                     : dest.size(0) % src.size(0) == 0),
           "{}: src (N, C), dest (K N), dst (R, C) of src's dtype; got src {}, dest {}, dst {}",
           what, src.defined() ? src.str() : "undefined",
           dest.defined() ? dest.str() : "undefined", dst.defined() ? dst.str() : "undefined");
  moe_detail::check_tensor(what, "src", src, src.shape(), src.dtype(), src.device());
  moe_detail::check_tensor(what, "dest", dest, dest.shape(), DType::I64, src.device());
  moe_detail::check_tensor(what, "dst", dst, dst.shape(), src.dtype(), src.device());
}

inline void check_moe_update_bias(const Tensor& bias, const Tensor& load, bool float_ok) {
  R1_CHECK(bias.defined() && bias.dim() == 1 && bias.is_contiguous() && float_ok,
           "moe_update_bias: bias {} must be a contiguous (E) float tensor this backend takes",
           bias.defined() ? bias.str() : "undefined");
  moe_detail::check_index("moe_update_bias", "load", load, bias.shape(), bias.device());
}

}  // namespace r1
