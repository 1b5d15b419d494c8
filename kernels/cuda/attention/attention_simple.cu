// CUDA: attention forward and backward, the simple version (contracts in
// engine/kernels_attention.h; kernels/cpu/attention.cc is the reference, tests in
// tests/test_attention.cc). It documents the schedule of FlashAttention-2 (Dao 2023, arXiv
// 2307.08691, alg. 1 and 2) in plain CUDA cores and is the on-GPU oracle the fast MLA kernels
// are checked against. No tensor cores, no async copies, no pipelining: fp32 FMAs from
// shared memory. q, k, v, out, dout f32 or bf16 (uint16_t bits) storage, fp32 math (expf),
// lse f32; Dk, Dv <= 256.
//
// Schedule. A block is 8 warps (256 threads). Query tiles have kBr = 64 rows, 8 per warp; key
// tiles have kBc = 32 rows, one per lane: lane c computes the scores of key c against its
// warp's 8 query rows (dot products from shared memory; key rows padded to an odd stride so
// the 32 lanes hit 32 banks), the warp reduces a row's max and sum by butterfly shuffles (all
// lanes end with the same bits), then lane c owns output columns c, c + 32, ... for the
// products with V (or K, Q, dout) read row by row from shared memory.
//  - forward: one block per (q tile, h, b); online softmax over key tiles (running max m,
//    sum l, unnormalized out, rescaled by exp(m_old - m_new) per tile); out = acc / l,
//    lse = m + log l. Causal: key tiles past the tile's last row are skipped.
//  - backward: D = rowsum(dout * out) per row (one warp per row); then dq, one block per
//    (q tile, h, b), over key tiles, P = exp(S - lse) recomputed, dS = P (dP - D),
//    dq = scale dS K; then dk/dv, one block per (key tile, kv head g, b), over the group's
//    query heads ascending and, for each, the query tiles ascending (causal: from the tile
//    of the key tile's first row), dv += P^T dout, dk += scale dS^T q. Every output row
//    belongs to one block and is summed in a fixed order: deterministic and batch invariant,
//    no atomics.
// Shared memory, all fp32: up to ~210 KB at D = 256 (1 block per SM), ~70 KB at D = 64.
//
// Ceiling: none claimed; this is the correctness oracle. Not yet measured.
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"
#include "engine/kernels_attention.h"
#include "kernels/cuda/common/launch.cuh"

