// CPU: the kernels of token_logprobs (contracts in engine/kernels_logprob.h), the reference
// for kernels/cuda/logprob.cu. Computes in the logits' dtype (f32 or f64). f64 walks each row
// in column order with std::exp. f32 runs in the vector lanes of the process's ISA
// (kernels/cpu/simd_softmax.h: softmax_isa(), the batch-invariant product's) with fast_expf
// (< 1 ulp): lane l of a row's sums takes the columns j = l mod L in order, the lanes are
// then added in lane order, and the last partial vector runs the same code with its unused
// lanes set to contribute exact zeros. Either way the order is fixed by C (and the ISA), so a
// row's statistics depend on its own logits and C only, never on T or the other rows.
#include <algorithm>
#include <cmath>
#include <type_traits>

#include "engine/kernels_logprob.h"
#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/simd_softmax.h"

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

// ---- f32 rows in vector lanes, written once over a policy P (simd_softmax.h) -----------

// A row's (max, sum exp(x - m), sum exp(x - m) (x - m)) over C logits.
template <class P>
RowState<float> row_state_lanes(const float* x, int64_t C) {
  using V = typename P::V;
  constexpr int L = P::kLanes;
  alignas(64) float buf[L];
  RowState<float> r{-INFINITY, 0, 0};
  const int64_t cv = C / L * L;  // columns in whole vectors; the max is exact in any order
  if (cv > 0) {
    V vm;
    P::bcast(vm, -INFINITY);
    for (int64_t j = 0; j < cv; j += L) {
      V xv;
      P::load(xv, x + j);
      P::max(vm, xv);
    }
    P::store(buf, vm);
    for (int l = 0; l < L; ++l) r.m = std::max(r.m, buf[l]);
  }
  for (int64_t j = cv; j < C; ++j) r.m = std::max(r.m, x[j]);
  if (r.m == -INFINITY) return r;
  // Lanes past the row get d = kPadD: exp gives exactly 0 there (fast_expf of x < -87.33),
  // so they add 0 to s and -0 to e (a finite d: 0 * -inf would be NaN).
  constexpr float kPadD = -1000.0f;
  V vs, ve, vmax;
  P::zero(vs);
  P::zero(ve);
  P::bcast(vmax, r.m);
  for (int64_t j = 0; j < C; j += L) {
    V d;
    if (j + L <= C) {
      P::load(d, x + j);
      P::sub(d, vmax);
    } else {
      for (int l = 0; l < L; ++l) buf[l] = j + l < C ? x[j + l] - r.m : kPadD;
      P::load(d, buf);
    }
    V p = d;
    P::exp(p);
    P::add(vs, p);
    P::madd(ve, p, d);
  }
  P::store(buf, vs);
  for (int l = 0; l < L; ++l) r.s += buf[l];
  P::store(buf, ve);
  for (int l = 0; l < L; ++l) r.e += buf[l];
  return r;
}

// dr[j] = g (0 - exp(x[j] - z)), and at the target column t (when 0 <= t < C)
// g (1 - exp(x[t] - z)), the same exp. dr may be x.
template <class P>
void backward_row_lanes(const float* x, int64_t C, float z, float g, int64_t t, float* dr) {
  using V = typename P::V;
  constexpr int L = P::kLanes;
  const bool has_t = t >= 0 && t < C;
  const float xt = has_t ? x[t] : 0.0f;  // read before dr overwrites it
  V vz, vg;
  P::bcast(vz, z);
  P::bcast(vg, g);
  for (int64_t j = 0; j < C; j += L) {
    const int n = static_cast<int>(std::min<int64_t>(L, C - j));
    V p, y;
    load_n<P>(p, x + j, n);
    P::sub(p, vz);
    P::exp(p);
    P::zero(y);
    P::sub(y, p);
    P::mul(y, vg);
    store_n<P>(dr + j, y, n);
  }
  if (has_t) {
    alignas(64) float buf[L];
    V p;
    P::bcast(p, xt);
    P::sub(p, vz);
    P::exp(p);
    P::store(buf, p);
    dr[t] = g * (1.0f - buf[0]);
  }
}

