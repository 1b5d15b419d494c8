// KV-cached generation (rl/generate.h, model/kv_cache.h, DeepseekV3::forward_cached) on a
// random tiny DeepSeek-V3 (configs/tiny.json, MLA + MoE): the absorbed, paged decode path
// against the expanded full forward, prefill against token-by-token decode, prompt sharing,
// and samples that do not depend on their batch neighbours.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <numeric>

#include "engine/autograd.h"
#include "engine/determinism.h"
#include "engine/ops.h"
#include "engine/step_graph.h"
#include "model/config.h"
#include "model/deepseek_v3.h"
#include "model/dense.h"
#include "rl/generate.h"
#include "tests/harness.h"

#if defined(R1_HAVE_CUDA)
#include "kernels/cuda/gemm_invariant.h"
#endif

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

// fp8: the cached (absorbed) forward runs what the training forward runs up to fp32 rounding
// (rollout logprobs on-policy for the FP8 trainer): the latent cache holds the kv_b
// projection's FP8 input as the trainer's GEMM sees it (rmsnorm_quantize_fp8's codes,
// dequantized) and the absorbed W_UK / W_UV are kv_b's block-quantized weight, dequantized.
// Before, the absorbed form multiplied unquantized c and W and every token differed from the
// trainer by FP8's rounding of kv_b (normwise 6.6e-2 .. 1.1e-1 on the hidden states over 12
// seeds). What remains is rounding, now and then amplified: a value that sits on an E4M3
// rounding boundary of a later projection's input goes one code step the other way (one
// token off by up to ~1e-2), and when that happens to a cached latent, every later token of
// the sequence sees it. So six short sequences, and the median token must agree to 1e-5
// (30 seeds: median 1.0e-7 .. 1.3e-7; normwise 1.1e-7 in most, up to 2.2e-2 with 9-17 of
// the 150 tokens off).
TEST(CachedForwardFp8, TracksTheTrainingForward) {
  const uint64_t seed = test::case_seed(7);
  ModelConfig cfg = tiny_config();
  cfg.fp8 = true;
  DeepseekV3 model(cfg, DeepseekV3::init_params(cfg, seed), 256);
  NoGrad ng;
  BatchInvariantScope inv;
  const int64_t B = 6, T = 25, D = cfg.hidden_size;
  const Tensor ids = Tensor::from_vector(random_tokens(seed + 1, B * T, cfg.vocab_size), {B, T});
  const std::vector<double> b =
      model.forward(ids, Tensor(), Tensor(), false).hidden.to_double_vector();  // (B, T, D)
  for (bool prepared : {false, true}) {
    const std::shared_ptr<const DecodePrep> prep = model.prepare_decode();
    CachedForwardOptions opt;
    if (prepared) opt.prep = prep.get();
    PagedKvCache cache = model.make_cache(B);
    std::vector<int64_t> seq, pos;
    for (int64_t r = 0; r < B; ++r) {
      const int64_t s = cache.add_sequence();
      cache.extend(s, T);
      for (int64_t t = 0; t < T; ++t) {
        seq.push_back(s);
        pos.push_back(t);
      }
    }
    const std::vector<double> a =
        model.forward_cached(ids.view({B * T}), Tensor::from_vector(seq, {B * T}),
                             Tensor::from_vector(pos, {B * T}), cache, opt)
            .to_double_vector();
    double num = 0, den = 0;
    std::vector<double> tok(static_cast<size_t>(B * T));
    for (int64_t n = 0; n < B * T; ++n) {
      double e = 0, r = 0;
      for (int64_t d = 0; d < D; ++d) {
        const double x = a[n * D + d] - b[n * D + d];
        e += x * x;
        r += b[n * D + d] * b[n * D + d];
      }
      num += e;
      den += r;
      tok[static_cast<size_t>(n)] = std::sqrt(e / r);
    }
    const double rel = std::sqrt(num / den);
    const auto off = std::count_if(tok.begin(), tok.end(), [](double e) { return e > 1e-5; });
    std::nth_element(tok.begin(), tok.begin() + B * T / 2, tok.end());
    const double median = tok[static_cast<size_t>(B * T / 2)];
    const char* what = prepared ? "prepared" : "unprepared";
    std::printf("fp8 cached (%s) vs training forward: normwise %.2e, median token %.2e, %lld of "
                "%lld tokens off by more than 1e-5\n", what, rel, median,
                static_cast<long long>(off), static_cast<long long>(B * T));
    EXPECT_LT(median, 1e-5) << what;
    EXPECT_LE(off, B * T / 4) << what;  // 30 seeds: 0-17 of 150
  }
}

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