namespace r1::cuda {
namespace {

constexpr int kBr = 64;  // query rows per tile
constexpr int kBc = 32;  // key rows per tile: one per lane
constexpr int kWarps = 8;
constexpr int kBlock = kWarps * 32;
constexpr int kRows = kBr / kWarps;  // query rows per warp (scores, dq)
constexpr int kKeys = kBc / kWarps;  // key rows per warp (dk, dv)
constexpr int kMaxHeadDim = 256;     // Dk, Dv: at most 8 output columns per lane
constexpr unsigned kFull = 0xffffffffu;

struct Dims {
  int64_t T;
  int H, Hk, G, Dk, Dv;
  float scale;
  bool causal;
};

__device__ inline int64_t q_at(const Dims& d, int64_t b, int64_t t, int h) {
  return ((b * d.T + t) * d.H + h) * d.Dk;
}
__device__ inline int64_t o_at(const Dims& d, int64_t b, int64_t t, int h) {
  return ((b * d.T + t) * d.H + h) * d.Dv;
}
__device__ inline int64_t k_at(const Dims& d, int64_t b, int64_t s, int g) {
  return ((b * d.T + s) * d.Hk + g) * d.Dk;
}
__device__ inline int64_t v_at(const Dims& d, int64_t b, int64_t s, int g) {
  return ((b * d.T + s) * d.Hk + g) * d.Dv;
}

__device__ inline float warp_max(float v) {
#pragma unroll
  for (int k = 16; k > 0; k /= 2) v = fmaxf(v, __shfl_xor_sync(kFull, v, k));
  return v;
}
// Both lanes of each butterfly step add the same two values: every lane gets the same bits.
__device__ inline float warp_sum(float v) {
#pragma unroll
  for (int k = 16; k > 0; k /= 2) v += __shfl_xor_sync(kFull, v, k);
  return v;
}

// dst[r * stride + c] := src rows row0 + r (r < rows) of a (.., heads, D) tensor, as fp32;
// rows past T are zero. `at(row)` gives the element offset of a row's first column.
template <class T, class At>
__device__ inline void stage_rows(float* dst, int stride, const T* src, int64_t row0, int rows,
                                  int D, int64_t Tn, At at) {
  for (int i = threadIdx.x; i < rows * D; i += blockDim.x) {
    const int r = i / D, c = i % D;
    const int64_t row = row0 + r;
    dst[r * stride + c] = row < Tn ? to_f32(src[at(row) + c]) : 0.0f;
  }
}

__device__ inline void stage_segments(long long* dst, const int64_t* seg, int64_t b, int64_t row0,
                                      int rows, int64_t Tn) {
  for (int i = threadIdx.x; i < rows; i += blockDim.x)
    dst[i] = seg != nullptr && row0 + i < Tn ? seg[b * Tn + row0 + i] : 0;
}

// x[i] := sum_d a[i * D + d] * brow[d] for the warp's kRows rows a (fp32, d ascending).
__device__ inline void dots(const float* a, const float* brow, int D, float (&x)[kRows]) {
#pragma unroll
  for (int i = 0; i < kRows; ++i) x[i] = 0.0f;
  for (int d = 0; d < D; ++d) {
    const float bv = brow[d];
#pragma unroll
    for (int i = 0; i < kRows; ++i) x[i] = fmaf(a[i * D + d], bv, x[i]);
  }
}

__device__ inline bool allowed(const Dims& d, const long long* seg_q, const long long* seg_k,
                               bool segmented, int64_t t, int r, int64_t s, int c) {
  return t < d.T && s < d.T && (!d.causal || s <= t) && (!segmented || seg_q[r] == seg_k[c]);
}

// Shared-memory carve-up from `base`. The same function places the arrays in a kernel and,
// from base 0 on the host, counts the bytes of the launch, so the two cannot disagree.
// Segment ids (8-byte) first, then fp32 arrays.
struct Carve {
  uintptr_t p;
  template <class E>
  __host__ __device__ E* take(int64_t n) {
    E* r = reinterpret_cast<E*>(p);
    p += sizeof(E) * n;
    return r;
  }
};

struct TileSmem {
  long long *seg_q, *seg_k;
  float *lse, *D, *Q, *dO, *K, *V, *P, *dS;  // lse, D, dO, dS: backward only
};

// Forward: seg_q, seg_k, Q (kBr, Dk), K (kBc, Dk | 1), V (kBc, Dv), P (kBr, kBc).
__host__ __device__ inline size_t forward_smem(uintptr_t base, int Dk, int Dv, TileSmem& s) {
  Carve c{base};
  s.seg_q = c.take<long long>(kBr), s.seg_k = c.take<long long>(kBc);
  s.Q = c.take<float>(kBr * Dk), s.K = c.take<float>(kBc * (Dk | 1));
  s.V = c.take<float>(kBc * Dv), s.P = c.take<float>(kBr * kBc);
  return c.p - base;
}
// Backward: seg_q, seg_k, lse, D (kBr), Q (kBr, Dk), dO (kBr, Dv), K (kBc, Dk | 1),
// V (kBc, Dv | 1), dS (kBr, kBc), and P (kBr, kBc) when with_p (dk/dv).
__host__ __device__ inline size_t backward_smem(uintptr_t base, int Dk, int Dv, bool with_p,
                                                TileSmem& s) {
  Carve c{base};
  s.seg_q = c.take<long long>(kBr), s.seg_k = c.take<long long>(kBc);
  s.lse = c.take<float>(kBr), s.D = c.take<float>(kBr);
  s.Q = c.take<float>(kBr * Dk), s.dO = c.take<float>(kBr * Dv);
  s.K = c.take<float>(kBc * (Dk | 1)), s.V = c.take<float>(kBc * (Dv | 1));
  s.dS = c.take<float>(kBr * kBc), s.P = with_p ? c.take<float>(kBr * kBc) : nullptr;
  return c.p - base;
}

// ---- forward -----------------------------------------------------------------------------

template <class T, int NJ>
__global__ void __launch_bounds__(kBlock)
    attention_forward_kernel(const T* q, const T* k, const T* v, const int64_t* seg, T* out,
                             float* lse, Dims d) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, ks = d.Dk | 1;
  const int64_t t0 = int64_t{blockIdx.x} * kBr, b = blockIdx.z;
  const int h = blockIdx.y, g = h / d.G;
  TileSmem sm;
  forward_smem(reinterpret_cast<uintptr_t>(smem), d.Dk, d.Dv, sm);
  long long *seg_q = sm.seg_q, *seg_k = sm.seg_k;
  float *Qs = sm.Q, *Ks = sm.K, *Vs = sm.V, *Ps = sm.P;
  stage_rows(Qs, d.Dk, q, t0, kBr, d.Dk, d.T, [&](int64_t t) { return q_at(d, b, t, h); });
  stage_segments(seg_q, seg, b, t0, kBr, d.T);

