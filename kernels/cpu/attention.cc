// CPU: attention forward and backward (contracts in engine/kernels_attention.h), the reference
// backend. f32 or f64, computed in that type. Tiled: a block of QB query rows against chunks
// of KC keys, the chunk's keys (and values) transposed to (D, KC) so that the score loops run
// over the KC keys of a chunk in vector lanes, each score summed over d ascending; the
// forward keeps a (QB, T) block of scores per thread, never a (T, T) matrix. f32 uses a
// branch-free polynomial exp (fast_expf below, < 1 ulp), f64 std::exp; the f32 inner loops
// are SSE2 intrinsics (the x86-64 baseline) doing the scalar code's operations in its order,
// with the scalar code as fallback. OpenMP: forward over (b, h, query block); backward dk/dv
// over (b, kv head, key chunk) and dq over (b, h, query block), or, when B * Hk gives every
// thread two tasks, dq fused into a (b, kv head) task over its key chunks ascending (the same
// terms in the same order: the same bits). Each output row is owned by one task and summed in
// a fixed order (keys ascending; query heads of the group, then query rows, ascending), so
// results do not depend on the thread count or on B.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <map>
#include <vector>

#include <omp.h>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "engine/kernels_attention.h"
#include "kernels/cpu/cpu_common.h"

namespace r1::cpu {
namespace {

constexpr int64_t QB = 16;  // query rows per forward / dq task
constexpr int KC = 32;      // keys per chunk (the vector-lane dimension of the score tiles)

// exp for f32, branch-free: x = n ln2 + r, |r| <= ln2 / 2 (Cody-Waite two-part ln2), e^r by
// the Cephes polynomial, times 2^n built in the exponent bits. Max relative error vs exp in
// double, over every float in [-87.33, 88]: 8.2e-8 (0.99 ulp of the exact value). x < -87.33
// (ln of the smallest normal; -inf included) gives 0 (no denormals), x > 88 gives exp(88);
// NaN propagates.
inline float fast_expf(float x) {
  constexpr float kLo = -87.33654475f, kHi = 88.0f;
  float xc = x < kLo ? kLo : x;
  xc = xc > kHi ? kHi : xc;
  const float n = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;  // round to nearest
  float r = xc - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  float y = 1.9875691500e-4f;
  y = y * r + 1.3981999507e-3f;
  y = y * r + 8.3334519073e-3f;
  y = y * r + 4.1665795894e-2f;
  y = y * r + 1.6666665459e-1f;
  y = y * r + 5.0000001201e-1f;
  y = y * (r * r) + r + 1.0f;
  const float s = std::bit_cast<float>((static_cast<int32_t>(n) + 127) << 23);
  const float e = y * s;
  return x < kLo ? 0.0f : e;
}

template <class T>
inline T exp_t(T x) {
  if constexpr (std::is_same_v<T, float>)
    return fast_expf(x);
  else
    return std::exp(x);
}

#if defined(__SSE2__)
// fast_expf on 4 lanes, the same operations in the same order (so bit-identical to it).
inline __m128 fast_expf4(__m128 x) {
  const __m128 lo = _mm_set1_ps(-87.33654475f);
  __m128 xc = _mm_max_ps(lo, x);  // lo > x ? lo : x (NaN x kept)
  xc = _mm_min_ps(_mm_set1_ps(88.0f), xc);
  const __m128 magic = _mm_set1_ps(12582912.0f);
  const __m128 n =
      _mm_sub_ps(_mm_add_ps(_mm_mul_ps(xc, _mm_set1_ps(1.44269504088896341f)), magic), magic);
  __m128 r = _mm_sub_ps(xc, _mm_mul_ps(n, _mm_set1_ps(0.693359375f)));
  r = _mm_sub_ps(r, _mm_mul_ps(n, _mm_set1_ps(-2.12194440e-4f)));
  __m128 y = _mm_set1_ps(1.9875691500e-4f);
  y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(1.3981999507e-3f));
  y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(8.3334519073e-3f));
  y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(4.1665795894e-2f));
  y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(1.6666665459e-1f));
  y = _mm_add_ps(_mm_mul_ps(y, r), _mm_set1_ps(5.0000001201e-1f));
  y = _mm_add_ps(_mm_add_ps(_mm_mul_ps(y, _mm_mul_ps(r, r)), r), _mm_set1_ps(1.0f));
  const __m128i e = _mm_slli_epi32(_mm_add_epi32(_mm_cvttps_epi32(n), _mm_set1_epi32(127)), 23);
  const __m128 res = _mm_mul_ps(y, _mm_castsi128_ps(e));
  return _mm_andnot_ps(_mm_cmplt_ps(x, lo), res);  // x < lo: 0
}
#endif

