// HF checkpoints (model/checkpoint.h): parameter names and shapes agree with the config's
// parameter count; save -> load round-trips bit for bit; DeepSeek's fp8 weights with
// weight_scale_inv dequantize to q * scale exactly; MTP layers are skipped; sharded indexes
// load; a missing, misshapen, wrongly typed or unknown tensor ends with one InputError naming
// the tensor and the file; a failed save leaves the old checkpoint in place.
#include <gtest/gtest.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "engine/error.h"
#include "engine/kernels.h"
#include "engine/safetensors.h"
#include "model/checkpoint.h"
#include "tests/harness.h"

namespace r1 {
namespace {

namespace fs = std::filesystem;
using test::case_seed;
using test::host_bytes;

// A tiny DeepSeek-V3: q compression, 2 layers (1 dense, 1 MoE with 4 experts in 2 groups,
// a shared expert), untied head. And a tiny Qwen2 with q/k/v biases and tied embeddings.
const char* kTinyV3 = R"({"model_type": "deepseek_v3", "vocab_size": 50, "hidden_size": 16,
  "intermediate_size": 24, "num_hidden_layers": 2, "num_attention_heads": 2,
  "max_position_embeddings": 64, "q_lora_rank": 12, "kv_lora_rank": 8,
  "qk_nope_head_dim": 4, "qk_rope_head_dim": 4, "v_head_dim": 6, "n_routed_experts": 4,
  "n_shared_experts": 1, "num_experts_per_tok": 2, "moe_intermediate_size": 10,
  "n_group": 2, "topk_group": 1, "first_k_dense_replace": 1, "routed_scaling_factor": 2.5})";
const char* kTinyQwen = R"({"model_type": "qwen2", "vocab_size": 40, "hidden_size": 16,
  "intermediate_size": 20, "num_hidden_layers": 2, "num_attention_heads": 4,
  "num_key_value_heads": 2, "max_position_embeddings": 64, "tie_word_embeddings": true})";

struct TempDir {
  fs::path path;
  TempDir() {
    path = fs::temp_directory_path() /
           ("r1_test_ckpt_" + std::to_string(case_seed(7)) + "_" +
            std::to_string(reinterpret_cast<uintptr_t>(this)));
    fs::create_directories(path);
  }
  ~TempDir() { fs::remove_all(path); }
};

ParamMap random_params(const ModelConfig& c, uint64_t seed, DType dt = DType::F32) {
  ParamMap p;
  for (const ParamSpec& s : parameter_specs(c))
    p[s.name] = Tensor::randn(s.shape, case_seed(seed++), dt);
  return p;
}

// The tensors of a saved checkpoint, as (name, tensor) in file order, to rewrite variants.
std::vector<std::pair<std::string, Tensor>> read_all(const fs::path& file) {
  const SafetensorsFile f = SafetensorsFile::open(file.string());
  std::vector<std::pair<std::string, Tensor>> v;
  for (const std::string& n : f.names()) v.emplace_back(n, f.get(n).clone());
  return v;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const InputError& e) {
    return e.what();
  }
  return "(no error)";
}

TEST(Checkpoint, SpecsCountTheConfigsParameters) {
  for (const char* text : {kTinyV3, kTinyQwen}) {
    const ModelConfig c = parse_model_config(text, "config.json");
    int64_t n = 0;
    for (const ParamSpec& s : parameter_specs(c)) n += shape_numel(s.shape);
    EXPECT_EQ(n, c.num_parameters()) << c.model_type;
  }
  const ModelConfig v3 = parse_model_config(kTinyV3, "config.json");
  const std::vector<ParamSpec> s = parameter_specs(v3);
  auto has = [&](const std::string& name) {
    for (const ParamSpec& p : s)
      if (p.name == name) return true;
    return false;
  };
  EXPECT_TRUE(has("model.layers.0.mlp.gate_proj.weight"));         // dense first layer
  EXPECT_TRUE(has("model.layers.1.mlp.experts.3.down_proj.weight"));
  EXPECT_TRUE(has("model.layers.1.mlp.gate.e_score_correction_bias"));
  EXPECT_TRUE(has("model.layers.1.mlp.shared_experts.up_proj.weight"));
  EXPECT_TRUE(has("model.layers.0.self_attn.kv_a_proj_with_mqa.weight"));
  EXPECT_TRUE(has("lm_head.weight"));
  const ModelConfig q = parse_model_config(kTinyQwen, "config.json");
  for (const ParamSpec& p : parameter_specs(q)) EXPECT_NE(p.name, "lm_head.weight");
}

