// HF checkpoint names, loading and saving (model/checkpoint.h).
#include "model/checkpoint.h"

#include <fmt/format.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <memory>
#include <nlohmann/json.hpp>
#include <regex>
#include <set>
#include <sstream>

#include "engine/atomic_file.h"
#include "engine/error.h"
#include "engine/safetensors.h"

namespace r1 {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

constexpr int64_t kScaleBlock = 128;  // DeepSeek-V3's released fp8 weights: 128x128 blocks

void add_mlp(std::vector<ParamSpec>& s, const std::string& p, int64_t hidden, int64_t inter) {
  s.push_back({p + "gate_proj.weight", {inter, hidden}});
  s.push_back({p + "up_proj.weight", {inter, hidden}});
  s.push_back({p + "down_proj.weight", {hidden, inter}});
}

void add_deepseek_attention(std::vector<ParamSpec>& s, const std::string& p,
                            const ModelConfig& c) {
  const int64_t h = c.hidden_size, heads = c.num_attention_heads;
  if (c.q_lora_rank > 0) {
    s.push_back({p + "q_a_proj.weight", {c.q_lora_rank, h}});
    s.push_back({p + "q_a_layernorm.weight", {c.q_lora_rank}});
    s.push_back({p + "q_b_proj.weight", {heads * c.qk_head_dim(), c.q_lora_rank}});
  } else {
    s.push_back({p + "q_proj.weight", {heads * c.qk_head_dim(), h}});
  }
  s.push_back({p + "kv_a_proj_with_mqa.weight", {c.kv_lora_rank + c.qk_rope_head_dim, h}});
  s.push_back({p + "kv_a_layernorm.weight", {c.kv_lora_rank}});
  s.push_back({p + "kv_b_proj.weight",
               {heads * (c.qk_nope_head_dim + c.v_head_dim), c.kv_lora_rank}});
  s.push_back({p + "o_proj.weight", {h, heads * c.v_head_dim}});
}

void add_dense_attention(std::vector<ParamSpec>& s, const std::string& p, const ModelConfig& c) {
  const int64_t h = c.hidden_size, hd = c.dense_head_dim();
  const int64_t q = c.num_attention_heads * hd, kv = c.num_key_value_heads * hd;
  for (auto [name, rows] : {std::pair<const char*, int64_t>{"q_proj", q}, {"k_proj", kv},
                            {"v_proj", kv}}) {
    s.push_back({p + name + ".weight", {rows, h}});
    if (c.attention_bias) s.push_back({p + name + ".bias", {rows}});
  }
  s.push_back({p + "o_proj.weight", {h, q}});
  // HF's Llama puts attention_bias on o_proj too; Qwen2 has q/k/v biases only.
  if (c.attention_bias && c.family == ModelFamily::Llama) s.push_back({p + "o_proj.bias", {h}});
}

// The layer index of "model.layers.<i>." names, or -1.
int64_t layer_of(const std::string& name) {
  static const std::regex re(R"(^model\.layers\.(\d+)\.)");
  std::smatch m;
  if (!std::regex_search(name, m, re)) return -1;
  return std::stoll(m[1].str());
}

std::string read_text(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  R1_INPUT_CHECK(f.good(), "{}: cannot open", path);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// name -> the file holding it, for a single file or a sharded index.
std::map<std::string, std::string> tensor_files(const std::string& dir) {
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  std::map<std::string, std::string> where;
  if (fs::exists(single)) {
    const SafetensorsFile f = SafetensorsFile::open(single.string());
    for (const std::string& n : f.names()) where[n] = single.string();
    return where;
  }
  R1_INPUT_CHECK(fs::exists(index), "{}: neither model.safetensors nor "
                 "model.safetensors.index.json", dir);
  json j;
  try {
    j = json::parse(read_text(index.string()));
  } catch (const json::parse_error& e) {
    throw InputError(fmt::format("{}: not valid JSON ({})", index.string(), e.what()));
  }
  R1_INPUT_CHECK(j.is_object() && j.contains("weight_map") && j["weight_map"].is_object(),
                 "{}: no \"weight_map\" object", index.string());
  for (const auto& [name, file] : j["weight_map"].items()) {
    R1_INPUT_CHECK(file.is_string(), "{}: weight_map entry '{}' is not a file name",
                   index.string(), name);
    const std::string f = file.get<std::string>();
    R1_INPUT_CHECK(f.find('/') == std::string::npos && !f.empty() && f != "." && f != "..",
                   "{}: tensor '{}': shard name '{}' must be a file in the directory",
                   index.string(), name, f);
    where[name] = (fs::path(dir) / f).string();
  }
  return where;
}

// w (rows, cols) e4m3, s (ceil(rows/128), ceil(cols/128)) f32 -> w * s blockwise, f32 (CPU).
Tensor dequantize_blocks(const Tensor& w, const Tensor& s, const std::string& name,
                         const std::string& file) {
  const int64_t rows = w.size(0), cols = w.size(1);
  const int64_t br = (rows + kScaleBlock - 1) / kScaleBlock, bc = (cols + kScaleBlock - 1) / kScaleBlock;
  R1_INPUT_CHECK(s.dim() == 2 && s.size(0) == br && s.size(1) == bc,
                 "{}: tensor '{}_scale_inv': shape {} for a {} weight (expected ({}, {}))", file,
                 name, shape_str(s.shape()), shape_str(w.shape()), br, bc);
  const Tensor wf = w.to(DType::F32).contiguous();
  const Tensor sf = s.to(DType::F32).contiguous();
  Tensor out = Tensor::empty({rows, cols}, DType::F32);
  const float* pw = wf.data<float>();
  const float* ps = sf.data<float>();
  float* po = out.data<float>();
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      po[i * cols + j] = pw[i * cols + j] * ps[(i / kScaleBlock) * bc + j / kScaleBlock];
  return out;
}

}  // namespace

std::vector<ParamSpec> parameter_specs(const ModelConfig& c) {
  std::vector<ParamSpec> s;
  const int64_t h = c.hidden_size;
  s.push_back({"model.embed_tokens.weight", {c.vocab_size, h}});
  for (int64_t i = 0; i < c.num_hidden_layers; ++i) {
    const std::string p = fmt::format("model.layers.{}.", i);
    s.push_back({p + "input_layernorm.weight", {h}});
    if (c.is_deepseek()) add_deepseek_attention(s, p + "self_attn.", c);
    else add_dense_attention(s, p + "self_attn.", c);
    s.push_back({p + "post_attention_layernorm.weight", {h}});
    if (!c.is_moe_layer(i)) {
      add_mlp(s, p + "mlp.", h, c.intermediate_size);
      continue;
    }
    s.push_back({p + "mlp.gate.weight", {c.n_routed_experts, h}});
    // The bias-corrected router (V3's noaux_tc) stores its selection bias beside the gate.
    if (c.topk_method == "noaux_tc")
      s.push_back({p + "mlp.gate.e_score_correction_bias", {c.n_routed_experts}});
    for (int64_t e = 0; e < c.n_routed_experts; ++e)
      add_mlp(s, fmt::format("{}mlp.experts.{}.", p, e), h, c.moe_intermediate_size);
    if (c.n_shared_experts > 0)
      add_mlp(s, p + "mlp.shared_experts.", h, c.moe_intermediate_size * c.n_shared_experts);
  }
  s.push_back({"model.norm.weight", {h}});
  if (!c.tie_word_embeddings) s.push_back({"lm_head.weight", {c.vocab_size, h}});
  return s;
}

ParamMap load_checkpoint(const std::string& dir, const ModelConfig& c, DType dtype, Device dev) {
  const std::map<std::string, std::string> where = tensor_files(dir);
  std::map<std::string, std::shared_ptr<SafetensorsFile>> open_files;
  auto file_of = [&](const std::string& path) -> const SafetensorsFile& {
    auto it = open_files.find(path);
    if (it == open_files.end())
      it = open_files.emplace(path, std::make_shared<SafetensorsFile>(SafetensorsFile::open(path)))
               .first;
    return *it->second;
  };
  const std::vector<ParamSpec> specs = parameter_specs(c);
  std::set<std::string> used;
  ParamMap out;
  for (const ParamSpec& sp : specs) {
    auto it = where.find(sp.name);
    R1_INPUT_CHECK(it != where.end(), "{}: tensor '{}' is missing (the config implies it, "
                   "shape {})", dir, sp.name, shape_str(sp.shape));
    const SafetensorsFile& f = file_of(it->second);
    R1_INPUT_CHECK(f.has(sp.name), "{}: tensor '{}' is not in it (the index says it is)",
                   it->second, sp.name);
    const SafetensorsFile::Entry& e = f.entry(sp.name);
    R1_INPUT_CHECK(e.shape == sp.shape, "{}: tensor '{}' has shape {}, the config implies {}",
                   it->second, sp.name, shape_str(e.shape), shape_str(sp.shape));
    used.insert(sp.name);
    Tensor t;
    const std::string scale_name = sp.name + "_scale_inv";
    if (e.dtype == DType::E4M3 && where.count(scale_name)) {
      R1_INPUT_CHECK(sp.shape.size() == 2, "{}: tensor '{}': e4m3 with block scales must be 2-d",
                     it->second, sp.name);
      t = dequantize_blocks(f.get(sp.name), file_of(where.at(scale_name)).get(scale_name),
                            sp.name, it->second);
      used.insert(scale_name);
    } else {
      R1_INPUT_CHECK(e.dtype == DType::F32 || e.dtype == DType::BF16 || e.dtype == DType::F16 ||
                         e.dtype == DType::F64,
                     "{}: tensor '{}' has dtype {}: expected a float dtype (an e4m3 weight needs "
                     "its '_scale_inv')", it->second, sp.name, dtype_name(e.dtype));
      t = f.get(sp.name);
    }
    out[sp.name] = t.to(dtype).to(dev);
  }
  for (const auto& [name, file] : where) {
    if (used.count(name)) continue;
    if (layer_of(name) >= c.num_hidden_layers) continue;  // the MTP module: not asked for
    throw InputError(fmt::format("{}: tensor '{}' is not a parameter of this {} config",
                                 file, name, c.model_type));
  }
  return out;
}

void save_checkpoint(const std::string& dir, const ModelConfig& c, const ParamMap& params,
                     DType dtype, int64_t max_shard_bytes) {
  std::vector<std::pair<std::string, Tensor>> tensors;
  for (const ParamSpec& sp : parameter_specs(c)) {
    auto it = params.find(sp.name);
    R1_INPUT_CHECK(it != params.end() && it->second.defined(),
                   "{}: cannot save: parameter '{}' is missing", dir, sp.name);
    R1_INPUT_CHECK(it->second.shape() == sp.shape, "{}: cannot save: parameter '{}' has shape "
                   "{}, the config implies {}", dir, sp.name, shape_str(it->second.shape()),
                   shape_str(sp.shape));
    tensors.emplace_back(sp.name, it->second.to(Device::cpu()).to(dtype));
  }
  const fs::path target = fs::absolute(fs::path(dir)).lexically_normal();
  const fs::path parent = target.parent_path();
  std::error_code ec;
  fs::create_directories(parent, ec);
  const fs::path tmp = parent / fmt::format(".{}.tmp.{}", target.filename().string(), ::getpid());
  fs::remove_all(tmp, ec);
  fs::create_directory(tmp, ec);
  R1_INPUT_CHECK(!ec, "{}: cannot create {}: {}", dir, tmp.string(), ec.message());
  try {
    save_model_config(c, (tmp / "config.json").string());
    // Shards of at most max_shard_bytes (a tensor larger than that gets a shard of its own),
    // named and indexed as HF's save_pretrained does; one file when it all fits.
    std::vector<std::vector<std::pair<std::string, Tensor>>> shards(1);
    int64_t bytes = 0, total = 0;
    for (auto& nt : tensors) {
      const auto nb = static_cast<int64_t>(nt.second.nbytes());
      if (max_shard_bytes > 0 && bytes > 0 && bytes + nb > max_shard_bytes) {
        shards.emplace_back();
        bytes = 0;
      }
      shards.back().push_back(std::move(nt));
      bytes += nb;
      total += nb;
    }
    if (shards.size() == 1) {
      save_safetensors((tmp / "model.safetensors").string(), shards[0], {{"format", "pt"}});
    } else {
      json index;
      index["metadata"] = {{"total_size", total}};
      index["weight_map"] = json::object();
      for (size_t i = 0; i < shards.size(); ++i) {
        const std::string name =
            fmt::format("model-{:05d}-of-{:05d}.safetensors", i + 1, shards.size());
        save_safetensors((tmp / name).string(), shards[i], {{"format", "pt"}});
        for (const auto& nt : shards[i]) index["weight_map"][nt.first] = name;
      }
      write_file_atomic((tmp / "model.safetensors.index.json").string(), index.dump(2) + "\n");
    }
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
  // Swap: the old directory (if any) moves aside, the new one takes its name, the old goes.
  const fs::path old = parent / fmt::format(".{}.old.{}", target.filename().string(), ::getpid());
  const bool had = fs::exists(target);
  if (had) {
    fs::rename(target, old, ec);
    R1_INPUT_CHECK(!ec, "{}: cannot move the old checkpoint aside: {}", dir, ec.message());
  }
  fs::rename(tmp, target, ec);
  R1_INPUT_CHECK(!ec, "{}: cannot rename {} into place: {}", dir, tmp.string(), ec.message());
  if (had) fs::remove_all(old, ec);
}

}  // namespace r1