  float m[kRows], l[kRows], acc[kRows][NJ];
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    m[i] = -INFINITY, l[i] = 0.0f;
#pragma unroll
    for (int j = 0; j < NJ; ++j) acc[i][j] = 0.0f;
  }
  const int64_t t_last = (t0 + kBr < d.T ? t0 + kBr : d.T) - 1;
  const int64_t s_end = d.causal ? t_last + 1 : d.T;
  const float* Qw = Qs + warp * kRows * d.Dk;
  for (int64_t s0 = 0; s0 < s_end; s0 += kBc) {
    __syncthreads();  // the previous tile's readers are done (and Q is staged)
    stage_rows(Ks, ks, k, s0, kBc, d.Dk, d.T, [&](int64_t s) { return k_at(d, b, s, g); });
    stage_rows(Vs, d.Dv, v, s0, kBc, d.Dv, d.T, [&](int64_t s) { return v_at(d, b, s, g); });
    stage_segments(seg_k, seg, b, s0, kBc, d.T);
    __syncthreads();
    float sc[kRows];
    dots(Qw, Ks + lane * ks, d.Dk, sc);
#pragma unroll
    for (int i = 0; i < kRows; ++i) {
      const int r = warp * kRows + i;
      const bool ok = allowed(d, seg_q, seg_k, seg != nullptr, t0 + r, r, s0 + lane, lane);
      const float s = ok ? sc[i] * d.scale : -INFINITY;
      const float mn = fmaxf(m[i], warp_max(s));
      const float p = mn == -INFINITY ? 0.0f : expf(s - mn);
      const float alpha = mn == -INFINITY ? 1.0f : expf(m[i] - mn);  // 0 while m was -inf
      l[i] = l[i] * alpha + warp_sum(p);
      m[i] = mn;
      Ps[r * kBc + lane] = p;
#pragma unroll
      for (int j = 0; j < NJ; ++j) acc[i][j] *= alpha;
    }
    __syncwarp();
    for (int c = 0; c < kBc; ++c) {
      float vv[NJ];
#pragma unroll
      for (int j = 0; j < NJ; ++j)
        vv[j] = lane + 32 * j < d.Dv ? Vs[c * d.Dv + lane + 32 * j] : 0.0f;
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const float p = Ps[(warp * kRows + i) * kBc + c];
#pragma unroll
        for (int j = 0; j < NJ; ++j) acc[i][j] = fmaf(p, vv[j], acc[i][j]);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    const int64_t t = t0 + warp * kRows + i;
    if (t >= d.T) continue;
    const float inv = l[i] > 0.0f ? 1.0f / l[i] : 0.0f;  // an empty row: out = 0
#pragma unroll
    for (int j = 0; j < NJ; ++j)
      if (lane + 32 * j < d.Dv)
        out[o_at(d, b, t, h) + lane + 32 * j] = from_f32<T>(acc[i][j] * inv);
    if (lane == 0) lse[(b * d.H + h) * d.T + t] = l[i] > 0.0f ? m[i] + logf(l[i]) : -INFINITY;
  }
}

// ---- backward ----------------------------------------------------------------------------

// Drow (B, H, T) = sum_d dout[b, t, h, d] out[b, t, h, d]; one warp per row.
template <class T>
__global__ void attention_rowdot_kernel(const T* out, const T* dout, float* Drow, int64_t rows,
                                        Dims d) {
  const int64_t row = (int64_t{blockIdx.x} * blockDim.x + threadIdx.x) / 32;  // (b, t, h)
  const int lane = threadIdx.x % 32;
  if (row >= rows) return;  // whole warps leave together
  float s = 0.0f;
  for (int c = lane; c < d.Dv; c += 32)
    s = fmaf(to_f32(dout[row * d.Dv + c]), to_f32(out[row * d.Dv + c]), s);
  s = warp_sum(s);
  const int64_t h = row % d.H, t = row / d.H % d.T, b = row / d.H / d.T;
  if (lane == 0) Drow[(b * d.H + h) * d.T + t] = s;
}

// The warp's kRows x kBc block of P and dS for query tile t0 (rows staged in Qs, dOs, lse_s,
// D_s, seg_q) against key tile s0 (Ks, Vs, seg_k): lane c's key column.
struct ProbGrad {
  float p[kRows], ds[kRows];
};
__device__ inline ProbGrad prob_grad(const Dims& d, const float* Qs, const float* dOs,
                                     const float* lse_s, const float* D_s, const long long* seg_q,
                                     const long long* seg_k, bool segmented, const float* Ks,
                                     const float* Vs, int64_t t0, int64_t s0) {
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  float qk[kRows], dp[kRows];
  dots(Qs + warp * kRows * d.Dk, Ks + lane * (d.Dk | 1), d.Dk, qk);
  dots(dOs + warp * kRows * d.Dv, Vs + lane * (d.Dv | 1), d.Dv, dp);
  ProbGrad r;
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    const int row = warp * kRows + i;
    const bool ok = allowed(d, seg_q, seg_k, segmented, t0 + row, row, s0 + lane, lane) &&
                    lse_s[row] != -INFINITY;  // an empty row has P = 0
    r.p[i] = ok ? expf(qk[i] * d.scale - lse_s[row]) : 0.0f;
    r.ds[i] = r.p[i] * (dp[i] - D_s[row]);
  }
  return r;
}

