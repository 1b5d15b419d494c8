// The register tile of the CPU attention kernels (kernels/cpu/attention.cc): every product in
// them (scores q k^T and dout v^T, out += P v, dq += dS k, dk += dS^T q, dv += P^T dout) is
//   out[a][c] = (zero_init ? 0 : out[a][c]) + sum_{i = lo[a]}^{hi[a] - 1} coef[a][i] x[i][c]
// for a few rows a, every element one chain over i ascending (a multiply-add per term: fused
// on the FMA ISAs, a multiply then an add on sse2), optionally times `scale` at the end.
// The tile holds up to kMaxRows rows x kMaxVecs vectors of columns in registers and walks i
// once for all its rows: the rows' chains interleave, so the FMA latency is hidden, and each
// chain is the one a row alone would compute. Rows whose ranges differ (a causal block's
// diagonal, segment starts) run their common part unchecked and the ragged ends with a
// per-row test. Written once over a vector policy of kernels/cpu/simd_softmax.h; compiled
// per ISA by the kernels' `flatten` entry points. With them, the rows' softmax pieces (max,
// exp(a x - c)) over the same policies. Included by attention.cc only.
#pragma once
#include <algorithm>
#include <cstdint>
#include <limits>

#include "kernels/cpu/simd_softmax.h"

namespace r1::cpu::attention_tiles {

constexpr int kMaxRows = 8;
constexpr int kMaxVecs = 4;

template <class T>
struct RowsUpdate {
  T* const* out;          // rows a: out[a][c], c < ncols
  const T* const* coef;   // coef[a][i * cstride], i in [lo[a], hi[a])
  const int64_t* lo;
  const int64_t* hi;
  int rows;
  const T* x;             // x[i][c] at x + i * ldx + c
  int64_t ldx;
  int64_t ncols;
  bool zero_init;
  T scale;                // 1: none (1 * y == y, so skipping it changes no bit)
  int64_t cstride = 1;    // a column of a row-major matrix as coefficients: its row stride
};

// Rows [a0, a0 + A) of u, columns [c0, c0 + NV lanes) of which the last vector holds
// `last` <= L columns (kPart: last < L; its lanes past the columns load as 0, never stored).
template <class P, int A, int NV, bool kPart>
inline void rows_tile(const RowsUpdate<typename P::T>& u, int a0, int64_t c0) {
  using T = typename P::T;
  using V = typename P::V;
  constexpr int L = P::kLanes;
  const int last = kPart ? static_cast<int>(u.ncols - c0 - (NV - 1) * L) : L;
  const int64_t cs = u.cstride;
  auto load_x = [&](V* xv, const T* p) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      if (kPart && v == NV - 1) P::load_part(xv[v], p + v * L, last);
      else P::load(xv[v], p + v * L);
    }
  };
  V acc[A][NV];
  const T* coef[A];
  int64_t lo[A], hi[A];
  int64_t jl = INT64_MIN, jh = INT64_MAX, first = INT64_MAX, end = INT64_MIN;
#pragma GCC unroll 8
  for (int a = 0; a < A; ++a) {
    coef[a] = u.coef[a0 + a];
    lo[a] = u.lo[a0 + a];
    hi[a] = u.hi[a0 + a];
    jl = std::max(jl, lo[a]);
    jh = std::min(jh, hi[a]);
    first = std::min(first, lo[a]);
    end = std::max(end, hi[a]);
    if (u.zero_init) {
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) P::zero(acc[a][v]);
    } else {
      load_x(acc[a], u.out[a0 + a] + c0);
    }
  }
  // Three spans of i: [first, jl) and [jh, end) where only some rows take part (each row's
  // term only inside its range), [jl, jh) where all do (when jl < jh; else one ragged span).
  const int64_t bounds[4] = {first, jl < jh ? jl : end, jl < jh ? jh : end, end};
  for (int span = 0; span < 3; ++span) {
    const bool all = span == 1;
    for (int64_t i = bounds[span]; i < bounds[span + 1]; ++i) {
      V xv[NV];
      load_x(xv, u.x + i * u.ldx + c0);
#pragma GCC unroll 8
      for (int a = 0; a < A; ++a) {
        if (!all && (i < lo[a] || i >= hi[a])) continue;
        V c;
        P::bcast(c, coef[a][i * cs]);
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v) P::madd(acc[a][v], c, xv[v]);
      }
    }
  }
  V s;
  P::bcast(s, u.scale);
#pragma GCC unroll 8
  for (int a = 0; a < A; ++a) {
    T* o = u.out[a0 + a] + c0;
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      if (u.scale != T(1)) P::mul(acc[a][v], s);
      if (kPart && v == NV - 1) P::store_part(o + v * L, acc[a][v], last);
      else P::store(o + v * L, acc[a][v]);
    }
  }
}

