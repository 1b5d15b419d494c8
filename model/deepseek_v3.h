// DeepSeek-V3 (MLA + MoE) as HF's DeepseekV3ForCausalLM computes it, with the semantics of
// DeepSeek's inference/model.py (DESIGN.md "Model"), built from the engine's differentiable
// ops so one backward() gives every parameter's gradient. The independent reference is
// scripts/reference/deepseek_v3.py; tests/model/test_deepseek_parity.cc holds the two to 1e-4.
//
// Per layer (pre-norm residual):  x += mla(input_layernorm(x));
//                                 x += mlp_or_moe(post_attention_layernorm(x)).
// MLA runs in its expanded (training) form: per-head keys k = [k_nope, k_pe] with the one
// RoPE key k_pe shared by every head, values from the kv latent, attention(q, k, v) with
// Hk = H. MoE: sigmoid router with the selection bias (engine/ops_moe.h), each routed expert
// on the tokens that chose it, the results put back in token order with index_select (so the
// backward is a gather, never a scatter-add), plus the shared experts unweighted.
#pragma once
#include <cstdint>
#include <optional>
#include <vector>

#include "engine/ops.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "model/causal_lm.h"
#include "model/kv_cache.h"

namespace r1 {

class DeepseekV3 : public CausalLM {
 public:
  // params: every tensor of parameter_specs(cfg), one float dtype (f32 or f64 when training;
  // bf16 runs forward only: the router's f32 weights have no differentiable cast back), one
  // device; the caller sets requires_grad on those it trains. max_positions bounds the
  // positions forward() accepts (the RoPE table's length).
  DeepseekV3(ModelConfig cfg, ParamMap params, int64_t max_positions);

  // HF-style init: matrices N(0, initializer_range = 0.02), norms 1, e_score_correction_bias
  // 0. Tensor k of parameter_specs(cfg) draws from its own Philox seed, mixed from (seed, k):
  // the same numbers on every device.
  static ParamMap init_params(const ModelConfig& cfg, uint64_t seed, DType dtype = DType::F32,
                              Device dev = Device::cpu());

  struct Output {
    Tensor logits;        // (B, T, V); undefined unless want_logits
    Tensor hidden;        // (B, T, hidden) after the final norm
    Tensor balance_loss;  // () summed over MoE layers; undefined when balance_alpha == 0
    std::vector<Tensor> expert_load;  // per MoE layer, in layer order: (E) i64
    std::vector<Tensor> routing;      // per MoE layer: (B*T, top_k) i64 chosen experts
  };

  // ids (B, T) int; positions (B, T) int or undefined: 0..T-1 per row, or with segments the
  // count of earlier tokens of the same segment in the row (each packed sequence restarts at
  // 0, as the reference does); segments (B, T) int or undefined: packed sequences, attention
  // stays inside a segment. The balance loss counts each maximal run of one segment id in a
  // row as a sequence (each row without segments).
  Output forward(const Tensor& ids, const Tensor& positions = Tensor(),
                 const Tensor& segments = Tensor(), bool want_logits = true,
                 double balance_alpha = 0.0);

  // Sequences that share their first tokens (the G samples of a GRPO group share the prompt)
  // with every distinct token computed once. Two layouts: the compact one holds each distinct
  // token once (N rows: each shared prefix once, then each sequence's own tokens); the padded
  // one, (B, T) as forward() takes it, is what attention sees, its rows gathered from the
  // compact rows (`expand`) and its outputs gathered back (`collapse`). Every other step (the
  // projections, norms, RoPE, MLPs, experts, the LM head) runs on the compact rows, so a group
  // of G samples with a P-token prompt saves (G - 1) P rows of all of it; the prefix rows'
  // gradients sum over the sequences that share them.
  struct SharedPrefixBatch {
    int64_t B = 0, T = 0;            // the padded layout
    std::vector<int64_t> ids;        // (N) the compact tokens
    std::vector<int64_t> positions;  // (N) each one's position in its sequence
    std::vector<int64_t> expand;     // (B * T) the compact row at (b, t); padding: row 0
    std::vector<int64_t> collapse;   // (N) the padded row b * T + t whose attention output
                                     // compact row n takes (a shared prefix: its first sequence)
  };
  // Sequence b = prefixes[b] followed by rests[b]; sequences whose prefixes are equal share
  // them (the first one's rows). Every prefix must be non-empty.
  static SharedPrefixBatch share_prefixes(const std::vector<std::vector<int32_t>>& prefixes,
                                          const std::vector<std::vector<int32_t>>& rests);
  // -> hidden (N, hidden) after the final norm, row n of the compact layout. Row n's values
  // are the bits forward() gives its token in the padded batch under BatchInvariantScope
  // (every product is per row there and attention reads the same keys in the same order);
  // tests/model/test_deepseek_v3.cc checks it, and the gradients against forward()'s.
  Tensor forward_shared(const SharedPrefixBatch& batch);