// Stages a query tile's rows of head h: Qs, dOs, lse_s, D_s, seg_q.
template <class T>
__device__ inline void stage_query_tile(const Dims& d, const T* q, const T* dout, const float* lse,
                                        const float* Drow, const int64_t* seg, int64_t b, int h,
                                        int64_t t0, float* Qs, float* dOs, float* lse_s, float* D_s,
                                        long long* seg_q) {
  stage_rows(Qs, d.Dk, q, t0, kBr, d.Dk, d.T, [&](int64_t t) { return q_at(d, b, t, h); });
  stage_rows(dOs, d.Dv, dout, t0, kBr, d.Dv, d.T, [&](int64_t t) { return o_at(d, b, t, h); });
  stage_segments(seg_q, seg, b, t0, kBr, d.T);
  for (int i = threadIdx.x; i < kBr; i += blockDim.x) {
    const bool in = t0 + i < d.T;
    lse_s[i] = in ? lse[(b * d.H + h) * d.T + t0 + i] : -INFINITY;
    D_s[i] = in ? Drow[(b * d.H + h) * d.T + t0 + i] : 0.0f;
  }
}

// dq: one block per (q tile, h, b), over key tiles ascending.
template <class T, int NJ>
__global__ void __launch_bounds__(kBlock)
    attention_dq_kernel(const T* q, const T* k, const T* v, const int64_t* seg, const T* dout,
                        const float* lse, const float* Drow, T* dq, Dims d) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, ks = d.Dk | 1, vs = d.Dv | 1;
  const int64_t t0 = int64_t{blockIdx.x} * kBr, b = blockIdx.z;
  const int h = blockIdx.y, g = h / d.G;
  TileSmem sm;
  backward_smem(reinterpret_cast<uintptr_t>(smem), d.Dk, d.Dv, false, sm);
  long long *seg_q = sm.seg_q, *seg_k = sm.seg_k;
  float *lse_s = sm.lse, *D_s = sm.D, *Qs = sm.Q, *dOs = sm.dO, *Ks = sm.K, *Vs = sm.V;
  float* dSs = sm.dS;
  stage_query_tile(d, q, dout, lse, Drow, seg, b, h, t0, Qs, dOs, lse_s, D_s, seg_q);

  float acc[kRows][NJ];