TEST(Checkpoint, SaveLoadRoundTripsBitForBit) {
  TempDir tmp;
  for (const char* text : {kTinyV3, kTinyQwen}) {
    const ModelConfig c = parse_model_config(text, "config.json");
    for (DType dt : {DType::F32, DType::BF16}) {
      const ParamMap p = random_params(c, 100, dt);
      const std::string dir = (tmp.path / "ckpt").string();
      save_checkpoint(dir, c, p, dt);
      EXPECT_EQ(model_config_json(load_model_config(dir + "/config.json")),
                model_config_json(c));
      const ParamMap back = load_checkpoint(dir, c, dt);
      ASSERT_EQ(back.size(), p.size());
      for (const auto& [name, t] : p)
        EXPECT_EQ(host_bytes(back.at(name)), host_bytes(t)) << c.model_type << " " << name;
    }
  }
  // Only the checkpoint is left: no temp or old directories beside it.
  int entries = 0;
  for (const auto& e : fs::directory_iterator(tmp.path)) {
    (void)e;
    ++entries;
  }
  EXPECT_EQ(entries, 1);
}

TEST(Checkpoint, Fp8WeightsWithScaleInvDequantize) {
  TempDir tmp;
  const ModelConfig c = parse_model_config(kTinyV3, "config.json");
  const std::string dir = (tmp.path / "ckpt").string();
  save_checkpoint(dir, c, random_params(c, 200), DType::BF16);
  // Rewrite one weight as DeepSeek releases it: e4m3 + one f32 scale per 128x128 block.
  const std::string name = "model.layers.1.mlp.experts.2.up_proj.weight";
  auto tensors = read_all(fs::path(dir) / "model.safetensors");
  Tensor q, scales;
  for (auto& [n, t] : tensors) {
    if (n != name) continue;
    const Tensor w = Tensor::randn(t.shape(), case_seed(201), DType::F32, Device::cpu(), 3.0);
    q = Tensor::empty(w.shape(), DType::E4M3);
    scales = Tensor::empty({fp8_blocks(w.size(0)), fp8_blocks(w.size(1))}, DType::F32);
    kernels::quantize_fp8_blocks()(Device::cpu(), w, q, scales);
    t = q;
  }
  ASSERT_TRUE(q.defined());
  tensors.emplace_back(name + "_scale_inv", scales);
  save_safetensors(dir + "/model.safetensors", tensors);
  const ParamMap back = load_checkpoint(dir, c);
  const std::vector<float> qv = q.to_float_vector(), got = back.at(name).to_float_vector();
  const float s = scales.to_float_vector()[0];  // 10 x 16: one block
  for (size_t i = 0; i < qv.size(); ++i) ASSERT_EQ(got[i], qv[i] * s) << name << " [" << i << "]";
  // An e4m3 weight without its scales is refused, naming it.
  tensors.pop_back();
  save_safetensors(dir + "/model.safetensors", tensors);
  const std::string msg = message_of([&] { load_checkpoint(dir, c); });
  EXPECT_NE(msg.find("'" + name + "' has dtype e4m3"), std::string::npos) << msg;
}

TEST(Checkpoint, MtpLayersAreSkippedAndShardsLoad) {
  TempDir tmp;
  const ModelConfig c = parse_model_config(kTinyV3, "config.json");
  const std::string dir = (tmp.path / "ckpt").string();
  const ParamMap p = random_params(c, 300);
  save_checkpoint(dir, c, p);
  auto tensors = read_all(fs::path(dir) / "model.safetensors");
  // An MTP layer (index num_hidden_layers = 2) beside the model: skipped.
  tensors.emplace_back("model.layers.2.eh_proj.weight", Tensor::randn({16, 32}, case_seed(301)));
  // Split into two shards with an index.
  const size_t half = tensors.size() / 2;
  std::vector<std::pair<std::string, Tensor>> a(tensors.begin(), tensors.begin() + half),
      b(tensors.begin() + half, tensors.end());
  fs::remove(fs::path(dir) / "model.safetensors");
  save_safetensors(dir + "/model-00001-of-00002.safetensors", a);
  save_safetensors(dir + "/model-00002-of-00002.safetensors", b);
  nlohmann::json index;
  index["metadata"] = nlohmann::json::object();
  for (const auto& [n, t] : a) index["weight_map"][n] = "model-00001-of-00002.safetensors";
  for (const auto& [n, t] : b) index["weight_map"][n] = "model-00002-of-00002.safetensors";
  std::ofstream(dir + "/model.safetensors.index.json") << index.dump();
  const ParamMap back = load_checkpoint(dir, c);
  EXPECT_EQ(back.size(), p.size());
  for (const auto& [name, t] : p) EXPECT_EQ(host_bytes(back.at(name)), host_bytes(t)) << name;
  // The index names a shard that is not there.
  index["weight_map"]["model.norm.weight"] = "model-00003-of-00002.safetensors";
  std::ofstream(dir + "/model.safetensors.index.json") << index.dump();
  const std::string msg = message_of([&] { load_checkpoint(dir, c); });
  EXPECT_NE(msg.find("model-00003-of-00002.safetensors"), std::string::npos) << msg;
}

