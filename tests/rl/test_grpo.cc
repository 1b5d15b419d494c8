// GRPO trainer invariants (rl/grpo.h) on a random tiny DeepSeek-V3 (MLA + MoE):
//  - batch invariance: the logprobs the trainer recomputes equal the recorded ones bit for
//    bit when the batch differs in size, order and padding, and MoE tokens route to the same
//    experts;
//  - a step's own check (logprob_mismatch_max) is exactly 0;
//  - resuming from a checkpoint written to disk reproduces the uninterrupted run's metrics
//    bit for bit (timings aside).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>

#include "data/corpus.h"
#include "data/templates.h"
#include "data/tokenizer.h"
#include "engine/autograd.h"
#include "engine/determinism.h"
#include "model/config.h"
#include "rl/grpo.h"
#include "rl/run_state.h"
#include "tests/harness.h"

namespace r1 {
namespace {

using nlohmann::json;

ModelConfig tiny_config() { return load_model_config(R1_SOURCE_DIR "/configs/tiny.json"); }

const data::Tokenizer& tokenizer() {
  static const data::Tokenizer t = [] {
    data::CorpusOptions co;
    co.documents = 400;
    co.seed = 3;
    data::BpeTrainOptions bo;
    bo.vocab_size = 600;
    bo.special_tokens = data::r1_special_tokens();
    bo.bos_token = data::kBos;
    return data::train_bpe(data::generate_corpus(co), bo);
  }();
  return t;
}

std::vector<int32_t> random_tokens(uint64_t seed, int64_t n, int64_t vocab) {
  const std::vector<int64_t> v = Tensor::randint({n}, seed, 2, vocab).to_int_vector();
  return std::vector<int32_t>(v.begin(), v.end());
}

std::vector<double> values(const Tensor& t) {
  const Tensor c = t.detach().to(DType::F64).contiguous();
  const double* d = static_cast<const double*>(c.data_ptr());
  return std::vector<double>(d, d + c.numel());
}

// The trainer's logprobs of a sequence do not depend on the batch it is scored in.
TEST(GrpoInvariance, CompletionLogprobsBitwiseAcrossBatches) {
  const uint64_t seed = test::case_seed(1);
  const ModelConfig cfg = tiny_config();
  DeepseekV3 model(cfg, DeepseekV3::init_params(cfg, seed), 512);
  const int64_t n = 6;
  std::vector<std::vector<int32_t>> prompts, completions;
  for (int64_t i = 0; i < n; ++i) {
    prompts.push_back(random_tokens(seed + 10 * i, 5 + 17 * i % 60, cfg.vocab_size));
    completions.push_back(random_tokens(seed + 10 * i + 1, 3 + 29 * i % 90, cfg.vocab_size));
  }
  NoGrad ng;
  BatchInvariantScope inv;
  const TokenLogprobs all = rl::completion_logprobs(model, prompts, completions, 0.9, 0);
  const std::vector<double> ref = values(all.logp);
  std::vector<int64_t> offset(n + 1, 0);
  for (int64_t i = 0; i < n; ++i) offset[i + 1] = offset[i] + static_cast<int64_t>(completions[i].size());
  // Subsets in another order: other sizes, neighbours and padded lengths.
  for (const std::vector<int64_t>& pick : {std::vector<int64_t>{4}, {5, 0}, {3, 1, 2}, {2, 5, 4, 0, 1, 3}}) {
    std::vector<std::vector<int32_t>> p, c;
    for (int64_t i : pick) p.push_back(prompts[i]), c.push_back(completions[i]);
    const std::vector<double> got = values(rl::completion_logprobs(model, p, c, 0.9, 7).logp);
    size_t at = 0;
    for (int64_t i : pick)
      for (int64_t t = offset[i]; t < offset[i + 1]; ++t, ++at)
        ASSERT_EQ(std::memcmp(&got[at], &ref[t], sizeof(double)), 0)
            << "sequence " << i << " token " << t - offset[i] << ": " << got[at] << " vs " << ref[t];
  }
  // MoE routing of a sequence's tokens: the same experts alone as in the batch.
  const auto rows_of = [&](const std::vector<std::vector<int32_t>>& seqs, int64_t T) {
    std::vector<int64_t> ids;
    for (const auto& s : seqs) {
      for (int64_t t = 0; t < T; ++t) ids.push_back(t < static_cast<int64_t>(s.size()) ? s[t] : 0);
    }
    return Tensor::from_vector(ids, {static_cast<int64_t>(seqs.size()), T});
  };
  const auto batch_out = model.forward(rows_of(prompts, 70), Tensor(), Tensor(), false);
  const auto one_out = model.forward(rows_of({prompts[3]}, static_cast<int64_t>(prompts[3].size())), Tensor(), Tensor(), false);
  for (size_t l = 0; l < batch_out.routing.size(); ++l) {
    const std::vector<int64_t> b = batch_out.routing[l].to_int_vector(), o = one_out.routing[l].to_int_vector();
    const int64_t K = cfg.num_experts_per_tok;
    for (size_t t = 0; t < prompts[3].size(); ++t)
      for (int64_t k = 0; k < K; ++k)
        ASSERT_EQ(b[(3 * 70 + t) * K + k], o[t * K + k]) << "layer " << l << " token " << t;
  }
}

// Sharing a group's prompt (DeepseekV3::forward_shared) changes no logprob bit, and the
// gradients equal the unshared forward's up to the order of the prompt rows' sums (checked in
// f64, where that order is worth ~1e-15).
TEST(GrpoInvariance, SharedPromptsSameLogprobsAndGradients) {
  const uint64_t seed = test::case_seed(2);
  const ModelConfig cfg = tiny_config();
  // Three prompts x 4 samples, completions of 1 to ~60 tokens, plus one prompt alone.
  std::vector<std::vector<int32_t>> prompts, completions;
  for (int64_t q = 0; q < 4; ++q) {
    const std::vector<int32_t> p = random_tokens(seed + 100 * q, 4 + 13 * q, cfg.vocab_size);
    for (int64_t g = 0; g < (q == 3 ? 1 : 4); ++g) {
      prompts.push_back(p);
      completions.push_back(random_tokens(seed + 100 * q + g + 1, 1 + (19 * g + 7 * q) % 60, cfg.vocab_size));
    }
  }
  {
    NoGrad ng;
    BatchInvariantScope inv;
    DeepseekV3 model(cfg, DeepseekV3::init_params(cfg, seed), 512);
    const std::vector<double> a = values(rl::completion_logprobs(model, prompts, completions, 0.9, 0, true).logp);
    const std::vector<double> b = values(rl::completion_logprobs(model, prompts, completions, 0.9, 0, false).logp);
    ASSERT_EQ(a.size(), b.size());
    for (size_t i = 0; i < a.size(); ++i)
      ASSERT_EQ(std::memcmp(&a[i], &b[i], sizeof(double)), 0) << "token " << i << ": " << a[i] << " vs " << b[i];
  }
  // Gradients of sum_i w_i logp_i, w random, every parameter but the router bias.
  auto grads = [&](bool share) {
    ParamMap params = DeepseekV3::init_params(cfg, seed, DType::F64);
    for (auto& [name, t] : params)
      if (name.find("e_score_correction_bias") == std::string::npos) t.set_requires_grad(true);
    DeepseekV3 model(cfg, params, 512);
    const Tensor lp = rl::completion_logprobs(model, prompts, completions, 0.9, 0, share).logp;
    backward(lp, Tensor::randn(lp.shape(), seed + 7, DType::F64));
    std::map<std::string, std::vector<double>> g;
    for (auto& [name, t] : model.params())
      if (t.requires_grad()) g[name] = values(t.grad());
    return g;
  };
  const auto gs = grads(true), gu = grads(false);
  for (const auto& [name, u] : gu) {
    const std::vector<double>& v = gs.at(name);
    double num = 0, den = 0;
    for (size_t i = 0; i < u.size(); ++i) num += (v[i] - u[i]) * (v[i] - u[i]), den += u[i] * u[i];
    ASSERT_GT(den, 0) << name;
    EXPECT_LT(std::sqrt(num / den), 1e-12) << name;
  }
}

rl::GrpoConfig small_config(uint64_t seed) {
  rl::GrpoConfig c;
  c.max_steps = 4;
  c.questions_per_step = 3;
  c.num_generations = 4;
  c.max_completion_length = 24;
  c.learning_rate = 1e-2;
  c.beta = 0.04;
  c.num_iterations = 2;
  c.micro_batch_sequences = 5;  // several micro-batches per update
  c.ref_model_sync_steps = 3;
  c.seed = seed;
  c.drop_zero_variance_groups = true;
  return c;
}

// A random model never answers; reward the share of digits in its text instead, so groups
// have advantages and the updates are real.
rl::RewardBreakdown digit_reward(const data::PromptRecord&, const std::string& text) {
  rl::RewardBreakdown r;
  double d = 0;
  for (char ch : text) d += ch >= '0' && ch <= '9';
  r.total = r.accuracy = text.empty() ? 0.0 : d / static_cast<double>(text.size());
  return r;
}

json strip_timings(json m) {
  for (const char* k : {"rollout_s", "score_s", "update_s", "step_time_s", "rollout_tokens_per_s", "train_tokens_per_s"})
    m.erase(k);
  return m;
}

DeepseekV3 make_policy(const ModelConfig& cfg, uint64_t seed) {
  ParamMap p = DeepseekV3::init_params(cfg, seed);
  for (auto& [name, t] : p)
    if (name.find("e_score_correction_bias") == std::string::npos) t.set_requires_grad();
  return DeepseekV3(cfg, p, 512);
}

TEST(GrpoTrainer, StepsAreBatchInvariantAndResumeBitwise) {
  const uint64_t seed = test::case_seed(2);
  ModelConfig cfg = tiny_config();
  cfg.vocab_size = tokenizer().vocab_size();  // every sampled id decodes
  const rl::GrpoConfig gc = small_config(seed);
  const std::string dir = ::testing::TempDir() + "/r1_grpo_resume_" + std::to_string(seed);
  std::filesystem::remove_all(dir);

  std::vector<json> straight;
  {
    DeepseekV3 policy = make_policy(cfg, seed);
    rl::GrpoTrainer tr(gc, policy, tokenizer(), {});
    tr.set_reward_fn(digit_reward);
    for (int64_t s = 1; s <= gc.max_steps; ++s) {
      straight.push_back(strip_timings(tr.step(s)));
      if (s == 2)
        rl::save_run_checkpoint(dir, cfg, policy.params(), &tr.optimizer(), tr.state(s),
                                tokenizer().to_json_string(), tr.reference());
    }
  }
  double trained = 0;
  for (const json& m : straight) {
    EXPECT_EQ(m["logprob_mismatch_max"].get<double>(), 0.0) << m.dump();
    EXPECT_LT(m["sampler_logprob_gap_max"].get<double>(), 1e-4) << m.dump();
    trained += m["trained_sequences"].get<double>();
  }
  ASSERT_GT(trained, 0) << "no step trained: the test would not exercise the update";
  // Resume at step 2 in a fresh trainer, from the files.
  DeepseekV3 policy = make_policy(cfg, seed + 99);  // other weights: all must come from disk
  rl::GrpoTrainer tr(gc, policy, tokenizer(), {});
  tr.set_reward_fn(digit_reward);
  const json st = rl::load_run_checkpoint(dir, cfg, policy.params(), &tr.optimizer());
  tr.restore(st);
  rl::load_run_extra(dir, tr.reference());
  for (int64_t s = 3; s <= gc.max_steps; ++s)
    EXPECT_EQ(strip_timings(tr.step(s)).dump(), straight[s - 1].dump()) << "step " << s;
  std::filesystem::remove_all(dir);
}

// On-policy (mu 1, beta 0) the old logprobs come from the update's own forward, and the
// scoring pass runs only every logprob_check_steps: the run must be the same, bit for bit,
// as one that scores every step (the scoring pass's values are the same bits).
TEST(GrpoTrainer, OnPolicyShortcutChangesNothing) {
  const uint64_t seed = test::case_seed(3);
  ModelConfig cfg = tiny_config();
  cfg.vocab_size = tokenizer().vocab_size();
  rl::GrpoConfig gc = small_config(seed);
  gc.beta = 0;
  gc.num_iterations = 1;
  auto run = [&](int64_t check) {
    gc.logprob_check_steps = check;
    DeepseekV3 policy = make_policy(cfg, seed);
    rl::GrpoTrainer tr(gc, policy, tokenizer(), {});
    tr.set_reward_fn(digit_reward);
    std::vector<json> out;
    for (int64_t s = 1; s <= gc.max_steps; ++s) out.push_back(strip_timings(tr.step(s)));
    return out;
  };
  const std::vector<json> checked = run(1), shortcut = run(1000);
  double trained = 0;
  for (int64_t s = 1; s <= gc.max_steps; ++s) {
    json a = checked[s - 1], b = shortcut[s - 1];
    trained += a["trained_sequences"].get<double>();
    if (a["trained_sequences"].get<double>() > 0) {
      EXPECT_EQ(a["logprob_mismatch_max"].get<double>(), 0.0) << a.dump();
    }
    // The shortcut run scores at step 1 only.
    EXPECT_EQ(b["logprob_mismatch_max"].is_null(), s > 1 || b["trained_sequences"].get<double>() == 0)
        << b.dump();
    a.erase("logprob_mismatch_max");
    b.erase("logprob_mismatch_max");
    EXPECT_EQ(a.dump(), b.dump()) << "step " << s;
  }
  ASSERT_GT(trained, 0) << "no step trained: the test would not exercise the update";
}

TEST(GrpoConfig, BadFieldsAreNamed) {
  EXPECT_THROW(rl::GrpoConfig::from_json(json{{"num_generation", 4}}, "g.json"), InputError);
  try {
    rl::GrpoConfig::from_json(json{{"loss_type", "mean"}}, "g.json");
    FAIL();
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("mean"), std::string::npos) << e.what();
  }
  EXPECT_THROW(rl::GrpoConfig::from_json(json{{"top_p", 0}}, "g.json"), InputError);
  EXPECT_THROW(rl::GrpoConfig::from_json(json{{"tasks", {"nope"}}}, "g.json"), InputError);
  EXPECT_THROW(rl::GrpoConfig::from_json(json{{"decode", "cuda"}}, "g.json"), InputError);
  const rl::GrpoConfig c = rl::GrpoConfig::from_json(
      json::parse(R"({"learning_rate": 3e-6, "beta": 0.001, "num_generations": 16,
                      "decode": "static"})"), "g.json");
  EXPECT_EQ(c.num_generations, 16);
  EXPECT_EQ(c.decode, "static");
  EXPECT_EQ(rl::GrpoConfig::from_json(c.to_json(), "round trip").to_json(), c.to_json());
}

// The shipped GRPO configs (configs/grpo/*.json) parse and validate.
TEST(GrpoConfig, PresetsParse) {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator(R1_SOURCE_DIR "/configs/grpo")) {
    std::ifstream f(e.path());
    const rl::GrpoConfig c = rl::GrpoConfig::from_json(json::parse(f), e.path().string());
    EXPECT_GT(c.num_generations, 1) << e.path();
    ++n;
  }
  EXPECT_GE(n, 2);
}

}  // namespace
}  // namespace r1