#pragma unroll
  for (int i = 0; i < kRows; ++i)
#pragma unroll
    for (int j = 0; j < NJ; ++j) acc[i][j] = 0.0f;
  const int64_t t_last = (t0 + kBr < d.T ? t0 + kBr : d.T) - 1;
  const int64_t s_end = d.causal ? t_last + 1 : d.T;
  for (int64_t s0 = 0; s0 < s_end; s0 += kBc) {
    __syncthreads();
    stage_rows(Ks, ks, k, s0, kBc, d.Dk, d.T, [&](int64_t s) { return k_at(d, b, s, g); });
    stage_rows(Vs, vs, v, s0, kBc, d.Dv, d.T, [&](int64_t s) { return v_at(d, b, s, g); });
    stage_segments(seg_k, seg, b, s0, kBc, d.T);
    __syncthreads();
    const ProbGrad pg =
        prob_grad(d, Qs, dOs, lse_s, D_s, seg_q, seg_k, seg != nullptr, Ks, Vs, t0, s0);
#pragma unroll
    for (int i = 0; i < kRows; ++i) dSs[(warp * kRows + i) * kBc + lane] = pg.ds[i];
    __syncwarp();
    for (int c = 0; c < kBc; ++c) {
      float kv[NJ];
#pragma unroll
      for (int j = 0; j < NJ; ++j) kv[j] = lane + 32 * j < d.Dk ? Ks[c * ks + lane + 32 * j] : 0.0f;
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        const float ds = dSs[(warp * kRows + i) * kBc + c];
#pragma unroll
        for (int j = 0; j < NJ; ++j) acc[i][j] = fmaf(ds, kv[j], acc[i][j]);
      }
    }
  }
#pragma unroll
  for (int i = 0; i < kRows; ++i) {
    const int64_t t = t0 + warp * kRows + i;
    if (t >= d.T) continue;
#pragma unroll
    for (int j = 0; j < NJ; ++j)
      if (lane + 32 * j < d.Dk)
        dq[q_at(d, b, t, h) + lane + 32 * j] = from_f32<T>(acc[i][j] * d.scale);
  }
}

