// GRPO (DeepSeek-R1 paper eq. 1-3; DESIGN.md "RL and stages") on a DeepSeek-V3 policy: one
// step = rollout (KV-cached generation of G samples per question, rl/generate.h), rewards
// (rl/rewards.h), group-relative advantages, the rollout batch scored by the trainer's own
// forward (the old policy's logprobs, and the reference model's when beta > 0), then mu
// inner updates of the clipped surrogate + k3 KL (engine/ops_grpo.h) over micro-batches,
// with the logprobs from the final hidden states and the LM head in vocabulary chunks
// (token_logprobs: never a tokens x vocab tensor).
//
// Batch invariance (DESIGN.md): rollout, scoring and training forwards all run under
// BatchInvariantScope, and the training batch differs from the scoring batch (dropped
// zero-variance groups, micro-batches, other padding), so `logprob_mismatch_max` (the largest
// |trainer logprob - recorded logprob| of the first inner update) is a bit-for-bit check
// made every step: it must be 0 exactly.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <set>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "data/tokenizer.h"
#include "engine/ops_grpo.h"
#include "engine/ops_logprob.h"
#include "engine/optim.h"
#include "model/deepseek_v3.h"
#include "rl/generate.h"
#include "rl/rewards.h"

namespace r1::rl {

// Option names follow TRL's GRPOConfig where one exists.
struct GrpoConfig {
  int64_t max_steps = 60;
  int64_t questions_per_step = 16;       // prompts per step (TRL: per_device_train_batch_size / G)
  int64_t num_generations = 8;           // G
  int64_t max_completion_length = 96;
  double temperature = 1.0, top_p = 1.0;
  int64_t top_k = 0;
  std::string decode = "auto";           // rollouts' decode mode (rl/generate.h DecodeMode)
  double learning_rate = 1e-3, weight_decay = 0.0, max_grad_norm = 1.0, adam_beta2 = 0.99;
  int64_t warmup_steps = 0;
  double beta = 0.0;                     // k3 KL coefficient; 0 keeps no reference model
  double epsilon = 0.2, epsilon_high = -1;  // clip range; epsilon_high < 0: = epsilon
  int64_t num_iterations = 1;            // mu: inner updates per rollout batch
  int64_t ref_model_sync_steps = 400;    // reference refresh (0: never)
  std::string scale_rewards = "group";   // group | batch | none
  std::string loss_type = "grpo";        // grpo | bnpo | dr_grpo | dapo
  std::string importance_sampling_level = "token";  // token | sequence (GSPO)
  bool mask_truncated_completions = false;
  bool drop_zero_variance_groups = true;
  int64_t micro_batch_sequences = 64;    // sequences per forward/backward
  // On-policy runs (num_iterations 1, beta 0) take the old logprobs from the update's own
  // forward (TRL's shortcut; the values are the same bits when the trainer is batch
  // invariant) and run the separate scoring pass over the rollout batch, which measures
  // logprob_mismatch_max, only at step 1 and every this many steps (1: every step).
  int64_t logprob_check_steps = 25;
  int64_t save_steps = 20;
  uint64_t seed = 1;
  RewardWeights rewards;
  // The training questions: task families (round robin), difficulty range, Chinese share.
  std::vector<std::string> tasks = {"countdown", "ordering", "list"};
  int min_difficulty = 1, max_difficulty = 2;
  double chinese_share = 0.3;
  std::string prompt_template = "r1_zero_short";  // r1_zero | r1_zero_short

  // Reads TRL-named keys over the defaults; InputError naming the key on an unknown key or
  // a wrong type. Validates ranges.
  static GrpoConfig from_json(const nlohmann::json& j, const std::string& where);
  nlohmann::json to_json() const;
  void validate(const std::string& where) const;
};

// The prompt text of a question under the configured template.
std::string render_prompt(const std::string& prompt_template, const std::string& question);

// An endless, seeded stream of training questions (round robin over the families), skipping
// any whose prompt is in `exclude` (the held-out set). Position = the next question index.
class QuestionStream {
 public:
  QuestionStream(const GrpoConfig& cfg, std::set<std::string> exclude);
  data::PromptRecord next();
  uint64_t position() const { return index_; }
  void seek(uint64_t index) { index_ = index; }

 private:
  const GrpoConfig cfg_;
  std::set<std::string> exclude_;
  uint64_t index_ = 0;
};

// Completion token logprobs of sequences (prompt + completion) by the full forward, hidden
// rows gathered at the positions that predict each completion token, token_logprobs at
// `temperature`. Differentiable (run under NoGrad for scoring). Returns logp and entropy (sum
// of completion lengths) in sequence order. With share_prompts (the default), sequences with
// equal prompts (a group's G samples) compute their prompt once (DeepseekV3::forward_shared):
// the same logprobs bit for bit under BatchInvariantScope, about (G - 1) / G of the prompt
// tokens' work saved. Without, one padded (B, T) batch through forward() (pad_id fills it).
TokenLogprobs completion_logprobs(DeepseekV3& model, const std::vector<std::vector<int32_t>>& prompts,
                                  const std::vector<std::vector<int32_t>>& completions,
                                  double temperature, int32_t pad_id, bool share_prompts = true);

class GrpoTrainer {
 public:
  GrpoTrainer(GrpoConfig cfg, DeepseekV3& policy, const data::Tokenizer& tok,
              std::set<std::string> exclude);
  // One GRPO step (1-based `step`); returns its metrics record.
  nlohmann::json step(int64_t step);
  AdamW& optimizer() { return opt_; }
  QuestionStream& questions() { return questions_; }
  ParamMap& reference() { return ref_params_; }
  const GrpoConfig& config() const { return cfg_; }
  // Replaces the rule-based rewards (rl/rewards.h score_completion with the config's
  // weights) by another scorer: a reward model (the all-scenario stage), or a test's.
  using RewardFn = std::function<RewardBreakdown(const data::PromptRecord&, const std::string&)>;
  void set_reward_fn(RewardFn fn) { reward_fn_ = std::move(fn); }
  // For resume: the state beside the checkpoint's parameters and moments.
  nlohmann::json state(int64_t step) const;
  void restore(const nlohmann::json& state);

 private:
  GrpoConfig cfg_;
  DeepseekV3& policy_;
  const data::Tokenizer& tok_;
  QuestionStream questions_;
  std::vector<Tensor> trainable_;
  AdamW opt_;
  ParamMap ref_params_;  // empty when beta == 0
  int32_t eos_, pad_;
  RewardFn reward_fn_;
};

}  // namespace r1::rl