// y[j] = exp(a * x[j] - c), j < n.
template <class T>
inline void exp_affine(const T* x, T a, T c, int64_t n, T* y) {  // x may be y
  int64_t j = 0;
#if defined(__SSE2__)
  if constexpr (std::is_same_v<T, float>) {
    const __m128 va = _mm_set1_ps(a), vc = _mm_set1_ps(c);
    for (; j + 4 <= n; j += 4)
      _mm_storeu_ps(y + j, fast_expf4(_mm_sub_ps(_mm_mul_ps(va, _mm_loadu_ps(x + j)), vc)));
  }
#endif
  for (; j < n; ++j) y[j] = exp_t<T>(a * x[j] - c);
}

// max of x[0, n) (exact, so any order); -inf when n = 0.
template <class T>
inline T row_max(const T* __restrict x, int64_t n) {
  T m = -std::numeric_limits<T>::infinity();
  int64_t j = 0;
#if defined(__SSE2__)
  if constexpr (std::is_same_v<T, float>) {
    if (n >= 4) {
      __m128 vm = _mm_set1_ps(m);
      for (; j + 4 <= n; j += 4) vm = _mm_max_ps(vm, _mm_loadu_ps(x + j));
      alignas(16) float t[4];
      _mm_store_ps(t, vm);
      m = std::max(std::max(t[0], t[1]), std::max(t[2], t[3]));
    }
  }
#endif
  for (; j < n; ++j) m = std::max(m, x[j]);
  return m;
}

// xt (D, KC) <- rows src[j * stride + d] of nk <= KC keys, the lanes past nk zero.
template <class T>
inline void transpose_chunk(const T* __restrict src, int64_t stride, int64_t nk, int64_t D,
                            T* __restrict xt) {
  for (int64_t d = 0; d < D; ++d) {
    T* __restrict o = xt + d * KC;
    for (int64_t j = 0; j < nk; ++j) o[j] = src[j * stride + d];
    for (int64_t j = nk; j < KC; ++j) o[j] = 0;
  }
}

// acc[j] = sum_d x[d] xt[d, j], d ascending, for the KC lanes.
template <class T>
inline void chunk_dot(const T* __restrict x, const T* __restrict xt, int64_t D,
                      T* __restrict acc) {
  T a[KC] = {};
  for (int64_t d = 0; d < D; ++d) {
    const T xd = x[d];
    const T* __restrict r = xt + d * KC;
    for (int j = 0; j < KC; ++j) a[j] += xd * r[j];
  }
  for (int j = 0; j < KC; ++j) acc[j] = a[j];
}

