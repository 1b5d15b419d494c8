// CPU: attention forward and backward (contracts in engine/kernels_attention.h), the reference
// backend. f32 or f64, computed in that type. Tiled: a block of QB query rows against chunks
// of KC keys, the chunk's keys (and values) transposed to (D, KC) so that the score products
// run over the KC keys of a chunk in vector lanes, each score summed over d ascending; the
// forward keeps a (QB, T) block of scores per thread, never a (T, T) matrix. Every product
// (scores, out += P v, dq += dS k, dk += dS^T q, dv += P^T dout) is one register tile of
// kernels/cpu/attention_tiles.h: up to 8 rows' chains interleaved, each chain the one the row
// alone would compute (keys, or query rows, ascending; one multiply-add per term).
//
// ISA. f32 runs the process's ISA (kernels/cpu/simd_softmax.h: softmax_isa(), the
// batch-invariant product's, chosen once): avx512 or avx2 with fused multiply-adds and the
// fused exp (the two give the same bits), or the x86-64 baseline sse2, a multiply then an add
// per term and fast_expf (< 1 ulp); sse2 gives the bits of the scalar code. f64 always runs
// sse2 with std::exp. Partial vectors (the ends of rows, D not a multiple of the lanes) run
// the same instructions with masked moves, so an element's bits do not depend on where it
// falls.
//
// OpenMP: forward over (b, h, query block); backward dk/dv over (b, kv head, key chunk) and dq
// over (b, h, query block), or, when B * Hk gives every thread two tasks, dq fused into a
// (b, kv head) task over its key chunks ascending (the same terms in the same order: the same
// bits). Each output row is owned by one task and summed in a fixed order (keys ascending;
// query heads of the group, then query rows, ascending), so results do not depend on the
// thread count or on B; the chunks are anchored at absolute key positions, and a row's terms
// are its allowed keys only, so right padding or a longer T does not change a row.
//
// Ceiling: the FMA peak (184 GFLOP/s per core, AVX-512, kernels/cpu/gemm_invariant.cc); at
// the tiny preset's head dims (24, 16) the per-row softmax work and the transposes weigh as
// much as the products.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <type_traits>
#include <vector>

#include <omp.h>

#include "engine/kernels_attention.h"
#include "kernels/cpu/attention_tiles.h"
#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/simd_softmax.h"

