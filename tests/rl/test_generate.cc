// KV-cached generation (rl/generate.h, model/kv_cache.h, DeepseekV3::forward_cached) on a
// random tiny DeepSeek-V3 (configs/tiny.json, MLA + MoE): the absorbed, paged decode path
// against the expanded full forward, prefill against token-by-token decode, prompt sharing,
// and samples that do not depend on their batch neighbours.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>

#include "engine/autograd.h"
#include "engine/determinism.h"
#include "engine/ops.h"
#include "model/config.h"
#include "model/deepseek_v3.h"
#include "model/dense.h"
#include "rl/generate.h"
#include "tests/harness.h"

namespace r1 {
namespace {

ModelConfig tiny_config() { return load_model_config(R1_SOURCE_DIR "/configs/tiny.json"); }

std::vector<int32_t> random_tokens(uint64_t seed, int64_t n, int64_t vocab) {
  const std::vector<int64_t> v = Tensor::randint({n}, seed, 2, vocab).to_int_vector();
  return std::vector<int32_t>(v.begin(), v.end());
}

bool same_bits(const Tensor& a, const Tensor& b) {
  const Tensor x = a.contiguous(), y = b.contiguous();
  return x.shape() == y.shape() && x.dtype() == y.dtype() &&
         std::memcmp(x.data_ptr(), y.data_ptr(), x.nbytes()) == 0;
}

class CachedForward : public ::testing::TestWithParam<DType> {};

// Cached (absorbed, paged) prefill equals the full expanded forward; decoding token by token
// equals the one-call prefill bit for bit (same kernel, same order).
TEST_P(CachedForward, MatchesFullForwardAndDecode) {
  const DType dt = GetParam();
  const uint64_t seed = test::case_seed(1);
  const ModelConfig cfg = tiny_config();
  DeepseekV3 model(cfg, DeepseekV3::init_params(cfg, seed, dt), 256);
  NoGrad ng;
  BatchInvariantScope inv;
  const int64_t T = 150;  // three blocks of 64, the last partial
  const std::vector<int32_t> toks = random_tokens(seed + 1, T, cfg.vocab_size);
  const Tensor ids = Tensor::from_vector(toks, {1, T});
  const Tensor full = model.forward(ids, Tensor(), Tensor(), false).hidden.view({T, cfg.hidden_size});

  PagedKvCache cache = model.make_cache(8);
  const int64_t s = cache.add_sequence();
  cache.extend(s, T);
  std::vector<int64_t> seq(T, s), pos(T);
  for (int64_t t = 0; t < T; ++t) pos[t] = t;
  const Tensor pre = model.forward_cached(ids.view({T}), Tensor::from_vector(seq, {T}),
                                          Tensor::from_vector(pos, {T}), cache);
  const double tol = dt == DType::F64 ? 1e-11 : 2e-5;
  test::expect_close("cached prefill vs full forward", pre, full, tol, tol);

  PagedKvCache c2 = model.make_cache(8);
  const int64_t s2 = c2.add_sequence();
  for (int64_t t = 0; t < T; ++t) {
    c2.extend(s2, 1);
    const Tensor h = model.forward_cached(ids.view({T}).narrow(0, t, 1),
                                          Tensor::from_vector(std::vector<int64_t>{s2}, {1}),
                                          Tensor::from_vector(std::vector<int64_t>{t}, {1}), c2);
    ASSERT_TRUE(same_bits(h, pre.narrow(0, t, 1))) << "decode step " << t << " differs from prefill";
  }
}

INSTANTIATE_TEST_SUITE_P(Dtypes, CachedForward, ::testing::Values(DType::F32, DType::F64));

// The dense student (Qwen2, GQA 4 query heads over 2 kv heads) over its key/value cache: the
// same two properties.
TEST(CachedForwardDense, MatchesFullForwardAndDecode) {
  const uint64_t seed = test::case_seed(4);
  const ModelConfig cfg = load_model_config(R1_SOURCE_DIR "/configs/tiny-dense.json");
  DenseModel model(cfg, DenseModel::init_params(cfg, seed, DType::F64), 256);
  NoGrad ng;
  BatchInvariantScope inv;
  const int64_t T = 130;
  const std::vector<int32_t> toks = random_tokens(seed + 1, T, cfg.vocab_size);
  const Tensor ids = Tensor::from_vector(toks, {1, T});
  const Tensor full = model.forward(ids, Tensor(), Tensor(), false).hidden.view({T, cfg.hidden_size});
  PagedKvCache cache = model.make_cache(4);
  const int64_t s = cache.add_sequence();
  cache.extend(s, T);
  std::vector<int64_t> seq(T, s), pos(T);
  for (int64_t t = 0; t < T; ++t) pos[t] = t;
  const Tensor pre = model.forward_cached(ids.view({T}), Tensor::from_vector(seq, {T}),
                                          Tensor::from_vector(pos, {T}), cache);
  test::expect_close("dense cached prefill vs full forward", pre, full, 1e-11, 1e-11);
  PagedKvCache c2 = model.make_cache(4);
  const int64_t s2 = c2.add_sequence();
  for (int64_t t = 0; t < T; ++t) {
    c2.extend(s2, 1);
    const Tensor h = model.forward_cached(ids.view({T}).narrow(0, t, 1),
                                          Tensor::from_vector(std::vector<int64_t>{s2}, {1}),
                                          Tensor::from_vector(std::vector<int64_t>{t}, {1}), c2);
    ASSERT_TRUE(same_bits(h, pre.narrow(0, t, 1))) << "decode step " << t;
  }
  // And it generates through the same entry point.
  rl::GenerationConfig g;
  g.max_new_tokens = 8;
  g.seed = seed;
  const auto out = rl::generate(model, {toks}, 2, g);
  ASSERT_EQ(out.size(), 2u);
  EXPECT_EQ(out[0].tokens.size(), 8u);
}

// Forked samples share the prompt's full blocks and copy the partial one.
TEST(PagedKvCache, ForkSharesFullBlocks) {
  PagedKvCache c(2, 4, 16, DType::F32, Device::cpu());
  const int64_t p = c.add_sequence();
  c.extend(p, 130);  // blocks 64 + 64 + 2
  EXPECT_EQ(c.blocks_in_use(), 3);
  const int64_t a = c.fork(p), b = c.fork(p);
  EXPECT_EQ(c.blocks_in_use(), 5);  // two full shared, three partial copies
  c.release(p);
  EXPECT_EQ(c.blocks_in_use(), 4);
  EXPECT_EQ(c.length(a), 130);
  c.extend(a, 62);
  EXPECT_EQ(c.blocks_in_use(), 4);
  c.extend(a, 1);
  EXPECT_EQ(c.blocks_in_use(), 5);
  c.release(a);
  c.release(b);
  EXPECT_EQ(c.blocks_in_use(), 0);
  EXPECT_THROW(c.extend(a, 1), Error);
}

std::vector<rl::Sample> run(DeepseekV3& model, const std::vector<std::vector<int32_t>>& prompts,
                            uint64_t seed, uint64_t base) {
  rl::GenerationConfig g;
  g.max_new_tokens = 40;
  g.sampling.temperature = 1.0f;
  g.sampling.top_p = 0.95f;
  g.stop_tokens = {1};
  g.seed = seed;
  return rl::generate(model, prompts, 3, g, base);
}

// A sample depends on its prompt, the seed and its stream id only: not on the other prompts
// in the batch, nor on how many there are.
TEST(Generate, SamplesIgnoreBatchNeighbours) {
  const uint64_t seed = test::case_seed(2);
  const ModelConfig cfg = tiny_config();
  DeepseekV3 model(cfg, DeepseekV3::init_params(cfg, seed), 256);
  const auto A = random_tokens(seed + 1, 37, cfg.vocab_size);
  const auto B = random_tokens(seed + 2, 70, cfg.vocab_size);
  const auto C = random_tokens(seed + 3, 5, cfg.vocab_size);
  const auto alone = run(model, {A}, seed, 0);
  const auto with_b = run(model, {A, B}, seed, 0);
  const auto with_bc = run(model, {A, C, B}, seed, 0);
  int64_t tokens = 0;
  for (int g = 0; g < 3; ++g) {
    EXPECT_EQ(alone[g].tokens, with_b[g].tokens) << "sample " << g;
    EXPECT_EQ(alone[g].tokens, with_bc[g].tokens) << "sample " << g;
    EXPECT_EQ(alone[g].logprobs, with_bc[g].logprobs) << "sample " << g;
    tokens += static_cast<int64_t>(alone[g].tokens.size());
  }
  EXPECT_GT(tokens, 3);
  // B's samples in two batches: prompt index 1 then 2, so give the same stream ids.
  const auto b1 = run(model, {B}, seed, 3);
  for (int g = 0; g < 3; ++g) EXPECT_EQ(b1[g].tokens, with_b[3 + g].tokens);
  // Different streams give different samples (40 tokens from a random model).
  EXPECT_NE(alone[0].tokens, alone[1].tokens);
}

// The recorded sampling logprobs are those of the full forward's logits (tempered softmax),
// up to the difference between the absorbed paged path and the expanded one.
TEST(Generate, LogprobsMatchFullForward) {
  const uint64_t seed = test::case_seed(3);
  const ModelConfig cfg = tiny_config();
  DeepseekV3 model(cfg, DeepseekV3::init_params(cfg, seed, DType::F64), 256);
  const auto A = random_tokens(seed + 1, 20, cfg.vocab_size);
  const auto s = run(model, {A}, seed, 0);
  NoGrad ng;
  for (const auto& smp : s) {
    std::vector<int32_t> all = A;
    all.insert(all.end(), smp.tokens.begin(), smp.tokens.end());
    const int64_t T = static_cast<int64_t>(all.size());
    const Tensor logits = model.forward(Tensor::from_vector(all, {1, T})).logits.view({T, -1});
    const Tensor lsm = log_softmax(logits);
    for (size_t k = 0; k < smp.tokens.size(); ++k) {
      const double ref = lsm.select(0, static_cast<int64_t>(A.size() + k - 1))
                             .select(0, smp.tokens[k]).to(DType::F64).item();
      EXPECT_NEAR(smp.logprobs[k], ref, 1e-5) << "token " << k;
    }
  }
}

}  // namespace
}  // namespace r1
