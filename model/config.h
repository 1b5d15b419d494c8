// Model configuration with the field names of Hugging Face config.json, so a real checkpoint's
// config loads unchanged: DeepSeek-V3 (MLA + MoE), DeepSeek-V2(-Lite) (q_lora_rank null), and
// the dense students Qwen2 and Llama. Presets in configs/ (tiny, tiny-dense, small, v3-shapes).
//
// Loading checks every field: a wrong type, a missing required field, an inconsistent value
// (heads that do not divide, experts that groups do not split, ...) or a field no model here
// knows ends with an InputError naming the file and the field. Fields HF writes that do not
// change the computation (torch_dtype, use_cache, initializer_range, ...) are accepted and
// ignored: kIgnoredFields lists them.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "engine/ops.h"

namespace r1 {

// rope_scaling: YaRN as DeepSeek uses it ({"type" or "rope_type": "yarn", factor, ...}).
struct RopeScaling {
  std::string type;  // "yarn" (the only kind the engine implements)
  double factor = 1.0;
  int64_t original_max_position_embeddings = 4096;
  double beta_fast = 32.0;
  double beta_slow = 1.0;
  double mscale = 1.0;
  double mscale_all_dim = 0.0;
};

enum class ModelFamily : uint8_t { DeepseekV3, DeepseekV2, Qwen2, Llama };

struct ModelConfig {
  ModelFamily family = ModelFamily::DeepseekV3;
  std::string model_type;                 // "deepseek_v3", "deepseek_v2", "qwen2", "llama"
  std::vector<std::string> architectures;  // e.g. "DeepseekV3ForCausalLM"
  // ---- shared -------------------------------------------------------------------------------
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t intermediate_size = 0;  // dense MLP width
  int64_t num_hidden_layers = 0;
  int64_t num_attention_heads = 0;
  int64_t num_key_value_heads = 0;  // dense GQA; DeepSeek writes it equal to the heads
  int64_t max_position_embeddings = 0;
  double rms_norm_eps = 1e-6;
  double rope_theta = 10000.0;
  std::optional<RopeScaling> rope_scaling;
  bool tie_word_embeddings = false;
  // "precision": "fp8" (r1's key, not HF's): the DeepSeek-V3 model's projections (attention
  // and every MLP/expert linear layer) run fprop, dgrad and wgrad as block-scaled FP8 GEMMs
  // (engine/ops_fp8.h, DeepSeek-V3's recipe); the router, the LM head, embeddings, norms and
  // attention itself stay in the parameters' precision, as in the V3 report.
  bool fp8 = false;
  // "precision": "bf16": the same layers through linear_bf16 (bf16 GEMMs with fp32
  // accumulation, the baseline FP8 training is compared with); exclusive with fp8.
  bool bf16_linear = false;
  // fp8 training and prefill: the routed experts' projections as grouped layers
  // (grouped_linear_fp8: tokens sorted by expert, one grouped GEMM per projection for all
  // experts) rather than one linear_fp8 per expert; the same bits either way. Run-time only
  // (not in config.json): the per-expert form stays for comparisons.
  bool fp8_grouped_experts = true;
  // fp8 ablations: projections whose parameter name contains one of these strings stay out of
  // FP8 (the parameters' precision, or bf16 with bf16_linear); e.g. {"o_proj"}, {"experts."},
  // {"self_attn."}. Training and scoring forwards only: generation refuses a non-empty list.
  // Run-time only (not in config.json), as fp8_grouped_experts.
  std::vector<std::string> fp8_keep;
  // Whether the projection `param` (a parameter name) runs in FP8: fp8 and not kept out.
  bool fp8_projection(const std::string& param) const {
    if (!fp8) return false;
    for (const std::string& k : fp8_keep)
      if (param.find(k) != std::string::npos) return false;
    return true;
  }
  std::string hidden_act = "silu";
  std::optional<int64_t> bos_token_id, eos_token_id;
  // ---- dense students (Qwen2, Llama) --------------------------------------------------------
  bool attention_bias = false;  // q, k, v biases (Qwen2: always); Llama: o_proj's too
  int64_t head_dim = 0;         // 0: hidden_size / num_attention_heads
  // ---- MLA (DeepSeek) -----------------------------------------------------------------------
  int64_t q_lora_rank = 0;  // 0 (null in config.json): q_proj directly, as V2-Lite
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_head_dim = 0;
  int64_t qk_rope_head_dim = 0;
  int64_t v_head_dim = 0;
  // ---- MoE (DeepSeek) -----------------------------------------------------------------------
  int64_t n_routed_experts = 0;  // 0: every layer dense
  int64_t n_shared_experts = 0;
  int64_t num_experts_per_tok = 0;
  int64_t moe_intermediate_size = 0;
  int64_t n_group = 1;
  int64_t topk_group = 1;
  int64_t first_k_dense_replace = 0;
  int64_t moe_layer_freq = 1;
  double routed_scaling_factor = 1.0;
  bool norm_topk_prob = true;
  std::string scoring_func = "sigmoid";  // V3: sigmoid; V2: softmax
  std::string topk_method = "noaux_tc";  // V3: noaux_tc (bias-corrected group top-k)
  int64_t num_nextn_predict_layers = 0;  // MTP modules stored after the main layers

  bool is_deepseek() const {
    return family == ModelFamily::DeepseekV3 || family == ModelFamily::DeepseekV2;
  }
  // Layer i is an MoE layer (DeepSeek's rule: routed experts, i >= first_k_dense_replace,
  // i % moe_layer_freq == 0).
  bool is_moe_layer(int64_t i) const;
  int64_t qk_head_dim() const { return qk_nope_head_dim + qk_rope_head_dim; }
  int64_t dense_head_dim() const {
    return head_dim > 0 ? head_dim : hidden_size / std::max<int64_t>(num_attention_heads, 1);
  }
  // The engine's RoPE table config for this model: DeepSeek rotates interleaved pairs over
  // qk_rope_head_dim with YaRN when configured; Qwen2/Llama rotate halves over the head dim.
  RopeConfig rope() const;
  // DeepSeek's attention softmax scale: qk_head_dim^-0.5 times YaRN's mscale(factor,
  // mscale_all_dim)^2 when rope_scaling is set; dense: head_dim^-0.5.
  double softmax_scale() const;
  // Parameter count (embeddings, attention, MLPs/experts, norms, head; MTP layers excluded).
  int64_t num_parameters() const;
};

// The HF config.json fields that are accepted and ignored (they do not change the function
// the model computes: dtype, caching, init, dropout at 0, remote code, quantization notes).
extern const std::vector<std::string> kIgnoredFields;

// Parses and validates; `where` (a file name) starts every error message.
ModelConfig parse_model_config(const std::string& json_text, const std::string& where);
ModelConfig load_model_config(const std::string& path);
// config.json text with HF field names (null for q_lora_rank 0 in DeepSeek configs).
std::string model_config_json(const ModelConfig& c);
// Atomic write (temp file, fsync, rename).
void save_model_config(const ModelConfig& c, const std::string& path);

}  // namespace r1