namespace r1::cpu {
namespace {

using attention_tiles::exp_affine;
using attention_tiles::row_max;
using attention_tiles::RowsUpdate;

constexpr int64_t QB = 16;  // query rows per forward / dq task
constexpr int KC = 32;      // keys per chunk (the vector-lane dimension of the score tiles)

// xt (D, KC) <- rows src[j * stride + d] of nk <= KC keys, the lanes past nk zero.
template <class T>
void transpose_chunk(const T* __restrict src, int64_t stride, int64_t nk, int64_t D,
                     T* __restrict xt) {
  for (int64_t d = 0; d < D; ++d) {
    T* __restrict o = xt + d * KC;
    for (int64_t j = 0; j < nk; ++j) o[j] = src[j * stride + d];
    for (int64_t j = nk; j < KC; ++j) o[j] = 0;
  }
}

template <class T>
T dot(const T* x, const T* y, int64_t n) {
  T s = 0;
  for (int64_t i = 0; i < n; ++i) s += x[i] * y[i];
  return s;
}

bool cpu_float(DType t) { return t == DType::F32 || t == DType::F64; }

// Per token, the first position of its segment id in its row (B * T), or empty without
// segments: keys before it are all masked for that token (they carry other ids), so the
// kernels start their key loops there. Packed rows of short documents then cost about the sum
// of the documents' squared lengths instead of the row's (measured in r1-pretrain: rows of
// 256 tokens holding ~3.4 documents spent 41% of the step in attention before this). Skipped
// keys are exactly the ones that contributed exact zeros (p = 0, dS = 0), so the results keep
// their bits.
std::vector<int64_t> segment_starts(const std::vector<int64_t>& seg, int64_t B, int64_t Tn) {
  std::vector<int64_t> ks;
  if (seg.empty()) return ks;
  ks.resize(seg.size());
  for (int64_t b = 0; b < B; ++b) {
    std::map<int64_t, int64_t> first;
    for (int64_t t = 0; t < Tn; ++t) {
      const auto it = first.emplace(seg[b * Tn + t], t).first;
      ks[b * Tn + t] = it->second;
    }
  }
  return ks;
}

// The segment ids (B * T) or empty.
std::vector<int64_t> segment_ids(const Tensor& segments, int64_t n) {
  std::vector<int64_t> s;
  if (!segments.defined()) return s;
  s.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) s[i] = index_at(segments, i);
  return s;
}

// ---- the register tiles, compiled once per ISA -----------------------------------------------
// Each is its own function (noinline), out of the task functions' `flatten`: inlined at
// every product of every task, the tiles took this file 13 minutes and 2 GB to compile.

R1_TARGET_AVX512 __attribute__((noinline, flatten)) void update_avx512(
    const RowsUpdate<float>& u) {
  attention_tiles::rows_update<simd::Avx512Softmax<float>>(u);
}
R1_TARGET_AVX2 __attribute__((noinline, flatten)) void update_avx2(const RowsUpdate<float>& u) {
  attention_tiles::rows_update<simd::Avx2Softmax<float>>(u);
}
template <class T>
__attribute__((noinline, flatten)) void update_sse2(const RowsUpdate<T>& u) {
  attention_tiles::rows_update<simd::Sse2Softmax<T>>(u);
}

// rows_update on the policy P's ISA.
template <class P>
inline void update(const RowsUpdate<typename P::T>& u) {
  if constexpr (std::is_same_v<P, simd::Avx512Softmax<float>>) update_avx512(u);
  else if constexpr (std::is_same_v<P, simd::Avx2Softmax<float>>) update_avx2(u);
  else update_sse2<typename P::T>(u);
}

// ---- one call's operands -----------------------------------------------------------------

template <class T>
struct Attn {
  const T *q, *k, *v;     // (B, T, H or Hk, D)
  const T *lse, *dout;    // backward: the forward's lse (B, H, T), dout (B, T, H, Dv)
  const T* Drow;          // backward: rowsum(dout * out), indexed like lse
  T *out, *lse_out;       // forward outputs
  T *dq, *dk, *dv;        // backward outputs
  int64_t B, T_, H, Hk, Dk, Dv, G;
  T ts;                   // the softmax scale
  bool causal;
  const int64_t* seg;     // (B * T) segment ids, or null
  const int64_t* kst;     // (B * T) first position of each token's segment, or null
  const T* q_row(int64_t b, int64_t t, int64_t h) const { return q + ((b * T_ + t) * H + h) * Dk; }
  const T* g_row(int64_t b, int64_t t, int64_t h) const {
    return dout + ((b * T_ + t) * H + h) * Dv;
  }
  const T* k_row(int64_t b, int64_t s, int64_t g) const { return k + ((b * T_ + s) * Hk + g) * Dk; }
  const T* v_row(int64_t b, int64_t s, int64_t g) const { return v + ((b * T_ + s) * Hk + g) * Dv; }
};

// Per-thread buffers.
template <class T>
struct Scratch {
  int64_t Tpad;
  std::vector<T> sbuf;  // forward: (QB, Tpad) scores, then P
  std::vector<T> kt;    // (Dk, KC) a key chunk transposed; forward: every chunk, c at c Dk KC
  std::vector<T> vt;    // (Dv, KC) a value chunk transposed
  std::vector<T> obuf;  // forward: (QB, Dv) out rows before 1 / l
  std::vector<T> sc, dp, p, ds;  // backward: (QB, KC) per query row of a block (P and dS 0
                                 // where not allowed, for dk and dv)
  std::vector<T> dkacc, dvacc;   // backward: (KC, Dk), (KC, Dv) a key chunk's sums
  std::vector<T> dqbuf;          // backward: (G, T, Dk) fused, or (QB, Dk)

