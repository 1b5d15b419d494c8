// Kernel contracts of grpo_objective (engine/ops_grpo.h). Kept apart from engine/kernels.h,
// whose general conventions apply (contiguous operands on one device).
//
// The op does the bookkeeping that needs only seq and mask, on the host: the per-sequence
// counts n_s of mask = 1 tokens and N = sum n_s, from which each sequence's weight
//   seq_weight[s] = 1 / (S max(n_s, 1))          (grpo)
//                 = 1 / max(N, 1)                 (bnpo, dapo)
//                 = 1 / (S max_completion_length) (dr_grpo)
// makes every aggregation one weighted sum over tokens: loss = sum_t w_t l_t, w_t =
// seq_weight[seq[t]] for a mask = 1 token. The same w_t weighs the gradient at both levels:
// at the sequence level log_ratio_s is the mean over the n_s tokens of s, so token t gets
// (sum_{t' in s} w_t') / n_s = w_t times the policy term's derivative. At the sequence level
// the op also lists the mask = 1 tokens grouped by sequence (order, offsets) for that mean.
//
// Per token t of sequence s = seq[t] with mask[t] = 1 (a mask = 0 token is skipped: it adds
// nothing to any sum and gets dlogp 0, whatever its logps hold), A = advantages[s]:
//   lr   = seq_log_ratio defined ? seq_log_ratio[s] : logp[t] - old_logp[t]
//   r    = exp(lr), rc = min(max(r, 1 - epsilon_low), 1 + epsilon_high)
//   pol  = -min(r A, rc A),   dpol = r A <= rc A ? -A r : 0      (d pol / d lr)
//   kl   = beta > 0 ? exp(d) - d - 1 : 0,   d = ref_logp[t] - logp[t]
//   l    = pol + beta kl
//   dlogp[t] = w (dpol + beta (1 - exp(d))),   w = seq_weight[s]   (the beta term if beta > 0)
// dpol is PyTorch's subgradient of -min(r A, clamp(r) A): where r A < rc A the unclipped
// branch carries it, where r A > rc A the clipped one does and clamp's derivative is 0 there
// (r is outside the range, else rc = r); on a tie (rc = r, or A = 0) torch splits it in
// halves that add up to -A r.
// Sums (5) f64, over mask = 1 tokens: [0] sum w l (the loss), [1] sum kl, [2] the count with
// r < 1 - epsilon_low and A < 0, [3] the count with r > 1 + epsilon_high and A > 0, [4] sum r.
// Precision: per-token arithmetic in logp's dtype (f32 or f64 on the CPU, f32 on CUDA), sums
// accumulated in f64. Reduction order is fixed by T alone (the CPU: blocks of
// kGrpoCpuBlock tokens summed in token order, then the blocks in order; CUDA: a fixed tree),
// never by the thread count; the two backends differ in the last bits.
#pragma once
#include <cstdint>

#include "engine/kernels.h"

