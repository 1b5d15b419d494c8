// Kernel contracts of token_logprobs (engine/ops_logprob.h): the log-probability of sampled
// tokens from hidden states, vocabulary-chunked. Kept apart from engine/kernels.h, whose
// general conventions apply (contiguous operands on one device, stat_dtype statistics).
//
// The op computes the logits of one chunk of the vocabulary at a time with the gemm kernel,
//     l = (h @ w[o : o + C]^T) / temperature        (T, C), column j is vocabulary entry o + j,
// and these kernels fold the chunk into per-row running statistics (forward) or turn it into
// the chunk's dlogits (backward). Nothing of size (T, V) is ever allocated.
//
// Running statistics: stats (T, 4) stat_dtype(logits), one row per token, columns
//   [0] m   = the max of the logits merged so far
//   [1] s   = sum over them of exp(l - m)
//   [2] tgt = the target's logit l[tokens[t]] once the chunk holding it was merged, else NaN
//   [3] e   = sum over them of exp(l - m) * (l - m)
// The empty state, which the op writes before the first chunk: m = -inf, s = 0, tgt = NaN,
// e = 0. e is taken relative to m (not sum exp(l - m) * l) so that the entropy
// log s - e / s never subtracts two numbers of the size of the logits: for a peaked
// distribution lse - E[l] would cancel to a small difference of two values ~|l|.
// Merging states a and b (the chunk's own state, then the running one):
//   M = max(m_a, m_b), s = s_a exp(m_a - M) + s_b exp(m_b - M),
//   e = exp(m_a - M) (e_a + (m_a - M) s_a) + exp(m_b - M) (e_b + (m_b - M) s_b),
// where a side with m = -inf (empty) contributes 0 to s and e.
// Logits must be finite (they are products of finite h and w); a non-finite logit gives an
// unspecified (NaN) result for its row. Tokens are in [0, V): the op checks them once on the
// host; a kernel does not check, it only compares tokens[t] - offset with [0, C).
// Precision: the CPU computes in the logits' dtype (f32 or f64; stats of that dtype). CUDA
// takes f32/bf16 logits, computes in fp32 (expf, not __expf) with f32 stats. A row's result
// depends on its own logits and C only, never on T or the other rows: per-row order is fixed
// by C (batch invariance, DESIGN.md).
#pragma once
#include <cstdint>

#include "engine/kernels.h"

