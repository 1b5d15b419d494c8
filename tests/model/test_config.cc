// ModelConfig (model/config.h): real Hugging Face config.json files load unchanged (DeepSeek-V3,
// DeepSeek-V2-Lite, Qwen2.5-0.5B, written out below from their published configs) and give
// the published parameter counts (671B, 15.7B, 0.49B), DeepSeek's softmax scale and RoPE;
// every bad field ends with one InputError naming the file and the field; saving round-trips.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/error.h"
#include "model/config.h"
#include "tests/harness.h"

namespace r1 {
namespace {

// deepseek-ai/DeepSeek-V3 config.json (its auto_map and quantization_config kept: ignored).
const char* kDeepseekV3 = R"({
  "architectures": ["DeepseekV3ForCausalLM"],
  "attention_bias": false, "attention_dropout": 0.0,
  "auto_map": {"AutoConfig": "configuration_deepseek.DeepseekV3Config"},
  "aux_loss_alpha": 0.001, "bos_token_id": 0, "eos_token_id": 1, "ep_size": 1,
  "first_k_dense_replace": 3, "hidden_act": "silu", "hidden_size": 7168,
  "initializer_range": 0.02, "intermediate_size": 18432, "kv_lora_rank": 512,
  "max_position_embeddings": 163840, "model_type": "deepseek_v3",
  "moe_intermediate_size": 2048, "moe_layer_freq": 1, "n_group": 8, "n_routed_experts": 256,
  "n_shared_experts": 1, "norm_topk_prob": true, "num_attention_heads": 128,
  "num_experts_per_tok": 8, "num_hidden_layers": 61, "num_key_value_heads": 128,
  "num_nextn_predict_layers": 1, "pretraining_tp": 1, "q_lora_rank": 1536,
  "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
  "quantization_config": {"activation_scheme": "dynamic", "fmt": "e4m3",
                          "quant_method": "fp8", "weight_block_size": [128, 128]},
  "rms_norm_eps": 1e-06,
  "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 1.0,
                   "mscale_all_dim": 1.0, "original_max_position_embeddings": 4096,
                   "type": "yarn"},
  "rope_theta": 10000, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid",
  "seq_aux": true, "tie_word_embeddings": false, "topk_group": 4, "topk_method": "noaux_tc",
  "torch_dtype": "bfloat16", "transformers_version": "4.33.1", "use_cache": true,
  "v_head_dim": 128, "vocab_size": 129280
})";

// deepseek-ai/DeepSeek-V2-Lite: q_lora_rank null (q_proj directly), softmax scoring.
const char* kDeepseekV2Lite = R"({
  "architectures": ["DeepseekV2ForCausalLM"], "attention_bias": false,
  "attention_dropout": 0.0, "aux_loss_alpha": 0.001, "bos_token_id": 100000,
  "eos_token_id": 100001, "first_k_dense_replace": 1, "hidden_act": "silu",
  "hidden_size": 2048, "initializer_range": 0.02, "intermediate_size": 10944,
  "kv_lora_rank": 512, "max_position_embeddings": 163840, "model_type": "deepseek_v2",
  "moe_intermediate_size": 1408, "moe_layer_freq": 1, "n_group": 1, "n_routed_experts": 64,
  "n_shared_experts": 2, "norm_topk_prob": false, "num_attention_heads": 16,
  "num_experts_per_tok": 6, "num_hidden_layers": 27, "num_key_value_heads": 16,
  "pretraining_tp": 1, "q_lora_rank": null, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64,
  "rms_norm_eps": 1e-06,
  "rope_scaling": {"beta_fast": 32, "beta_slow": 1, "factor": 40, "mscale": 0.707,
                   "mscale_all_dim": 0.707, "original_max_position_embeddings": 4096,
                   "type": "yarn"},
  "rope_theta": 10000, "routed_scaling_factor": 1.0, "scoring_func": "softmax",
  "seq_aux": true, "tie_word_embeddings": false, "topk_group": 1, "topk_method": "greedy",
  "torch_dtype": "bfloat16", "transformers_version": "4.33.1", "use_cache": true,
  "v_head_dim": 128, "vocab_size": 102400
})";

// Qwen/Qwen2.5-0.5B: GQA 14/2, tied embeddings, q/k/v biases implied by qwen2.
const char* kQwen25 = R"({
  "architectures": ["Qwen2ForCausalLM"], "attention_dropout": 0.0,
  "bos_token_id": 151643, "eos_token_id": 151643, "hidden_act": "silu", "hidden_size": 896,
  "initializer_range": 0.02, "intermediate_size": 4864, "max_position_embeddings": 32768,
  "max_window_layers": 24, "model_type": "qwen2", "num_attention_heads": 14,
  "num_hidden_layers": 24, "num_key_value_heads": 2, "rms_norm_eps": 1e-06,
  "rope_theta": 1000000.0, "sliding_window": 32768, "tie_word_embeddings": true,
  "torch_dtype": "bfloat16", "transformers_version": "4.40.1", "use_cache": true,
  "use_sliding_window": false, "vocab_size": 151936
})";