TEST(Checkpoint, ShardedSaveRoundTrips) {
  TempDir tmp;
  const ModelConfig c = parse_model_config(kTinyV3, "config.json");
  const ParamMap p = random_params(c, 700);
  const std::string dir = (tmp.path / "ckpt").string();
  save_checkpoint(dir, c, p, DType::F32, 4096);  // a few KB per shard: many shards
  EXPECT_FALSE(fs::exists(fs::path(dir) / "model.safetensors"));
  ASSERT_TRUE(fs::exists(fs::path(dir) / "model.safetensors.index.json"));
  int shards = 0;
  for (const auto& e : fs::directory_iterator(dir))
    shards += e.path().filename().string().rfind("model-", 0) == 0;
  EXPECT_GT(shards, 2);
  const ParamMap back = load_checkpoint(dir, c);
  ASSERT_EQ(back.size(), p.size());
  for (const auto& [name, t] : p) EXPECT_EQ(host_bytes(back.at(name)), host_bytes(t)) << name;
}

TEST(Checkpoint, BadTensorsNameTheTensorAndTheFile) {
  TempDir tmp;
  const ModelConfig c = parse_model_config(kTinyQwen, "config.json");
  const std::string dir = (tmp.path / "ckpt").string();
  save_checkpoint(dir, c, random_params(c, 400));
  const fs::path file = fs::path(dir) / "model.safetensors";
  const auto good = read_all(file);
  const std::string victim = "model.layers.1.self_attn.k_proj.bias";
  auto rewrite = [&](auto&& edit) {
    auto t = good;
    edit(t);
    save_safetensors(file.string(), t);
    return message_of([&] { load_checkpoint(dir, c); });
  };
  std::string m = rewrite([&](auto& t) {
    std::erase_if(t, [&](const auto& e) { return e.first == victim; });
  });
  EXPECT_NE(m.find("'" + victim + "' is missing"), std::string::npos) << m;
  m = rewrite([&](auto& t) {
    for (auto& [n, x] : t)
      if (n == victim) x = Tensor::randn({9}, case_seed(401));
  });
  EXPECT_NE(m.find(file.string()), std::string::npos) << m;
  EXPECT_NE(m.find("'" + victim + "' has shape (9,)"), std::string::npos) << m;
  m = rewrite([&](auto& t) {
    for (auto& [n, x] : t)
      if (n == victim) x = Tensor::zeros(x.shape(), DType::I32);
  });
  EXPECT_NE(m.find("'" + victim + "' has dtype i32"), std::string::npos) << m;
  m = rewrite([&](auto& t) { t.emplace_back("model.layers.0.mlp.extra.weight", Tensor::zeros({2})); });
  EXPECT_NE(m.find("'model.layers.0.mlp.extra.weight' is not a parameter"), std::string::npos)
      << m;
  // A truncated file: the safetensors reader's error, naming the file.
  {
    std::ofstream f(file, std::ios::binary | std::ios::trunc);
    f.write("\x10\x00\x00\x00", 4);
  }
  m = message_of([&] { load_checkpoint(dir, c); });
  EXPECT_NE(m.find(file.string()), std::string::npos) << m;
  EXPECT_NE(message_of([&] { load_checkpoint((tmp.path / "nowhere").string(), c); })
                .find("neither model.safetensors"),
            std::string::npos);
}

TEST(Checkpoint, AFailedSaveKeepsTheOldCheckpoint) {
  TempDir tmp;
  const ModelConfig c = parse_model_config(kTinyQwen, "config.json");
  const std::string dir = (tmp.path / "ckpt").string();
  const ParamMap p = random_params(c, 500);
  save_checkpoint(dir, c, p);
  ParamMap broken = random_params(c, 600);
  broken.erase("model.norm.weight");
  EXPECT_THROW(save_checkpoint(dir, c, broken), InputError);
  const ParamMap back = load_checkpoint(dir, c);
  for (const auto& [name, t] : p) EXPECT_EQ(host_bytes(back.at(name)), host_bytes(t)) << name;
}

}  // namespace
}  // namespace r1
