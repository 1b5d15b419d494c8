// The dense student: forward as scripts/reference/dense.py computes it, op by op.
#include "model/dense.h"

#include "engine/ops_paged.h"

#include <fmt/format.h>

#include <set>
#include <unordered_map>

#include "engine/error.h"
#include "engine/ops_attention.h"

namespace r1 {
namespace {

// splitmix64 (Steele et al., "Fast splittable pseudorandom number generators", 2014): one
// well-mixed seed per parameter from (seed, index).
uint64_t mix_seed(uint64_t seed, uint64_t index) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (index + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

bool ends_with(const std::string& s, const std::string& tail) {
  return s.size() >= tail.size() && s.compare(s.size() - tail.size(), tail.size(), tail) == 0;
}

std::string layer_prefix(int64_t i) { return fmt::format("model.layers.{}.", i); }

}  // namespace

Tensor positions_within_segments(const Tensor& segments) {
  R1_CHECK(segments.dim() == 2, "positions_within_segments: segments {} (expected (B, T))",
           shape_str(segments.shape()));
  const int64_t B = segments.size(0), T = segments.size(1);
  const std::vector<int64_t> seg = segments.to_int_vector();
  std::vector<int64_t> pos(seg.size());
  for (int64_t b = 0; b < B; ++b) {
    std::unordered_map<int64_t, int64_t> seen;  // segment id -> tokens so far in this row
    for (int64_t t = 0; t < T; ++t) pos[b * T + t] = seen[seg[b * T + t]]++;
  }
  return Tensor::from_vector(pos, {B, T}, DType::I64, segments.device());
}

DenseModel::DenseModel(ModelConfig cfg, ParamMap params, int64_t max_positions)
    : cfg_(std::move(cfg)), params_(std::move(params)), max_positions_(max_positions) {
  R1_INPUT_CHECK(cfg_.family == ModelFamily::Qwen2 || cfg_.family == ModelFamily::Llama,
                 "DenseModel: model_type '{}' (expected qwen2 or llama)", cfg_.model_type);
  R1_INPUT_CHECK(cfg_.hidden_act == "silu", "DenseModel: hidden_act '{}' (silu only)",
                 cfg_.hidden_act);
  R1_INPUT_CHECK(!cfg_.rope_scaling, "DenseModel: rope_scaling is not supported for {}",
                 cfg_.model_type);
  R1_INPUT_CHECK(cfg_.num_key_value_heads > 0 &&
                     cfg_.num_attention_heads % cfg_.num_key_value_heads == 0,
                 "DenseModel: {} attention heads do not split into {} key/value heads",
                 cfg_.num_attention_heads, cfg_.num_key_value_heads);
  R1_INPUT_CHECK(cfg_.dense_head_dim() % 2 == 0, "DenseModel: head_dim {} is odd",
                 cfg_.dense_head_dim());
  std::set<std::string> known;
  for (const ParamSpec& s : parameter_specs(cfg_)) {
    auto it = params_.find(s.name);
    R1_INPUT_CHECK(it != params_.end() && it->second.defined(), "DenseModel: parameter '{}' "
                   "missing", s.name);
    R1_INPUT_CHECK(it->second.shape() == s.shape, "DenseModel: parameter '{}' has shape {}, "
                   "the config says {}", s.name, shape_str(it->second.shape()),
                   shape_str(s.shape));
    order_.push_back(s.name);
    known.insert(s.name);
  }
  const Tensor first = params_.at("model.embed_tokens.weight");
  for (auto& [name, t] : params_) {
    R1_INPUT_CHECK(known.count(name), "DenseModel: unknown parameter '{}'", name);
    R1_INPUT_CHECK(t.dtype() == first.dtype() && t.device() == first.device(),
                   "DenseModel: parameter '{}' is {} on {}, the embedding {} on {}", name,
                   dtype_name(t.dtype()), t.device().str(), dtype_name(first.dtype()),
                   first.device().str());
    if (t.is_leaf() && !t.requires_grad()) t.set_requires_grad(true);
  }
  rope_ = RopeTable(cfg_.rope(), max_positions, first.dtype(), first.device());
}

ParamMap DenseModel::init_params(const ModelConfig& cfg, uint64_t seed, DType dtype,
                                 Device dev) {
  ParamMap p;
  uint64_t index = 0;
  for (const ParamSpec& s : parameter_specs(cfg)) {
    const uint64_t stream = index++;
    if (s.shape.size() >= 2) {
      p[s.name] = Tensor::randn(s.shape, mix_seed(seed, stream), dtype, dev, kInitStd);
    } else if (ends_with(s.name, "norm.weight")) {
      p[s.name] = Tensor::ones(s.shape, dtype, dev);
    } else {
      p[s.name] = Tensor::zeros(s.shape, dtype, dev);  // biases
    }
  }
  return p;
}

const Tensor& DenseModel::param(const std::string& name) const {
  auto it = params_.find(name);
  R1_CHECK(it != params_.end(), "DenseModel: no parameter '{}'", name);
  return it->second;
}

Tensor DenseModel::optional_param(const std::string& name) const {
  auto it = params_.find(name);
  return it == params_.end() ? Tensor() : it->second;
}

std::vector<Tensor> DenseModel::trainable() const {
  std::vector<Tensor> out;
  out.reserve(order_.size());
  for (const std::string& n : order_) out.push_back(params_.at(n));
  return out;
}

// x (B, T, D) -> o_proj(attention(rope(q), rope(k), v)) (B, T, D). q (B, T, H, hd) and k, v
// (B, T, Hk, hd): attention reads kv head h / (H / Hk) for query head h (GQA), so k and v
// are never repeated in memory.
Tensor DenseModel::attention_block(int64_t i, const Tensor& x, const Tensor& positions,
                                   const Tensor& segments) {
  const std::string p = layer_prefix(i) + "self_attn.";
  const int64_t B = x.size(0), T = x.size(1), hd = cfg_.dense_head_dim();
  const int64_t H = cfg_.num_attention_heads, Hk = cfg_.num_key_value_heads;
  auto project = [&](const char* name, int64_t heads) {
    const std::string n = p + name;
    return linear(x, param(n + ".weight"), optional_param(n + ".bias")).view({B, T, heads, hd});
  };
  const Tensor q = rope(project("q_proj", H), positions, rope_);
  const Tensor k = rope(project("k_proj", Hk), positions, rope_);
  const Tensor v = project("v_proj", Hk);
  const Tensor o = attention(q, k, v, cfg_.softmax_scale(), /*causal=*/true, segments);
  return linear(o.reshape({B, T, H * hd}), param(p + "o_proj.weight"),
                optional_param(p + "o_proj.bias"));
}

// x (B, T, D) -> down(silu(gate(x)) * up(x)) (B, T, D).
Tensor DenseModel::mlp_block(int64_t i, const Tensor& x) {
  const std::string p = layer_prefix(i) + "mlp.";
  const Tensor gate = linear(x, param(p + "gate_proj.weight"));
  const Tensor up = linear(x, param(p + "up_proj.weight"));
  return linear(swiglu(gate, up), param(p + "down_proj.weight"));
}

DenseModel::Output DenseModel::forward(const Tensor& ids, const Tensor& positions,
                                       const Tensor& segments, bool want_logits) {
  R1_CHECK(ids.dim() == 2, "DenseModel::forward: ids {} (expected (B, T))",
           shape_str(ids.shape()));
  const int64_t T = ids.size(1);
  const Device dev = param("model.embed_tokens.weight").device();
  Tensor pos = positions;
  if (!pos.defined())
    pos = segments.defined() ? positions_within_segments(segments) : Tensor::arange(T);
  R1_CHECK(pos.dim() == 1 || pos.shape() == ids.shape(),
           "DenseModel::forward: positions {} for ids {}", shape_str(pos.shape()),
           shape_str(ids.shape()));
  pos = pos.to(dev);
  const Tensor seg = segments.defined() ? segments.to(dev) : Tensor();
  const double eps = cfg_.rms_norm_eps;

  // Pre-norm residual blocks: h = x + attn(norm1(x)); x' = h + mlp(norm2(h)).
  Tensor x = embedding(ids.to(dev), param("model.embed_tokens.weight"));
  for (int64_t i = 0; i < cfg_.num_hidden_layers; ++i) {
    const std::string p = layer_prefix(i);
    x = x + attention_block(i, rmsnorm(x, param(p + "input_layernorm.weight"), eps), pos, seg);
    x = x + mlp_block(i, rmsnorm(x, param(p + "post_attention_layernorm.weight"), eps));
  }
  Output out;
  out.hidden = rmsnorm(x, param("model.norm.weight"), eps);
  if (want_logits) {
    const Tensor& head = cfg_.tie_word_embeddings ? param("model.embed_tokens.weight")
                                                  : param("lm_head.weight");
    out.logits = linear(out.hidden, head);
  }
  return out;
}

PagedKvCache DenseModel::make_cache(int64_t num_blocks) const {
  const Tensor& e = param("model.embed_tokens.weight");
  return PagedKvCache(cfg_.num_hidden_layers, 2 * cfg_.num_key_value_heads * cfg_.dense_head_dim(),
                      num_blocks, e.dtype(), e.device());
}

const Tensor& DenseModel::lm_head() const {
  return param(cfg_.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
}

Tensor DenseModel::forward_cached(const Tensor& ids, const Tensor& seq, const Tensor& pos,
                                  PagedKvCache& cache, const CachedForwardOptions& opt) {
  R1_CHECK(ids.defined() && ids.dim() == 1 && seq.defined() && pos.defined() &&
               seq.shape() == ids.shape() && pos.shape() == ids.shape(),
           "DenseModel::forward_cached: ids, seq, pos must be (N)");
  const int64_t N = ids.size(0), hd = cfg_.dense_head_dim();
  const int64_t H = cfg_.num_attention_heads, Hk = cfg_.num_key_value_heads;
  R1_CHECK(cache.layers() == cfg_.num_hidden_layers && cache.entry_width() == 2 * Hk * hd,
           "DenseModel::forward_cached: cache of {} layers x {} numbers, the model needs {} x {}",
           cache.layers(), cache.entry_width(), cfg_.num_hidden_layers, 2 * Hk * hd);
  const Device dev = param("model.embed_tokens.weight").device();
  const Tensor pos64 = pos.to(DType::I64).to(dev), seq64 = seq.to(DType::I64).to(dev);
  if (!opt.trusted_positions)  // device_routing: no MoE here
    for (int64_t v : pos64.to_int_vector())
      R1_CHECK(v >= 0 && v < max_positions_,
               "DenseModel::forward_cached: position {} outside [0, max_positions = {})", v,
               max_positions_);
  const Tensor rpos = pos64.view({1, N});
  const Tensor& table = cache.block_table();
  const PagedLayout layout{Hk, hd, hd, Hk * hd};
  const double eps = cfg_.rms_norm_eps;
  Tensor h = embedding(ids.to(dev), param("model.embed_tokens.weight"));  // (N, D)
  for (int64_t i = 0; i < cfg_.num_hidden_layers; ++i) {
    const std::string p = layer_prefix(i), a = p + "self_attn.";
    const Tensor x = rmsnorm(h, param(p + "input_layernorm.weight"), eps);
    auto project = [&](const char* name) {
      const std::string n = a + name;
      return linear(x, param(n + ".weight"), optional_param(n + ".bias"));
    };
    const Tensor q = rope(project("q_proj").view({1, N, H, hd}), rpos, rope_).view({N, H, hd});
    const Tensor k = rope(project("k_proj").view({1, N, Hk, hd}), rpos, rope_).view({N, Hk * hd});
    paged_cache_write(concat({k, project("v_proj")}, -1), table, seq64, pos64, cache.pool(i));
    const Tensor o = paged_attention(q.contiguous(), cache.pool(i), table, seq64, pos64, layout,
                                     cfg_.softmax_scale());
    h = h + linear(o.reshape({N, H * hd}), param(a + "o_proj.weight"), optional_param(a + "o_proj.bias"));
    h = h + mlp_block(i, rmsnorm(h, param(p + "post_attention_layernorm.weight"), eps));
  }
  return rmsnorm(h, param("model.norm.weight"), eps);
}

}  // namespace r1