namespace r1 {

// logits (T, C) float, tokens (T) int, offset (the vocabulary index of column 0), stats
// (T, 4) stat_dtype: accumulates. stats[t] := merge(stats[t], the state of logits[t]); where
// tokens[t] - offset is in [0, C), stats[t, 2] := logits[t, tokens[t] - offset] (the logit
// as stored, widened), elsewhere stats[t, 2] is left as it is. C = 0 leaves stats unchanged.
R1_KERNEL(logprob_chunk_update, void(const Tensor& logits, const Tensor& tokens, int64_t offset,
                                     Tensor& stats))
// stats (T, 4) f32 or f64 -> logp, entropy, lse (T) of stats' dtype:
//   lse = m + log s, logp = tgt - lse, entropy = log s - e / s.
// (tgt still NaN, a token never merged, gives logp NaN.)
R1_KERNEL(logprob_finalize, void(const Tensor& stats, Tensor& logp, Tensor& entropy,
                                 Tensor& lse))
// logits (T, C) float, tokens (T) int, offset, lse (T) and dlogp (T) stat_dtype(logits) ->
// dlogits (T, C) of the logits' dtype:
//   dlogits[t, j] = dlogp[t] * inv_temperature * ([offset + j == tokens[t]] - p[t, j]),
//   p[t, j] = exp(logits[t, j] - lse[t])
// (the gradient with respect to the un-tempered product h w^T of logp = l[tokens] - lse).
// dlogits may be logits itself (in place): every element is read before it is written, by
// the same thread.
R1_KERNEL(logprob_chunk_backward, void(const Tensor& logits, const Tensor& tokens,
                                       int64_t offset, const Tensor& lse, const Tensor& dlogp,
                                       double inv_temperature, Tensor& dlogits))

namespace logprob_detail {

inline void check_rows(const char* what, const Tensor& logits, const Tensor& tokens,
                       bool float_ok) {
  R1_CHECK(logits.dim() == 2 && tokens.dim() == 1 && tokens.size(0) == logits.size(0),
           "{}: logits {} and tokens {}: expected (T, C) and (T)", what, logits.str(),
           tokens.str());
  R1_CHECK(float_ok, "{}: logits dtype {} not taken by this backend", what,
           dtype_name(logits.dtype()));
  R1_CHECK(tokens.dtype() == DType::I32 || tokens.dtype() == DType::I64,
           "{}: tokens must be i32 or i64, got {}", what, dtype_name(tokens.dtype()));
  R1_CHECK(tokens.device() == logits.device() && logits.is_contiguous() &&
               tokens.is_contiguous(),
           "{}: logits {} and tokens {} must be contiguous on one device", what, logits.str(),
           tokens.str());
}

inline void check_stat(const char* what, const char* name, const Tensor& t, const Shape& shape,
                       DType dt, Device dev) {
  R1_CHECK(t.shape() == shape && t.dtype() == dt && t.device() == dev && t.is_contiguous(),
           "{}: {} is {}, expected a contiguous {} {} on {}", what, name, t.str(),
           shape_str(shape), dtype_name(dt), dev.str());
}

}  // namespace logprob_detail

// Checks logprob_chunk_update's operands against its contract; every backend calls it first.
// `float_ok` says whether the logits' dtype is one the backend takes.
inline void check_logprob_chunk_update(const Tensor& logits, const Tensor& tokens,
                                       const Tensor& stats, bool float_ok) {
  const char* what = "logprob_chunk_update";
  logprob_detail::check_rows(what, logits, tokens, float_ok);
  logprob_detail::check_stat(what, "stats", stats, {logits.size(0), 4},
                             stat_dtype(logits.dtype()), logits.device());
}

// Checks logprob_finalize's operands; `stat_ok` says whether stats' dtype is one the backend
// takes (f32 or f64 on the CPU, f32 on CUDA).
inline void check_logprob_finalize(const Tensor& stats, const Tensor& logp,
                                   const Tensor& entropy, const Tensor& lse, bool stat_ok) {
  const char* what = "logprob_finalize";
  R1_CHECK(stats.dim() == 2 && stats.size(1) == 4 && stats.is_contiguous() && stat_ok,
           "{}: stats {} must be a contiguous (T, 4) statistics tensor this backend takes",
           what, stats.str());
  const Shape rows{stats.size(0)};
  logprob_detail::check_stat(what, "logp", logp, rows, stats.dtype(), stats.device());
  logprob_detail::check_stat(what, "entropy", entropy, rows, stats.dtype(), stats.device());
  logprob_detail::check_stat(what, "lse", lse, rows, stats.dtype(), stats.device());
}

// Checks logprob_chunk_backward's operands; `float_ok` as for the update.
inline void check_logprob_chunk_backward(const Tensor& logits, const Tensor& tokens,
                                         const Tensor& lse, const Tensor& dlogp,
                                         const Tensor& dlogits, bool float_ok) {
  const char* what = "logprob_chunk_backward";
  logprob_detail::check_rows(what, logits, tokens, float_ok);
  const Shape rows{logits.size(0)};
  const DType sd = stat_dtype(logits.dtype());
  logprob_detail::check_stat(what, "lse", lse, rows, sd, logits.device());
  logprob_detail::check_stat(what, "dlogp", dlogp, rows, sd, logits.device());
  logprob_detail::check_stat(what, "dlogits", dlogits, logits.shape(), logits.dtype(),
                             logits.device());
}

}  // namespace r1