// The fixed table keeps one address and holds what the growing one holds; sequences and
// blocks beyond it are refused.
TEST(PagedKvCache, FixedTableKeepsItsAddress) {
  PagedKvCache grow(1, 4, 32, DType::F32, Device::cpu()), fix(1, 4, 32, DType::F32, Device::cpu());
  fix.fix_table(4, 3);
  const void* addr = fix.block_table().data_ptr();
  for (PagedKvCache* c : {&grow, &fix}) {
    const int64_t a = c->add_sequence();
    c->extend(a, 70);
    const int64_t b = c->fork(a);
    c->extend(b, 100);
    c->release(a);
  }
  const Tensor tf = fix.block_table();
  EXPECT_EQ(tf.data_ptr(), addr);
  EXPECT_EQ(tf.shape(), (Shape{4, 3}));
  const Tensor tg = grow.block_table();
  const std::vector<int64_t> vf = tf.to_int_vector(), vg = tg.to_int_vector();
  for (int64_t s = 0; s < 2; ++s)
    for (int64_t j = 0; j < 3; ++j)
      EXPECT_EQ(vf[s * 3 + j], j < tg.size(1) ? vg[s * tg.size(1) + j] : -1) << s << " " << j;
  EXPECT_EQ(vf[1 * 3 + 2], vg[1 * tg.size(1) + 2]);  // sequence 1's third block
  EXPECT_NE(vf[1 * 3 + 2], -1);
  EXPECT_THROW(fix.extend(1, 100), Error);  // 270 tokens > 3 blocks of 64
  fix.add_sequence();
  fix.add_sequence();
  EXPECT_THROW(fix.add_sequence(), Error);  // a fifth row
}

// Generation with the given decode mode: prompts of three lengths, 3 samples each, stop
// tokens common enough that samples end at different steps (the batch shrinks through
// several padded sizes).
std::vector<rl::Sample> run_mode(CausalLM& model, int64_t vocab, uint64_t seed,
                                 rl::DecodeMode mode, rl::GenerationStats* st = nullptr) {
  rl::GenerationConfig g;
  g.max_new_tokens = 24;
  g.sampling.temperature = 1.0f;
  g.sampling.top_p = 0.9f;
  for (int32_t t = 2; t < 2 + vocab / 12; ++t) g.stop_tokens.push_back(t);
  g.seed = seed;
  g.decode = mode;
  const std::vector<std::vector<int32_t>> prompts = {random_tokens(seed + 1, 37, vocab),
                                                     random_tokens(seed + 2, 70, vocab),
                                                     random_tokens(seed + 3, 5, vocab)};
  return rl::generate(model, prompts, 3, g, 0, st);
}

void expect_same_samples(const std::vector<rl::Sample>& a, const std::vector<rl::Sample>& b,
                         const char* what) {
  ASSERT_EQ(a.size(), b.size()) << what;
  std::vector<size_t> lengths;
  for (size_t i = 0; i < a.size(); ++i) {
    EXPECT_EQ(a[i].tokens, b[i].tokens) << what << ": sample " << i;
    EXPECT_EQ(a[i].logprobs, b[i].logprobs) << what << ": sample " << i;
    EXPECT_EQ(a[i].truncated, b[i].truncated) << what << ": sample " << i;
    lengths.push_back(a[i].tokens.size());
  }
  // The batch shrank: samples of different lengths, so several padded batch sizes ran.
  std::sort(lengths.begin(), lengths.end());
  EXPECT_LT(lengths.front(), lengths.back()) << what;
}

class StaticDecode : public ::testing::TestWithParam<std::string> {};

// The graph-safe step (padded batch, fixed block table, MoE routed on the device, no host
// reads) gives the eager path's samples bit for bit: what a CUDA graph replays is this step.
// f32, f64, and f32 parameters with the FP8 projections.
TEST_P(StaticDecode, MatchesEagerDeepseekV3) {
  const uint64_t seed = test::case_seed(4);
  ModelConfig cfg = tiny_config();
  cfg.fp8 = GetParam() == "fp8";
  const DType dt = GetParam() == "f64" ? DType::F64 : DType::F32;
  DeepseekV3 model(cfg, DeepseekV3::init_params(cfg, seed, dt), 256);
  rl::GenerationStats st;
  const auto eager = run_mode(model, cfg.vocab_size, seed, rl::DecodeMode::kEager);
  const auto fixed = run_mode(model, cfg.vocab_size, seed, rl::DecodeMode::kStatic, &st);
  EXPECT_EQ(st.decode, rl::DecodeMode::kStatic);
  EXPECT_EQ(st.graphs_captured, 0);
  expect_same_samples(eager, fixed, "deepseek-v3");
  // fp8 ran the masked expert layout (each expert on its own tokens), the others every
  // expert on every token: both give the routed path's bits.
  EXPECT_EQ(model.prepare_decode() != nullptr, cfg.fp8);
  // kAuto is eager on the CPU.
  run_mode(model, cfg.vocab_size, seed, rl::DecodeMode::kAuto, &st);
  EXPECT_EQ(st.decode, rl::DecodeMode::kEager);
  // Graphs on a device without them: an error, not a silent fallback.
  EXPECT_THROW(run_mode(model, cfg.vocab_size, seed, rl::DecodeMode::kGraphs), Error);
}
INSTANTIATE_TEST_SUITE_P(Precisions, StaticDecode, ::testing::Values("f32", "f64", "fp8"),
                         [](const auto& info) { return info.param; });