  Scratch(int64_t Tn, int64_t Dk, int64_t Dv, int64_t dq_rows, bool forward)
      : Tpad((Tn + KC - 1) / KC * KC) {
    auto size = [](std::vector<T>& v, int64_t n) { v.assign(static_cast<size_t>(n), T(0)); };
    size(kt, forward ? Dk * Tpad : Dk * KC);
    size(vt, Dv * KC);
    size(dqbuf, dq_rows * Dk);
    if (forward) {
      size(sbuf, QB * Tpad);
      size(obuf, QB * Dv);
      return;
    }
    for (std::vector<T>* v : {&sc, &dp, &p, &ds}) size(*v, QB * KC);
    size(dkacc, KC * Dk);
    size(dvacc, KC * Dv);
  }
};

// ---- forward -------------------------------------------------------------------------------

// The key chunks [c0, c1) of kv head g transposed into kt: chunk c, (Dk, KC), at kt + c Dk KC.
template <class T>
void transpose_chunks(const Attn<T>& a, int64_t b, int64_t g, int64_t c0, int64_t c1, T* kt) {
  for (int64_t c = c0; c < c1; ++c) {
    const int64_t s0 = c * KC;
    transpose_chunk(a.k_row(b, s0, g), a.Hk * a.Dk, std::min<int64_t>(KC, a.T_ - s0), a.Dk,
                    kt + c * a.Dk * KC);
  }
}

// out (B, T, H, Dv), lse (B, H, T) of query block qb of head h, the keys' chunks transposed in
// w.kt: per query row, the scores of the allowed keys, their max m, l = sum exp(S - m), out =
// sum exp(S - m) v / l, lse = m + log l.
template <class P>
void forward_block(const Attn<typename P::T>& a, int64_t b, int64_t h, int64_t qb,
                   Scratch<typename P::T>& w) {
  using T = typename P::T;
  const T kNegInf = -std::numeric_limits<T>::infinity();
  const int64_t Tn = a.T_, H = a.H, g = h / a.G;
  const int64_t t0 = qb * QB, t1 = std::min(Tn, t0 + QB), nq = t1 - t0;
  const int64_t kend = a.causal ? t1 : Tn;
  int64_t kfirst = 0;  // the chunk of the tile's earliest segment start
  if (a.kst) {
    kfirst = Tn;
    for (int64_t t = t0; t < t1; ++t) kfirst = std::min(kfirst, a.kst[b * Tn + t]);
    kfirst = kfirst / KC * KC;
  }
  T* rows[QB];
  const T* coef[QB];
  int64_t lo[QB], hi[QB];
  // Scores of the block: S[i, s] = scale * q[t0 + i] . k[s], kfirst <= s < kend (all KC lanes
  // of a chunk; the ones past kend are not read).
  for (int64_t s0 = kfirst; s0 < kend; s0 += KC) {
    for (int64_t i = 0; i < nq; ++i) {
      rows[i] = w.sbuf.data() + i * w.Tpad + s0;
      coef[i] = a.q_row(b, t0 + i, h);
      lo[i] = 0;
      hi[i] = a.Dk;
    }
    update<P>(
        {rows, coef, lo, hi, static_cast<int>(nq), w.kt.data() + s0 * a.Dk, KC, KC, true, a.ts});
  }
  // Per row: P = exp(S - m) over its keys [ks, ks + n) (masked ones: exp(-inf) = 0).
  int nr = 0;
  int64_t row_of[QB];
  T m_of[QB], l_of[QB];
  for (int64_t i = 0; i < nq; ++i) {
    const int64_t t = t0 + i, row = (b * H + h) * Tn + t;
    const int64_t ks = a.kst ? a.kst[b * Tn + t] : 0;  // keys [ks, n) can be allowed
    const int64_t n = (a.causal ? t + 1 : Tn) - ks;
    T* __restrict srow = w.sbuf.data() + i * w.Tpad + ks;
    if (a.seg) {
      const int64_t* sg = a.seg + b * Tn + ks;
      for (int64_t s = 0; s < n; ++s)
        if (sg[s] != sg[t - ks]) srow[s] = kNegInf;
    }
    const T m = n > 0 ? row_max<P>(srow, n) : kNegInf;
    if (m == kNegInf) {  // nothing to attend to
      T* __restrict orow = a.out + ((b * Tn + t) * H + h) * a.Dv;
      for (int64_t d = 0; d < a.Dv; ++d) orow[d] = 0;
      a.lse_out[row] = m;
      continue;
    }
    exp_affine<P>(srow, T(1), m, n, srow);
    rows[nr] = w.obuf.data() + i * a.Dv;
    coef[nr] = w.sbuf.data() + i * w.Tpad;  // indexed by the key's position
    lo[nr] = ks;
    hi[nr] = ks + n;
    row_of[nr] = i;
    m_of[nr] = m;
    l_of[nr] = 0;
    ++nr;
  }
  // l = sum_s P[i, s], each row over its keys ascending, the rows' chains interleaved.
  if (nr > 0) {
    const int64_t s_begin = *std::min_element(lo, lo + nr), s_end = *std::max_element(hi, hi + nr);
    for (int64_t s = s_begin; s < s_end; ++s)
      for (int r = 0; r < nr; ++r)
        if (s >= lo[r] && s < hi[r]) l_of[r] += coef[r][s];
  }
  // out rows: sum_s P[i, s] v[s], keys ascending.
  update<P>({rows, coef, lo, hi, nr, a.v_row(b, 0, g), a.Hk * a.Dv, a.Dv, true, T(1)});
  for (int r = 0; r < nr; ++r) {
    const int64_t t = t0 + row_of[r];
    T* __restrict orow = a.out + ((b * Tn + t) * H + h) * a.Dv;
    const T* __restrict o = rows[r];
    const T inv = T(1) / l_of[r];
    for (int64_t d = 0; d < a.Dv; ++d) orow[d] = o[d] * inv;
    a.lse_out[(b * H + h) * Tn + t] = m_of[r] + std::log(l_of[r]);
  }
}

// Forward task: by_group, task = b * Hk + g, every query block of the group's heads over
// chunks transposed once; else task = (b * H + h) * nqb + qb, one block.
template <class P>
void forward_task(const Attn<typename P::T>& a, int64_t task, bool by_group,
                  Scratch<typename P::T>& w) {
  const int64_t Tn = a.T_, nqb = (Tn + QB - 1) / QB, nkc = (Tn + KC - 1) / KC;
  if (by_group) {
    const int64_t g = task % a.Hk, b = task / a.Hk;
    transpose_chunks(a, b, g, 0, nkc, w.kt.data());
    for (int64_t h = g * a.G; h < (g + 1) * a.G; ++h)
      for (int64_t qb = 0; qb < nqb; ++qb) forward_block<P>(a, b, h, qb, w);
    return;
  }
  const int64_t qb = task % nqb, h = task / nqb % a.H, b = task / nqb / a.H;
  const int64_t t1 = std::min(Tn, qb * QB + QB), kend = a.causal ? t1 : Tn;
  int64_t kfirst = 0;
  if (a.kst) {
    kfirst = Tn;
    for (int64_t t = qb * QB; t < t1; ++t) kfirst = std::min(kfirst, a.kst[b * Tn + t]);
  }
  transpose_chunks(a, b, h / a.G, kfirst / KC, (kend + KC - 1) / KC, w.kt.data());
  forward_block<P>(a, b, h, qb, w);
}

// ---- backward ------------------------------------------------------------------------------

// Query rows [tb, tb + nq) of head h against the key chunk [s0, s0 + nk) of its kv head g
// (w.kt, w.vt hold it transposed): P and dS of the allowed pairs (row i can see the chunk's
// first n[i] keys; masked ones among them get dS = 0), then dq_rows[i] += dS[i, :n[i]] k
// (when dq_rows is not null), and w.dvacc[j] += sum_i P[i, j] dout[i], w.dkacc[j] +=
// sum_i dS[i, j] q[i] over the nq rows ascending (when kv; 0 where not allowed).
template <class P>
void grad_block(const Attn<typename P::T>& a, int64_t b, int64_t h, int64_t tb, int64_t nq,
                int64_t s0, int64_t nk, typename P::T* const* dq_rows, bool kv,
                Scratch<typename P::T>& w) {
  using T = typename P::T;
  const T kNegInf = -std::numeric_limits<T>::infinity();
  const int64_t Tn = a.T_, g = h / a.G;
  const int64_t* sg = a.seg ? a.seg + b * Tn : nullptr;
  int64_t n[QB];
  T* rows[QB];
  const T* coef[QB];
  int64_t lo[QB], hi[QB];
  int act[QB];
  int na = 0;
  for (int64_t i = 0; i < nq; ++i) {
    const int64_t t = tb + i;
    const T L = a.lse[(b * a.H + h) * Tn + t];
    n[i] = L == kNegInf || (sg && a.kst[b * Tn + t] >= s0 + nk) ? 0
           : a.causal ? std::max<int64_t>(0, std::min<int64_t>(nk, t + 1 - s0))
                      : nk;
    if (n[i] > 0) act[na++] = static_cast<int>(i);
  }
  if (na > 0) {
    // S (unscaled) and dP of the active rows over the chunk's KC lanes.
    for (int r = 0; r < na; ++r) {
      rows[r] = w.sc.data() + act[r] * KC;
      coef[r] = a.q_row(b, tb + act[r], h);
      lo[r] = 0;
      hi[r] = a.Dk;
    }
    update<P>({rows, coef, lo, hi, na, w.kt.data(), KC, KC, true, T(1)});
    for (int r = 0; r < na; ++r) {
      rows[r] = w.dp.data() + act[r] * KC;
      coef[r] = a.g_row(b, tb + act[r], h);
      hi[r] = a.Dv;
    }
    update<P>({rows, coef, lo, hi, na, w.vt.data(), KC, KC, true, T(1)});
    for (int r = 0; r < na; ++r) {
      const int64_t i = act[r], t = tb + i, row = (b * a.H + h) * Tn + t;
      T* __restrict p = w.p.data() + i * KC;
      T* __restrict ds = w.ds.data() + i * KC;
      const T* __restrict dp = w.dp.data() + i * KC;
      exp_affine<P>(w.sc.data() + i * KC, a.ts, a.lse[row], KC, p);
      const T Dt = a.Drow[row];
      for (int j = 0; j < KC; ++j) ds[j] = p[j] * (dp[j] - Dt);
      if (sg)
        for (int64_t j = 0; j < n[i]; ++j)
          if (sg[s0 + j] != sg[t]) p[j] = ds[j] = 0;
      if (kv)  // the keys past the row's allowed ones take no part in dk, dv
        for (int64_t j = n[i]; j < KC; ++j) p[j] = ds[j] = 0;
    }
    if (dq_rows) {  // dq[t] += dS[t, s] k[s], s < s0 + n ascending
      for (int r = 0; r < na; ++r) {
        rows[r] = dq_rows[act[r]];
        coef[r] = w.ds.data() + act[r] * KC;
        hi[r] = n[act[r]];
      }
      update<P>({rows, coef, lo, hi, na, a.k_row(b, s0, g), a.Hk * a.Dk, a.Dk, false, T(1)});
    }
  }
  if (!kv) return;
  // dv[j] += sum_i P[i, j] dout[i], dk[j] += sum_i dS[i, j] q[i]: the coefficients are the
  // columns of P and dS (rows of no allowed key: all 0).
  for (int64_t i = 0; i < nq; ++i)
    if (n[i] == 0) {
      std::fill(w.p.data() + i * KC, w.p.data() + (i + 1) * KC, T(0));
      std::fill(w.ds.data() + i * KC, w.ds.data() + (i + 1) * KC, T(0));
    }
  T* krows[KC];
  const T* kcoef[KC];
  int64_t klo[KC], khi[KC];
  for (int64_t j = 0; j < nk; ++j) {
    krows[j] = w.dvacc.data() + j * a.Dv;
    kcoef[j] = w.p.data() + j;
    klo[j] = 0;
    khi[j] = nq;
  }
  const int nkr = static_cast<int>(nk);
  update<P>(
      {krows, kcoef, klo, khi, nkr, a.g_row(b, tb, h), a.H * a.Dv, a.Dv, false, T(1), KC});
  for (int64_t j = 0; j < nk; ++j) {
    krows[j] = w.dkacc.data() + j * a.Dk;
    kcoef[j] = w.ds.data() + j;
  }
  update<P>(
      {krows, kcoef, klo, khi, nkr, a.q_row(b, tb, h), a.H * a.Dk, a.Dk, false, T(1), KC});
}

// dq of task = (b * H + h) * nqb + qb (the pass apart from dk/dv): over key chunks
// ascending, dq = scale * sum_s dS[t, s] k[s].
template <class P>
void dq_task(const Attn<typename P::T>& a, int64_t task, Scratch<typename P::T>& w) {
  using T = typename P::T;
  const int64_t Tn = a.T_, nqb = (Tn + QB - 1) / QB;
  const int64_t qb = task % nqb, h = task / nqb % a.H, b = task / nqb / a.H, g = h / a.G;
  const int64_t t0 = qb * QB, t1 = std::min(Tn, t0 + QB), nq = t1 - t0;
  const int64_t kend = a.causal ? t1 : Tn;
  T* dq_rows[QB];
  for (int64_t i = 0; i < nq; ++i) {
    dq_rows[i] = w.dqbuf.data() + i * a.Dk;
    std::fill(dq_rows[i], dq_rows[i] + a.Dk, T(0));
  }
  for (int64_t s0 = 0; s0 < kend; s0 += KC) {
    const int64_t nk = std::min<int64_t>(KC, kend - s0);
    transpose_chunk(a.k_row(b, s0, g), a.Hk * a.Dk, nk, a.Dk, w.kt.data());
    transpose_chunk(a.v_row(b, s0, g), a.Hk * a.Dv, nk, a.Dv, w.vt.data());
    grad_block<P>(a, b, h, t0, nq, s0, nk, dq_rows, false, w);
  }
  for (int64_t i = 0; i < nq; ++i) {
    T* __restrict dqr = a.dq + ((b * Tn + t0 + i) * a.H + h) * a.Dk;
    for (int64_t d = 0; d < a.Dk; ++d) dqr[d] = dq_rows[i][d] * a.ts;
  }
}

// dk, dv of task = (b * Hk + g) * nkb + kb, or (fused) b * Hk + g over all its key chunks with
// dq as well: per key chunk, over the group's query heads h ascending and the query rows t
// that see the chunk, ascending.
template <class P>
void kv_task(const Attn<typename P::T>& a, int64_t task, bool fused,
             Scratch<typename P::T>& w) {
  using T = typename P::T;
  const int64_t Tn = a.T_, G = a.G, nkb = (Tn + KC - 1) / KC;
  const int64_t per = fused ? 1 : nkb;
  const int64_t g = task / per % a.Hk, b = task / per / a.Hk;
  const int64_t kb_begin = fused ? 0 : task % nkb, kb_end = fused ? nkb : kb_begin + 1;
  if (fused) std::fill(w.dqbuf.data(), w.dqbuf.data() + G * Tn * a.Dk, T(0));
  T* dq_rows[QB];
  for (int64_t kb = kb_begin; kb < kb_end; ++kb) {
    const int64_t s0 = kb * KC, nk = std::min<int64_t>(KC, Tn - s0);
    transpose_chunk(a.k_row(b, s0, g), a.Hk * a.Dk, nk, a.Dk, w.kt.data());
    transpose_chunk(a.v_row(b, s0, g), a.Hk * a.Dv, nk, a.Dv, w.vt.data());
    std::fill(w.dkacc.data(), w.dkacc.data() + KC * a.Dk, T(0));
    std::fill(w.dvacc.data(), w.dvacc.data() + KC * a.Dv, T(0));
    for (int64_t h = g * G; h < (g + 1) * G; ++h)
      for (int64_t tb = a.causal ? s0 : 0; tb < Tn; tb += QB) {
        const int64_t nq = std::min<int64_t>(QB, Tn - tb);
        if (fused)
          for (int64_t i = 0; i < nq; ++i)
            dq_rows[i] = w.dqbuf.data() + ((h - g * G) * Tn + tb + i) * a.Dk;
        grad_block<P>(a, b, h, tb, nq, s0, nk, fused ? dq_rows : nullptr, true, w);
      }
    for (int64_t j = 0; j < nk; ++j) {
      T* __restrict dkr = a.dk + ((b * Tn + s0 + j) * a.Hk + g) * a.Dk;
      T* __restrict dvr = a.dv + ((b * Tn + s0 + j) * a.Hk + g) * a.Dv;
      const T* __restrict ka = w.dkacc.data() + j * a.Dk;
      const T* __restrict va = w.dvacc.data() + j * a.Dv;
      for (int64_t d = 0; d < a.Dk; ++d) dkr[d] = ka[d] * a.ts;
      for (int64_t d = 0; d < a.Dv; ++d) dvr[d] = va[d];
    }
  }
  if (fused)
    for (int64_t h = g * G; h < (g + 1) * G; ++h)
      for (int64_t t = 0; t < Tn; ++t) {
        T* __restrict dqr = a.dq + ((b * Tn + t) * a.H + h) * a.Dk;
        const T* __restrict acc = w.dqbuf.data() + ((h - g * G) * Tn + t) * a.Dk;
        for (int64_t d = 0; d < a.Dk; ++d) dqr[d] = acc[d] * a.ts;
      }
}

// ---- the per-ISA entry points ---------------------------------------------------------------

enum class Pass { kForward, kDq, kKv };

// One task of a pass; `flag`: forward by (b, kv head), dk/dv with dq fused.
template <class P>
void run_task(const Attn<typename P::T>& a, Pass pass, int64_t task, bool flag,
              Scratch<typename P::T>& w) {
  switch (pass) {
    case Pass::kForward: return forward_task<P>(a, task, flag, w);
    case Pass::kDq: return dq_task<P>(a, task, w);
    case Pass::kKv: return kv_task<P>(a, task, flag, w);
  }
}

// `flatten` inlines the policy's target code into them (the tiles stay calls: update).
template <class P>
__attribute__((flatten)) void task_sse2(const Attn<typename P::T>& a, Pass pass, int64_t task,
                                        bool flag, Scratch<typename P::T>& w) {
  run_task<P>(a, pass, task, flag, w);
}
R1_TARGET_AVX2 __attribute__((flatten)) void task_avx2(const Attn<float>& a, Pass pass,
                                                       int64_t task, bool flag,
                                                       Scratch<float>& w) {
  run_task<simd::Avx2Softmax<float>>(a, pass, task, flag, w);
}
R1_TARGET_AVX512 __attribute__((flatten)) void task_avx512(const Attn<float>& a, Pass pass,
                                                           int64_t task, bool flag,
                                                           Scratch<float>& w) {
  run_task<simd::Avx512Softmax<float>>(a, pass, task, flag, w);
}

template <class T>
using TaskFn = void (*)(const Attn<T>&, Pass, int64_t, bool, Scratch<T>&);

// f32: the process's ISA; f64: sse2 (the scalar code's bits, std::exp).
template <class T>
TaskFn<T> task_fn() {
  if constexpr (std::is_same_v<T, float>) {
    switch (softmax_isa()) {
      case SoftmaxIsa::kAvx512: return task_avx512;
      case SoftmaxIsa::kAvx2: return task_avx2;
      default: break;
    }
  }
  return task_sse2<simd::Sse2Softmax<T>>;
}

template <class T>
Attn<T> operands(const AttentionShape& s, const Tensor& q, const Tensor& k, const Tensor& v,
                 double scale, bool causal, const std::vector<int64_t>& seg,
                 const std::vector<int64_t>& kst) {
  Attn<T> a{};
  a.q = q.data<T>();
  a.k = k.data<T>();
  a.v = v.data<T>();
  a.B = s.B, a.T_ = s.T, a.H = s.H, a.Hk = s.Hk, a.Dk = s.Dk, a.Dv = s.Dv, a.G = s.group();
  a.ts = T(scale);
  a.causal = causal;
  a.seg = seg.empty() ? nullptr : seg.data();
  a.kst = kst.empty() ? nullptr : kst.data();
  return a;
}

void attention_forward_cpu(const Tensor& q, const Tensor& k, const Tensor& v,
                           const Tensor& segments, double scale, bool causal, Tensor& out,
                           Tensor& lse) {
  const AttentionShape s =
      check_attention("attention_forward", q, k, v, segments, out, lse, cpu_float(q.dtype()));
  dispatch_float(q.dtype(), "attention_forward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const std::vector<int64_t> seg = segment_ids(segments, s.B * s.T);
    const std::vector<int64_t> kst = segment_starts(seg, s.B, s.T);
    Attn<T> a = operands<T>(s, q, k, v, scale, causal, seg, kst);
    a.out = out.data<T>();
    a.lse_out = lse.data<T>();
    const TaskFn<T> run = task_fn<T>();
    // Per (b, kv head) when that gives every thread two tasks (each chunk transposed once),
    // else per (b, h, query block): the same rows computed the same way either way.
    const bool par = worth_parallel(s.B * s.H * s.T * s.T * (s.Dk + s.Dv));
    const bool by_group = !par || s.B * s.Hk >= 2 * static_cast<int64_t>(omp_get_max_threads());
    const int64_t tasks = by_group ? s.B * s.Hk : s.B * s.H * ((s.T + QB - 1) / QB);
#pragma omp parallel if (par)
    {
      Scratch<T> st(s.T, s.Dk, s.Dv, 0, true);
#pragma omp for schedule(static)
      for (int64_t task = 0; task < tasks; ++task) run(a, Pass::kForward, task, by_group, st);
    }
  });
}