#if defined(__SSE2__)
template <>
inline void chunk_dot<float>(const float* __restrict x, const float* __restrict xt, int64_t D,
                             float* __restrict acc) {
  static_assert(KC == 32);
  __m128 a0 = _mm_setzero_ps(), a1 = a0, a2 = a0, a3 = a0, a4 = a0, a5 = a0, a6 = a0, a7 = a0;
  for (int64_t d = 0; d < D; ++d) {
    const __m128 xd = _mm_set1_ps(x[d]);
    const float* __restrict r = xt + d * KC;
    a0 = _mm_add_ps(a0, _mm_mul_ps(xd, _mm_loadu_ps(r + 0)));
    a1 = _mm_add_ps(a1, _mm_mul_ps(xd, _mm_loadu_ps(r + 4)));
    a2 = _mm_add_ps(a2, _mm_mul_ps(xd, _mm_loadu_ps(r + 8)));
    a3 = _mm_add_ps(a3, _mm_mul_ps(xd, _mm_loadu_ps(r + 12)));
    a4 = _mm_add_ps(a4, _mm_mul_ps(xd, _mm_loadu_ps(r + 16)));
    a5 = _mm_add_ps(a5, _mm_mul_ps(xd, _mm_loadu_ps(r + 20)));
    a6 = _mm_add_ps(a6, _mm_mul_ps(xd, _mm_loadu_ps(r + 24)));
    a7 = _mm_add_ps(a7, _mm_mul_ps(xd, _mm_loadu_ps(r + 28)));
  }
  _mm_storeu_ps(acc + 0, a0);
  _mm_storeu_ps(acc + 4, a1);
  _mm_storeu_ps(acc + 8, a2);
  _mm_storeu_ps(acc + 12, a3);
  _mm_storeu_ps(acc + 16, a4);
  _mm_storeu_ps(acc + 20, a5);
  _mm_storeu_ps(acc + 24, a6);
  _mm_storeu_ps(acc + 28, a7);
}
#endif