// NoHostReads (what the graph-safe step runs under, on every device) refuses host reads, and
// the eager forward's read-backs (positions, MoE routing) trip it: the static step's passing
// under it is a real proof.
TEST(StaticDecodeProof, HostReadsAreRefusedInsideTheStep) {
  const uint64_t seed = test::case_seed(7);
  const ModelConfig cfg = tiny_config();
  DeepseekV3 model(cfg, DeepseekV3::init_params(cfg, seed), 256);
  NoGrad ng;
  BatchInvariantScope inv;
  PagedKvCache cache = model.make_cache(2);
  const int64_t s = cache.add_sequence();
  cache.extend(s, 3);
  const Tensor ids = Tensor::from_vector(random_tokens(seed, 3, cfg.vocab_size), {3});
  const Tensor seq = Tensor::from_vector(std::vector<int64_t>{s, s, s}, {3});
  const Tensor pos = Tensor::from_vector(std::vector<int64_t>{0, 1, 2}, {3});
  CachedForwardOptions trusted;
  trusted.trusted_positions = true;
  CachedForwardOptions safe = trusted;
  safe.device_routing = true;
  NoHostReads no_reads;
  EXPECT_THROW((void)ids.to_int_vector(), Error);
  EXPECT_THROW((void)ids.to_float_vector(), Error);
  EXPECT_THROW(model.forward_cached(ids, seq, pos, cache), Error);           // positions
  EXPECT_THROW(model.forward_cached(ids, seq, pos, cache, trusted), Error);  // MoE routing
  EXPECT_NO_THROW(model.forward_cached(ids, seq, pos, cache, safe));
}

// fp8 generation runs the experts as grouped GEMMs over prepare_decode's stacked weights:
// the contiguous layout (eager forwards) and the masked one (the static step) give the same
// hidden states bit for bit (one tile code on every backend), on a prefill of 37 tokens
// (every expert gets some, with different counts). On the CPU they also equal the per-expert
// linear_fp8 path bit for bit; on a GPU that path's dense GEMM is another kernel (fp32 sums
// in another order), so there within 1e-2 normwise (an FP8 code may flip on the way).
void expect_grouped_experts_match(Device dev) {
  const uint64_t seed = test::case_seed(8);
  ModelConfig cfg = tiny_config();
  cfg.fp8 = true;
  ParamMap params = DeepseekV3::init_params(cfg, seed);
  for (auto& [name, t] : params) t = t.to(dev);
  DeepseekV3 model(cfg, std::move(params), 256);
  NoGrad ng;
  BatchInvariantScope inv;
  const std::shared_ptr<const DecodePrep> prep = model.prepare_decode();
  ASSERT_TRUE(prep);
  const int64_t n = 37;
  std::vector<int64_t> pos(n);
  std::iota(pos.begin(), pos.end(), int64_t{0});
  const Tensor ids = Tensor::from_vector(random_tokens(seed, n, cfg.vocab_size), {n});
  CachedForwardOptions contiguous, masked;
  contiguous.prep = masked.prep = prep.get();
  masked.device_routing = masked.trusted_positions = true;
  std::vector<std::vector<double>> out;
  for (const CachedForwardOptions& opt : {CachedForwardOptions{}, contiguous, masked}) {
    PagedKvCache cache = model.make_cache(4);
    const int64_t s = cache.add_sequence();
    cache.extend(s, n);
    const Tensor seq = Tensor::from_vector(std::vector<int64_t>(n, s), {n});
    out.push_back(model.forward_cached(ids, seq, Tensor::from_vector(pos, {n}), cache, opt)
                      .to(DType::F64)
                      .to_double_vector());
  }
  EXPECT_EQ(out[2], out[1]) << "masked vs contiguous grouped experts";
  if (dev.is_cpu()) {
    EXPECT_EQ(out[1], out[0]) << "grouped experts vs per-expert linear_fp8";
  } else {
    double num = 0, den = 0;
    for (size_t i = 0; i < out[0].size(); ++i) {
      num += (out[1][i] - out[0][i]) * (out[1][i] - out[0][i]);
      den += out[0][i] * out[0][i];
    }
    EXPECT_LT(std::sqrt(num / den), 1e-2) << "grouped experts vs per-expert linear_fp8";
  }
}

