// grpo_objective and group_advantages (engine/ops_grpo.h). The op reads seq and mask on the
// host once: the range and 0/1 checks, the per-sequence counts that become the aggregation
// weights, and (sequence level) the tokens grouped by sequence. The kernels
// (engine/kernels_grpo.h) do the per-token arithmetic; the tape holds one node that saves
// dloss/dlogp (T), formed in the same pass.
#include "engine/ops_grpo.h"

#include <algorithm>
#include <cmath>
#include <string>

#include "engine/autograd.h"
#include "engine/kernels_grpo.h"
#include "engine/nvtx.h"

namespace r1 {
namespace {

// The kernel's view of an input: contiguous, with no autograd history (not recorded).
Tensor plain(const Tensor& t) { return t.detach().contiguous(); }

// A (T) or (S) operand that must match logp's dtype and device.
void check_like_logp(const char* name, const Tensor& t, const Tensor& logp, int64_t n,
                     const char* dim) {
  R1_CHECK(t.defined(), "grpo_objective: {} is undefined", name);
  R1_CHECK(t.dim() == 1 && t.size(0) == n, "grpo_objective: {} {} must be ({}) = ({})", name,
           shape_str(t.shape()), dim, n);
  R1_CHECK(t.dtype() == logp.dtype() && t.device() == logp.device(),
           "grpo_objective: {} {} must have logp's dtype and device ({})", name, t.str(),
           logp.str());
}

void check_inputs(const Tensor& logp, const Tensor& old_logp, const Tensor& ref_logp,
                  const Tensor& advantages, const Tensor& seq, const Tensor& mask,
                  const GrpoObjectiveOptions& opt) {
  opt.validate();
  R1_CHECK(logp.defined() && dtype_is_floating(logp.dtype()) && logp.dim() == 1,
           "grpo_objective: logp {} must be a (T) float tensor",
           logp.defined() ? logp.str() : std::string("undefined"));
  const int64_t T = logp.size(0);
  check_like_logp("old_logp", old_logp, logp, T, "T");
  if (opt.beta > 0) {
    R1_CHECK(ref_logp.defined(), "grpo_objective: beta = {} > 0 needs ref_logp (the reference "
             "model's logps); pass beta = 0 to train without a reference model", opt.beta);
    check_like_logp("ref_logp", ref_logp, logp, T, "T");
  }
  check_like_logp("advantages", advantages, logp, opt.num_sequences, "num_sequences");
  R1_CHECK(seq.defined() && (seq.dtype() == DType::I32 || seq.dtype() == DType::I64) &&
               seq.dim() == 1 && seq.size(0) == T && seq.device() == logp.device(),
           "grpo_objective: seq {} must be a (T) = ({}) i32/i64 tensor on {}",
           seq.defined() ? seq.str() : std::string("undefined"), T, logp.device().str());
  R1_CHECK(mask.defined() && mask.dim() == 1 && mask.size(0) == T &&
               mask.device() == logp.device() &&
               (dtype_is_floating(mask.dtype()) || mask.dtype() == DType::U8 ||
                mask.dtype() == DType::Bool),
           "grpo_objective: mask {} must be a (T) = ({}) float/u8/bool tensor on {}",
           mask.defined() ? mask.str() : std::string("undefined"), T, logp.device().str());
}

// What the host derives from seq and mask (engine/kernels_grpo.h).
struct Bookkeeping {
  std::vector<int64_t> count;           // (S): mask = 1 tokens per sequence
  int64_t total = 0;                    // N
  std::vector<double> seq_weight;       // (S)
  std::vector<int64_t> order, offsets;  // sequence level: the mask = 1 tokens by sequence
};

Bookkeeping bookkeeping(const Tensor& seq, const Tensor& mask, const GrpoObjectiveOptions& opt) {
  const int64_t S = opt.num_sequences;
  const std::vector<int64_t> sv = seq.to_int_vector();
  const std::vector<double> mv = mask.to_double_vector();
  const int64_t T = static_cast<int64_t>(sv.size());
  Bookkeeping b;
  b.count.assign(S, 0);
  for (int64_t t = 0; t < T; ++t) {
    R1_CHECK(sv[t] >= 0 && sv[t] < S, "grpo_objective: seq[{}] = {} outside [0, {}) "
             "(num_sequences)", t, sv[t], S);
    R1_CHECK(mv[t] == 0 || mv[t] == 1, "grpo_objective: mask[{}] = {}: the mask holds 0 or 1",
             t, mv[t]);
    if (mv[t] == 1) ++b.count[sv[t]];
  }
  for (int64_t n : b.count) b.total += n;
  b.seq_weight.resize(S);
  const double Sd = static_cast<double>(S);
  for (int64_t s = 0; s < S; ++s) {
    switch (opt.loss_type) {
      case GrpoLossType::Grpo:
        b.seq_weight[s] = 1.0 / (Sd * static_cast<double>(std::max<int64_t>(b.count[s], 1)));
        break;
      case GrpoLossType::Bnpo:
      case GrpoLossType::Dapo:
        b.seq_weight[s] = 1.0 / static_cast<double>(std::max<int64_t>(b.total, 1));
        break;
      case GrpoLossType::DrGrpo:
        b.seq_weight[s] = 1.0 / (Sd * static_cast<double>(opt.max_completion_length));
        break;
    }
  }
  if (opt.level == ImportanceLevel::Sequence) {  // a counting sort, stable in t
    b.offsets.assign(S + 1, 0);
    for (int64_t s = 0; s < S; ++s) b.offsets[s + 1] = b.offsets[s] + b.count[s];
    b.order.resize(b.total);
    std::vector<int64_t> next(b.offsets.begin(), b.offsets.end() - 1);
    for (int64_t t = 0; t < T; ++t)
      if (mv[t] == 1) b.order[next[sv[t]]++] = t;
  }
  return b;
}

}  // namespace

void GrpoObjectiveOptions::validate() const {
  R1_CHECK(std::isfinite(epsilon_low) && epsilon_low >= 0 && epsilon_low <= 1,
           "GrpoObjectiveOptions: epsilon_low = {} must be in [0, 1]", epsilon_low);
  R1_CHECK(std::isfinite(epsilon_high) && epsilon_high >= 0,
           "GrpoObjectiveOptions: epsilon_high = {} must be finite and >= 0", epsilon_high);
  R1_CHECK(std::isfinite(beta) && beta >= 0, "GrpoObjectiveOptions: beta = {} must be finite "
           "and >= 0", beta);
  R1_CHECK(num_sequences > 0, "GrpoObjectiveOptions: num_sequences = {} must be > 0 (the "
           "number of sequences S)", num_sequences);
  R1_CHECK(loss_type != GrpoLossType::DrGrpo || max_completion_length > 0,
           "GrpoObjectiveOptions: max_completion_length = {} must be > 0 for loss_type "
           "dr_grpo (its constant normalizer)", max_completion_length);
}

GrpoObjective grpo_objective(const Tensor& logp, const Tensor& old_logp, const Tensor& ref_logp,
                             const Tensor& advantages, const Tensor& seq, const Tensor& mask,
                             const GrpoObjectiveOptions& opt) {
  R1_NVTX_RANGE("grpo_objective");
  check_inputs(logp, old_logp, ref_logp, advantages, seq, mask, opt);
  const int64_t T = logp.size(0), S = opt.num_sequences;
  const Device dev = logp.device();
  const DType dt = logp.dtype();
  const Bookkeeping b = bookkeeping(seq, mask, opt);

  GrpoTermsArgs a;
  a.logp = plain(logp);
  a.old_logp = plain(old_logp);
  if (opt.beta > 0) a.ref_logp = plain(ref_logp);
  a.advantages = plain(advantages);
  a.seq = plain(seq);
  a.mask = plain(mask.to(DType::U8));
  a.seq_weight = Tensor::from_vector(b.seq_weight, {S}, dt, dev);
  a.epsilon_low = opt.epsilon_low;
  a.epsilon_high = opt.epsilon_high;
  a.beta = opt.beta;
  if (opt.level == ImportanceLevel::Sequence) {
    const int64_t K = static_cast<int64_t>(b.order.size());
    a.seq_log_ratio = Tensor::empty({S}, dt, dev);
    kernels::grpo_sequence_log_ratio()(dev, a.logp, a.old_logp,
                                       Tensor::from_vector(b.order, {K}, DType::I64, dev),
                                       Tensor::from_vector(b.offsets, {S + 1}, DType::I64, dev),
                                       a.seq_log_ratio);
  }
  Tensor sums = Tensor::empty({kGrpoSums}, DType::F64, dev);
  Tensor dlogp;  // dloss/dlogp, only when a gradient is wanted
  if (needs_grad({logp})) dlogp = Tensor::empty({T}, dt, dev);
  kernels::grpo_token_terms()(dev, a, sums, dlogp);

  const std::vector<double> sv = sums.to_double_vector();  // the one device sync
  GrpoObjective out;
  out.loss = Tensor::empty({}, stat_dtype(dt), dev);
  out.loss.copy_(sums.narrow(0, 0, 1).view({}));
  const double inv_n = 1.0 / static_cast<double>(std::max<int64_t>(b.total, 1));
  out.kl_mean = sv[1] * inv_n;
  out.clip_low_frac = sv[2] * inv_n;
  out.clip_high_frac = sv[3] * inv_n;
  out.ratio_mean = sv[4] * inv_n;
  if (dlogp.defined())
    record("grpo_objective", {logp}, {&out.loss},
           [dlogp, T](const std::vector<Tensor>& g) -> std::vector<Tensor> {
             // The loss is a scalar: its gradient is dloss/dlogp times the incoming one.
             const Device dev = dlogp.device();
             const Tensor g1 = g[0].to(dlogp.dtype()).contiguous().view({1}).expand({T});
             Tensor dx = Tensor::empty({T}, dlogp.dtype(), dev);
             kernels::binary()(dev, BinaryOp::Mul, dlogp, g1, dx);
             return {dx};
           });
  return out;
}

std::vector<double> group_advantages(const std::vector<double>& rewards, int64_t group_size,
                                     RewardScale scale) {
  const int64_t S = static_cast<int64_t>(rewards.size());
  R1_CHECK(group_size >= 2, "group_advantages: group_size = {} must be >= 2 (a group needs "
           "two samples to have a baseline)", group_size);
  R1_CHECK(S > 0 && S % group_size == 0, "group_advantages: {} rewards are not a positive "
           "multiple of group_size = {}", S, group_size);
  for (int64_t i = 0; i < S; ++i)
    R1_CHECK(std::isfinite(rewards[i]), "group_advantages: reward {} = {} is not finite", i,
             rewards[i]);
  // torch.std: the unbiased estimate (n - 1 in the denominator).
  auto mean_std = [&](int64_t b, int64_t n, double& mean, double& sd) {
    mean = 0;
    for (int64_t i = b; i < b + n; ++i) mean += rewards[i];
    mean /= static_cast<double>(n);
    double ss = 0;
    for (int64_t i = b; i < b + n; ++i) ss += (rewards[i] - mean) * (rewards[i] - mean);
    sd = std::sqrt(ss / static_cast<double>(n - 1));
  };
  constexpr double kStdEps = 1e-4;  // TRL's: advantages / (std + 1e-4)
  double batch_mean, batch_std;
  mean_std(0, S, batch_mean, batch_std);
  std::vector<double> adv(rewards.size());
  for (int64_t g0 = 0; g0 < S; g0 += group_size) {
    double mean, sd;
    mean_std(g0, group_size, mean, sd);
    const bool equal = std::all_of(rewards.begin() + g0, rewards.begin() + g0 + group_size,
                                   [&](double r) { return r == rewards[g0]; });
    const double denom = scale == RewardScale::Group   ? sd + kStdEps
                         : scale == RewardScale::Batch ? batch_std + kStdEps
                                                       : 1.0;
    for (int64_t i = g0; i < g0 + group_size; ++i)
      adv[i] = equal ? 0.0 : (rewards[i] - mean) / denom;
  }
  return adv;
}

GrpoLossType grpo_loss_type_from_name(std::string_view name) {
  if (name == "grpo") return GrpoLossType::Grpo;
  if (name == "bnpo") return GrpoLossType::Bnpo;
  if (name == "dr_grpo") return GrpoLossType::DrGrpo;
  if (name == "dapo") return GrpoLossType::Dapo;
  R1_CHECK(false, "loss_type '{}': expected grpo, bnpo, dr_grpo or dapo", name);
  return GrpoLossType::Grpo;
}

ImportanceLevel importance_level_from_name(std::string_view name) {
  if (name == "token") return ImportanceLevel::Token;
  if (name == "sequence") return ImportanceLevel::Sequence;
  R1_CHECK(false, "importance_sampling_level '{}': expected token or sequence", name);
  return ImportanceLevel::Token;
}

RewardScale reward_scale_from_name(std::string_view name) {
  if (name == "group" || name == "true") return RewardScale::Group;
  if (name == "batch") return RewardScale::Batch;
  if (name == "none" || name == "false") return RewardScale::None;
  R1_CHECK(false, "scale_rewards '{}': expected group, batch, none, true or false", name);
  return RewardScale::Group;
}

}  // namespace r1
