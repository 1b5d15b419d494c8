// CPU: the kernels of grpo_objective (contracts in engine/kernels_grpo.h), the reference for
// kernels/cuda/loss/grpo.cu. Per-token arithmetic in logp's dtype (f32 or f64), sums in f64.
// Threads split the tokens into blocks of kGrpoCpuBlock; each block is summed in token order
// and the blocks in block order, so the sums do not depend on the thread count.
#include <algorithm>
#include <array>
#include <cmath>
#include <vector>

#include "engine/kernels_grpo.h"
#include "kernels/cpu/cpu_common.h"

namespace r1::cpu {
namespace {

bool cpu_float(DType t) { return t == DType::F32 || t == DType::F64; }

// One mask = 1 token: its loss l, k3 kl, ratio r, clip flags and dlogp (contract in
// engine/kernels_grpo.h). lr is the log ratio, A the advantage, w the token's weight, d =
// ref - logp (read only when beta > 0), [lo, hi] the clip range.
template <class T>
struct TokenTerm {
  T l, kl, r, dlogp;
  bool low, high;
};

template <class T>
TokenTerm<T> token_term(T lr, T A, T w, T d, T lo, T hi, T beta) {
  TokenTerm<T> o{};
  o.r = std::exp(lr);
  const T rc = std::min(std::max(o.r, lo), hi);
  const T unclipped = o.r * A, clipped = rc * A;
  // PyTorch's subgradient of -min(r A, clamp(r) A) (see the contract).
  const T dpol = unclipped <= clipped ? -A * o.r : T(0);
  T dkl = 0;
  if (beta > 0) {
    const T e = std::exp(d);
    o.kl = e - d - T(1);
    dkl = T(1) - e;  // d kl / d logp
  }
  o.l = -std::min(unclipped, clipped) + beta * o.kl;
  o.dlogp = w * (dpol + beta * dkl);
  o.low = o.r < lo && A < 0;
  o.high = o.r > hi && A > 0;
  return o;
}

// logp, old_logp (T), order (K), offsets (S + 1) -> log_ratio (S): per-sequence means.
void grpo_sequence_log_ratio_cpu(const Tensor& logp, const Tensor& old_logp,
                                 const Tensor& order, const Tensor& offsets,
                                 Tensor& log_ratio) {
  check_grpo_sequence_log_ratio(logp, old_logp, order, offsets, log_ratio,
                                cpu_float(logp.dtype()));
  const int64_t S = log_ratio.numel();
  dispatch_float(logp.dtype(), "grpo_sequence_log_ratio", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* lp = logp.data<T>();
    const T* lo = old_logp.data<T>();
    const int64_t* po = order.data<int64_t>();
    const int64_t* pf = offsets.data<int64_t>();
    T* out = log_ratio.data<T>();
#pragma omp parallel for if (worth_parallel(order.numel()))
    for (int64_t s = 0; s < S; ++s) {
      double sum = 0;
      for (int64_t k = pf[s]; k < pf[s + 1]; ++k) {
        const int64_t t = po[k];
        sum += static_cast<double>(static_cast<T>(lp[t] - lo[t]));
      }
      const int64_t n = std::max<int64_t>(pf[s + 1] - pf[s], 1);
      out[s] = static_cast<T>(sum / static_cast<double>(n));
    }
  });
}

// GrpoTermsArgs -> sums (5) f64, dlogp (T) when defined.
void grpo_token_terms_cpu(const GrpoTermsArgs& a, Tensor& sums, Tensor& dlogp) {
  check_grpo_token_terms(a, sums, dlogp, cpu_float(a.logp.dtype()));
  const int64_t N = a.logp.size(0);
  const int64_t blocks = (N + kGrpoCpuBlock - 1) / kGrpoCpuBlock;
  std::vector<std::array<double, kGrpoSums>> part(static_cast<size_t>(blocks));
  dispatch_float(a.logp.dtype(), "grpo_token_terms", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* lp = a.logp.data<T>();
    const T* lo = a.old_logp.data<T>();
    const T* pr = a.beta > 0 ? a.ref_logp.data<T>() : nullptr;
    const T* adv = a.advantages.data<T>();
    const T* slr = a.seq_log_ratio.defined() ? a.seq_log_ratio.data<T>() : nullptr;
    const T* sw = a.seq_weight.data<T>();
    const uint8_t* pm = a.mask.data<uint8_t>();
    T* pd = dlogp.defined() ? dlogp.data<T>() : nullptr;
    // The bounds as torch compares a float tensor with a Python number: in the tensor's dtype.
    const T clip_lo = static_cast<T>(1.0 - a.epsilon_low);
    const T clip_hi = static_cast<T>(1.0 + a.epsilon_high);
    const T beta = static_cast<T>(a.beta);
#pragma omp parallel for if (worth_parallel(N))
    for (int64_t b = 0; b < blocks; ++b) {
      std::array<double, kGrpoSums> acc{};
      const int64_t end = std::min(N, (b + 1) * kGrpoCpuBlock);
      for (int64_t t = b * kGrpoCpuBlock; t < end; ++t) {
        if (!pm[t]) {
          if (pd) pd[t] = 0;
          continue;
        }
        const int64_t s = index_at(a.seq, t);
        const T lr = slr ? slr[s] : static_cast<T>(lp[t] - lo[t]);
        const T d = pr ? static_cast<T>(pr[t] - lp[t]) : T(0);
        const TokenTerm<T> o = token_term(lr, adv[s], sw[s], d, clip_lo, clip_hi, beta);
        acc[0] += static_cast<double>(sw[s]) * static_cast<double>(o.l);
        acc[1] += o.kl;
        acc[2] += o.low;
        acc[3] += o.high;
        acc[4] += o.r;
        if (pd) pd[t] = o.dlogp;
      }
      part[b] = acc;
    }
  });
  double* ps = sums.data<double>();
  std::fill(ps, ps + kGrpoSums, 0.0);
  for (const auto& p : part)
    for (int64_t i = 0; i < kGrpoSums; ++i) ps[i] += p[i];
}

}  // namespace

R1_REGISTER_KERNEL(grpo_sequence_log_ratio, CPU, grpo_sequence_log_ratio_cpu);
R1_REGISTER_KERNEL(grpo_token_terms, CPU, grpo_token_terms_cpu);

}  // namespace r1::cpu
