// MLA's absorbed (decoding) form, as FlashMLA computes it (DESIGN.md "Model"): instead of
// expanding every cached token's latent c into per-head keys and values with kv_b_proj, the
// key up-projection W_UK is absorbed into the query and the value up-projection W_UV into the
// output, so attention runs over the latent cache itself: kv_lora_rank + qk_rope_head_dim
// numbers per token (576 in DeepSeek-V3), shared by every head, against
// H * (qk_nope + qk_rope + v_head_dim) per token for the expanded keys and values.
//
// With W = kv_b_proj.weight viewed (H, nope + v, kv_lora): W_UK[h] = W[h, :nope] (nope, L),
// W_UV[h] = W[h, nope:] (v, L). For query token t, head h and cached token s:
//   expanded:  k_nope[s,h] = W_UK[h] c[s],  v[s,h] = W_UV[h] c[s],
//              score = (q_nope . k_nope[s,h] + q_pe . k_pe[s]) * scale
//   absorbed:  q_lat = W_UK[h]^T q_nope (L), score = (q_lat . c[s] + q_pe . k_pe[s]) * scale,
//              o_lat = sum_s p_s c[s] (L), out = W_UV[h] o_lat (v)
// which are equal by associativity. Forward only (decoding runs under NoGrad), though every
// step is an engine op, so it runs on any device the ops run on and would also record a tape.
#pragma once
#include <cstdint>

#include "engine/ops.h"

namespace r1 {

// The latent cache entries of a block of tokens for one MLA layer.
struct MlaLatent {
  Tensor latent;  // (B, T, kv_lora_rank): kv_a_layernorm(the first kv_lora_rank of kv_a)
  Tensor k_pe;    // (B, T, rope): the shared RoPE key, rotated at the token's position
};

// x (B, T, hidden) (the layer's input_layernorm output), kv_a_weight (kv_lora_rank + rope,
// hidden) (kv_a_proj_with_mqa.weight), kv_a_norm_weight (kv_lora_rank), positions (B, T) or
// (T) int -> the latent cache entries of those tokens, computed as model/deepseek_v3.cc does.
MlaLatent mla_kv_latent(const Tensor& x, const Tensor& kv_a_weight,
                        const Tensor& kv_a_norm_weight, double eps, const Tensor& positions,
                        const RopeTable& rope_table);

// The absorbed MLA attention of one layer for Tq query tokens over a latent cache of S tokens.
// q_nope (B, Tq, H, nope), q_pe (B, Tq, H, rope) (already rotated), latent (B, S, L),
// k_pe (B, S, rope) (rotated), kv_b_weight (H * (nope + v_dim), L), scale the softmax scale
// (ModelConfig::softmax_scale()). Causal with an offset: query t sits at position
// S - Tq + t and sees cache entries s <= S - Tq + t (Tq == S: ordinary causal prefill;
// Tq == 1: one decode step that sees the whole cache). -> (B, Tq, H, v_dim), q's dtype.
// Errors (r1::Error): shapes that do not fit, Tq > S, dtypes or devices that differ.
Tensor mla_attention_absorbed(const Tensor& q_nope, const Tensor& q_pe, const Tensor& latent,
                              const Tensor& k_pe, const Tensor& kv_b_weight, int64_t nope,
                              int64_t v_dim, double scale);

}  // namespace r1