// acc[d] += sum_{j < n} c[j] x[j * ldx + d] for d < D, each element summed over j ascending
// (a multiply, then an add, per term).
template <class T>
inline void axpy_many(T* __restrict acc, const T* __restrict c, const T* __restrict x,
                      int64_t ldx, int64_t n, int64_t D) {
  int64_t d0 = 0;
#if defined(__SSE2__)
  if constexpr (std::is_same_v<T, float>) {
    for (; d0 + 16 <= D; d0 += 16) {
      __m128 a0 = _mm_loadu_ps(acc + d0), a1 = _mm_loadu_ps(acc + d0 + 4),
             a2 = _mm_loadu_ps(acc + d0 + 8), a3 = _mm_loadu_ps(acc + d0 + 12);
      for (int64_t j = 0; j < n; ++j) {
        const __m128 cj = _mm_set1_ps(c[j]);
        const float* __restrict r = x + j * ldx + d0;
        a0 = _mm_add_ps(a0, _mm_mul_ps(cj, _mm_loadu_ps(r)));
        a1 = _mm_add_ps(a1, _mm_mul_ps(cj, _mm_loadu_ps(r + 4)));
        a2 = _mm_add_ps(a2, _mm_mul_ps(cj, _mm_loadu_ps(r + 8)));
        a3 = _mm_add_ps(a3, _mm_mul_ps(cj, _mm_loadu_ps(r + 12)));
      }
      _mm_storeu_ps(acc + d0, a0);
      _mm_storeu_ps(acc + d0 + 4, a1);
      _mm_storeu_ps(acc + d0 + 8, a2);
      _mm_storeu_ps(acc + d0 + 12, a3);
    }
    for (; d0 + 4 <= D; d0 += 4) {
      __m128 a0 = _mm_loadu_ps(acc + d0);
      for (int64_t j = 0; j < n; ++j)
        a0 = _mm_add_ps(a0, _mm_mul_ps(_mm_set1_ps(c[j]), _mm_loadu_ps(x + j * ldx + d0)));
      _mm_storeu_ps(acc + d0, a0);
    }
  }
#endif
  for (int64_t j = 0; j < n; ++j) {
    const T cj = c[j];
    const T* __restrict r = x + j * ldx;
    for (int64_t d = d0; d < D; ++d) acc[d] += cj * r[d];
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

// out (B, T, H, Dv), lse (B, H, T): per query row, the scores of the allowed keys, their max
// m, l = sum exp(S - m), out = sum exp(S - m) v / l, lse = m + log l.
void attention_forward_cpu(const Tensor& q, const Tensor& k, const Tensor& v,
                           const Tensor& segments, double scale, bool causal, Tensor& out,
                           Tensor& lse) {
  const AttentionShape a =
      check_attention("attention_forward", q, k, v, segments, out, lse, cpu_float(q.dtype()));
  dispatch_float(q.dtype(), "attention_forward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T *pq = q.data<T>(), *pk = k.data<T>(), *pv = v.data<T>();
    T* po = out.data<T>();
    T* pl = lse.data<T>();
    const int64_t Tn = a.T, H = a.H, Hk = a.Hk, Dk = a.Dk, Dv = a.Dv, G = a.group();
    const int64_t nqb = (Tn + QB - 1) / QB, tasks = a.B * H * nqb;
    const int64_t Tpad = (Tn + KC - 1) / KC * KC;
    const T ts = T(scale), kNegInf = -std::numeric_limits<T>::infinity();
    const std::vector<int64_t> seg = segment_ids(segments, a.B * Tn);
    const bool has_seg = !seg.empty();
    const std::vector<int64_t> kst = segment_starts(seg, a.B, Tn);
#pragma omp parallel if (worth_parallel(a.B * H * Tn * Tn * (Dk + Dv)))
    {
      std::vector<T> sbuf(static_cast<size_t>(QB * Tpad)), kt(static_cast<size_t>(Dk * KC)),
          obuf(static_cast<size_t>(Dv));
      alignas(64) T acc[KC];
#pragma omp for schedule(static)
      for (int64_t task = 0; task < tasks; ++task) {  // task = (b * H + h) * nqb + qb
        const int64_t qb = task % nqb, h = task / nqb % H, b = task / nqb / H, g = h / G;
        const int64_t t0 = qb * QB, t1 = std::min(Tn, t0 + QB), nq = t1 - t0;
        const int64_t kend = causal ? t1 : Tn;
        int64_t kfirst = 0;  // the chunk of the tile's earliest segment start
        if (has_seg) {
          kfirst = Tn;
          for (int64_t t = t0; t < t1; ++t) kfirst = std::min(kfirst, kst[b * Tn + t]);
          kfirst = kfirst / KC * KC;
        }
        // Scores of the block: S[i, s] = scale * q[t0 + i] . k[s], kfirst <= s < kend.
        for (int64_t s0 = kfirst; s0 < kend; s0 += KC) {
          const int64_t nk = std::min<int64_t>(KC, kend - s0);
          transpose_chunk(pk + ((b * Tn + s0) * Hk + g) * Dk, Hk * Dk, nk, Dk, kt.data());
          for (int64_t i = 0; i < nq; ++i) {
            chunk_dot(pq + ((b * Tn + t0 + i) * H + h) * Dk, kt.data(), Dk, acc);
            T* __restrict srow = sbuf.data() + i * Tpad + s0;
            for (int j = 0; j < KC; ++j) srow[j] = ts * acc[j];
          }
        }
        for (int64_t i = 0; i < nq; ++i) {
          const int64_t t = t0 + i, row = (b * H + h) * Tn + t;
          const int64_t ks = has_seg ? kst[b * Tn + t] : 0;  // keys [ks, n) can be allowed
          const int64_t n = (causal ? t + 1 : Tn) - ks;
          T* __restrict srow = sbuf.data() + i * Tpad + ks;
          if (has_seg) {
            const int64_t* sg = seg.data() + b * Tn + ks;
            for (int64_t s = 0; s < n; ++s)
              if (sg[s] != sg[t - ks]) srow[s] = kNegInf;
          }
          const T m = n > 0 ? row_max(srow, n) : kNegInf;
          T* __restrict orow = po + ((b * Tn + t) * H + h) * Dv;
          if (m == kNegInf) {  // nothing to attend to
            for (int64_t d = 0; d < Dv; ++d) orow[d] = 0;
            pl[row] = m;
            continue;
          }
          exp_affine<T>(srow, T(1), m, n, srow);
          T l = 0;
          for (int64_t s = 0; s < n; ++s) l += srow[s];
          T* __restrict o = obuf.data();
          for (int64_t d = 0; d < Dv; ++d) o[d] = 0;
          axpy_many(o, srow, pv + ((b * Tn + ks) * Hk + g) * Dv, Hk * Dv, n, Dv);  // masked: p = 0
          const T inv = T(1) / l;
          for (int64_t d = 0; d < Dv; ++d) orow[d] = o[d] * inv;
          pl[row] = m + std::log(l);
        }
      }
    }
  });
}

void attention_backward_cpu(const Tensor& q, const Tensor& k, const Tensor& v,
                            const Tensor& segments, const Tensor& out, const Tensor& lse,
                            const Tensor& dout, double scale, bool causal, Tensor& dq, Tensor& dk,
                            Tensor& dv) {
  const char* what = "attention_backward";
  const AttentionShape a = check_attention(what, q, k, v, segments, out, lse, cpu_float(q.dtype()));
  attention_detail::check_tensor(what, "dout", dout, out.shape(), out.dtype(), out.device());
  check_attention_grads(what, q, k, v, dq, dk, dv);
  dispatch_float(q.dtype(), what, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T *pq = q.data<T>(), *pk = k.data<T>(), *pv = v.data<T>();
    const T *po = out.data<T>(), *pl = lse.data<T>(), *pg = dout.data<T>();
    T *pdq = dq.data<T>(), *pdk = dk.data<T>(), *pdv = dv.data<T>();
    const int64_t Tn = a.T, H = a.H, Hk = a.Hk, Dk = a.Dk, Dv = a.Dv, G = a.group();
    const int64_t rows = a.B * H * Tn;
    const T ts = T(scale), kNegInf = -std::numeric_limits<T>::infinity();
    const bool par = worth_parallel(rows * Tn * (Dk + Dv));
    const std::vector<int64_t> seg = segment_ids(segments, a.B * Tn);
    const bool has_seg = !seg.empty();
    const std::vector<int64_t> kst = segment_starts(seg, a.B, Tn);
    auto q_row = [&](int64_t b, int64_t t, int64_t h) { return pq + ((b * Tn + t) * H + h) * Dk; };
    auto g_row = [&](int64_t b, int64_t t, int64_t h) { return pg + ((b * Tn + t) * H + h) * Dv; };
    // D (B, H, T) = rowsum(dout * out), indexed like lse.
    std::vector<T> Drow(static_cast<size_t>(rows));
#pragma omp parallel for if (par)
    for (int64_t row = 0; row < rows; ++row) {
      const int64_t t = row % Tn, h = row / Tn % H, b = row / Tn / H;
      Drow[row] = dot(g_row(b, t, h), po + ((b * Tn + t) * H + h) * Dv, Dv);
    }
    // dq: per (b, h, query block), over key chunks ascending: dS of the chunk's allowed keys,
    // dq[t] += dS[t, s] k[s] for s ascending; dq = scale * that.
    // With enough (b, kv head) tasks for the threads, dq is fused into the dk/dv pass below
    // (per (b, g), key chunks ascending): the same terms summed in the same order, so the
    // result is the same bits either way.
    const int64_t nkb = (Tn + KC - 1) / KC;
    const bool fused = !par || a.B * Hk >= 2 * static_cast<int64_t>(omp_get_max_threads());
    const int64_t nqb = (Tn + QB - 1) / QB, qtasks = fused ? 0 : a.B * H * nqb;
#pragma omp parallel if (par && !fused)
    {
      std::vector<T> kt(static_cast<size_t>(Dk * KC)), vt(static_cast<size_t>(Dv * KC)),
          dqacc(static_cast<size_t>(QB * Dk));
      alignas(64) T sc[KC];
      alignas(64) T dp[KC];
      alignas(64) T ds[KC];
#pragma omp for schedule(static)
      for (int64_t task = 0; task < qtasks; ++task) {
        const int64_t qb = task % nqb, h = task / nqb % H, b = task / nqb / H, g = h / G;
        const int64_t t0 = qb * QB, t1 = std::min(Tn, t0 + QB), nq = t1 - t0;
        const int64_t kend = causal ? t1 : Tn;
        std::fill(dqacc.begin(), dqacc.end(), T(0));
        for (int64_t s0 = 0; s0 < kend; s0 += KC) {
          const int64_t nk = std::min<int64_t>(KC, kend - s0);
          transpose_chunk(pk + ((b * Tn + s0) * Hk + g) * Dk, Hk * Dk, nk, Dk, kt.data());
          transpose_chunk(pv + ((b * Tn + s0) * Hk + g) * Dv, Hk * Dv, nk, Dv, vt.data());
          for (int64_t i = 0; i < nq; ++i) {
            const int64_t t = t0 + i, row = (b * H + h) * Tn + t;
            const T L = pl[row];
            if (L == kNegInf) continue;  // an empty row: P = 0
            const int64_t n = causal ? std::min<int64_t>(nk, t + 1 - s0) : nk;
            if (n <= 0 || (has_seg && kst[b * Tn + t] >= s0 + nk)) continue;  // all masked
            chunk_dot(q_row(b, t, h), kt.data(), Dk, sc);
            chunk_dot(g_row(b, t, h), vt.data(), Dv, dp);
            const T Dt = Drow[row];
            exp_affine<T>(sc, ts, L, KC, ds);
            for (int j = 0; j < KC; ++j) ds[j] *= dp[j] - Dt;
            if (has_seg) {
              const int64_t* sg = seg.data() + b * Tn;
              for (int64_t j = 0; j < n; ++j)
                if (sg[s0 + j] != sg[t]) ds[j] = 0;
            }
            axpy_many(dqacc.data() + i * Dk, ds, pk + ((b * Tn + s0) * Hk + g) * Dk, Hk * Dk, n,
                      Dk);
          }
        }
        for (int64_t i = 0; i < nq; ++i) {
          T* __restrict dqr = pdq + ((b * Tn + t0 + i) * H + h) * Dk;
          const T* __restrict acc = dqacc.data() + i * Dk;
          for (int64_t d = 0; d < Dk; ++d) dqr[d] = acc[d] * ts;
        }
      }
    }
    // dk, dv: per (b, kv head g, key chunk), over the group's query heads h ascending and the
    // query rows t that see the chunk, ascending.
    const int64_t ktasks = fused ? a.B * Hk : a.B * Hk * nkb;
#pragma omp parallel if (par)
    {
      std::vector<T> kt(static_cast<size_t>(Dk * KC)), vt(static_cast<size_t>(Dv * KC)),
          dkacc(static_cast<size_t>(KC * Dk)), dvacc(static_cast<size_t>(KC * Dv)),
          pT(static_cast<size_t>(KC * QB)), dsT(static_cast<size_t>(KC * QB)),
          dqbuf(static_cast<size_t>(fused ? G * Tn * Dk : 0));
      alignas(64) T sc[KC];
      alignas(64) T dp[KC];
      alignas(64) T p[KC];
      alignas(64) T ds[KC];
#pragma omp for schedule(static)
      for (int64_t task = 0; task < ktasks; ++task) {
        // task = (b * Hk + g) * nkb + kb, or fused: b * Hk + g over all its key chunks
        const int64_t per = fused ? 1 : nkb;
        const int64_t g = task / per % Hk, b = task / per / Hk;
        const int64_t kb_begin = fused ? 0 : task % nkb, kb_end = fused ? nkb : kb_begin + 1;
        if (fused) std::fill(dqbuf.begin(), dqbuf.end(), T(0));
        for (int64_t kb = kb_begin; kb < kb_end; ++kb) {
          const int64_t s0 = kb * KC, nk = std::min<int64_t>(KC, Tn - s0);
          transpose_chunk(pk + ((b * Tn + s0) * Hk + g) * Dk, Hk * Dk, nk, Dk, kt.data());
          transpose_chunk(pv + ((b * Tn + s0) * Hk + g) * Dv, Hk * Dv, nk, Dv, vt.data());
          std::fill(dkacc.begin(), dkacc.end(), T(0));
          std::fill(dvacc.begin(), dvacc.end(), T(0));
          const int64_t* sg = has_seg ? seg.data() + b * Tn : nullptr;
          for (int64_t h = g * G; h < (g + 1) * G; ++h)
            for (int64_t tb = causal ? s0 : 0; tb < Tn; tb += QB) {
              // A block of query rows: P and dS transposed to (key j, row i), 0 where not allowed.
              const int64_t nq = std::min<int64_t>(QB, Tn - tb);
              for (int64_t i = 0; i < nq; ++i) {
                const int64_t t = tb + i, row = (b * H + h) * Tn + t;
                const T L = pl[row];
                const int64_t n = L == kNegInf || (sg && kst[b * Tn + t] >= s0 + nk) ? 0
                                  : causal ? std::min<int64_t>(nk, t + 1 - s0)
                                           : nk;
                if (n > 0) {
                  chunk_dot(q_row(b, t, h), kt.data(), Dk, sc);
                  chunk_dot(g_row(b, t, h), vt.data(), Dv, dp);
                  const T Dt = Drow[row];
                  exp_affine<T>(sc, ts, L, KC, p);
                  for (int j = 0; j < KC; ++j) ds[j] = p[j] * (dp[j] - Dt);
                  if (fused) {  // as the dq pass: dq[t] += dS[t, s] k[s], s < s0 + n ascending
                    if (sg)
                      for (int64_t j = 0; j < n; ++j)
                        if (sg[s0 + j] != sg[t]) ds[j] = 0;
                    axpy_many(dqbuf.data() + ((h - g * G) * Tn + t) * Dk, ds,
                              pk + ((b * Tn + s0) * Hk + g) * Dk, Hk * Dk, n, Dk);
                  }
                }
                for (int64_t j = 0; j < nk; ++j) {
                  const bool ok = j < n && (!sg || sg[s0 + j] == sg[t]);
                  pT[j * QB + i] = ok ? p[j] : T(0);
                  dsT[j * QB + i] = ok ? ds[j] : T(0);
                }
              }
              const T* gq = g_row(b, tb, h);
              const T* qq = q_row(b, tb, h);
              for (int64_t j = 0; j < nk; ++j) {
                axpy_many(dvacc.data() + j * Dv, pT.data() + j * QB, gq, H * Dv, nq, Dv);
                axpy_many(dkacc.data() + j * Dk, dsT.data() + j * QB, qq, H * Dk, nq, Dk);
              }
            }
          for (int64_t j = 0; j < nk; ++j) {
            T* __restrict dkr = pdk + ((b * Tn + s0 + j) * Hk + g) * Dk;
            T* __restrict dvr = pdv + ((b * Tn + s0 + j) * Hk + g) * Dv;
            const T* __restrict ka = dkacc.data() + j * Dk;
            const T* __restrict va = dvacc.data() + j * Dv;
            for (int64_t d = 0; d < Dk; ++d) dkr[d] = ka[d] * ts;
            for (int64_t d = 0; d < Dv; ++d) dvr[d] = va[d];
          }
        }  // kb
        if (fused)
          for (int64_t h = g * G; h < (g + 1) * G; ++h)
            for (int64_t t = 0; t < Tn; ++t) {
              T* __restrict dqr = pdq + ((b * Tn + t) * H + h) * Dk;
              const T* __restrict acc = dqbuf.data() + ((h - g * G) * Tn + t) * Dk;
              for (int64_t d = 0; d < Dk; ++d) dqr[d] = acc[d] * ts;
            }
      }
    }
  });
}

}  // namespace

R1_REGISTER_KERNEL(attention_forward, CPU, attention_forward_cpu);
R1_REGISTER_KERNEL(attention_backward, CPU, attention_backward_cpu);

}  // namespace r1::cpu
