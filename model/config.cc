// ModelConfig from and to HF config.json (model/config.h).
#include "model/config.h"

#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "engine/atomic_file.h"
#include "engine/error.h"

namespace r1 {

const std::vector<std::string> kIgnoredFields = {
    "_name_or_path",   "attention_dropout", "auto_map",          "aux_loss_alpha",
    "ep_size",         "initializer_range", "max_window_layers", "pretraining_tp",
    "quantization_config", "seq_aux",       "sliding_window",    "torch_dtype",
    "transformers_version", "use_cache",    "pad_token_id",      "dtype"};

namespace {

using json = nlohmann::json;

// Reads one config: every accessor marks its key as seen, so unknown keys can be reported.
class Reader {
 public:
  Reader(const json& j, std::string where) : j_(j), where_(std::move(where)) {}

  bool has(const char* key) const { return j_.contains(key) && !j_.at(key).is_null(); }
  [[noreturn]] void fail(const char* key, const std::string& what) const {
    throw InputError(fmt::format("{}: field '{}': {}", where_, key, what));
  }
  const json* get(const char* key) {
    seen_.insert(key);
    return has(key) ? &j_.at(key) : nullptr;
  }
  void read(const char* key, int64_t& v, bool required = false) {
    const json* x = get(key);
    if (!x) {
      if (required) fail(key, "missing (required)");
      return;
    }
    if (!x->is_number_integer()) fail(key, fmt::format("expected an integer, got {}", x->dump()));
    v = x->get<int64_t>();
  }
  void read(const char* key, double& v) {
    const json* x = get(key);
    if (!x) return;
    if (!x->is_number()) fail(key, fmt::format("expected a number, got {}", x->dump()));
    v = x->get<double>();
  }
  void read(const char* key, bool& v) {
    const json* x = get(key);
    if (!x) return;
    if (!x->is_boolean()) fail(key, fmt::format("expected true or false, got {}", x->dump()));
    v = x->get<bool>();
  }
  void read(const char* key, std::string& v) {
    const json* x = get(key);
    if (!x) return;
    if (!x->is_string()) fail(key, fmt::format("expected a string, got {}", x->dump()));
    v = x->get<std::string>();
  }
  void read(const char* key, std::optional<int64_t>& v) {
    const json* x = get(key);
    if (!x) return;
    // Llama 3.1 lists several eos ids: the first is the one generation stops on by default.
    const json& e = x->is_array() && !x->empty() ? x->front() : *x;
    if (!e.is_number_integer()) fail(key, fmt::format("expected an integer id, got {}", x->dump()));
    v = e.get<int64_t>();
  }
  // Keys of the object no reader asked for and kIgnoredFields does not list.
  void check_unknown() const {
    for (const auto& [k, _] : j_.items()) {
      if (seen_.count(k) ||
          std::find(kIgnoredFields.begin(), kIgnoredFields.end(), k) != kIgnoredFields.end())
        continue;
      throw InputError(fmt::format("{}: unknown field '{}' (not a DeepSeek-V2/V3, Qwen2 or "
                                   "Llama config field this engine knows)", where_, k));
    }
  }
  const std::string& where() const { return where_; }