  // KV-cached forward for generation (DESIGN.md "Generation"), MLA in the absorbed form over
  // the latent cache (model/mla_decode.h): N query tokens ids (N) int, each of cache sequence
  // seq[n] (N) i64 at position pos[n] (N) i64, which the caller has reserved with
  // cache.extend(). Writes every layer's latent entries, then attends each token to its
  // sequence's positions 0..pos[n]; prefill (many tokens of one sequence) and decode (one token
  // per sequence) are the same call. -> hidden (N, hidden) after the final norm. Every step is
  // per row (norms, RoPE, the router) or a matrix product, so under BatchInvariantScope a
  // row's result does not depend on the other rows of the call. Forward only (run it under
  // NoGrad). The cache is the one make_cache() builds.
  Tensor forward_cached(const Tensor& ids, const Tensor& seq, const Tensor& pos,
                        PagedKvCache& cache, const CachedForwardOptions& opt) override;
  using CausalLM::forward_cached;
  // A cache for this model: one latent entry (kv_lora_rank + qk_rope_head_dim) per token and
  // layer, num_blocks blocks of PagedKvCache::kBlockSize tokens.
  PagedKvCache make_cache(int64_t num_blocks) const override;
  // The LM head (V, hidden): lm_head.weight, or the embedding when tied.
  const Tensor& lm_head() const override;
  int64_t max_positions() const override { return max_positions_; }
  // fp8: every MoE layer's expert weights stacked per projection and block-quantized, (E, I,
  // hidden) for gate and up and (E, hidden, I) for down (the bits linear_fp8 makes of each),
  // as the grouped FP8 GEMMs take them; generation then runs each layer's experts as one
  // grouped GEMM per projection. nullptr in other precisions.
  std::shared_ptr<const DecodePrep> prepare_decode() const override;
  struct StackedExperts;  // one MoE layer's share of it (deepseek_v3.cc)

  const ModelConfig& config() const { return cfg_; }
  ParamMap& params() { return params_; }
  // The parameters requiring grad, in parameter_specs order.
  std::vector<Tensor> trainable() const;

 private:
  struct MoeOut {
    Tensor y;             // (N, hidden)
    Tensor indices;       // (N, top_k) i64
    Tensor load;          // (E) i64
    Tensor balance_loss;  // () or undefined
  };
  const Tensor& p(const std::string& name) const;
  // forward_shared's maps on the device: expand (B * T), collapse (N) i64.
  struct SharedMaps {
    int64_t B, T;
    Tensor expand, collapse;
  };
  // x (B, T, hidden), positions (B, T) i64, segments (B, T) or undefined -> (B, T, hidden).
  // With `shared`, x and positions are the compact layout (1, N, ...) and attention runs on
  // the padded one.
  // xq: x's FP8 quantization when the caller made it (fused into the norm); else made here.
  Tensor attention_block(const std::string& pre, const Tensor& x, const Tensor& positions,
                         const Tensor& segments, const SharedMaps* shared = nullptr,
                         const Fp8Rows* xq = nullptr) const;
  // The decoder layers and the final norm over h (B, T, hidden): fills out's expert_load,
  // routing and balance_loss, returns the normed hidden states.
  Tensor layers(Tensor h, const Tensor& pos, const Tensor& seg, const Tensor& seq_lens,
                double balance_alpha, const SharedMaps* shared, Output& out);
  // x (..., hidden) -> (..., hidden): down(swiglu(gate(x), up(x))); xq as attention_block's.
  Tensor mlp(const std::string& pre, const Tensor& x, const Fp8Rows* xq = nullptr) const;
  // rmsnorm(x) by the parameter `name`; with xq and the config's fp8, also the output's FP8
  // quantization in the same kernel (rmsnorm_quantize_fp8) for the projections reading it.
  Tensor norm(const Tensor& x, const std::string& name, std::optional<Fp8Rows>* xq) const;
  // x @ p(name)^T: linear, or linear_fp8 / linear_bf16 as the config's precision says. xq:
  // x's FP8 quantization when several projections share x (made once by the caller; fp8 only).
  Tensor proj(const Tensor& x, const std::string& name, const Fp8Rows* xq = nullptr) const;
  // x's FP8 quantization for projections that share it, when the config says fp8.
  std::optional<Fp8Rows> shared_fp8_input(const Tensor& x) const;
  // x (N, hidden), seq_lens (S) i64 (for the balance loss) -> MoeOut. device_routing: every
  // expert on every row, combined on the device (CachedForwardOptions; forward only).
  // stacked: the layer's prepared expert weights (prepare_decode; fp8 generation, forward
  // only): the experts run as grouped FP8 GEMMs, in the masked layout with device_routing,
  // else in the contiguous one.
  MoeOut moe(const std::string& pre, const Tensor& x, const Tensor& seq_lens,
             double balance_alpha, bool device_routing = false,
             const StackedExperts* stacked = nullptr) const;

  ModelConfig cfg_;
  ParamMap params_;
  int64_t max_positions_;
  RopeTable rope_;
};

}  // namespace r1
