// CPU: the kernels of token_logprobs (contracts in engine/kernels_logprob.h), the reference
// for kernels/cuda/logprob.cu. Computes in the logits' dtype (f32 or f64). Each row is
// walked in column order, so a row's statistics depend on its own logits and C only.
#include <algorithm>
#include <cmath>

#include "engine/kernels_logprob.h"
#include "kernels/cpu/cpu_common.h"

namespace r1::cpu {
namespace {

// One row's (max, sum exp(l - m), sum exp(l - m) (l - m)) over the logits merged so far.
template <class T>
struct RowState {
  T m, s, e;
};

// exp(m - M) s and exp(m - M) (e + (m - M) s): a state's sums rescaled to the max M; an
// empty state (m = -inf) contributes 0 (its s = 0 times m - M = -inf would be NaN).
template <class T>
void rescaled(const RowState<T>& a, T M, T& s, T& e) {
  if (a.m == -INFINITY) {
    s = e = 0;
    return;
  }
  const T d = a.m - M, f = std::exp(d);
  s = a.s * f;
  e = f * (a.e + d * a.s);
}

template <class T>
RowState<T> merge(const RowState<T>& a, const RowState<T>& b) {
  const T M = std::max(a.m, b.m);
  if (M == -INFINITY) return {M, 0, 0};
  T sa, ea, sb, eb;
  rescaled(a, M, sa, ea);
  rescaled(b, M, sb, eb);
  return {M, sa + sb, ea + eb};
}

// The state of one row of C logits: its max, then the sums relative to it.
template <class T>
RowState<T> row_state(const T* x, int64_t C) {
  RowState<T> r{-INFINITY, 0, 0};
  for (int64_t j = 0; j < C; ++j) r.m = std::max(r.m, x[j]);
  if (r.m == -INFINITY) return r;
  for (int64_t j = 0; j < C; ++j) {
    const T d = x[j] - r.m, p = std::exp(d);
    r.s += p;
    r.e += p * d;
  }
  return r;
}

bool cpu_float(DType t) { return t == DType::F32 || t == DType::F64; }

// logits (T, C), tokens (T) int, stats (T, 4) of the logits' dtype: merges the chunk.
void logprob_chunk_update_cpu(const Tensor& logits, const Tensor& tokens, int64_t offset,
                              Tensor& stats) {
  check_logprob_chunk_update(logits, tokens, stats, cpu_float(logits.dtype()));
  const int64_t N = logits.size(0), C = logits.size(1);
  if (N == 0 || C == 0) return;
  dispatch_float(logits.dtype(), "logprob_chunk_update", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* px = logits.data<T>();
    T* ps = stats.data<T>();
#pragma omp parallel for if (worth_parallel(N * C))
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = px + n * C;
      T* st = ps + n * 4;
      const RowState<T> r = merge(RowState<T>{st[0], st[1], st[3]}, row_state(xr, C));
      st[0] = r.m;
      st[1] = r.s;
      st[3] = r.e;
      const int64_t j = index_at(tokens, n) - offset;
      if (j >= 0 && j < C) st[2] = xr[j];
    }
  });
}

// stats (T, 4) -> logp, entropy, lse (T), all of stats' dtype.
void logprob_finalize_cpu(const Tensor& stats, Tensor& logp, Tensor& entropy, Tensor& lse) {
  check_logprob_finalize(stats, logp, entropy, lse, cpu_float(stats.dtype()));
  const int64_t N = stats.size(0);
  dispatch_float(stats.dtype(), "logprob_finalize", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* ps = stats.data<T>();
    T* pl = logp.data<T>();
    T* ph = entropy.data<T>();
    T* pz = lse.data<T>();
    for (int64_t n = 0; n < N; ++n) {
      const T* st = ps + n * 4;
      const T log_s = std::log(st[1]), z = st[0] + log_s;
      pz[n] = z;
      pl[n] = st[2] - z;
      ph[n] = log_s - st[3] / st[1];
    }
  });
}

// logits (T, C), tokens (T), lse, dlogp (T) -> dlogits (T, C) (may alias logits).
void logprob_chunk_backward_cpu(const Tensor& logits, const Tensor& tokens, int64_t offset,
                                const Tensor& lse, const Tensor& dlogp, double inv_temperature,
                                Tensor& dlogits) {
  check_logprob_chunk_backward(logits, tokens, lse, dlogp, dlogits, cpu_float(logits.dtype()));
  const int64_t N = logits.size(0), C = logits.size(1);
  if (N == 0 || C == 0) return;
  dispatch_float(logits.dtype(), "logprob_chunk_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* px = logits.data<T>();
    const T* pz = lse.data<T>();
    const T* pg = dlogp.data<T>();
    T* pd = dlogits.data<T>();
    const T inv = static_cast<T>(inv_temperature);
#pragma omp parallel for if (worth_parallel(N * C))
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = px + n * C;
      T* dr = pd + n * C;
      const T z = pz[n], g = pg[n] * inv;
      const int64_t t = index_at(tokens, n) - offset;
      for (int64_t j = 0; j < C; ++j) dr[j] = g * ((j == t ? T(1) : T(0)) - std::exp(xr[j] - z));
    }
  });
}

}  // namespace

R1_REGISTER_KERNEL(logprob_chunk_update, CPU, logprob_chunk_update_cpu);
R1_REGISTER_KERNEL(logprob_finalize, CPU, logprob_finalize_cpu);
R1_REGISTER_KERNEL(logprob_chunk_backward, CPU, logprob_chunk_backward_cpu);

}  // namespace r1::cpu