namespace r1 {

inline constexpr int64_t kGrpoCpuBlock = 2048;  // tokens per partial sum of the CPU kernel
inline constexpr int64_t kGrpoSums = 5;         // [loss, kl, low clip, high clip, ratio]

// logp, old_logp (T) float, order (K) i64 (the mask = 1 tokens, grouped by sequence, in token
// order within a sequence), offsets (S + 1) i64 (offsets[0] = 0, offsets[S] = K, non-
// decreasing; the tokens of sequence s are order[offsets[s] : offsets[s + 1]]) ->
// log_ratio (S) of logp's dtype:
//   log_ratio[s] = (sum over those tokens of (logp - old_logp)) / max(count, 1),
// each difference in logp's dtype, the sum and the division in f64 (0 for a sequence without
// tokens), rounded once. The kernel trusts order and
// offsets (the op builds them).
R1_KERNEL(grpo_sequence_log_ratio, void(const Tensor& logp, const Tensor& old_logp,
                                        const Tensor& order, const Tensor& offsets,
                                        Tensor& log_ratio))

// The operands of grpo_token_terms (contract above). logp, old_logp (T) float; ref_logp (T)
// of logp's dtype when beta > 0 (ignored otherwise, may be undefined); advantages (S) and
// seq_log_ratio (S, undefined at the token level) of logp's dtype; seq (T) i32/i64 in
// [0, S) (trusted: the op checked it); mask (T) u8 of 0/1; seq_weight (S) of logp's dtype.
struct GrpoTermsArgs {
  Tensor logp, old_logp, ref_logp, advantages, seq, seq_log_ratio, mask, seq_weight;
  double epsilon_low = 0.2, epsilon_high = 0.2, beta = 0.0;
};

// -> sums (5) f64 written; dlogp (T) of logp's dtype written when defined (an undefined
// dlogp: no gradient wanted, not computed).
R1_KERNEL(grpo_token_terms, void(const GrpoTermsArgs& a, Tensor& sums, Tensor& dlogp))

namespace grpo_detail {

inline void check_vec(const char* what, const char* name, const Tensor& t, int64_t n, DType dt,
                      Device dev) {
  R1_CHECK(t.defined() && t.dim() == 1 && t.size(0) == n && t.dtype() == dt &&
               t.device() == dev && t.is_contiguous(),
           "{}: {} is {}, expected a contiguous ({}) {} on {}", what, name,
           t.defined() ? t.str() : std::string("undefined"), n, dtype_name(dt), dev.str());
}

}  // namespace grpo_detail

// Checks grpo_sequence_log_ratio's operands against its contract; every backend calls it
// first. `float_ok` says whether logp's dtype is one the backend takes.
inline void check_grpo_sequence_log_ratio(const Tensor& logp, const Tensor& old_logp,
                                          const Tensor& order, const Tensor& offsets,
                                          const Tensor& log_ratio, bool float_ok) {
  const char* what = "grpo_sequence_log_ratio";
  R1_CHECK(logp.defined() && logp.dim() == 1 && float_ok,
           "{}: logp {} must be a (T) tensor of a dtype this backend takes", what, logp.str());
  const Device dev = logp.device();
  const int64_t T = logp.size(0), S = log_ratio.defined() ? log_ratio.numel() : 0;
  grpo_detail::check_vec(what, "logp", logp, T, logp.dtype(), dev);
  grpo_detail::check_vec(what, "old_logp", old_logp, T, logp.dtype(), dev);
  R1_CHECK(order.defined() && order.dim() == 1 && order.size(0) <= T,
           "{}: order {} must be (K), K <= T = {}", what, order.str(), T);
  grpo_detail::check_vec(what, "order", order, order.size(0), DType::I64, dev);
  grpo_detail::check_vec(what, "offsets", offsets, S + 1, DType::I64, dev);
  grpo_detail::check_vec(what, "log_ratio", log_ratio, S, logp.dtype(), dev);
}

// Checks grpo_token_terms's operands; `float_ok` as above.
inline void check_grpo_token_terms(const GrpoTermsArgs& a, const Tensor& sums,
                                   const Tensor& dlogp, bool float_ok) {
  const char* what = "grpo_token_terms";
  R1_CHECK(a.logp.defined() && a.logp.dim() == 1 && float_ok,
           "{}: logp {} must be a (T) tensor of a dtype this backend takes", what,
           a.logp.str());
  const Device dev = a.logp.device();
  const DType dt = a.logp.dtype();
  const int64_t T = a.logp.size(0);
  R1_CHECK(a.advantages.defined() && a.advantages.dim() == 1 && a.advantages.size(0) >= 1,
           "{}: advantages must be (S), S >= 1", what);
  const int64_t S = a.advantages.size(0);
  grpo_detail::check_vec(what, "logp", a.logp, T, dt, dev);
  grpo_detail::check_vec(what, "old_logp", a.old_logp, T, dt, dev);
  if (a.beta > 0) grpo_detail::check_vec(what, "ref_logp", a.ref_logp, T, dt, dev);
  grpo_detail::check_vec(what, "advantages", a.advantages, S, dt, dev);
  R1_CHECK(a.seq.defined() && (a.seq.dtype() == DType::I32 || a.seq.dtype() == DType::I64),
           "{}: seq must be i32 or i64", what);
  grpo_detail::check_vec(what, "seq", a.seq, T, a.seq.dtype(), dev);
  if (a.seq_log_ratio.defined())
    grpo_detail::check_vec(what, "seq_log_ratio", a.seq_log_ratio, S, dt, dev);
  grpo_detail::check_vec(what, "mask", a.mask, T, DType::U8, dev);
  grpo_detail::check_vec(what, "seq_weight", a.seq_weight, S, dt, dev);
  R1_CHECK(a.epsilon_low >= 0 && a.epsilon_high >= 0 && a.beta >= 0,
           "{}: epsilon_low {}, epsilon_high {}, beta {} must be >= 0", what, a.epsilon_low,
           a.epsilon_high, a.beta);
  grpo_detail::check_vec(what, "sums", sums, kGrpoSums, DType::F64, dev);
  if (dlogp.defined()) grpo_detail::check_vec(what, "dlogp", dlogp, T, dt, dev);
}

}  // namespace r1