void attention_backward_cpu(const Tensor& q, const Tensor& k, const Tensor& v,
                            const Tensor& segments, const Tensor& out, const Tensor& lse,
                            const Tensor& dout, double scale, bool causal, Tensor& dq, Tensor& dk,
                            Tensor& dv) {
  const char* what = "attention_backward";
  const AttentionShape s = check_attention(what, q, k, v, segments, out, lse, cpu_float(q.dtype()));
  attention_detail::check_tensor(what, "dout", dout, out.shape(), out.dtype(), out.device());
  check_attention_grads(what, q, k, v, dq, dk, dv);
  dispatch_float(q.dtype(), what, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const std::vector<int64_t> seg = segment_ids(segments, s.B * s.T);
    const std::vector<int64_t> kst = segment_starts(seg, s.B, s.T);
    Attn<T> a = operands<T>(s, q, k, v, scale, causal, seg, kst);
    a.lse = lse.data<T>();
    a.dout = dout.data<T>();
    a.dq = dq.data<T>();
    a.dk = dk.data<T>();
    a.dv = dv.data<T>();
    const int64_t Tn = s.T, rows = s.B * s.H * Tn;
    const bool par = worth_parallel(rows * Tn * (s.Dk + s.Dv));
    // D (B, H, T) = rowsum(dout * out), indexed like lse.
    std::vector<T> Drow(static_cast<size_t>(rows));
    const T* po = out.data<T>();
#pragma omp parallel for if (par)
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t t = row % Tn, h = row / Tn % s.H, b = row / Tn / s.H;
      const int64_t at = ((b * Tn + t) * s.H + h) * s.Dv;
      Drow[row] = dot(a.dout + at, po + at, s.Dv);
    }
    a.Drow = Drow.data();
    const TaskFn<T> run = task_fn<T>();
    // With enough (b, kv head) tasks for the threads, dq is fused into the dk/dv pass (per
    // (b, g), key chunks ascending): the same terms summed in the same order, so the result
    // is the same bits either way.
    const bool fused = !par || s.B * s.Hk >= 2 * static_cast<int64_t>(omp_get_max_threads());
    if (!fused) {
      const int64_t qtasks = s.B * s.H * ((Tn + QB - 1) / QB);
#pragma omp parallel if (par)
      {
        Scratch<T> st(Tn, s.Dk, s.Dv, QB, false);
#pragma omp for schedule(static)
        for (int64_t task = 0; task < qtasks; ++task) run(a, Pass::kDq, task, false, st);
      }
    }
    const int64_t nkb = (Tn + KC - 1) / KC;
    const int64_t ktasks = fused ? s.B * s.Hk : s.B * s.Hk * nkb;
#pragma omp parallel if (par)
    {
      Scratch<T> st(Tn, s.Dk, s.Dv, fused ? s.group() * Tn : 0, false);
#pragma omp for schedule(static)
      for (int64_t task = 0; task < ktasks; ++task) run(a, Pass::kKv, task, fused, st);
    }
  });
}

}  // namespace

R1_REGISTER_KERNEL(attention_forward, CPU, attention_forward_cpu);
R1_REGISTER_KERNEL(attention_backward, CPU, attention_backward_cpu);

}  // namespace r1::cpu
