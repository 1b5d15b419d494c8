// CPU: token sampling for the decode step (temperature, top-k, top-p), the reference for the
// CUDA sampler. Contract in engine/kernels.h (sample_tokens). The plain version of the math:
// sort the row into rank order, cut the kept prefix, walk the inverse CDF in index order.
// Computes in the logits' dtype (f32 or f64).
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <vector>

#include "engine/kernels.h"
#include "engine/rng.h"
#include "kernels/cpu/cpu_common.h"

namespace r1::cpu {
namespace {

// Row x (V) -> token, logprob, with u the row's uniform in [0, 1). T = the compute type.
template <class T>
void sample_row(const T* x, int64_t V, double u, const SamplingParams& p, int64_t* token,
                T* logprob) {
  T m = -std::numeric_limits<T>::infinity();
  int64_t argmax = 0;
  bool bad = false;
  for (int64_t v = 0; v < V; ++v) {
    bad |= std::isnan(x[v]) || x[v] == std::numeric_limits<T>::infinity();
    if (x[v] > m) m = x[v], argmax = v;  // strict: the first index of the maximum
  }
  if (bad || m == -std::numeric_limits<T>::infinity()) {  // the contract's bad row
    *token = 0;
    *logprob = std::numeric_limits<T>::quiet_NaN();
    return;
  }
  const bool greedy = p.temperature == 0;
  const T temp = greedy ? T(1) : static_cast<T>(p.temperature);
  // e_j = exp((x_j - m) / T): q_j up to the normalizer s. exp(-inf) = 0 for masked tokens.
  std::vector<T> e(V);
  T s = 0;
  for (int64_t v = 0; v < V; ++v) s += (e[v] = std::exp((x[v] - m) / temp));
  const T log_s = std::log(s);
  if (greedy) {
    *token = argmax;
    *logprob = -log_s;  // x[argmax] - m = 0
    return;
  }

  // The kept set: the first `kept` tokens of the rank order (x descending, index ascending).
  int64_t kept = V;
  std::vector<int64_t> order;
  if ((p.top_k > 0 && p.top_k < V) || p.top_p < 1) {
    if (p.top_k > 0 && p.top_k < V) kept = p.top_k;
    order.resize(V);
    std::iota(order.begin(), order.end(), int64_t{0});
    std::partial_sort(order.begin(), order.begin() + kept, order.end(),
                      [x](int64_t a, int64_t b) { return x[a] > x[b] || (x[a] == x[b] && a < b); });
    if (p.top_p < 1) {
      // Mass of the top-k set, summed in rank order as the cumulative below is, so the last
      // cumulative equals it and the cut always happens (top_p * mk <= mk).
      T mk = 0;
      for (int64_t r = 0; r < kept; ++r) mk += e[order[r]];
      const T target = static_cast<T>(p.top_p) * mk;
      T c = 0;
      for (int64_t r = 0; r < kept; ++r) {
        c += e[order[r]];
        if (c >= target) {
          kept = r + 1;
          break;
        }
      }
    }
  }
  std::vector<char> keep(V, order.empty() ? 1 : 0);
  for (int64_t r = 0; r < static_cast<int64_t>(order.size()) && r < kept; ++r) keep[order[r]] = 1;

  // Inverse CDF over the kept tokens in index order: the first i with C(i) > u * M.
  T mass = 0;
  for (int64_t v = 0; v < V; ++v)
    if (keep[v]) mass += e[v];
  const T target = static_cast<T>(u) * mass;
  T c = 0;
  int64_t tok = -1, last_positive = argmax;
  for (int64_t v = 0; v < V; ++v) {
    if (!keep[v] || e[v] == 0) continue;
    last_positive = v;
    c += e[v];
    if (c > target) {
      tok = v;
      break;
    }
  }
  // Rounding can leave C(last) <= u * M (C(last) = M exactly in real arithmetic, u < 1): then
  // the last kept token of positive probability.
  if (tok < 0) tok = last_positive;
  *token = tok;
  *logprob = (x[tok] - m) / temp - log_s;
}

// logits (N, V) f32/f64, seq, pos (N) i64 -> tokens (N) i64, logprobs (N) of the logits' dtype.
void sample_tokens_cpu(const Tensor& logits, const Tensor& seq, const Tensor& pos,
                       uint64_t seed, const SamplingParams& p, Tensor& tokens,
                       Tensor& logprobs) {
  check_sample_tokens(logits, seq, pos, p, tokens, logprobs,
                      logits.dtype() == DType::F32 || logits.dtype() == DType::F64);
  const int64_t N = logits.size(0), V = logits.size(1);
  const int64_t* ps = seq.data<int64_t>();
  const int64_t* pp = pos.data<int64_t>();
  int64_t* pt = tokens.data<int64_t>();
  dispatch_float(logits.dtype(), "sample_tokens", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* px = logits.data<T>();
    T* pl = logprobs.data<T>();
#pragma omp parallel for if (worth_parallel(N * V))
    for (int64_t n = 0; n < N; ++n) {
      const Philox4x32 b = philox_bits(seed, static_cast<uint64_t>(ps[n]),
                                       static_cast<uint64_t>(pp[n]));
      sample_row(px + n * V, V, static_cast<double>(uniform01(b.v[0])), p, pt + n, pl + n);
    }
  });
}

}  // namespace

R1_REGISTER_KERNEL(sample_tokens, CPU, sample_tokens_cpu);

}  // namespace r1::cpu