// dk, dv: one block per (key tile, kv head g, b); query heads of the group ascending, query
// tiles ascending, rows of a tile ascending.
template <class T, int NJ>
__global__ void __launch_bounds__(kBlock)
    attention_dkdv_kernel(const T* q, const T* k, const T* v, const int64_t* seg, const T* dout,
                          const float* lse, const float* Drow, T* dk, T* dv, Dims d) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32, ks = d.Dk | 1, vs = d.Dv | 1;
  const int64_t s0 = int64_t{blockIdx.x} * kBc, b = blockIdx.z;
  const int g = blockIdx.y;
  TileSmem sm;
  backward_smem(reinterpret_cast<uintptr_t>(smem), d.Dk, d.Dv, true, sm);
  long long *seg_q = sm.seg_q, *seg_k = sm.seg_k;
  float *lse_s = sm.lse, *D_s = sm.D, *Qs = sm.Q, *dOs = sm.dO, *Ks = sm.K, *Vs = sm.V;
  float *Ps = sm.P, *dSs = sm.dS;
  stage_rows(Ks, ks, k, s0, kBc, d.Dk, d.T, [&](int64_t s) { return k_at(d, b, s, g); });
  stage_rows(Vs, vs, v, s0, kBc, d.Dv, d.T, [&](int64_t s) { return v_at(d, b, s, g); });
  stage_segments(seg_k, seg, b, s0, kBc, d.T);

  float adk[kKeys][NJ], adv[kKeys][NJ];
#pragma unroll
  for (int c = 0; c < kKeys; ++c)
#pragma unroll
    for (int j = 0; j < NJ; ++j) adk[c][j] = adv[c][j] = 0.0f;
  const int64_t t_begin = d.causal ? s0 / kBr * kBr : 0;  // earlier rows cannot see the tile
  for (int h = g * d.G; h < (g + 1) * d.G; ++h)
    for (int64_t t0 = t_begin; t0 < d.T; t0 += kBr) {
      __syncthreads();  // the previous tile's readers are done (and K, V are staged)
      stage_query_tile(d, q, dout, lse, Drow, seg, b, h, t0, Qs, dOs, lse_s, D_s, seg_q);
      __syncthreads();
      const ProbGrad pg =
          prob_grad(d, Qs, dOs, lse_s, D_s, seg_q, seg_k, seg != nullptr, Ks, Vs, t0, s0);
#pragma unroll
      for (int i = 0; i < kRows; ++i) {
        Ps[(warp * kRows + i) * kBc + lane] = pg.p[i];
        dSs[(warp * kRows + i) * kBc + lane] = pg.ds[i];
      }
      __syncthreads();  // the accumulation below reads every warp's rows
      for (int r = 0; r < kBr; ++r) {
        float qv[NJ], gv[NJ];
#pragma unroll
        for (int j = 0; j < NJ; ++j) {
          const int c = lane + 32 * j;
          qv[j] = c < d.Dk ? Qs[r * d.Dk + c] : 0.0f;
          gv[j] = c < d.Dv ? dOs[r * d.Dv + c] : 0.0f;
        }
#pragma unroll
        for (int c = 0; c < kKeys; ++c) {
          const float p = Ps[r * kBc + warp * kKeys + c], ds = dSs[r * kBc + warp * kKeys + c];
#pragma unroll
          for (int j = 0; j < NJ; ++j) {
            adv[c][j] = fmaf(p, gv[j], adv[c][j]);
            adk[c][j] = fmaf(ds, qv[j], adk[c][j]);
          }
        }
      }
    }
#pragma unroll
  for (int c = 0; c < kKeys; ++c) {
    const int64_t s = s0 + warp * kKeys + c;
    if (s >= d.T) continue;
#pragma unroll
    for (int j = 0; j < NJ; ++j) {
      const int col = lane + 32 * j;
      if (col < d.Dk) dk[k_at(d, b, s, g) + col] = from_f32<T>(adk[c][j] * d.scale);
      if (col < d.Dv) dv[v_at(d, b, s, g) + col] = from_f32<T>(adv[c][j]);
    }
  }
}

// ---- host side ---------------------------------------------------------------------------

// Output columns per lane: 2, 4 or 8 (head dims up to 64, 128, 256).
int columns_per_lane(const AttentionShape& a) {
  const int64_t D = a.Dk > a.Dv ? a.Dk : a.Dv;
  return D <= 64 ? 2 : D <= 128 ? 4 : 8;
}