TEST(GroupedExperts, MatchPerExpertFp8) { expect_grouped_experts_match(Device::cpu()); }

TEST(GroupedExpertsCuda, MatchPerExpertFp8) {
  R1_SKIP_WITHOUT_CUDA();
  expect_grouped_experts_match(Device::cuda(0));
}

TEST(StaticDecodeDense, MatchesEager) {
  const uint64_t seed = test::case_seed(5);
  const ModelConfig cfg = load_model_config(R1_SOURCE_DIR "/configs/tiny-dense.json");
  DenseModel model(cfg, DenseModel::init_params(cfg, seed), 256);
  const auto eager = run_mode(model, cfg.vocab_size, seed, rl::DecodeMode::kEager);
  const auto fixed = run_mode(model, cfg.vocab_size, seed, rl::DecodeMode::kStatic);
  expect_same_samples(eager, fixed, "dense");
}

ParamMap to_cuda(const ParamMap& params) {
  ParamMap out;
  for (const auto& [name, t] : params) out[name] = t.to(Device::cuda());
  return out;
}

// On a GPU: the decode step captured in CUDA graphs (one per padded batch size) and replayed
// gives the static step's samples bit for bit (the same padded shapes, so this holds whatever
// the GEMM), and the eager path's too, in bf16 and f32, MoE and dense. Eager decodes the live
// rows only (9, 7, 3, ...) where graphs pad them (16, 8, 4): equal bits need the
// batch-invariant gemm, forced on here (gemm_invariant; cuBLASLt's algorithm follows M).
TEST(DecodeGraphsCuda, MatchEager) {
  R1_SKIP_WITHOUT_CUDA();
#if defined(R1_HAVE_CUDA)
  cuda::set_invariant_gemm(1);
  struct Restore {
    ~Restore() { cuda::set_invariant_gemm(-1); }
  } restore;
#endif
  const uint64_t seed = test::case_seed(6);
  const ModelConfig cfg = tiny_config();
  for (const char* prec : {"f32", "bf16", "fp8"}) {
    ModelConfig c = cfg;
    c.fp8 = std::string(prec) == "fp8";
    const DType dt = std::string(prec) == "bf16" ? DType::BF16 : DType::F32;
    DeepseekV3 model(c, to_cuda(DeepseekV3::init_params(c, seed, dt)), 256);
    rl::GenerationStats st;
    const auto eager = run_mode(model, cfg.vocab_size, seed, rl::DecodeMode::kEager);
    const auto fixed = run_mode(model, cfg.vocab_size, seed, rl::DecodeMode::kStatic);
    const auto graphs = run_mode(model, cfg.vocab_size, seed, rl::DecodeMode::kGraphs, &st);
    EXPECT_EQ(st.decode, rl::DecodeMode::kGraphs);
    EXPECT_EQ(st.graph_capture_failures, 0) << "a capture failed (see the warning above)";
    EXPECT_GE(st.graphs_captured, 2) << "the batch shrank through several padded sizes";
    EXPECT_GT(st.graphs_replayed, 0) << "graphs were captured but never replayed: the "
                                        "comparison would not test a replay ("
                                     << st.decode_steps << " decode steps)";
    expect_same_samples(fixed, graphs, (std::string(prec) + " static vs graphs").c_str());
    // fp8: the eager steps run the experts as contiguous grouped GEMMs and the graphs as
    // masked ones, one tile code (GroupedExpertsCuda): the same bits here too.
    expect_same_samples(eager, graphs, prec);
    // The CPU gives the same tokens up to the devices' rounding; not compared bitwise here.
  }
  const ModelConfig dcfg = load_model_config(R1_SOURCE_DIR "/configs/tiny-dense.json");
  DenseModel dense(dcfg, to_cuda(DenseModel::init_params(dcfg, seed)), 256);
  const auto dense_graphs = run_mode(dense, dcfg.vocab_size, seed, rl::DecodeMode::kGraphs);
  expect_same_samples(run_mode(dense, dcfg.vocab_size, seed, rl::DecodeMode::kStatic),
                      dense_graphs, "dense cuda static vs graphs");
  expect_same_samples(run_mode(dense, dcfg.vocab_size, seed, rl::DecodeMode::kEager),
                      dense_graphs, "dense cuda");
}

}  // namespace
}  // namespace r1