// rows_tile<A, NV, kPart> for a runtime A in [1, kMaxRows] and NV in [1, kMaxVecs].
// (Shapes over the largest budget, 16 accumulators, are never chosen: not instantiated.)
template <class P, int A, int NV>
inline void rows_tile_part(const RowsUpdate<typename P::T>& u, int a0, int64_t c0, bool part) {
  if constexpr (A * NV <= 16) {
    if (part) rows_tile<P, A, NV, true>(u, a0, c0);
    else rows_tile<P, A, NV, false>(u, a0, c0);
  }
}
template <class P, int A, int NV = 1>
inline void rows_tile_vecs(const RowsUpdate<typename P::T>& u, int a0, int64_t c0, int nv,
                           bool part) {
  if constexpr (NV < kMaxVecs) {
    if (nv == NV) return rows_tile_part<P, A, NV>(u, a0, c0, part);
    return rows_tile_vecs<P, A, NV + 1>(u, a0, c0, nv, part);
  } else {
    return rows_tile_part<P, A, NV>(u, a0, c0, part);
  }
}
template <class P, int A = 1>
inline void rows_tile_any(const RowsUpdate<typename P::T>& u, int a, int a0, int64_t c0, int nv,
                          bool part) {
  if constexpr (A < kMaxRows) {
    if (a == A) return rows_tile_vecs<P, A>(u, a0, c0, nv, part);
    return rows_tile_any<P, A + 1>(u, a, a0, c0, nv, part);
  } else {
    return rows_tile_vecs<P, A>(u, a0, c0, nv, part);
  }
}

// The whole update: row groups of up to kMaxRows, each over column blocks of up to kMaxVecs
// vectors, within the policy's register budget (16 accumulators with 32 vector registers, 12
// with 16). The blocking decides which instructions compute an element, never how.
template <class P>
void rows_update(const RowsUpdate<typename P::T>& u) {
  constexpr int L = P::kLanes;
  constexpr int kBudget = sizeof(typename P::V) == 64 ? 16 : 12;
  const int64_t vecs = (u.ncols + L - 1) / L;
  const int nvb = static_cast<int>(std::min<int64_t>(vecs, kMaxVecs));
  const int rmax = std::max(1, std::min(kMaxRows, kBudget / nvb));
  for (int a0 = 0; a0 < u.rows; a0 += rmax) {
    const int a = std::min(rmax, u.rows - a0);
    for (int64_t c0 = 0; c0 < u.ncols; c0 += int64_t{nvb} * L) {
      const int64_t cols = std::min<int64_t>(int64_t{nvb} * L, u.ncols - c0);
      const int nv = static_cast<int>((cols + L - 1) / L);
      rows_tile_any<P>(u, a, a0, c0, nv, cols < int64_t{nv} * L);
    }
  }
}

// ---- the per-row softmax pieces -----------------------------------------------------------

// max of x[0, n) (exact, so any order); -inf when n = 0.
template <class P>
typename P::T row_max(const typename P::T* x, int64_t n) {
  using T = typename P::T;
  using V = typename P::V;
  constexpr int L = P::kLanes;
  T m = -std::numeric_limits<T>::infinity();
  int64_t j = 0;
  if (n >= L) {
    V vm, xv;
    P::bcast(vm, m);
    for (; j + L <= n; j += L) {
      P::load(xv, x + j);
      P::max(vm, xv);
    }
    alignas(64) T t[L];
    P::store(t, vm);
    for (int l = 0; l < L; ++l) m = std::max(m, t[l]);
  }
  for (; j < n; ++j) m = std::max(m, x[j]);
  return m;
}

// y[j] = exp(a x[j] - c), j < n (x may be y): -c + a x is one multiply-add (fused on the FMA
// ISAs; on sse2 a x rounded, then - c, as the scalar a * x - c).
template <class P>
void exp_affine(const typename P::T* x, typename P::T a, typename P::T c, int64_t n,
                typename P::T* y) {
  using V = typename P::V;
  constexpr int L = P::kLanes;
  V va, vnc;
  P::bcast(va, a);
  P::bcast(vnc, -c);
  for (int64_t j = 0; j < n; j += L) {
    const int m = static_cast<int>(std::min<int64_t>(L, n - j));
    V xv, e = vnc;
    load_n<P>(xv, x + j, m);
    P::madd(e, va, xv);
    P::exp(e);
    store_n<P>(y + j, e, m);
  }
}

}  // namespace r1::cpu::attention_tiles
