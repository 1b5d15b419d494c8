// The dense student (DESIGN.md "Model"): Llama/Qwen2 style decoder, the model the
// distillation stage trains. Pre-norm blocks of grouped-query attention (RoPE in the
// Llama/Qwen half-split convention, optional q/k/v biases) and a SwiGLU MLP, RMSNorm, and an
// LM head that is its own matrix or the embedding (tie_word_embeddings). Parameters carry the
// HF names of Qwen2ForCausalLM / LlamaForCausalLM (model/checkpoint.h), so a checkpoint loads
// straight into it. Every op goes through the engine's autograd: backward(sum(G * logits))
// fills each parameter's .grad. scripts/reference/dense.py is the independent PyTorch
// reference; tests/model/test_dense_parity.cc holds the two together.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/ops.h"
#include "engine/tensor.h"
#include "model/checkpoint.h"
#include "model/causal_lm.h"
#include "model/config.h"

namespace r1 {

class DenseModel : public CausalLM {
 public:
  // cfg a qwen2 or llama config; params every tensor of parameter_specs(cfg), one float dtype
  // and one device (shapes checked; InputError naming the tensor otherwise). The parameters
  // are shared, not copied, and marked requires_grad. max_positions sizes the RoPE table:
  // every position a forward sees must be below it.
  DenseModel(ModelConfig cfg, ParamMap params, int64_t max_positions);

  // Every parameter of parameter_specs(cfg): matrices (embedding, projections, head)
  // N(0, kInitStd), norms 1, biases 0; tensor i of the spec list drawn from its own stream of
  // `seed`, so the draw does not depend on the device.
  static ParamMap init_params(const ModelConfig& cfg, uint64_t seed, DType dtype = DType::F32,
                              Device dev = Device::cpu());
  static constexpr double kInitStd = 0.02;  // HF initializer_range default

  struct Output {
    Tensor logits;  // (B, T, V) unless !want_logits (then undefined)
    Tensor hidden;  // (B, T, hidden_size), after the final norm
  };
  // ids (B, T) i32/i64; positions (B, T) int or undefined: 0..T-1, or, with segments, the
  // count of earlier tokens of the same segment in the row (each packed sequence starts again
  // at 0, as the reference does); segments (B, T) int or undefined: a token attends to
  // earlier tokens of its own segment only.
  Output forward(const Tensor& ids, const Tensor& positions = Tensor(),
                 const Tensor& segments = Tensor(), bool want_logits = true);

  // KV-cached forward (model/causal_lm.h) over a GQA cache: each token's entry is its
  // rotated keys then its values, [k (Hk * head_dim), v (Hk * head_dim)]; the attention is
  // engine/ops_paged.h's with Hk kv heads (v_offset = Hk * head_dim). Prefill and decode are
  // the same call; forward only.
  Tensor forward_cached(const Tensor& ids, const Tensor& seq, const Tensor& pos,
                        PagedKvCache& cache, const CachedForwardOptions& opt) override;
  using CausalLM::forward_cached;
  PagedKvCache make_cache(int64_t num_blocks) const override;
  const Tensor& lm_head() const override;
  int64_t max_positions() const override { return max_positions_; }

  const ModelConfig& config() const { return cfg_; }
  ParamMap& params() { return params_; }
  // The parameters in parameter_specs order (the optimizer's list).
  std::vector<Tensor> trainable() const;

 private:
  // x (B, T, hidden) -> (B, T, hidden): the attention half of layer i, residual excluded.
  Tensor attention_block(int64_t i, const Tensor& x, const Tensor& positions,
                         const Tensor& segments);
  // x (B, T, hidden) -> (B, T, hidden): the SwiGLU MLP of layer i, residual excluded.
  Tensor mlp_block(int64_t i, const Tensor& x);
  const Tensor& param(const std::string& name) const;
  Tensor optional_param(const std::string& name) const;  // undefined when absent

  ModelConfig cfg_;
  ParamMap params_;
  std::vector<std::string> order_;  // parameter_specs names
  RopeTable rope_;
  int64_t max_positions_ = 0;
};

// (B, T) i64 on segments' device: for each token, the number of earlier tokens of the same
// segment in its row (the positions of packed sequences that each start at 0).
Tensor positions_within_segments(const Tensor& segments);

}  // namespace r1