Dims dims_of(const AttentionShape& a, double scale, bool causal) {
  return {a.T,
          static_cast<int>(a.H),
          static_cast<int>(a.Hk),
          static_cast<int>(a.group()),
          static_cast<int>(a.Dk),
          static_cast<int>(a.Dv),
          static_cast<float>(scale),
          causal};
}

void check_launchable(const char* what, const AttentionShape& a) {
  R1_CHECK(a.Dk <= kMaxHeadDim && a.Dv <= kMaxHeadDim,
           "{}: head dims Dk {} and Dv {} must be <= {} on CUDA", what, a.Dk, a.Dv, kMaxHeadDim);
  R1_CHECK(a.B <= 65535 && a.H <= 65535, "{}: B {} and H {} must be <= 65535 (grid dims)", what,
           a.B, a.H);
}

// Sets the kernel's dynamic shared memory limit to `bytes` (checked against the device's).
template <class Kernel>
void allow_smem(const char* what, Kernel kernel, size_t bytes, int dev) {
  int optin = 0;
  R1_CUDA_CHECK(cudaDeviceGetAttribute(&optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  R1_CHECK(bytes <= static_cast<size_t>(optin),
           "{}: needs {} bytes of shared memory, the "
           "device allows {}",
           what, bytes, optin);
  opt_in_dynamic_smem(reinterpret_cast<const void*>(kernel), static_cast<int>(bytes));
}

size_t forward_bytes(const AttentionShape& a) {
  TileSmem s;
  return forward_smem(0, static_cast<int>(a.Dk), static_cast<int>(a.Dv), s);
}
size_t backward_bytes(const AttentionShape& a, bool with_p) {
  TileSmem s;
  return backward_smem(0, static_cast<int>(a.Dk), static_cast<int>(a.Dv), with_p, s);
}

// Calls fn(std::integral_constant<int, NJ>{}) for the columns per lane of the problem.
template <class Fn>
void dispatch_columns(const AttentionShape& a, Fn&& fn) {
  switch (columns_per_lane(a)) {
    case 2:
      return fn(std::integral_constant<int, 2>{});
    case 4:
      return fn(std::integral_constant<int, 4>{});
    default:
      return fn(std::integral_constant<int, 8>{});
  }
}

const int64_t* segments_i64(const Tensor& segments, Tensor& holder) {
  if (!segments.defined()) return nullptr;
  holder = segments.dtype() == DType::I64 ? segments : segments.to(DType::I64);
  return holder.data<int64_t>();
}

void attention_forward_cuda(const Tensor& q, const Tensor& k, const Tensor& v,
                            const Tensor& segments, double scale, bool causal, Tensor& out,
                            Tensor& lse) {
  const char* what = "attention_forward";
  const AttentionShape a = check_attention(what, q, k, v, segments, out, lse,
                                           q.dtype() == DType::F32 || q.dtype() == DType::BF16);
  check_launchable(what, a);
  if (a.B == 0 || a.T == 0 || a.H == 0) return;
  const int dev = q.device().index;
  DeviceGuard guard(dev);
  const cudaStream_t s = current_stream(dev);
  Tensor seg_holder;
  const int64_t* seg = segments_i64(segments, seg_holder);
  const Dims d = dims_of(a, scale, causal);
  const dim3 grid(static_cast<unsigned>((a.T + kBr - 1) / kBr), static_cast<unsigned>(a.H),
                  static_cast<unsigned>(a.B));
  const size_t bytes = forward_bytes(a);
  dispatch_float(q.dtype(), what, [&](auto tag) {
    using T = decltype(tag);
    dispatch_columns(a, [&](auto nj) {
      const auto kernel = attention_forward_kernel<T, decltype(nj)::value>;
      allow_smem(what, kernel, bytes, dev);
      kernel<<<grid, kBlock, bytes, s>>>(static_cast<const T*>(q.data_ptr()),
                                         static_cast<const T*>(k.data_ptr()),
                                         static_cast<const T*>(v.data_ptr()), seg,
                                         static_cast<T*>(out.data_ptr()), lse.data<float>(), d);
      R1_CUDA_CHECK_LAUNCH();
    });
  });
}

void attention_backward_cuda(const Tensor& q, const Tensor& k, const Tensor& v,
                             const Tensor& segments, const Tensor& out, const Tensor& lse,
                             const Tensor& dout, double scale, bool causal, Tensor& dq, Tensor& dk,
                             Tensor& dv) {
  const char* what = "attention_backward";
  const AttentionShape a = check_attention(what, q, k, v, segments, out, lse,
                                           q.dtype() == DType::F32 || q.dtype() == DType::BF16);
  attention_detail::check_tensor(what, "dout", dout, out.shape(), out.dtype(), out.device());
  check_attention_grads(what, q, k, v, dq, dk, dv);
  check_launchable(what, a);
  if (a.B == 0 || a.T == 0 || a.H == 0) return;
  const int dev = q.device().index;
  DeviceGuard guard(dev);
  const cudaStream_t s = current_stream(dev);
  Tensor seg_holder;
  const int64_t* seg = segments_i64(segments, seg_holder);
  const Dims d = dims_of(a, scale, causal);
  const int64_t rows = a.B * a.T * a.H;
  Tensor drow = Tensor::empty({a.B, a.H, a.T}, DType::F32, q.device());
  const size_t dq_bytes = backward_bytes(a, false), dkdv_bytes = backward_bytes(a, true);
  const dim3 dq_grid(static_cast<unsigned>((a.T + kBr - 1) / kBr), static_cast<unsigned>(a.H),
                     static_cast<unsigned>(a.B));
  const dim3 dkdv_grid(static_cast<unsigned>((a.T + kBc - 1) / kBc), static_cast<unsigned>(a.Hk),
                       static_cast<unsigned>(a.B));
  dispatch_float(q.dtype(), what, [&](auto tag) {
    using T = decltype(tag);
    const T *pq = static_cast<const T*>(q.data_ptr()), *pk = static_cast<const T*>(k.data_ptr()),
            *pv = static_cast<const T*>(v.data_ptr()), *pg = static_cast<const T*>(dout.data_ptr());
    const float* pl = lse.data<float>();
    float* pd = drow.data<float>();
    const unsigned rowdot_grid = static_cast<unsigned>((rows + kWarps - 1) / kWarps);
    attention_rowdot_kernel<T>
        <<<rowdot_grid, kBlock, 0, s>>>(static_cast<const T*>(out.data_ptr()), pg, pd, rows, d);
    R1_CUDA_CHECK_LAUNCH();
    dispatch_columns(a, [&](auto nj) {
      constexpr int NJ = decltype(nj)::value;
      const auto dq_kernel = attention_dq_kernel<T, NJ>;
      allow_smem(what, dq_kernel, dq_bytes, dev);
      dq_kernel<<<dq_grid, kBlock, dq_bytes, s>>>(pq, pk, pv, seg, pg, pl, pd,
                                                  static_cast<T*>(dq.data_ptr()), d);
      R1_CUDA_CHECK_LAUNCH();
      const auto dkdv_kernel = attention_dkdv_kernel<T, NJ>;
      allow_smem(what, dkdv_kernel, dkdv_bytes, dev);
      dkdv_kernel<<<dkdv_grid, kBlock, dkdv_bytes, s>>>(pq, pk, pv, seg, pg, pl, pd,
                                                        static_cast<T*>(dk.data_ptr()),
                                                        static_cast<T*>(dv.data_ptr()), d);
      R1_CUDA_CHECK_LAUNCH();
    });
  });
}

}  // namespace

R1_REGISTER_KERNEL(attention_forward, CUDA, attention_forward_cuda);
R1_REGISTER_KERNEL(attention_backward, CUDA, attention_backward_cuda);

}  // namespace r1::cuda