 private:
  const json& j_;
  std::string where_;
  std::set<std::string> seen_;
};

RopeScaling read_rope_scaling(const json& j, const std::string& where) {
  if (!j.is_object())
    throw InputError(fmt::format("{}: field 'rope_scaling': expected an object or null", where));
  Reader r(j, where + ": rope_scaling");
  RopeScaling s;
  r.read("type", s.type);
  std::string rope_type;
  r.read("rope_type", rope_type);
  if (s.type.empty()) s.type = rope_type;
  if (s.type != "yarn")
    r.fail("type", fmt::format("'{}' is not supported (the engine implements YaRN only)",
                               s.type.empty() ? rope_type : s.type));
  r.read("factor", s.factor);
  r.read("original_max_position_embeddings", s.original_max_position_embeddings);
  r.read("beta_fast", s.beta_fast);
  r.read("beta_slow", s.beta_slow);
  r.read("mscale", s.mscale);
  r.read("mscale_all_dim", s.mscale_all_dim);
  r.check_unknown();
  if (!(s.factor >= 1.0)) r.fail("factor", fmt::format("{} must be >= 1", s.factor));
  if (s.original_max_position_embeddings <= 0)
    r.fail("original_max_position_embeddings", "must be > 0");
  if (!(s.beta_fast > s.beta_slow && s.beta_slow > 0))
    r.fail("beta_fast", fmt::format("need beta_fast {} > beta_slow {} > 0", s.beta_fast,
                                    s.beta_slow));
  return s;
}

// Checks that need several fields; `r` names the file.
void validate(const ModelConfig& c, Reader& r) {
  auto positive = [&](const char* key, int64_t v) {
    if (v <= 0) r.fail(key, fmt::format("{} must be > 0", v));
  };
  positive("vocab_size", c.vocab_size);
  positive("hidden_size", c.hidden_size);
  positive("num_hidden_layers", c.num_hidden_layers);
  positive("num_attention_heads", c.num_attention_heads);
  positive("max_position_embeddings", c.max_position_embeddings);
  if (!(c.rms_norm_eps > 0)) r.fail("rms_norm_eps", "must be > 0");
  if (!(c.rope_theta > 0)) r.fail("rope_theta", "must be > 0");
  if (c.hidden_act != "silu") r.fail("hidden_act", fmt::format("'{}': only silu", c.hidden_act));
  if (c.is_deepseek()) {
    positive("kv_lora_rank", c.kv_lora_rank);
    positive("qk_rope_head_dim", c.qk_rope_head_dim);
    positive("v_head_dim", c.v_head_dim);
    if (c.qk_rope_head_dim % 2) r.fail("qk_rope_head_dim", "must be even (rotated in pairs)");
    if (c.qk_nope_head_dim < 0) r.fail("qk_nope_head_dim", "must be >= 0");
    if (c.q_lora_rank < 0) r.fail("q_lora_rank", "must be > 0 or null");
  } else {
    positive("num_key_value_heads", c.num_key_value_heads);
    if (c.num_attention_heads % c.num_key_value_heads)
      r.fail("num_key_value_heads", fmt::format("{} does not divide num_attention_heads {}",
                                                c.num_key_value_heads, c.num_attention_heads));
    if (c.head_dim == 0 && c.hidden_size % c.num_attention_heads)
      r.fail("num_attention_heads", fmt::format("{} does not divide hidden_size {} (and no "
                                                "head_dim is given)", c.num_attention_heads,
                                                c.hidden_size));
    if (c.dense_head_dim() % 2) r.fail("head_dim", "must be even (rotated in pairs)");
    if (c.n_routed_experts) r.fail("n_routed_experts", "a dense model has no experts");
  }
  const bool any_dense = c.n_routed_experts == 0 || c.first_k_dense_replace > 0 ||
                         c.moe_layer_freq > 1;
  if (any_dense) positive("intermediate_size", c.intermediate_size);
  if (c.n_routed_experts < 0) r.fail("n_routed_experts", "must be >= 0");
  if (c.n_routed_experts > 0) {
    positive("moe_intermediate_size", c.moe_intermediate_size);
    positive("n_group", c.n_group);
    if (c.n_routed_experts % c.n_group)
      r.fail("n_group", fmt::format("{} groups do not split {} routed experts", c.n_group,
                                    c.n_routed_experts));
    if (c.topk_group < 1 || c.topk_group > c.n_group)
      r.fail("topk_group", fmt::format("{} must be in [1, n_group = {}]", c.topk_group,
                                       c.n_group));
    const int64_t reachable = c.topk_group * (c.n_routed_experts / c.n_group);
    if (c.num_experts_per_tok < 1 || c.num_experts_per_tok > reachable)
      r.fail("num_experts_per_tok", fmt::format("{} must be in [1, {}] (the experts of "
                                                "topk_group groups)", c.num_experts_per_tok,
                                                reachable));
    if (c.n_shared_experts < 0) r.fail("n_shared_experts", "must be >= 0");
    if (c.first_k_dense_replace < 0 || c.first_k_dense_replace > c.num_hidden_layers)
      r.fail("first_k_dense_replace", fmt::format("{} must be in [0, num_hidden_layers]",
                                                  c.first_k_dense_replace));
    positive("moe_layer_freq", c.moe_layer_freq);
    if (!(c.routed_scaling_factor > 0)) r.fail("routed_scaling_factor", "must be > 0");
    if (c.scoring_func != "sigmoid" && c.scoring_func != "softmax")
      r.fail("scoring_func", fmt::format("'{}': sigmoid or softmax", c.scoring_func));
    if (c.topk_method != "noaux_tc" && c.topk_method != "greedy" &&
        c.topk_method != "group_limited_greedy")
      r.fail("topk_method", fmt::format("'{}': noaux_tc, greedy or group_limited_greedy",
                                        c.topk_method));
  }
  if (c.num_nextn_predict_layers < 0) r.fail("num_nextn_predict_layers", "must be >= 0");
}

}  // namespace

bool ModelConfig::is_moe_layer(int64_t i) const {
  return n_routed_experts > 0 && i >= first_k_dense_replace && i % moe_layer_freq == 0;
}

RopeConfig ModelConfig::rope() const {
  RopeConfig r;
  r.theta = rope_theta;
  if (is_deepseek()) {
    r.dim = qk_rope_head_dim;
    r.interleaved = true;
  } else {
    r.dim = dense_head_dim();
    r.interleaved = false;
  }
  if (rope_scaling) {
    r.yarn_factor = rope_scaling->factor;
    r.original_max_position_embeddings = rope_scaling->original_max_position_embeddings;
    r.beta_fast = rope_scaling->beta_fast;
    r.beta_slow = rope_scaling->beta_slow;
    r.mscale = rope_scaling->mscale;
    r.mscale_all_dim = rope_scaling->mscale_all_dim;
  }
  return r;
}

double ModelConfig::softmax_scale() const {
  if (!is_deepseek()) return 1.0 / std::sqrt(static_cast<double>(dense_head_dim()));
  double s = 1.0 / std::sqrt(static_cast<double>(qk_head_dim()));
  if (rope_scaling && rope_scaling->factor > 1.0) {
    const double m = yarn_mscale(rope_scaling->factor, rope_scaling->mscale_all_dim);
    s *= m * m;
  }
  return s;
}

int64_t ModelConfig::num_parameters() const {
  const int64_t h = hidden_size, heads = num_attention_heads;
  int64_t attn = 0;
  if (is_deepseek()) {
    attn += q_lora_rank > 0 ? q_lora_rank * h + q_lora_rank + heads * qk_head_dim() * q_lora_rank
                            : heads * qk_head_dim() * h;
    attn += (kv_lora_rank + qk_rope_head_dim) * h + kv_lora_rank;
    attn += heads * (qk_nope_head_dim + v_head_dim) * kv_lora_rank;
    attn += h * heads * v_head_dim;
  } else {
    const int64_t hd = dense_head_dim(), kv = num_key_value_heads;
    attn += (heads + 2 * kv) * hd * h + h * heads * hd;
    if (attention_bias) attn += (heads + 2 * kv) * hd;
    if (attention_bias && family == ModelFamily::Llama) attn += h;  // o_proj.bias
  }
  const int64_t dense_mlp = 3 * h * intermediate_size;
  const int64_t moe_mlp = n_routed_experts * h +
                          (topk_method == "noaux_tc" ? n_routed_experts : 0) +
                          (n_routed_experts + n_shared_experts) * 3 * h * moe_intermediate_size;
  int64_t total = vocab_size * h * (tie_word_embeddings ? 1 : 2) + h;
  for (int64_t i = 0; i < num_hidden_layers; ++i)
    total += attn + 2 * h + (is_moe_layer(i) ? moe_mlp : dense_mlp);
  return total;
}

ModelConfig parse_model_config(const std::string& json_text, const std::string& where) {
  json j;
  try {
    j = json::parse(json_text);
  } catch (const json::parse_error& e) {
    throw InputError(fmt::format("{}: not valid JSON ({})", where, e.what()));
  }
  if (!j.is_object()) throw InputError(fmt::format("{}: expected a JSON object", where));
  Reader r(j, where);
  ModelConfig c;
  r.read("model_type", c.model_type);
  if (c.model_type == "deepseek_v3") c.family = ModelFamily::DeepseekV3;
  else if (c.model_type == "deepseek_v2") c.family = ModelFamily::DeepseekV2;
  else if (c.model_type == "qwen2") c.family = ModelFamily::Qwen2;
  else if (c.model_type == "llama") c.family = ModelFamily::Llama;
  else r.fail("model_type", fmt::format("'{}': expected deepseek_v3, deepseek_v2, qwen2 or llama",
                                        c.model_type));
  if (const json* a = r.get("architectures")) {
    if (!a->is_array()) r.fail("architectures", "expected a list of strings");
    for (const json& s : *a) {
      if (!s.is_string()) r.fail("architectures", "expected a list of strings");
      c.architectures.push_back(s.get<std::string>());
    }
  }
  r.read("vocab_size", c.vocab_size, true);
  r.read("hidden_size", c.hidden_size, true);
  r.read("intermediate_size", c.intermediate_size);
  r.read("num_hidden_layers", c.num_hidden_layers, true);
  r.read("num_attention_heads", c.num_attention_heads, true);
  c.num_key_value_heads = c.num_attention_heads;
  r.read("num_key_value_heads", c.num_key_value_heads);
  r.read("max_position_embeddings", c.max_position_embeddings, true);
  r.read("rms_norm_eps", c.rms_norm_eps);
  r.read("rope_theta", c.rope_theta);
  if (const json* rs = r.get("rope_scaling")) c.rope_scaling = read_rope_scaling(*rs, where);
  r.read("tie_word_embeddings", c.tie_word_embeddings);
  std::string precision = "default";
  r.read("precision", precision);
  if (precision != "default" && precision != "fp8" && precision != "bf16")
    r.fail("precision", "must be \"fp8\", \"bf16\" or \"default\" (the parameters' own dtype)");
  c.fp8 = precision == "fp8";
  c.bf16_linear = precision == "bf16";
  if ((c.fp8 || c.bf16_linear) && !c.is_deepseek())
    r.fail("precision", precision + " is implemented for the DeepSeek-V3 model only");
  r.read("hidden_act", c.hidden_act);
  r.read("bos_token_id", c.bos_token_id);
  r.read("eos_token_id", c.eos_token_id);
  // Qwen2 always has q, k, v biases (HF's Qwen2Attention hard-codes them): an
  // attention_bias field there is read and ignored.
  r.read("attention_bias", c.attention_bias);
  if (c.family == ModelFamily::Qwen2) c.attention_bias = true;
  r.read("head_dim", c.head_dim);
  // Fields that would change the function when set: refused rather than ignored.
  bool flag = false;
  r.read("use_sliding_window", flag);
  if (flag) r.fail("use_sliding_window", "sliding-window attention is not supported");
  r.read("mlp_bias", flag);
  if (flag) r.fail("mlp_bias", "MLP biases are not supported");
  r.read("q_lora_rank", c.q_lora_rank);
  r.read("kv_lora_rank", c.kv_lora_rank, c.is_deepseek());
  r.read("qk_nope_head_dim", c.qk_nope_head_dim, c.is_deepseek());
  r.read("qk_rope_head_dim", c.qk_rope_head_dim, c.is_deepseek());
  r.read("v_head_dim", c.v_head_dim, c.is_deepseek());
  r.read("n_routed_experts", c.n_routed_experts);
  r.read("n_shared_experts", c.n_shared_experts);
  r.read("num_experts_per_tok", c.num_experts_per_tok);
  r.read("moe_intermediate_size", c.moe_intermediate_size);
  r.read("n_group", c.n_group);
  r.read("topk_group", c.topk_group);
  r.read("first_k_dense_replace", c.first_k_dense_replace);
  r.read("moe_layer_freq", c.moe_layer_freq);
  r.read("routed_scaling_factor", c.routed_scaling_factor);
  r.read("norm_topk_prob", c.norm_topk_prob);
  r.read("scoring_func", c.scoring_func);
  r.read("topk_method", c.topk_method);
  r.read("num_nextn_predict_layers", c.num_nextn_predict_layers);
  r.check_unknown();
  validate(c, r);
  return c;
}

ModelConfig load_model_config(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  R1_INPUT_CHECK(f.good(), "{}: cannot open the model config", path);
  std::stringstream ss;
  ss << f.rdbuf();
  return parse_model_config(ss.str(), path);
}

std::string model_config_json(const ModelConfig& c) {
  json j;
  j["model_type"] = c.model_type;
  j["architectures"] = c.architectures;
  j["vocab_size"] = c.vocab_size;
  j["hidden_size"] = c.hidden_size;
  j["intermediate_size"] = c.intermediate_size;
  j["num_hidden_layers"] = c.num_hidden_layers;
  j["num_attention_heads"] = c.num_attention_heads;
  j["num_key_value_heads"] = c.num_key_value_heads;
  j["max_position_embeddings"] = c.max_position_embeddings;
  j["rms_norm_eps"] = c.rms_norm_eps;
  j["rope_theta"] = c.rope_theta;
  if (c.rope_scaling) {
    const RopeScaling& s = *c.rope_scaling;
    j["rope_scaling"] = {{"type", s.type},
                         {"factor", s.factor},
                         {"original_max_position_embeddings", s.original_max_position_embeddings},
                         {"beta_fast", s.beta_fast},
                         {"beta_slow", s.beta_slow},
                         {"mscale", s.mscale},
                         {"mscale_all_dim", s.mscale_all_dim}};
  } else {
    j["rope_scaling"] = nullptr;
  }
  j["tie_word_embeddings"] = c.tie_word_embeddings;
  if (c.fp8) j["precision"] = "fp8";
  if (c.bf16_linear) j["precision"] = "bf16";
  j["hidden_act"] = c.hidden_act;
  if (c.bos_token_id) j["bos_token_id"] = *c.bos_token_id;
  if (c.eos_token_id) j["eos_token_id"] = *c.eos_token_id;
  if (c.is_deepseek()) {
    j["q_lora_rank"] = c.q_lora_rank > 0 ? json(c.q_lora_rank) : json(nullptr);
    j["kv_lora_rank"] = c.kv_lora_rank;
    j["qk_nope_head_dim"] = c.qk_nope_head_dim;
    j["qk_rope_head_dim"] = c.qk_rope_head_dim;
    j["v_head_dim"] = c.v_head_dim;
    j["n_routed_experts"] = c.n_routed_experts;
    j["n_shared_experts"] = c.n_shared_experts;
    j["num_experts_per_tok"] = c.num_experts_per_tok;
    j["moe_intermediate_size"] = c.moe_intermediate_size;
    j["n_group"] = c.n_group;
    j["topk_group"] = c.topk_group;
    j["first_k_dense_replace"] = c.first_k_dense_replace;
    j["moe_layer_freq"] = c.moe_layer_freq;
    j["routed_scaling_factor"] = c.routed_scaling_factor;
    j["norm_topk_prob"] = c.norm_topk_prob;
    j["scoring_func"] = c.scoring_func;
    j["topk_method"] = c.topk_method;
    j["num_nextn_predict_layers"] = c.num_nextn_predict_layers;
    j["attention_bias"] = c.attention_bias;
  } else {
    j["attention_bias"] = c.attention_bias;
    if (c.head_dim > 0) j["head_dim"] = c.head_dim;
  }
  return j.dump(2) + "\n";
}

void save_model_config(const ModelConfig& c, const std::string& path) {
  write_file_atomic(path, model_config_json(c));
}

}  // namespace r1