TEST(ModelConfig, DeepseekV3LoadsWithItsPublishedShape) {
  const ModelConfig c = parse_model_config(kDeepseekV3, "DeepSeek-V3/config.json");
  EXPECT_EQ(c.family, ModelFamily::DeepseekV3);
  EXPECT_EQ(c.q_lora_rank, 1536);
  EXPECT_EQ(c.qk_head_dim(), 192);
  EXPECT_FALSE(c.is_moe_layer(2));
  EXPECT_TRUE(c.is_moe_layer(3));
  // 671B parameters without the MTP module (the paper's figure).
  const double p = static_cast<double>(c.num_parameters());
  EXPECT_GT(p, 670.0e9);
  EXPECT_LT(p, 672.0e9);
  // Softmax scale: 192^-0.5 * mscale^2, mscale = 0.1 * mscale_all_dim * ln(factor) + 1.
  const double m = 0.1 * 1.0 * std::log(40.0) + 1.0;
  EXPECT_NEAR(c.softmax_scale(), m * m / std::sqrt(192.0), 1e-15);
  const RopeConfig r = c.rope();
  EXPECT_EQ(r.dim, 64);
  EXPECT_TRUE(r.interleaved);
  EXPECT_EQ(r.yarn_factor, 40.0);
  EXPECT_EQ(r.original_max_position_embeddings, 4096);
  EXPECT_EQ(r.mscale_all_dim, 1.0);
}

TEST(ModelConfig, DeepseekV2LiteHasNoQCompression) {
  const ModelConfig c = parse_model_config(kDeepseekV2Lite, "DeepSeek-V2-Lite/config.json");
  EXPECT_EQ(c.family, ModelFamily::DeepseekV2);
  EXPECT_EQ(c.q_lora_rank, 0);
  EXPECT_EQ(c.scoring_func, "softmax");
  const double p = static_cast<double>(c.num_parameters());
  EXPECT_GT(p, 15.6e9);  // published: 15.7B
  EXPECT_LT(p, 15.8e9);
}

TEST(ModelConfig, Qwen25IsADenseGqaStudent) {
  const ModelConfig c = parse_model_config(kQwen25, "Qwen2.5-0.5B/config.json");
  EXPECT_EQ(c.family, ModelFamily::Qwen2);
  EXPECT_TRUE(c.attention_bias);
  EXPECT_TRUE(c.tie_word_embeddings);
  EXPECT_EQ(c.dense_head_dim(), 64);
  EXPECT_FALSE(c.rope().interleaved);
  EXPECT_EQ(c.rope().dim, 64);
  EXPECT_DOUBLE_EQ(c.softmax_scale(), 1.0 / 8.0);
  const double p = static_cast<double>(c.num_parameters());
  EXPECT_GT(p, 0.490e9);  // published: 0.49B (494M)
  EXPECT_LT(p, 0.498e9);
}

// The config with one field replaced (or removed when value is empty).
std::string with_field(const char* base, const std::string& key, const std::string& value) {
  nlohmann::json j = nlohmann::json::parse(base);
  if (value.empty()) j.erase(key);
  else j[key] = nlohmann::json::parse(value);
  return j.dump();
}

