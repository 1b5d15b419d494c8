// DeepSeek-V3 forward through the engine's differentiable ops (model/deepseek_v3.h).
#include "model/deepseek_v3.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <memory>
#include <utility>

#include "engine/autograd.h"
#include "engine/kernels.h"
#include "engine/ops_attention.h"
#include "engine/ops_fp8.h"
#include "engine/ops_moe.h"
#include "engine/ops_paged.h"
#include "engine/nvtx.h"

namespace r1 {
namespace {

// HF DeepseekV3Config.initializer_range (config.json's field is accepted and ignored).
constexpr double kInitializerRange = 0.02;

// splitmix64 finalizer: distinct, well-spread Philox seeds for the tensors of one init.
uint64_t mix_seed(uint64_t seed, uint64_t k) {
  uint64_t z = seed + 0x9E3779B97F4A7C15ull * (k + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// positions default: per row 0..T-1, or with segments the count of earlier tokens of the same
// segment in the row (the reference's default_positions). -> (B, T) i64 on the host.
Tensor default_positions(int64_t B, int64_t T, const Tensor& segments) {
  std::vector<int64_t> pos(static_cast<size_t>(B * T));
  const std::vector<int64_t> seg =
      segments.defined() ? segments.to_int_vector() : std::vector<int64_t>();
  for (int64_t b = 0; b < B; ++b) {
    std::map<int64_t, int64_t> seen;  // segment id -> tokens so far in this row
    for (int64_t t = 0; t < T; ++t)
      pos[b * T + t] = seg.empty() ? t : seen[seg[b * T + t]]++;
  }
  return Tensor::from_vector(pos, {B, T});
}

// The balance loss's sequences: each maximal run of one segment id in a row (each row when
// segments is undefined). -> (S) i64 lengths summing to B * T.
Tensor sequence_lengths(int64_t B, int64_t T, const Tensor& segments) {
  std::vector<int64_t> lens;
  if (!segments.defined()) {
    lens.assign(static_cast<size_t>(B), T);
  } else {
    const std::vector<int64_t> seg = segments.to_int_vector();
    for (int64_t b = 0; b < B; ++b)
      for (int64_t t = 0; t < T; ++t) {
        if (t == 0 || seg[b * T + t] != seg[b * T + t - 1]) lens.push_back(0);
        ++lens.back();
      }
  }
  return Tensor::from_vector(lens, {static_cast<int64_t>(lens.size())});
}

}  // namespace

DeepseekV3::DeepseekV3(ModelConfig cfg, ParamMap params, int64_t max_positions)
    : cfg_(std::move(cfg)), params_(std::move(params)), max_positions_(max_positions) {
  R1_CHECK(cfg_.is_deepseek(), "DeepseekV3: config model_type {} is not DeepSeek",
           cfg_.model_type);
  R1_CHECK(max_positions_ > 0, "DeepseekV3: max_positions {} must be positive", max_positions_);
  R1_CHECK(cfg_.n_routed_experts == 0 || cfg_.scoring_func == "sigmoid",
           "DeepseekV3: scoring_func {} (only V3's sigmoid router is implemented)",
           cfg_.scoring_func);
  const std::vector<ParamSpec> specs = parameter_specs(cfg_);
  R1_CHECK(params_.size() == specs.size(), "DeepseekV3: {} parameters given, the config needs {}",
           params_.size(), specs.size());
  const Tensor& first = p(specs.front().name);
  for (const ParamSpec& s : specs) {
    const Tensor& t = p(s.name);
    R1_CHECK(t.shape() == s.shape, "DeepseekV3: {} has shape {}, the config says {}", s.name,
             shape_str(t.shape()), shape_str(s.shape));
    R1_CHECK(t.dtype() == first.dtype() && t.device() == first.device(),
             "DeepseekV3: {} is {}, {} is {}: one float dtype and device for all", s.name,
             t.str(), specs.front().name, first.str());
  }
  R1_CHECK(dtype_is_floating(first.dtype()), "DeepseekV3: parameters must be float, got {}",
           first.str());
  rope_ = RopeTable(cfg_.rope(), max_positions_, first.dtype(), first.device());
}

ParamMap DeepseekV3::init_params(const ModelConfig& cfg, uint64_t seed, DType dtype, Device dev) {
  ParamMap m;
  const std::vector<ParamSpec> specs = parameter_specs(cfg);
  for (size_t k = 0; k < specs.size(); ++k) {
    const ParamSpec& s = specs[k];
    Tensor t;
    if (s.shape.size() >= 2)
      t = Tensor::randn(s.shape, mix_seed(seed, k), dtype, dev, kInitializerRange);
    else if (s.name.find("norm") != std::string::npos)
      t = Tensor::ones(s.shape, dtype, dev);
    else
      t = Tensor::zeros(s.shape, dtype, dev);  // e_score_correction_bias
    m.emplace(s.name, std::move(t));
  }
  return m;
}

std::vector<Tensor> DeepseekV3::trainable() const {
  std::vector<Tensor> out;
  for (const ParamSpec& s : parameter_specs(cfg_))
    if (p(s.name).requires_grad()) out.push_back(p(s.name));
  return out;
}

const Tensor& DeepseekV3::p(const std::string& name) const {
  const auto it = params_.find(name);
  R1_CHECK(it != params_.end(), "DeepseekV3: parameter {} missing", name);
  return it->second;
}

Tensor DeepseekV3::proj(const Tensor& x, const std::string& name, const Fp8Rows* xq) const {
  if (cfg_.fp8_projection(name)) return linear_fp8(x, p(name), xq);
  if (cfg_.bf16_linear) return linear_bf16(x, p(name));
  return linear(x, p(name));
}

std::optional<Fp8Rows> DeepseekV3::shared_fp8_input(const Tensor& x) const {
  if (!cfg_.fp8) return std::nullopt;
  return fp8_quantize_rows(x);
}

Tensor DeepseekV3::norm(const Tensor& x, const std::string& name,
                        std::optional<Fp8Rows>* xq) const {
  if (!xq || !cfg_.fp8) return rmsnorm(x, p(name), cfg_.rms_norm_eps);
  Fp8Rows q;
  Tensor y = rmsnorm(x, p(name), cfg_.rms_norm_eps, &q);
  *xq = std::move(q);
  return y;
}

Tensor DeepseekV3::mlp(const std::string& pre, const Tensor& x, const Fp8Rows* xq_in) const {
  // gate and up read the same x: one quantization (the caller's, or made here)
  const std::optional<Fp8Rows> own = xq_in ? std::nullopt : shared_fp8_input(x);
  const Fp8Rows* xq = xq_in ? xq_in : (own ? &*own : nullptr);
  const Tensor gate = proj(x, pre + "gate_proj.weight", xq);
  const Tensor up = proj(x, pre + "up_proj.weight", xq);
  Fp8Rows hq;  // fp8: the down projection's input, quantized by the fused swiglu kernel
  Fp8Rows* hqp = cfg_.fp8 ? &hq : nullptr;
  return proj(swiglu(gate, up, hqp), pre + "down_proj.weight", hqp);
}

Tensor DeepseekV3::attention_block(const std::string& pre, const Tensor& x,
                                   const Tensor& positions, const Tensor& segments,
                                   const SharedMaps* shared, const Fp8Rows* xq_in) const {
  const int64_t B = x.size(0), T = x.size(1), H = cfg_.num_attention_heads;
  const int64_t nope = cfg_.qk_nope_head_dim, rd = cfg_.qk_rope_head_dim, vd = cfg_.v_head_dim;
  // q: (B, T, H * (nope + rope)), from the q latent when q_lora_rank > 0 (V3) or directly.
  // q and kv projections share x's quantization (the caller's, or made here)
  const std::optional<Fp8Rows> xq = xq_in ? std::nullopt : shared_fp8_input(x);
  const Fp8Rows* xqp = xq_in ? xq_in : (xq ? &*xq : nullptr);
  Tensor q_flat;
  if (cfg_.q_lora_rank > 0) {
    const Tensor q_latent = proj(x, pre + "q_a_proj.weight", xqp);
    std::optional<Fp8Rows> qq;
    const Tensor qn = norm(q_latent, pre + "q_a_layernorm.weight", &qq);
    q_flat = proj(qn, pre + "q_b_proj.weight", qq ? &*qq : nullptr);
  } else {
    q_flat = proj(x, pre + "q_proj.weight", xqp);
  }
  // kv latent c (B, T, kv_lora_rank) and the one RoPE key every head shares (B, T, rope).
  std::vector<Tensor> ckv =
      split(proj(x, pre + "kv_a_proj_with_mqa.weight", xqp), {cfg_.kv_lora_rank, rd}, -1);
  std::optional<Fp8Rows> cq;
  const Tensor cn = norm(ckv[0], pre + "kv_a_layernorm.weight", &cq);
  const Tensor kv = proj(cn, pre + "kv_b_proj.weight", cq ? &*cq : nullptr)
                        .view({B, T, H, nope + vd});
  // Per-head q = [q_nope, rope(q_pe)], k = [k_nope, rope(k_pe)] (k_pe broadcast to the heads,
  // its gradient summed over them), v: one fused op instead of split + rope + concat.
  std::vector<Tensor> qkv = mla_qkv(q_flat.view({B, T, H, nope + rd}), kv, ckv[1], positions, rope_);
  int64_t Ba = B, Ta = T;  // attention's layout
  if (shared) {
    // The compact rows gathered into the padded layout (a shared prefix's rows repeat; their
    // gradients sum in index_select's backward).
    Ba = shared->B;
    Ta = shared->T;
    for (Tensor& t : qkv) {
      const int64_t w = t.size(2) * t.size(3);
      t = index_select(t.reshape({B * T, w}), 0, shared->expand).view({Ba, Ta, H, w / H});
    }
  }
  Tensor o = attention(qkv[0], qkv[1], qkv[2], cfg_.softmax_scale(), /*causal=*/true, segments)
                 .view({Ba * Ta, H * vd});
  if (shared) o = index_select(o, 0, shared->collapse);
  return proj(o.view({B, T, H * vd}), pre + "o_proj.weight");
}

// One MoE layer's experts for the grouped GEMMs (prepare_decode): per projection, the E experts' weights
// stacked and block-quantized (q (E, rows, cols) e4m3, s (E, RB, CB) f32).
struct DeepseekV3::StackedExperts {
  Tensor gate_q, gate_s, up_q, up_s, down_q, down_s;
};

namespace {

struct V3DecodePrep : DecodePrep {
  std::map<int64_t, DeepseekV3::StackedExperts> layers;  // MoE layers, by layer index
  // fp8: every layer's kv_b_proj.weight as linear_fp8 multiplies it (fp8_weight_as_used),
  // for the absorbed attention.
  std::vector<Tensor> kv_b;
};

}  // namespace

std::shared_ptr<const DecodePrep> DeepseekV3::prepare_decode() const {
  R1_CHECK(cfg_.fp8_keep.empty(), "DeepseekV3: fp8_keep is a training ablation; generation "
           "runs every projection in fp8 or none");
  if (!cfg_.fp8) return nullptr;
  R1_NVTX_RANGE("DeepseekV3::prepare_decode");
  auto prep = std::make_shared<V3DecodePrep>();
  for (int64_t i = 0; i < cfg_.num_hidden_layers; ++i)
    prep->kv_b.push_back(
        fp8_weight_as_used(p(fmt::format("model.layers.{}.self_attn.kv_b_proj.weight", i))));
  if (cfg_.n_routed_experts == 0) return prep;
  // Each expert's weight quantized as linear_fp8 quantizes it, into its slice of the stack.
  auto stack = [&](const std::string& pre, const char* proj, Tensor* q, Tensor* s) {
    std::vector<Tensor> ws;
    for (int64_t e = 0; e < cfg_.n_routed_experts; ++e)
      ws.push_back(p(fmt::format("{}experts.{}.{}.weight", pre, e, proj)));
    Fp8Blocks b = fp8_quantize_weight_stack(ws);
    *q = std::move(b.q);
    *s = std::move(b.scales);
  };
  for (int64_t i = 0; i < cfg_.num_hidden_layers; ++i) {
    if (!cfg_.is_moe_layer(i)) continue;
    const std::string pre = fmt::format("model.layers.{}.mlp.", i);
    StackedExperts& m = prep->layers[i];
    stack(pre, "gate_proj", &m.gate_q, &m.gate_s);
    stack(pre, "up_proj", &m.up_q, &m.up_s);
    stack(pre, "down_proj", &m.down_q, &m.down_s);
  }
  return prep;
}

DeepseekV3::MoeOut DeepseekV3::moe(const std::string& pre, const Tensor& x,
                                   const Tensor& seq_lens, double balance_alpha,
                                   bool device_routing, const StackedExperts* stacked) const {
  const int64_t N = x.size(0), D = x.size(1), E = cfg_.n_routed_experts;
  const int64_t K = cfg_.num_experts_per_tok;
  const Tensor logits = linear(x, p(pre + "gate.weight"));  // (N, E)
  const DType sd = stat_dtype(logits.dtype());
  const std::string bias_name = pre + "gate.e_score_correction_bias";
  const Tensor bias = params_.count(bias_name) ? p(bias_name).detach().to(sd)
                                               : Tensor::zeros({E}, sd, logits.device());
  MoeRouteConfig rc;
  rc.top_k = K;
  rc.n_group = cfg_.n_group;
  rc.topk_group = cfg_.topk_group;
  rc.norm_topk_prob = cfg_.norm_topk_prob;
  rc.routed_scaling_factor = cfg_.routed_scaling_factor;
  MoeRoute r = moe_route(logits, bias, rc);
  Tensor w = r.weights;  // (N, K) stat_dtype
  if (w.dtype() != x.dtype()) {
    R1_CHECK(!needs_grad({w}), "DeepseekV3: router weights are {} but the model is {}: "
             "training needs a differentiable dtype cast (engine op missing)",
             dtype_name(w.dtype()), dtype_name(x.dtype()));
    w = w.to(x.dtype());
  }
  const Tensor w_flat = w.view({N * K});

  if (device_routing) {
    // Every expert on every row: each row's product is the routed path's (batch invariance),
    // and moe_combine_all adds them in the same order, so the bits are the routed path's.
    R1_CHECK(balance_alpha == 0.0, "DeepseekV3: device routing is forward only");
    // Every expert (and the shared ones) reads all of x: one FP8 quantization for all.
    const std::optional<Fp8Rows> xq = shared_fp8_input(x);
    const Fp8Rows* xqp = xq ? &*xq : nullptr;
    Tensor y;
    if (stacked) {
      // The masked layout: each expert's tokens (in token order) in its slots, the grouped
      // GEMMs skip the empty ones, the combine reads the slots. Per row the same products,
      // quantizations and combine as the routed path.
      R1_CHECK(xq.has_value(), "DeepseekV3: the masked expert layout needs fp8");
      const Device dev = x.device();
      const int64_t I = cfg_.moe_intermediate_size, R = E * N;
      const MoeMaskedSlots sl = moe_masked_slots(r.indices, E, N);
      const Tensor aq = moe_scatter_rows(xq->q, sl.dest, R, false).view({E, N, D});
      const Tensor as =
          moe_scatter_rows(xq->scales, sl.dest, R, false).view({E, N, fp8_blocks(D)});
      // Only the counted slots are computed, read or written from here to the combine (the
      // rest of every buffer is never initialized): the swiglu and the GEMMs cost the routed
      // rows, not E x N.
      Tensor gate = Tensor::empty({E, N, I}, x.dtype(), dev);
      Tensor up = Tensor::empty({E, N, I}, x.dtype(), dev);
      kernels::gemm_fp8_grouped_masked()(dev, aq, as, stacked->gate_q, stacked->gate_s,
                                         sl.counts, gate);
      kernels::gemm_fp8_grouped_masked()(dev, aq, as, stacked->up_q, stacked->up_s, sl.counts,
                                         up);
      Tensor h = Tensor::empty({E, N, I}, x.dtype(), dev);
      Tensor hq = Tensor::empty({E, N, I}, DType::E4M3, dev);
      Tensor hs = Tensor::empty({E, N, fp8_blocks(I)}, DType::F32, dev);
      kernels::swiglu_quantize_fp8_masked()(dev, gate, up, sl.counts, h, hq, hs);
      Tensor down = Tensor::empty({E, N, D}, x.dtype(), dev);
      kernels::gemm_fp8_grouped_masked()(dev, hq, hs, stacked->down_q, stacked->down_s,
                                         sl.counts, down);
      y = moe_combine_rows(down.view({R, D}), w, sl.dest);
    } else {
      std::vector<Tensor> ys;
      for (int64_t e = 0; e < E; ++e)
        ys.push_back(mlp(fmt::format("{}experts.{}.", pre, e), x, xqp));
      y = moe_combine_all(ys, w, r.indices);
    }
    if (cfg_.n_shared_experts > 0) y = add(y, mlp(pre + "shared_experts.", x, xqp));
    return MoeOut{y, r.indices, r.load, Tensor()};
  }

  // Group the (token, slot) pairs by expert, in token order within an expert.
  const std::vector<int64_t> idx = r.indices.to_int_vector();
  std::vector<std::vector<int64_t>> tok(static_cast<size_t>(E)), flat(static_cast<size_t>(E));
  for (int64_t t = 0; t < N; ++t)
    for (int64_t k = 0; k < K; ++k) {
      const int64_t e = idx[t * K + k];
      R1_CHECK(e >= 0 && e < E, "DeepseekV3: router chose expert {} of {}", e, E);
      tok[e].push_back(t);
      flat[e].push_back(t * K + k);
    }
  Tensor y;
  if (stacked) {
    // fp8 generation (prepare_decode's stacked weights, forward only): the experts as grouped
    // GEMMs over the expert-major rows (the contiguous layout: one launch per projection for
    // all experts, empty experts allowed), x's rows quantized once. Per row the same
    // quantizations, products and combine as the per-expert branch below.
    R1_CHECK(!needs_grad({x}) && cfg_.fp8, "DeepseekV3: the stacked expert weights are for "
             "fp8 generation (forward only)");
    const Device dev = x.device();
    const int64_t I = cfg_.moe_intermediate_size, M = N * K;
    std::vector<int64_t> order, offsets{0}, row_of(static_cast<size_t>(M));
    order.reserve(static_cast<size_t>(M));
    for (int64_t e = 0; e < E; ++e) {
      for (size_t r = 0; r < tok[e].size(); ++r) {
        row_of[flat[e][r]] = static_cast<int64_t>(order.size());
        order.push_back(tok[e][r]);
      }
      offsets.push_back(static_cast<int64_t>(order.size()));
    }
    const Tensor off = Tensor::from_vector(offsets, {E + 1}, DType::I64, dev);
    const Fp8Rows xq =
        fp8_quantize_rows(index_select(x, 0, Tensor::from_vector(order, {M}, DType::I64, dev)));
    Tensor gate = Tensor::empty({M, I}, x.dtype(), dev), up = Tensor::empty({M, I}, x.dtype(), dev);
    kernels::gemm_fp8_grouped_contiguous()(dev, xq.q, xq.scales, stacked->gate_q, stacked->gate_s,
                                           off, gate);
    kernels::gemm_fp8_grouped_contiguous()(dev, xq.q, xq.scales, stacked->up_q, stacked->up_s, off,
                                           up);
    Fp8Rows hq;
    swiglu(gate, up, &hq);
    Tensor down = Tensor::empty({M, D}, x.dtype(), dev);
    kernels::gemm_fp8_grouped_contiguous()(dev, hq.q, hq.scales, stacked->down_q, stacked->down_s,
                                           off, down);
    y = moe_combine_rows(down, w, Tensor::from_vector(row_of, {M}, DType::I64, dev));
  } else if (moe_combine_available(x.device())) {
    // One gather of every expert's tokens (expert-major, token order within), split into
    // per-expert row blocks (views), each through its expert, then one weighted combine:
    // no per-expert (N, D) gradients, no concat, no second gather.
    std::vector<int64_t> order, sizes, part(static_cast<size_t>(N * K)),
        row_of(static_cast<size_t>(N * K));
    std::vector<int64_t> experts;
    order.reserve(static_cast<size_t>(N * K));
    for (int64_t e = 0; e < E; ++e) {
      if (tok[e].empty()) continue;
      const int64_t j = static_cast<int64_t>(sizes.size());
      for (size_t r = 0; r < tok[e].size(); ++r) {
        part[flat[e][r]] = j;
        row_of[flat[e][r]] = static_cast<int64_t>(r);
      }
      order.insert(order.end(), tok[e].begin(), tok[e].end());
      sizes.push_back(static_cast<int64_t>(tok[e].size()));
      experts.push_back(e);
    }
    const Tensor gathered = index_select(
        x, 0, Tensor::from_vector(order, {N * K}, DType::I64, x.device()));
    std::vector<Tensor> ys;
    // (an ablation that keeps some expert projections out of fp8 takes the per-expert form;
    // the names are only built when there is such a list: this runs on every forward)
    bool all_fp8 = cfg_.fp8 && cfg_.fp8_grouped_experts && !experts.empty();
    if (all_fp8 && !cfg_.fp8_keep.empty())
      for (int64_t e : experts)
        for (const char* pr : {"gate_proj", "up_proj", "down_proj"})
          all_fp8 = all_fp8 && cfg_.fp8_projection(fmt::format("{}experts.{}.{}.weight", pre, e, pr));
    if (all_fp8) {
      // fp8: every used expert's projection as one grouped layer over the expert-major rows
      // (one quantization of the gathered rows for gate and up, the fused swiglu's for down).
      std::vector<int64_t> offsets{0};
      for (int64_t s : sizes) offsets.push_back(offsets.back() + s);
      auto weights = [&](const char* proj) {
        std::vector<Tensor> ws;
        for (int64_t e : experts) ws.push_back(p(fmt::format("{}experts.{}.{}.weight", pre, e, proj)));
        return ws;
      };
      const Fp8Rows xq = fp8_quantize_rows(gathered);
      const Tensor gate = grouped_linear_fp8(gathered, weights("gate_proj"), offsets, &xq);
      const Tensor up = grouped_linear_fp8(gathered, weights("up_proj"), offsets, &xq);
      Fp8Rows hq;
      const Tensor h = swiglu(gate, up, &hq);
      ys = split(grouped_linear_fp8(h, weights("down_proj"), offsets, &hq), sizes, 0);
    } else {
      const std::vector<Tensor> xs = split(gathered, sizes, 0);
      for (size_t j = 0; j < xs.size(); ++j)
        ys.push_back(mlp(fmt::format("{}experts.{}.", pre, experts[j]), xs[j]));
    }
    y = moe_combine(ys, w, Tensor::from_vector(part, {N * K}),
                    Tensor::from_vector(row_of, {N * K}));
  } else {
    // ys: each expert's weighted outputs; inverse[t * K + k] = row of that pair in concat(ys).
    std::vector<Tensor> ys;
    std::vector<int64_t> inverse(static_cast<size_t>(N * K));
    int64_t row = 0;
    for (int64_t e = 0; e < E; ++e) {
      if (tok[e].empty()) continue;
      const int64_t n = static_cast<int64_t>(tok[e].size());
      const Tensor ti = Tensor::from_vector(tok[e], {n}, DType::I64, x.device());
      const Tensor fi = Tensor::from_vector(flat[e], {n}, DType::I64, x.device());
      const Tensor ye = mlp(fmt::format("{}experts.{}.", pre, e), index_select(x, 0, ti));
      ys.push_back(mul(ye, index_select(w_flat, 0, fi).view({n, 1})));
      for (int64_t j = 0; j < n; ++j) inverse[flat[e][j]] = row + j;
      row += n;
    }
    const Tensor inv = Tensor::from_vector(inverse, {N * K}, DType::I64, x.device());
    y = sum(index_select(concat(ys, 0), 0, inv).view({N, K, D}), 1);
  }
  if (cfg_.n_shared_experts > 0) y = add(y, mlp(pre + "shared_experts.", x));  // unweighted

  MoeOut out{y, r.indices, r.load, Tensor()};
  if (balance_alpha > 0.0)
    out.balance_loss = moe_balance_loss(logits, r.indices, seq_lens, balance_alpha);
  return out;
}

DeepseekV3::Output DeepseekV3::forward(const Tensor& ids, const Tensor& positions,
                                       const Tensor& segments, bool want_logits,
                                       double balance_alpha) {
  R1_CHECK(ids.defined() && ids.dim() == 2 &&
               (ids.dtype() == DType::I64 || ids.dtype() == DType::I32),
           "DeepseekV3::forward: ids {} must be (B, T) int",
           ids.defined() ? ids.str() : "undefined");
  R1_CHECK(balance_alpha >= 0.0, "DeepseekV3::forward: balance_alpha {} < 0", balance_alpha);
  const int64_t B = ids.size(0), T = ids.size(1);
  const Device dev = p("model.embed_tokens.weight").device();
  if (segments.defined())
    R1_CHECK(segments.shape() == ids.shape(), "DeepseekV3::forward: segments {} for ids {}",
             shape_str(segments.shape()), shape_str(ids.shape()));
  Tensor pos = positions;
  if (!pos.defined()) {
    pos = default_positions(B, T, segments).to(dev);
  } else {
    R1_CHECK(pos.shape() == ids.shape(), "DeepseekV3::forward: positions {} for ids {}",
             shape_str(pos.shape()), shape_str(ids.shape()));
    pos = pos.to(DType::I64).to(dev);
  }
  const std::vector<int64_t> pv = pos.to_int_vector();
  for (int64_t v : pv)
    R1_CHECK(v >= 0 && v < max_positions_,
             "DeepseekV3::forward: position {} outside [0, max_positions = {})", v,
             max_positions_);
  const Tensor seg = segments.defined() ? segments.to(dev) : Tensor();
  const Tensor seq_lens = sequence_lengths(B, T, segments);

  Output out;
  out.hidden = layers(embedding(ids.to(dev), p("model.embed_tokens.weight")), pos, seg, seq_lens,
                      balance_alpha, nullptr, out);
  if (want_logits)
    out.logits = linear(out.hidden, p(cfg_.tie_word_embeddings ? "model.embed_tokens.weight"
                                                               : "lm_head.weight"));
  return out;
}

Tensor DeepseekV3::layers(Tensor h, const Tensor& pos, const Tensor& seg, const Tensor& seq_lens,
                          double balance_alpha, const SharedMaps* shared, Output& out) {
  const int64_t B = h.size(0), T = h.size(1), D = cfg_.hidden_size;
  const double eps = cfg_.rms_norm_eps;
  for (int64_t i = 0; i < cfg_.num_hidden_layers; ++i) {
    const std::string pre = fmt::format("model.layers.{}.", i);
    std::optional<Fp8Rows> aq, mq;  // fp8: the norms' outputs quantized by the norm kernel
    const Tensor xa = norm(h, pre + "input_layernorm.weight", &aq);
    h = add(h, attention_block(pre + "self_attn.", xa, pos, seg, shared, aq ? &*aq : nullptr));
    const bool moe_layer = cfg_.is_moe_layer(i);  // the router and experts read xn unquantized
    const Tensor xn = norm(h, pre + "post_attention_layernorm.weight", moe_layer ? nullptr : &mq);
    if (!moe_layer) {
      h = add(h, mlp(pre + "mlp.", xn, mq ? &*mq : nullptr));
      continue;
    }
    MoeOut m = moe(pre + "mlp.", xn.view({B * T, D}), seq_lens, balance_alpha);
    h = add(h, m.y.view({B, T, D}));
    out.expert_load.push_back(m.load);
    out.routing.push_back(m.indices);
    if (m.balance_loss.defined())
      out.balance_loss = out.balance_loss.defined() ? add(out.balance_loss, m.balance_loss)
                                                    : m.balance_loss;
  }
  return rmsnorm(h, p("model.norm.weight"), eps);
}

DeepseekV3::SharedPrefixBatch DeepseekV3::share_prefixes(
    const std::vector<std::vector<int32_t>>& prefixes,
    const std::vector<std::vector<int32_t>>& rests) {
  R1_CHECK(prefixes.size() == rests.size() && !prefixes.empty(),
           "DeepseekV3::share_prefixes: {} prefixes for {} sequences", prefixes.size(),
           rests.size());
  SharedPrefixBatch sb;
  sb.B = static_cast<int64_t>(prefixes.size());
  sb.T = 1;
  for (int64_t b = 0; b < sb.B; ++b) {
    R1_CHECK(!prefixes[b].empty(), "DeepseekV3::share_prefixes: sequence {} has an empty prefix", b);
    sb.T = std::max<int64_t>(sb.T, static_cast<int64_t>(prefixes[b].size() + rests[b].size()));
  }
  sb.expand.assign(static_cast<size_t>(sb.B * sb.T), 0);
  std::map<std::vector<int32_t>, int64_t> first;  // prefix -> its first compact row
  auto push = [&](int64_t id, int64_t pos, int64_t padded_row) {
    sb.ids.push_back(id);
    sb.positions.push_back(pos);
    sb.collapse.push_back(padded_row);
    return static_cast<int64_t>(sb.ids.size()) - 1;
  };
  for (int64_t b = 0; b < sb.B; ++b) {
    const auto& pre = prefixes[b];
    const int64_t P = static_cast<int64_t>(pre.size());
    auto [it, fresh] = first.emplace(pre, static_cast<int64_t>(sb.ids.size()));
    for (int64_t t = 0; t < P; ++t)
      sb.expand[b * sb.T + t] = fresh ? push(pre[t], t, b * sb.T + t) : it->second + t;
    for (size_t k = 0; k < rests[b].size(); ++k) {
      const int64_t t = P + static_cast<int64_t>(k);
      sb.expand[b * sb.T + t] = push(rests[b][k], t, b * sb.T + t);
    }
  }
  return sb;
}

Tensor DeepseekV3::forward_shared(const SharedPrefixBatch& sb) {
  const int64_t N = static_cast<int64_t>(sb.ids.size());
  R1_CHECK(N > 0 && sb.B > 0 && sb.T > 0 && sb.positions.size() == sb.ids.size() &&
               sb.collapse.size() == sb.ids.size() &&
               static_cast<int64_t>(sb.expand.size()) == sb.B * sb.T,
           "DeepseekV3::forward_shared: {} tokens, {} positions, {} collapse rows, {} expand "
           "rows for B {} x T {}",
           N, sb.positions.size(), sb.collapse.size(), sb.expand.size(), sb.B, sb.T);
  // Positions on the host (the CUDA RoPE kernels do not check them, as forward() does);
  // the rows of expand and collapse are checked by index_select.
  for (int64_t v : sb.positions)
    R1_CHECK(v >= 0 && v < max_positions_,
             "DeepseekV3::forward_shared: position {} outside [0, max_positions = {})", v,
             max_positions_);
  const Device dev = p("model.embed_tokens.weight").device();
  const SharedMaps maps{sb.B, sb.T, Tensor::from_vector(sb.expand, {sb.B * sb.T}).to(dev),
                        Tensor::from_vector(sb.collapse, {N}).to(dev)};
  Output unused;
  const Tensor h = embedding(Tensor::from_vector(sb.ids, {1, N}).to(dev),
                             p("model.embed_tokens.weight"));
  return layers(h, Tensor::from_vector(sb.positions, {1, N}).to(dev), Tensor(),
                Tensor::from_vector(std::vector<int64_t>{N}, {1}), 0.0, &maps, unused)
      .view({N, cfg_.hidden_size});
}

PagedKvCache DeepseekV3::make_cache(int64_t num_blocks) const {
  const Tensor& e = p("model.embed_tokens.weight");
  return PagedKvCache(cfg_.num_hidden_layers, cfg_.kv_lora_rank + cfg_.qk_rope_head_dim,
                      num_blocks, e.dtype(), e.device());
}

const Tensor& DeepseekV3::lm_head() const {
  return p(cfg_.tie_word_embeddings ? "model.embed_tokens.weight" : "lm_head.weight");
}

Tensor DeepseekV3::forward_cached(const Tensor& ids, const Tensor& seq, const Tensor& pos,
                                  PagedKvCache& cache, const CachedForwardOptions& opt) {
  R1_CHECK(ids.defined() && ids.dim() == 1 && seq.defined() && pos.defined() &&
               seq.shape() == ids.shape() && pos.shape() == ids.shape(),
           "DeepseekV3::forward_cached: ids, seq, pos must be (N), got {} {} {}",
           ids.defined() ? ids.str() : "undefined", seq.defined() ? seq.str() : "undefined",
           pos.defined() ? pos.str() : "undefined");
  R1_CHECK(cfg_.fp8_keep.empty(), "DeepseekV3::forward_cached: fp8_keep is a training "
           "ablation; generation runs every projection in fp8 or none");
  const int64_t L = cfg_.kv_lora_rank, rd = cfg_.qk_rope_head_dim;
  R1_CHECK(cache.layers() == cfg_.num_hidden_layers && cache.entry_width() == L + rd,
           "DeepseekV3::forward_cached: cache of {} layers x {} numbers, the model needs {} x {}",
           cache.layers(), cache.entry_width(), cfg_.num_hidden_layers, L + rd);
  const int64_t N = ids.size(0), H = cfg_.num_attention_heads;
  const int64_t nope = cfg_.qk_nope_head_dim, vd = cfg_.v_head_dim;
  const Device dev = p("model.embed_tokens.weight").device();
  const Tensor pos64 = pos.to(DType::I64).to(dev), seq64 = seq.to(DType::I64).to(dev);
  if (!opt.trusted_positions)
    for (int64_t v : pos64.to_int_vector())
      R1_CHECK(v >= 0 && v < max_positions_,
               "DeepseekV3::forward_cached: position {} outside [0, max_positions = {})", v,
               max_positions_);
  const Tensor rpos = pos64.view({1, N});
  const Tensor& table = cache.block_table();
  const double eps = cfg_.rms_norm_eps;
  const PagedLayout layout{1, L + rd, L, 0};
  const Tensor no_seq_lens = Tensor::from_vector(std::vector<int64_t>{N}, {1});

  const auto* v3 = dynamic_cast<const V3DecodePrep*>(opt.prep);  // null without one
  R1_CHECK(!opt.prep || v3, "DeepseekV3::forward_cached: the decode preparation is another "
           "model's");

  Tensor h = embedding(ids.to(dev), p("model.embed_tokens.weight"));  // (N, D)
  for (int64_t i = 0; i < cfg_.num_hidden_layers; ++i) {
    const std::string pre = fmt::format("model.layers.{}.", i), at = pre + "self_attn.";
    std::optional<Fp8Rows> xq;  // fp8: q and kv projections share x's quantization
    const Tensor x = norm(h, pre + "input_layernorm.weight", &xq);
    const Fp8Rows* xqp = xq ? &*xq : nullptr;
    Tensor q_flat;
    if (cfg_.q_lora_rank > 0) {
      std::optional<Fp8Rows> qq;
      const Tensor qn = norm(proj(x, at + "q_a_proj.weight", xqp), at + "q_a_layernorm.weight", &qq);
      q_flat = proj(qn, at + "q_b_proj.weight", qq ? &*qq : nullptr);
    } else {
      q_flat = proj(x, at + "q_proj.weight", xqp);
    }
    std::vector<Tensor> q = split(q_flat.view({1, N, H, nope + rd}), {nope, rd}, -1);
    const Tensor q_pe = rope(q[1], rpos, rope_).view({N, H, rd});
    // This token's latent entry [kv_a_layernorm(c), rope(k_pe)] into the cache.
    std::vector<Tensor> ckv = split(proj(x, at + "kv_a_proj_with_mqa.weight", xqp), {L, rd}, -1);
    // fp8: the latent and kv_b's weight as the training forward's FP8 GEMM multiplies them
    // (the norm kernel's 1x128 codes and the 128x128 blocks, dequantized), so that the
    // absorbed form computes the trainer's kv_b projection up to rounding (on-policy rollouts).
    Tensor latent, w;
    if (cfg_.fp8) {
      std::optional<Fp8Rows> lq;
      norm(ckv[0], at + "kv_a_layernorm.weight", &lq);
      latent = fp8_dequantize_rows(*lq, ckv[0].dtype());
      w = v3 ? v3->kv_b[static_cast<size_t>(i)] : fp8_weight_as_used(p(at + "kv_b_proj.weight"));
      w = w.view({H, nope + vd, L});
    } else {
      latent = rmsnorm(ckv[0], p(at + "kv_a_layernorm.weight"), eps);
      w = p(at + "kv_b_proj.weight").view({H, nope + vd, L});
    }
    const Tensor k_pe = rope(ckv[1].reshape({1, N, 1, rd}), rpos, rope_).view({N, rd});
    paged_cache_write(concat({latent, k_pe}, -1), table, seq64, pos64, cache.pool(i));
    // Absorb W_UK into the query: (H, N, nope) @ (H, nope, L) -> (N, H, L).
    const Tensor qn = q[0].reshape({N, H, nope}).permute({1, 0, 2}).contiguous();
    const Tensor q_lat = matmul(qn, w.narrow(1, 0, nope).contiguous()).permute({1, 0, 2});
    const Tensor o_lat = paged_attention(concat({q_lat, q_pe}, -1).contiguous(),
                                         cache.pool(i), table, seq64, pos64, layout,
                                         cfg_.softmax_scale());  // (N, H, L)
    // Absorb W_UV into the output: (H, N, L) @ (H, v, L)^T -> (N, H * v).
    const Tensor o = matmul(o_lat.permute({1, 0, 2}).contiguous(),
                            w.narrow(1, nope, vd).contiguous(), false, /*trans_b=*/true)
                         .permute({1, 0, 2})
                         .reshape({N, H * vd});
    h = add(h, proj(o, at + "o_proj.weight"));
    std::optional<Fp8Rows> mq;
    const bool moe_layer = cfg_.is_moe_layer(i);
    const Tensor xn = norm(h, pre + "post_attention_layernorm.weight", moe_layer ? nullptr : &mq);
    if (!moe_layer) {
      h = add(h, mlp(pre + "mlp.", xn, mq ? &*mq : nullptr));
    } else {
      const StackedExperts* stacked = nullptr;
      if (v3) {
        const auto it = v3->layers.find(i);
        if (it != v3->layers.end()) stacked = &it->second;
      }
      h = add(h, moe(pre + "mlp.", xn, no_seq_lens, 0.0, opt.device_routing, stacked).y);
    }
  }
  return rmsnorm(h, p("model.norm.weight"), eps);
}

}  // namespace r1
