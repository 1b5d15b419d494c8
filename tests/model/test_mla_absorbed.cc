// MLA's absorbed decoding form (model/mla_decode.h) against the expanded form the model trains
// with (model/deepseek_v3.cc's attention_block, reproduced here from the same engine ops), for
// one layer of random tiny DeepSeek-V3 configs (q compression on/off, YaRN on/off) in f64 and
// f32: prefill (all T queries over the cache of all T tokens, causal), a chunk (the last few
// queries with the causal offset), one decode step (the last token over the whole cache) and
// a token-by-token decode loop over a growing cache. Relative error max|a - b| / max|b| within
// 1e-10 (f64) and 1e-5 (f32). Plus the memory claim by shapes: kv_lora_rank + rope numbers
// cached per token.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <ostream>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops_attention.h"
#include "model/deepseek_v3.h"
#include "model/mla_decode.h"
#include "tests/harness.h"

namespace r1 {
namespace {

constexpr int64_t kB = 2, kT = 12, kMaxPos = 64;
constexpr double kNormNoise = 0.1;

struct Variant {
  std::string name;
  int64_t q_lora_rank;
  bool yarn;
  DType dtype;
  int64_t layer;
};
void PrintTo(const Variant& v, std::ostream* os) { *os << v.name; }

ModelConfig make_config(const Variant& v) {
  ModelConfig c = load_model_config(std::string(R1_SOURCE_DIR) + "/configs/tiny.json");
  c.q_lora_rank = v.q_lora_rank;
  if (!v.yarn) c.rope_scaling.reset();
  return c;
}

double rel_err(const Tensor& a, const Tensor& ref) {
  EXPECT_EQ(a.shape(), ref.shape());
  const std::vector<double> x = a.to_double_vector(), y = ref.to_double_vector();
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    num = std::max(num, std::fabs(x[i] - y[i]));
    den = std::max(den, std::fabs(y[i]));
  }
  return den > 0 ? num / den : num;
}

// One layer's pieces, computed as DeepseekV3::attention_block does.
struct Layer {
  Tensor x;          // (B, T, hidden): input_layernorm(embedding(ids))
  Tensor q_nope;     // (B, T, H, nope)
  Tensor q_pe;       // (B, T, H, rope), rotated
  Tensor c;          // (B, T, kv_lora_rank), normed latent
  Tensor k_pe;       // (B, T, rope), rotated
  Tensor expanded;   // (B, T, H, v): the expanded-form attention output (before o_proj)
};

Layer expanded_layer(const ModelConfig& cfg, const ParamMap& P, const Tensor& ids,
                     const Tensor& pos, const RopeTable& rt, int64_t layer) {
  auto p = [&](const std::string& n) -> const Tensor& { return P.at(n); };
  const std::string pre = "model.layers." + std::to_string(layer) + ".";
  const std::string a = pre + "self_attn.";
  const int64_t B = ids.size(0), T = ids.size(1), H = cfg.num_attention_heads;
  const int64_t nope = cfg.qk_nope_head_dim, rd = cfg.qk_rope_head_dim, vd = cfg.v_head_dim;
  const double eps = cfg.rms_norm_eps;
  Layer L;
  L.x = rmsnorm(embedding(ids, p("model.embed_tokens.weight")), p(pre + "input_layernorm.weight"),
                eps);
  Tensor q_flat;
  if (cfg.q_lora_rank > 0)
    q_flat = linear(rmsnorm(linear(L.x, p(a + "q_a_proj.weight")), p(a + "q_a_layernorm.weight"),
                            eps),
                    p(a + "q_b_proj.weight"));
  else
    q_flat = linear(L.x, p(a + "q_proj.weight"));
  std::vector<Tensor> q = split(q_flat.view({B, T, H, nope + rd}), {nope, rd}, -1);
  std::vector<Tensor> ckv =
      split(linear(L.x, p(a + "kv_a_proj_with_mqa.weight")), {cfg.kv_lora_rank, rd}, -1);
  L.c = rmsnorm(ckv[0], p(a + "kv_a_layernorm.weight"), eps);
  const Tensor kv = linear(L.c, p(a + "kv_b_proj.weight")).view({B, T, H, nope + vd});
  std::vector<Tensor> knv = split(kv, {nope, vd}, -1);
  L.q_nope = q[0].contiguous();
  L.q_pe = rope(q[1], pos, rt);
  const Tensor k_pe = rope(ckv[1].reshape({B, T, 1, rd}), pos, rt);
  L.k_pe = k_pe.reshape({B, T, rd});
  const Tensor k_pe_h = concat(std::vector<Tensor>(static_cast<size_t>(H), k_pe), 2);
  const Tensor qh = concat({L.q_nope, L.q_pe}, -1);
  const Tensor kh = concat({knv[0], k_pe_h}, -1);
  L.expanded = attention(qh, kh, knv[1].contiguous(), cfg.softmax_scale(), /*causal=*/true);
  return L;
}

class MlaAbsorbed : public ::testing::TestWithParam<Variant> {};

TEST_P(MlaAbsorbed, MatchesExpandedForm) {
  const Variant v = GetParam();
  NoGrad ng;
  const ModelConfig cfg = make_config(v);
  const uint64_t seed = test::case_seed(static_cast<uint64_t>(v.q_lora_rank * 10 + v.yarn * 2 +
                                                              (v.dtype == DType::F64)));
  ParamMap P = DeepseekV3::init_params(cfg, seed, v.dtype);
  uint64_t k = 0;
  for (auto& [name, t] : P)  // noise on the norms so kv_a_layernorm's weight matters
    if (t.dim() == 1)
      t = add(t, Tensor::randn(t.shape(), seed * 1000 + 7 + k++, v.dtype, Device::cpu(),
                               kNormNoise));
  const Tensor ids = Tensor::randint({kB, kT}, seed + 1, 0, cfg.vocab_size);
  std::vector<int64_t> pv;
  for (int64_t b = 0; b < kB; ++b)
    for (int64_t t = 0; t < kT; ++t) pv.push_back(t);
  const Tensor pos = Tensor::from_vector(pv, {kB, kT});
  const RopeTable rt(cfg.rope(), kMaxPos, v.dtype);
  const Layer L = expanded_layer(cfg, P, ids, pos, rt, v.layer);

  const double tol = v.dtype == DType::F64 ? 1e-10 : 1e-5;
  const std::string a = "model.layers." + std::to_string(v.layer) + ".self_attn.";
  const Tensor& wkvb = P.at(a + "kv_b_proj.weight");
  const int64_t nope = cfg.qk_nope_head_dim, vd = cfg.v_head_dim;
  const double sc = cfg.softmax_scale();

  // The cache helper gives the same latents the expanded form uses.
  const MlaLatent lat = mla_kv_latent(L.x, P.at(a + "kv_a_proj_with_mqa.weight"),
                                      P.at(a + "kv_a_layernorm.weight"), cfg.rms_norm_eps, pos, rt);
  EXPECT_EQ(rel_err(lat.latent, L.c), 0.0);
  EXPECT_EQ(rel_err(lat.k_pe, L.k_pe), 0.0);

  double worst = 0;
  auto check = [&](const std::string& what, const Tensor& got, const Tensor& want) {
    const double e = rel_err(got, want);
    worst = std::max(worst, e);
    EXPECT_LE(e, tol) << v.name << " " << what;
  };
  // Prefill: all T queries over the cache of all T tokens.
  check("prefill", mla_attention_absorbed(L.q_nope, L.q_pe, lat.latent, lat.k_pe, wkvb, nope,
                                          vd, sc),
        L.expanded);
  // A chunk: the last 5 queries, causal offset S - Tq.
  const int64_t C = 5;
  check("chunk", mla_attention_absorbed(L.q_nope.narrow(1, kT - C, C), L.q_pe.narrow(1, kT - C, C),
                                        lat.latent, lat.k_pe, wkvb, nope, vd, sc),
        L.expanded.narrow(1, kT - C, C));
  // One decode step: the last token over the whole cache.
  check("decode", mla_attention_absorbed(L.q_nope.narrow(1, kT - 1, 1),
                                         L.q_pe.narrow(1, kT - 1, 1), lat.latent, lat.k_pe, wkvb,
                                         nope, vd, sc),
        L.expanded.narrow(1, kT - 1, 1));
  // Token-by-token decoding over a growing cache (entries appended one token at a time).
  Tensor cache_c, cache_pe;
  for (int64_t t = 0; t < kT; ++t) {
    const MlaLatent e = mla_kv_latent(L.x.narrow(1, t, 1), P.at(a + "kv_a_proj_with_mqa.weight"),
                                      P.at(a + "kv_a_layernorm.weight"), cfg.rms_norm_eps,
                                      pos.narrow(1, t, 1), rt);
    cache_c = t == 0 ? e.latent : concat({cache_c, e.latent}, 1);
    cache_pe = t == 0 ? e.k_pe : concat({cache_pe, e.k_pe}, 1);
    check("step " + std::to_string(t),
          mla_attention_absorbed(L.q_nope.narrow(1, t, 1), L.q_pe.narrow(1, t, 1), cache_c,
                                 cache_pe, wkvb, nope, vd, sc),
          L.expanded.narrow(1, t, 1));
  }
  std::printf("[ mla ] %s: max relative difference %.3e (tol %.0e)\n", v.name.c_str(), worst, tol);
}

INSTANTIATE_TEST_SUITE_P(
    Configs, MlaAbsorbed,
    ::testing::Values(Variant{"qlora48_yarn_f64", 48, true, DType::F64, 0},
                      Variant{"qlora48_noyarn_f64", 48, false, DType::F64, 2},
                      Variant{"qnull_yarn_f64", 0, true, DType::F64, 1},
                      Variant{"qnull_noyarn_f64", 0, false, DType::F64, 0},
                      Variant{"qlora48_yarn_f32", 48, true, DType::F32, 0},
                      Variant{"qlora48_noyarn_f32", 48, false, DType::F32, 2},
                      Variant{"qnull_yarn_f32", 0, true, DType::F32, 1},
                      Variant{"qnull_noyarn_f32", 0, false, DType::F32, 0}),
    [](const ::testing::TestParamInfo<Variant>& i) { return i.param.name; });

// The memory claim, by shapes: the absorbed form caches kv_lora_rank + qk_rope_head_dim
// numbers per token for all heads together; the expanded form's per-token keys and values are
// H * (nope + rope) + H * v.
TEST(MlaAbsorbedCache, LatentPerTokenIsKvLoraPlusRope) {
  NoGrad ng;
  const ModelConfig cfg = load_model_config(std::string(R1_SOURCE_DIR) + "/configs/tiny.json");
  const ParamMap P = DeepseekV3::init_params(cfg, test::case_seed(99), DType::F32);
  const RopeTable rt(cfg.rope(), kMaxPos);
  const Tensor x = Tensor::randn({kB, kT, cfg.hidden_size}, test::case_seed(100));
  const Tensor pos = Tensor::arange(kT);
  const std::string a = "model.layers.0.self_attn.";
  const MlaLatent lat = mla_kv_latent(x, P.at(a + "kv_a_proj_with_mqa.weight"),
                                      P.at(a + "kv_a_layernorm.weight"), cfg.rms_norm_eps, pos, rt);
  EXPECT_EQ(lat.latent.shape(), (Shape{kB, kT, cfg.kv_lora_rank}));
  EXPECT_EQ(lat.k_pe.shape(), (Shape{kB, kT, cfg.qk_rope_head_dim}));
  const int64_t per_token = (lat.latent.numel() + lat.k_pe.numel()) / (kB * kT);
  EXPECT_EQ(per_token, cfg.kv_lora_rank + cfg.qk_rope_head_dim);  // 32 + 8 = 40
  const int64_t H = cfg.num_attention_heads;
  EXPECT_LT(per_token, H * (cfg.qk_head_dim() + cfg.v_head_dim));  // 4 * (24 + 16) = 160
  // DeepSeek-V3's shapes: 512 + 64 = 576 per token per layer, against 128 * (192 + 128).
  const ModelConfig v3 = load_model_config(std::string(R1_SOURCE_DIR) + "/configs/v3-shapes.json");
  EXPECT_EQ(v3.kv_lora_rank + v3.qk_rope_head_dim, 576);
  EXPECT_EQ(v3.num_attention_heads * (v3.qk_head_dim() + v3.v_head_dim), 40960);

  // The absorbed attention over that cache returns (B, Tq, H, v) for a one-token query.
  const Tensor qn = Tensor::randn({kB, 1, H, cfg.qk_nope_head_dim}, test::case_seed(101));
  const Tensor qp = Tensor::randn({kB, 1, H, cfg.qk_rope_head_dim}, test::case_seed(102));
  const Tensor o = mla_attention_absorbed(qn, qp, lat.latent, lat.k_pe, P.at(a + "kv_b_proj.weight"),
                                          cfg.qk_nope_head_dim, cfg.v_head_dim,
                                          cfg.softmax_scale());
  EXPECT_EQ(o.shape(), (Shape{kB, 1, H, cfg.v_head_dim}));
}

TEST(MlaAbsorbedCache, RejectsBadShapes) {
  NoGrad ng;
  const int64_t H = 2, nope = 4, rd = 2, vd = 3, L = 5, S = 3;
  const Tensor w = Tensor::randn({H * (nope + vd), L}, 1);
  const Tensor c = Tensor::randn({1, S, L}, 2), kp = Tensor::randn({1, S, rd}, 3);
  // More queries than cached tokens.
  EXPECT_THROW(mla_attention_absorbed(Tensor::randn({1, S + 1, H, nope}, 4),
                                      Tensor::randn({1, S + 1, H, rd}, 5), c, kp, w, nope, vd, 1.0),
               Error);
  // kv_b_proj that does not fit H * (nope + v).
  EXPECT_THROW(mla_attention_absorbed(Tensor::randn({1, 1, H, nope}, 4),
                                      Tensor::randn({1, 1, H, rd}, 5), c, kp, w, nope, vd + 1, 1.0),
               Error);
  // Mixed dtypes.
  EXPECT_THROW(mla_attention_absorbed(Tensor::randn({1, 1, H, nope}, 4, DType::F64),
                                      Tensor::randn({1, 1, H, rd}, 5), c, kp, w, nope, vd, 1.0),
               Error);
}

}  // namespace
}  // namespace r1