TEST(ModelConfig, BadFieldsNameTheFileAndTheField) {
  struct Case {
    const char* base;
    std::string key, value, expect;  // expect: a substring of the message
  };
  const Case cases[] = {
      {kDeepseekV3, "n_groups", "8", "unknown field 'n_groups'"},
      {kDeepseekV3, "hidden_size", "\"7168\"", "field 'hidden_size': expected an integer"},
      {kDeepseekV3, "hidden_size", "7168.5", "field 'hidden_size': expected an integer"},
      {kDeepseekV3, "vocab_size", "", "field 'vocab_size': missing"},
      {kDeepseekV3, "n_group", "7", "field 'n_group': 7 groups do not split 256"},
      {kDeepseekV3, "topk_group", "9", "field 'topk_group'"},
      {kDeepseekV3, "num_experts_per_tok", "129", "field 'num_experts_per_tok'"},
      {kDeepseekV3, "qk_rope_head_dim", "63", "field 'qk_rope_head_dim': must be even"},
      {kDeepseekV3, "kv_lora_rank", "", "field 'kv_lora_rank': missing"},
      {kDeepseekV3, "model_type", "\"gpt2\"", "field 'model_type'"},
      {kDeepseekV3, "hidden_act", "\"gelu\"", "field 'hidden_act'"},
      {kDeepseekV3, "rope_scaling",
       R"({"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0})",
       "field 'type': 'llama3' is not supported"},
      {kDeepseekV3, "rope_scaling", R"({"type": "yarn", "factor": 0.5})", "field 'factor'"},
      {kQwen25, "num_key_value_heads", "3", "field 'num_key_value_heads': 3 does not divide"},
      {kQwen25, "use_sliding_window", "true", "field 'use_sliding_window'"},
      {kQwen25, "n_routed_experts", "4", "field 'n_routed_experts'"},
      {kDeepseekV3, "precision", "\"fp4\"", "field 'precision': must be \"fp8\", \"bf16\" or \"default\""},
      {kQwen25, "precision", "\"fp8\"", "field 'precision': fp8 is implemented for the DeepSeek-V3"},
  };
  for (const Case& c : cases) {
    const std::string text = with_field(c.base, c.key, c.value);
    try {
      parse_model_config(text, "run/config.json");
      ADD_FAILURE() << c.key << "=" << c.value << ": accepted";
    } catch (const InputError& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.rfind("run/config.json: ", 0), 0u) << msg;
      EXPECT_NE(msg.find(c.expect), std::string::npos) << "got: " << msg;
      EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
    }
  }
  EXPECT_THROW(parse_model_config("{\"model_type\": ", "x.json"), InputError);
  EXPECT_THROW(parse_model_config("[1, 2]", "x.json"), InputError);
  EXPECT_THROW(load_model_config("/nonexistent/config.json"), InputError);
}

TEST(ModelConfig, SaveLoadRoundTripsAtomically) {
  const std::filesystem::path dir =
      std::filesystem::temp_directory_path() /
      ("r1_test_config_" + std::to_string(test::case_seed(1)));
  std::filesystem::create_directories(dir);
  for (const char* text : {kDeepseekV3, kDeepseekV2Lite, kQwen25}) {
    const ModelConfig c = parse_model_config(text, "in.json");
    const std::string path = (dir / "config.json").string();
    save_model_config(c, path);
    const ModelConfig back = load_model_config(path);
    EXPECT_EQ(model_config_json(back), model_config_json(c));
    EXPECT_EQ(back.num_parameters(), c.num_parameters());
    EXPECT_EQ(back.softmax_scale(), c.softmax_scale());
  }
  // precision: fp8 is r1's key; it survives the round trip and is absent by default.
  ModelConfig c8 = parse_model_config(with_field(kDeepseekV3, "precision", "\"fp8\""), "in.json");
  EXPECT_TRUE(c8.fp8);
  EXPECT_FALSE(parse_model_config(kDeepseekV3, "in.json").fp8);
  save_model_config(c8, (dir / "config.json").string());
  EXPECT_TRUE(load_model_config((dir / "config.json").string()).fp8);
  // precision: bf16 likewise (the FP8 recipe's baseline).
  ModelConfig c16 = parse_model_config(with_field(kDeepseekV3, "precision", "\"bf16\""), "in.json");
  EXPECT_TRUE(c16.bf16_linear && !c16.fp8);
  save_model_config(c16, (dir / "config.json").string());
  EXPECT_TRUE(load_model_config((dir / "config.json").string()).bf16_linear);
  int files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1) << "a temp file was left behind";
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace r1

namespace r1 {
namespace {

// The presets in configs/ load and are the sizes their names promise (scripts/reference's
// PyTorch models count the same parameters: 0.94M, 0.92M, 681M).
TEST(ModelConfig, PresetsLoad) {
  const std::filesystem::path dir = std::filesystem::path(R1_SOURCE_DIR) / "configs";
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir)) {
    if (e.path().extension() != ".json") continue;
    const ModelConfig c = load_model_config(e.path().string());
    const std::string name = e.path().stem().string();
    const double p = static_cast<double>(c.num_parameters());
    if (name.rfind("tiny", 0) == 0) {
      EXPECT_LT(p, 2e6) << name << ": a CPU-in-minutes model";
    } else if (name == "small") {
      EXPECT_TRUE(p > 1e8 && p < 1e9) << name << ": " << p;
    } else if (name == "v3-shapes") {
      EXPECT_TRUE(p > 670e9 && p < 672e9) << name << ": " << p;
    }
    ++n;
  }
  EXPECT_GE(n, 4) << "configs/ should hold tiny, tiny-dense, small and v3-shapes";
}

}  // namespace
}  // namespace r1