// The per-ISA entry points: `flatten` inlines the policy's target code into them.
using simd::Avx2Softmax;
using simd::Avx512Softmax;
using simd::Sse2Softmax;

__attribute__((flatten)) RowState<float> row_state_sse2(const float* x, int64_t C) {
  return row_state_lanes<Sse2Softmax<float>>(x, C);
}
R1_TARGET_AVX2 __attribute__((flatten)) RowState<float> row_state_avx2(const float* x,
                                                                       int64_t C) {
  return row_state_lanes<Avx2Softmax<float>>(x, C);
}
R1_TARGET_AVX512 __attribute__((flatten)) RowState<float> row_state_avx512(const float* x,
                                                                           int64_t C) {
  return row_state_lanes<Avx512Softmax<float>>(x, C);
}
__attribute__((flatten)) void backward_row_sse2(const float* x, int64_t C, float z, float g,
                                                int64_t t, float* dr) {
  backward_row_lanes<Sse2Softmax<float>>(x, C, z, g, t, dr);
}
R1_TARGET_AVX2 __attribute__((flatten)) void backward_row_avx2(const float* x, int64_t C,
                                                               float z, float g, int64_t t,
                                                               float* dr) {
  backward_row_lanes<Avx2Softmax<float>>(x, C, z, g, t, dr);
}
R1_TARGET_AVX512 __attribute__((flatten)) void backward_row_avx512(const float* x, int64_t C,
                                                                   float z, float g, int64_t t,
                                                                   float* dr) {
  backward_row_lanes<Avx512Softmax<float>>(x, C, z, g, t, dr);
}

struct RowKernels {
  RowState<float> (*state)(const float*, int64_t);
  void (*backward)(const float*, int64_t, float, float, int64_t, float*);
};

RowKernels row_kernels_f32() {
  switch (softmax_isa()) {
    case SoftmaxIsa::kAvx512: return {row_state_avx512, backward_row_avx512};
    case SoftmaxIsa::kAvx2: return {row_state_avx2, backward_row_avx2};
    default: return {row_state_sse2, backward_row_sse2};
  }
}

// The row state of T: the f32 lanes, or f64's column walk.
template <class T>
RowState<T> any_row_state(const T* x, int64_t C, const RowKernels& k) {
  if constexpr (std::is_same_v<T, float>) return k.state(x, C);
  else return row_state(x, C);
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
    const RowKernels k = row_kernels_f32();
#pragma omp parallel for if (worth_parallel(N * C))
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = px + n * C;
      T* st = ps + n * 4;
      const RowState<T> r = merge(RowState<T>{st[0], st[1], st[3]}, any_row_state(xr, C, k));
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
    const RowKernels k = row_kernels_f32();
#pragma omp parallel for if (worth_parallel(N * C))
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = px + n * C;
      T* dr = pd + n * C;
      const T z = pz[n], g = pg[n] * inv;
      const int64_t t = index_at(tokens, n) - offset;
      if constexpr (std::is_same_v<T, float>) {
        k.backward(xr, C, z, g, t, dr);
      } else {
        for (int64_t j = 0; j < C; ++j)
          dr[j] = g * ((j == t ? T(1) : T(0)) - std::exp(xr[j] - z));
      }
    }
  });
}

}  // namespace

R1_REGISTER_KERNEL(logprob_chunk_update, CPU, logprob_chunk_update_cpu);
R1_REGISTER_KERNEL(logprob_finalize, CPU, logprob_finalize_cpu);
R1_REGISTER_KERNEL(logprob_chunk_backward, CPU, logprob_chunk_backward_cpu);

}  // namespace r1::cpu
