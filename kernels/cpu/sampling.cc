// CPU: token sampling for the decode step (temperature, top-k, top-p), the reference for the
// CUDA sampler. Contract in engine/kernels.h (sample_tokens). Computes in the logits' dtype
// (f32 or f64). Per row:
//  1. max (and a NaN / +inf check), 2. e_v = exp((x_v - max) / T), 3. the masses as two-level
//  sums: chunks of kChunk entries in index order, then the chunks in order (s = the total),
//  4. without top-k / top-p, the draw walks the chunk sums to the chunk where the cumulative
//  mass passes u * s and then that chunk's entries: no sort, no copy; with them, the kept set
//  is a prefix of the rank order (a selection, sorted only as far as top-p needs), its masses
//  go through the same sums, and the draw walks those.
// Passes 1 and 2 run in vector lanes for f32 (kernels/cpu/simd_softmax.h, the process's ISA;
// exp is fast_expf, < 1 ulp) and as plain loops for f64 (std::exp). A row touches per-thread
// buffers only, never the heap once they have grown.
#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "engine/kernels.h"
#include "engine/rng.h"
#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/simd_softmax.h"

namespace r1::cpu {
namespace {

// ---- passes 1 and 2 ------------------------------------------------------------------------
// x (V) -> its max and whether any entry is NaN or +inf; e (V) = exp((x - m) / t).
template <class T>
struct RowPasses {
  void (*max)(const T* x, int64_t V, T* m, bool* bad);
  void (*exp)(const T* x, int64_t V, T m, T t, T* e);  // e = exp((x - m) / t)
};

template <class T>
void max_plain(const T* x, int64_t V, T* m, bool* bad) {
  T mx = -std::numeric_limits<T>::infinity();
  bool b = false;
  for (int64_t v = 0; v < V; ++v) {
    b |= std::isnan(x[v]) || x[v] == std::numeric_limits<T>::infinity();
    mx = x[v] > mx ? x[v] : mx;
  }
  *m = mx;
  *bad = b;
}

template <class T>
void exp_plain(const T* x, int64_t V, T m, T t, T* e) {
  for (int64_t v = 0; v < V; ++v) e[v] = std::exp((x[v] - m) / t);
}

template <class P>
inline void max_lanes(const float* x, int64_t V, float* m, bool* bad) {
  using Vec = typename P::V;
  constexpr int L = P::kLanes;
  Vec mv, xv;
  P::bcast(mv, -std::numeric_limits<float>::infinity());
  bool b = false;
  int64_t v = 0;
  for (; v + L <= V; v += L) {
    P::load(xv, x + v);
    b |= P::any_nan_or_posinf(xv);
    P::max(mv, xv);
  }
  alignas(64) float lanes[L];
  P::store(lanes, mv);
  float mx = lanes[0];
  for (int i = 1; i < L; ++i) mx = std::max(mx, lanes[i]);  // max is exact: any order
  float tail_m;
  bool tail_bad;
  max_plain(x + v, V - v, &tail_m, &tail_bad);
  *m = std::max(mx, tail_m);
  *bad = b || tail_bad;
}

template <class P>
inline void exp_lanes(const float* x, int64_t V, float m, float t, float* e) {
  using Vec = typename P::V;
  constexpr int L = P::kLanes;
  Vec mv, tv, xv;
  P::bcast(mv, m);
  P::bcast(tv, t);
  for (int64_t v = 0; v < V; v += L) {
    const int n = static_cast<int>(std::min<int64_t>(L, V - v));
    load_n<P>(xv, x + v, n);
    P::sub(xv, mv);
    P::div(xv, tv);
    P::exp(xv);
    store_n<P>(e + v, xv, n);
  }
}

template <class P>
R1_TARGET_AVX2 __attribute__((flatten)) void max_avx2(const float* x, int64_t V, float* m,
                                                      bool* bad) {
  max_lanes<P>(x, V, m, bad);
}
template <class P>
R1_TARGET_AVX2 __attribute__((flatten)) void exp_avx2(const float* x, int64_t V, float m,
                                                      float t, float* e) {
  exp_lanes<P>(x, V, m, t, e);
}
template <class P>
R1_TARGET_AVX512 __attribute__((flatten)) void max_avx512(const float* x, int64_t V, float* m,
                                                          bool* bad) {
  max_lanes<P>(x, V, m, bad);
}
template <class P>
R1_TARGET_AVX512 __attribute__((flatten)) void exp_avx512(const float* x, int64_t V, float m,
                                                          float t, float* e) {
  exp_lanes<P>(x, V, m, t, e);
}

template <class T>
RowPasses<T> row_passes() {
  if constexpr (std::is_same_v<T, float>) {
    switch (softmax_isa()) {
      case SoftmaxIsa::kAvx512:
        return {max_avx512<simd::Avx512Softmax<float>>, exp_avx512<simd::Avx512Softmax<float>>};
      case SoftmaxIsa::kAvx2:
        return {max_avx2<simd::Avx2Softmax<float>>, exp_avx2<simd::Avx2Softmax<float>>};
      default:
        return {max_lanes<simd::Sse2Softmax<float>>, exp_lanes<simd::Sse2Softmax<float>>};
    }
  } else {
    return {max_plain<T>, exp_plain<T>};
  }
}

// ---- pass 3: the masses and the draw -------------------------------------------------------
// The cumulative mass up to index i is C(i) = (c_0 + ... + c_{k-1}) + (e_{kC} + ... + e_i) for
// i in chunk k, each sum in order, where c_k is chunk k's own sum: so C at the end of a chunk
// is exactly the running sum of the chunk sums, and the total is C(V - 1).
constexpr int64_t kChunk = 16;

// e (V) -> c (chunks) the chunk sums; returns the total.
template <class T>
T chunk_sums(const T* e, int64_t V, T* c) {
  T total = 0;
  for (int64_t k = 0, v0 = 0; v0 < V; ++k, v0 += kChunk) {
    const int64_t end = std::min(V, v0 + kChunk);
    T b = 0;
    for (int64_t v = v0; v < end; ++v) b += e[v];
    c[k] = b;
    total += b;
  }
  return total;
}

// The first i with C(i) > target, or -1 when C(V - 1) <= target. A chunk is entered only
// when its end passes target, and C at its end equals that running sum exactly, so the walk
// inside it always stops; C(i) > C(i - 1) only where e_i > 0, so a zero is never drawn.
template <class T>
int64_t inverse_cdf(const T* e, int64_t V, const T* c, T target) {
  T before = 0;
  for (int64_t k = 0, v0 = 0; v0 < V; ++k, v0 += kChunk) {
    const T after = before + c[k];
    if (after > target) {
      const int64_t end = std::min(V, v0 + kChunk);
      T in = 0;
      for (int64_t v = v0; v < end; ++v) {
        in += e[v];
        if (before + in > target) return v;
      }
    }
    before = after;
  }
  return -1;
}

// A token in the rank order: x descending, index ascending. The logit rides along so that
// the selection compares contiguous pairs rather than gathering x.
template <class T>
struct Ranked {
  T x;
  int64_t v;
  bool operator<(const Ranked& o) const { return x > o.x || (x == o.x && v < o.v); }
};

// Per-thread buffers of a row, grown to the largest V seen.
template <class T>
struct RowScratch {
  std::vector<T> e, c, kept_e, kept_c;
  std::vector<Ranked<T>> order;
  void fit(int64_t V) {
    if (static_cast<int64_t>(e.size()) >= V) return;
    const int64_t chunks = (V + kChunk - 1) / kChunk;
    e.resize(V), kept_e.resize(V), order.resize(V);
    c.resize(chunks), kept_c.resize(chunks);
  }
};

// Puts the rank order's entries [from, to) of o (V) in place, o[0, from) holding its start
// and the rest ranking after it: a selection in linear time, then a sort of the piece.
template <class T>
void sort_rank_piece(Ranked<T>* o, int64_t from, int64_t to, int64_t V) {
  if (to < V) std::nth_element(o + from, o + to, o + V);
  std::sort(o + from, o + to);
}

// The kept set (a prefix of the rank order) of x (V) with masses e, whose total is s -> its
// size, with order[0, size) holding it; V (no sort) when neither top-k nor top-p applies.
// top-p sorts the rank order only as far as the cut, in growing pieces (a trained model's
// nucleus is a few tokens of the vocabulary).
template <class T>
int64_t kept_prefix(const T* x, const T* e, T s, int64_t V, const SamplingParams& p,
                    std::vector<Ranked<T>>& order) {
  const bool top_k = p.top_k > 0 && p.top_k < V;
  if (!top_k && p.top_p >= 1) return V;
  const int64_t kept = top_k ? p.top_k : V;
  Ranked<T>* o = order.data();
  for (int64_t v = 0; v < V; ++v) o[v] = {x[v], v};
  int64_t sorted = 0;  // o[0, sorted) is the rank order's start; the rest ranks after it
  T mk = s;            // the mass of the top-k set
  if (top_k) {
    sort_rank_piece(o, 0, kept, V);
    sorted = kept;
    // Summed in rank order as the cumulative below is, so the last cumulative equals it.
    mk = 0;
    for (int64_t r = 0; r < kept; ++r) mk += e[o[r].v];
  }
  if (p.top_p >= 1) return kept;
  // The shortest prefix whose cumulative reaches top_p * mk; all of the top-k set when the
  // cumulative falls short by rounding (top_k = 0: mk is s, summed in index order).
  const T target = static_cast<T>(p.top_p) * mk;
  constexpr int64_t kFirstPiece = 64, kGrowth = 4;
  T c = 0;
  for (int64_t r = 0; r < kept; ++r) {
    if (r == sorted) {
      const int64_t next = std::min(kept, std::max(kGrowth * sorted, kFirstPiece));
      sort_rank_piece(o, sorted, next, V);
      sorted = next;
    }
    c += e[o[r].v];
    if (c >= target) return r + 1;
  }
  return kept;
}

// Row x (V) -> token, logprob, with u the row's uniform in [0, 1). T = the compute type.
template <class T>
void sample_row(const RowPasses<T>& passes, const T* x, int64_t V, double u,
                const SamplingParams& p, RowScratch<T>& w, int64_t* token, T* logprob) {
  T m;
  bool bad;
  passes.max(x, V, &m, &bad);
  if (bad || m == -std::numeric_limits<T>::infinity()) {  // the contract's bad row
    *token = 0;
    *logprob = std::numeric_limits<T>::quiet_NaN();
    return;
  }
  const bool greedy = p.temperature == 0;
  const T temp = greedy ? T(1) : static_cast<T>(p.temperature);
  // e_v = exp((x_v - m) / T): q_v up to the normalizer s. exp(-inf) = 0 for masked tokens.
  w.fit(V);
  passes.exp(x, V, m, temp, w.e.data());
  const T s = chunk_sums(w.e.data(), V, w.c.data());
  const T log_s = std::log(s);
  if (greedy) {
    int64_t v = 0;
    while (x[v] != m) ++v;  // the first index of the maximum
    *token = v;
    *logprob = -log_s;  // x[v] - m = 0
    return;
  }
  // The draw's masses: all of e, or e on the kept set (0 elsewhere).
  const T* q = w.e.data();
  const T* qc = w.c.data();
  const int64_t kept = kept_prefix(x, q, s, V, p, w.order);
  T mass = s;
  if (kept < V) {
    T* ke = w.kept_e.data();
    std::fill(ke, ke + V, T(0));
    for (int64_t r = 0; r < kept; ++r) ke[w.order[r].v] = q[w.order[r].v];
    mass = chunk_sums(ke, V, w.kept_c.data());
    q = ke;
    qc = w.kept_c.data();
  }
  int64_t tok = inverse_cdf(q, V, qc, static_cast<T>(u) * mass);
  // Rounding can leave C(V - 1) <= u * M (C(V - 1) = M exactly in real arithmetic, u < 1):
  // then the last kept token of positive probability (the max is one: e = 1, always kept).
  if (tok < 0) {
    tok = V - 1;
    while (q[tok] == 0) --tok;
  }
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
    static const RowPasses<T> passes = row_passes<T>();
    const T* px = logits.data<T>();
    T* pl = logprobs.data<T>();
#pragma omp parallel if (worth_parallel(N * V))
    {
      thread_local RowScratch<T> w;
#pragma omp for schedule(static)
      for (int64_t n = 0; n < N; ++n) {
        const Philox4x32 b = philox_bits(seed, static_cast<uint64_t>(ps[n]),
                                         static_cast<uint64_t>(pp[n]));
        sample_row(passes, px + n * V, V, static_cast<double>(uniform01(b.v[0])), p, w, pt + n,
                   pl + n);
      }
    }
  });
}

}  // namespace

R1_REGISTER_KERNEL(sample_tokens, CPU, sample_tokens_cpu);

}  // namespace r1::cpu
