// The GRPO objective (R1 paper, eq. 1-3) as one op over per-token log-probabilities: the
// clipped policy ratio against the old policy, the k3 KL against the reference model, and the
// loss aggregations users know from TRL's GRPOConfig. The fused GRPO loss is
//     token_logprobs(h, w, tokens) -> grpo_objective(...)
// and never holds a (tokens, vocabulary) tensor. Semantics follow TRL's GRPOTrainer
// (_compute_loss), with the differences noted below. Kernel contracts in engine/kernels_grpo.h.
#pragma once
#include <cstdint>
#include <string_view>
#include <vector>

#include "engine/tensor.h"

namespace r1 {

// TRL GRPOConfig.loss_type: "grpo", "bnpo", "dr_grpo", "dapo".
enum class GrpoLossType { Grpo, Bnpo, DrGrpo, Dapo };
// TRL GRPOConfig.importance_sampling_level: "token", or "sequence" (GSPO, arXiv 2507.18071).
enum class ImportanceLevel { Token, Sequence };

struct GrpoObjectiveOptions {
  double epsilon_low = 0.2, epsilon_high = 0.2;  // TRL epsilon, epsilon_high (clip-higher)
  double beta = 0.0;  // k3 KL coefficient; 0: ref_logp ignored (may be undefined), kl_mean 0
  GrpoLossType loss_type = GrpoLossType::Grpo;
  ImportanceLevel level = ImportanceLevel::Token;
  int64_t max_completion_length = 0;  // Dr. GRPO's constant normalizer (> 0 for DrGrpo)
  int64_t num_sequences = 0;          // S; required (> 0)

  // Throws r1::Error naming the bad field: epsilon_low in [0, 1], epsilon_high >= 0, beta
  // >= 0 (all finite), num_sequences > 0, max_completion_length > 0 when loss_type is DrGrpo.
  void validate() const;
};

struct GrpoObjective {
  Tensor loss;  // () stat_dtype(logp), differentiable with respect to logp
  // Metrics over the mask = 1 tokens (0 when there are none), from the same pass:
  double kl_mean = 0;         // mean k3; 0 when beta == 0
  double clip_low_frac = 0;   // share with ratio < 1 - epsilon_low and advantage < 0
  double clip_high_frac = 0;  // share with ratio > 1 + epsilon_high and advantage > 0
  double ratio_mean = 0;      // mean importance ratio exp(log_ratio)
};

// logp (T) f32/f64 (CUDA: f32) from token_logprobs; old_logp (T), ref_logp (T) (or undefined
// when beta == 0) and advantages (S) of logp's dtype and device; seq (T) i32/i64 in [0, S):
// the sequence of token t (any order: a sequence's tokens need not be adjacent); mask (T)
// f32/f64/u8/bool of 0s and 1s (1 = the token counts) -> GrpoObjective.
// Per token t of sequence s, with A = advantages[s]:
//   log_ratio = logp - old_logp                                         (token level)
//             = the mean of logp - old_logp over the mask = 1 tokens of s  (sequence level,
//               the same for every token of s; gradient flows through the mean; 0 when s
//               has none)
//   r = exp(log_ratio), rc = clamp(r, 1 - epsilon_low, 1 + epsilon_high)
//   l_t = -min(r A, rc A) + beta (exp(ref - logp) - (ref - logp) - 1)
// loss, over the mask = 1 tokens only, with n_s of them in sequence s and N in all:
//   Grpo:       1/S sum_s (sum_{t in s} l_t) / max(n_s, 1)  (paper eq. 1: per-sequence mean;
//               a sequence with n_s = 0 adds 0 but still counts in S, as TRL's clamp does)
//   Bnpo, Dapo: (sum_t l_t) / max(N, 1)  (Dapo: TRL divides by the token count of the whole
//               accumulated batch; here it is this call's N)
//   DrGrpo:     (sum_t l_t) / (S max_completion_length)
// Tokens with mask = 0 are skipped, not multiplied by 0: garbage (inf, NaN) in their logps
// cannot reach the loss or the gradient (TRL's `* mask` would pass NaN on).
// The clip fractions and ratio_mean are token-weighted at both levels (TRL averages them over
// sequences at the sequence level).
// Backward: dloss/dlogp, formed in the forward pass and saved (T); the backward scales it by
// the incoming gradient. min() and clamp() take PyTorch's subgradients: a clipped token
// (rc A < r A) has no policy gradient. old_logp, ref_logp and advantages get no gradient.
// The CPU kernels reduce in a fixed order (blocks of tokens summed in order), so the result
// does not depend on the thread count. Forward reads seq and mask on the host (range check,
// per-sequence counts) and the metrics back: one device sync.
// Errors (r1::Error): shapes or devices that differ, dtypes not taken, seq outside [0, S),
// a mask value other than 0/1, advantages not (S), beta > 0 without ref_logp, bad options.
GrpoObjective grpo_objective(const Tensor& logp, const Tensor& old_logp, const Tensor& ref_logp,
                             const Tensor& advantages, const Tensor& seq, const Tensor& mask,
                             const GrpoObjectiveOptions& opt);

// TRL GRPOConfig.scale_rewards: "group" (True), "batch", "none" (False).
enum class RewardScale { Group, Batch, None };

// Group-relative advantages (R1 paper, eq. 3): rewards (S) hold S / group_size groups of
// group_size consecutive samples of one prompt; A_i = r_i - mean(group), divided by
// (std + 1e-4) for Group (the group's std) and Batch (the std over all S); std is torch.std's
// unbiased estimate, as TRL. A group whose rewards are all equal gets exactly 0 (it carries
// no gradient; the arithmetic mean of equal values can miss them by an ulp).
// Errors: group_size < 2 (TRL requires 2 generations per prompt), S not a multiple of it,
// S = 0, a reward not finite.
std::vector<double> group_advantages(const std::vector<double>& rewards, int64_t group_size,
                                     RewardScale scale);

// TRL's spellings, for configs carried over: "grpo", "bnpo", "dr_grpo", "dapo"; "token",
// "sequence"; "group", "batch", "none" (and "true" / "false" for scale_rewards). Unknown
// names are an r1::Error that lists the accepted ones.
GrpoLossType grpo_loss_type_from_name(std::string_view name);
ImportanceLevel importance_level_from_name(std::string_view name);
RewardScale reward_scale_from_name(std::string_view name);

}  // namespace r1
