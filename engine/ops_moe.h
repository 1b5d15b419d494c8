// The DeepSeek-V3 MoE router (arXiv 2412.19437, sec. 2.1.2, eq. 12-20): sigmoid affinities,
// group-limited top-k chosen with the auxiliary-loss-free selection bias, normalized top-k
// weights from the unbiased scores, the bias update from expert load, and the small
// sequence-wise balance loss. Semantics of deepseek-ai/DeepSeek-V3 inference/model.py
// Gate.forward (score_func "sigmoid"); kernel contracts in engine/kernels_moe.h.
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace r1 {

// HF config.json field names (DESIGN.md "Model").
struct MoeRouteConfig {
  int64_t top_k = 8;               // num_experts_per_tok
  int64_t n_group = 1;             // groups of n_routed_experts / n_group consecutive experts
  int64_t topk_group = 1;          // groups kept per token (ignored when n_group == 1)
  bool norm_topk_prob = true;      // weights /= their sum (DeepSeek-V3 always, for sigmoid)
  double routed_scaling_factor = 1.0;

  // Throws r1::Error naming the bad field for E = n_routed_experts experts: E >= 1,
  // n_group >= 1 dividing E, with >= 2 experts per group when n_group > 1 (the group score
  // is a top-2 sum), 1 <= topk_group <= n_group, 1 <= top_k <= the experts of the kept
  // groups (topk_group * E / n_group, or E), routed_scaling_factor finite and > 0.
  void validate(int64_t E) const;
};

struct MoeRoute {
  Tensor indices;  // (N, top_k) i64: chosen experts, descending biased score, ties lower index
  Tensor weights;  // (N, top_k) stat_dtype(logits) (f32 for bf16/f32, f64 for f64),
                   // differentiable with respect to logits
  Tensor load;     // (E) i64: tokens routed to each expert (the bias update's input)
};

// logits (N, E) float (the gate's x @ W^T), bias (E) stat_dtype(logits)
// (e_score_correction_bias; never differentiated) -> MoeRoute. Per token:
//   s = sigmoid(logits); b = s + bias;
//   n_group > 1: group score = sum of the top-2 b of the group; the topk_group best groups
//                are kept (ties: lower group index), every other b := -inf (as DeepSeek;
//                HF transformers fills 0.0, which picks dropped experts when b < 0);
//   indices = top_k of b; w = s[indices] (unbiased); norm_topk_prob: w /= sum(w);
//   w *= routed_scaling_factor.
// Backward: dlogits through the gather of s and the normalization only (the selection is
// piecewise constant). Saves logits, indices and the per-token sum of the chosen s.
// Logits must be finite. Errors: shapes, dtypes, devices, and the config (validate(E)).
MoeRoute moe_route(const Tensor& logits, const Tensor& bias, const MoeRouteConfig& cfg);

// The sequence-wise balance loss (paper eq. 17-20), averaged over the B sequences:
//   L = alpha / B * sum_b sum_i f_{b,i} P_{b,i},
//   f_{b,i} = E / (K T_b) * #{tokens t of b, k : indices[t, k] == i},
//   P_{b,i} = 1 / T_b * sum_{t in b} s_{t,i} / sum_j s_{t,j},  s = sigmoid(logits).
// logits (N, E) float, indices (N, K) int (moe_route's), seq_lens (B) int on any device
// (read on the host), each >= 1 and summing to N: the tokens of sequence b are the next
// seq_lens[b] rows -> () stat_dtype(logits). Differentiable with respect to logits through
// P only (f is a count). Errors: shapes, an index outside [0, E), bad seq_lens, alpha < 0.
Tensor moe_balance_loss(const Tensor& logits, const Tensor& indices, const Tensor& seq_lens,
                        double alpha);

// The routed experts' weighted sum, one op (the MoE layer's combine step without a concat,
// a gather and a reduction): ys are the experts' outputs, each (n_j, D) of one float dtype
// and device, w (N, K) or (N * K) the router weights (token-major pairs), part and row (N * K)
// int on the host or the device: pair p = t * K + k reads row row[p] of ys[part[p]], and every
// row of every ys is read by exactly one pair (checked). -> y (N, D),
//   y[t] = w[t, 0] * ys[..] + w[t, 1] * ys[..] + ...   (kernels_moe.h: products rounded, added
//   in k order), a row from its own pairs only (batch invariant).
// Differentiable with respect to ys and w. Whether the device has it:
// moe_combine_available(device) (CPU and CUDA; elsewhere the caller composes index_select,
// mul and sum).
Tensor moe_combine(const std::vector<Tensor>& ys, const Tensor& w, const Tensor& part,
                   const Tensor& row);
bool moe_combine_available(Device dev);
// The combine when every expert ran on every token (the decode step under CUDA graphs,
// model/deepseek_v3.cc): ys are all E experts' outputs, each (N, D), and indices (N, K) int on
// w's device are the router's choices -> y (N, D), y[t] = sum over k of w[t, k] *
// ys[indices[t, k]][t], the same arithmetic as moe_combine (so, with batch-invariant products,
// the same bits as the routed path). Nothing is read back to the host: the indices are
// trusted (the CPU kernel checks them; the CUDA one cannot). Forward only: an error if w or
// any ys needs a gradient.
Tensor moe_combine_all(const std::vector<Tensor>& ys, const Tensor& w, const Tensor& indices);
// The masked layout of a MoE layer's routed pairs, for the decode step under CUDA graphs (the
// grouped FP8 GEMM's masked form runs each expert on its slots only, reading the row counts
// on the device). indices (N, K) int on any device (the router's: distinct experts per token,
// in [0, E)) -> dest (N K) i64 = e * cap + slot (an expert's slots hold its tokens in token
// order) and counts (E) i64, on indices' device; cap >= N (then, the choices being distinct,
// no expert overflows). No host read of the indices (the CPU kernel checks their range and
// the counts, not distinctness; CUDA trusts them). Forward only.
struct MoeMaskedSlots {
  Tensor dest, counts;
};
MoeMaskedSlots moe_masked_slots(const Tensor& indices, int64_t num_experts, int64_t cap);
// src (N, C) any dtype -> (rows, C) of src's dtype: row dest[p] := src[p / K] (K = P / N),
// every other row zero, or, with zero_rest = false, uninitialized (for consumers that read
// only the filled slots: the masked GEMMs; saves a memset of rows x C). Forward only.
Tensor moe_scatter_rows(const Tensor& src, const Tensor& dest, int64_t rows,
                        bool zero_rest = true);
// The combine from the masked layout: y_rows (R, D) float (each expert's outputs in its
// slots), w (N, K) float like y_rows, dest (N K) i64 -> y (N, D), y[t] = sum over k of
// w[t, k] * y_rows[dest[t K + k]], moe_combine's arithmetic (products rounded, added in k
// order), so the same bits as the routed path for the same rows. Forward only.
Tensor moe_combine_rows(const Tensor& y_rows, const Tensor& w, const Tensor& dest);
// Auxiliary-loss-free balancing (paper sec. 2.1.2): after each step,
//   bias_i += gamma * sign(mean(load) - load_i)
// in place, not recorded. bias (E) float, load (E) int (moe_route's load, summed over the
// step's micro-batches and ranks by the caller), same device; gamma >= 0.
void moe_update_bias(Tensor& bias, const Tensor& load, double gamma);

}  // namespace r1
