// CPU: SwiGLU, out = silu(gate) * up, silu(g) = g * sigmoid(g).
//
// f32 runs in vector lanes on the process's ISA (kernels/cpu/simd_softmax.h: softmax_isa(),
// the batch-invariant product's), sigmoid(g) = 1 / (1 + fast_expf(-g)) (< 1 ulp exp); f64 is
// scalar with std::exp. Every element, the partial vector at the end included (masked loads
// and stores), runs the same instructions, so an element's bits do not depend on where it
// sits or on how many rows there are (batch invariance, DESIGN.md). The FMA ISAs fuse
// 1 + g (1 - s) of the backward, sse2 rounds it twice (the scalar code's operations).
// Ceiling: memory bandwidth at large N x F; the tiny preset's (13184, 64..384) blocks fit in
// L2, where the exp's ~20 vector operations per lane bound it.
#include <algorithm>
#include <cmath>

#include "engine/kernels.h"
#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/simd_softmax.h"

namespace r1::cpu {
namespace {

template <class T>
T sigmoid(T g) {
  return T(1) / (T(1) + std::exp(-g));  // exp overflow gives 1/inf = 0: the right limit
}

void check_same(const char* op, const Tensor& a, const Tensor& b) {
  R1_CHECK(a.shape() == b.shape() && a.dtype() == b.dtype(), "{}: {} vs {}", op, a.str(),
           b.str());
}

// ---- f32 in vector lanes, written once over a policy P (simd_softmax.h) -----------------

// s = 1 / (1 + exp(0 - g)) (0 - g: the exact negation, +0 for g = 0). Vectors by reference,
// as the policies take them: code built for the baseline target may then name AVX types.
template <class P>
inline void sigmoid_lanes(typename P::V& s, const typename P::V& g, const typename P::V& one) {
  typename P::V e;
  P::zero(e);
  P::sub(e, g);
  P::exp(e);
  P::add(e, one);
  s = one;
  P::div(s, e);
}

// o[i] = (g[i] s[i]) u[i], i < n.
template <class P>
void swiglu_forward_lanes(const float* g, const float* u, float* o, int64_t n) {
  using V = typename P::V;
  constexpr int L = P::kLanes;
  V one;
  P::bcast(one, 1.0f);
  for (int64_t i = 0; i < n; i += L) {
    const int m = static_cast<int>(std::min<int64_t>(L, n - i));
    V gv, uv;
    load_n<P>(gv, g + i, m);
    load_n<P>(uv, u + i, m);
    V y;
    sigmoid_lanes<P>(y, gv, one);
    P::mul(y, gv);
    P::mul(y, uv);
    store_n<P>(o + i, y, m);
  }
}

// dg = ((d u) s) (1 + g (1 - s)), du = (d g) s.
template <class P>
void swiglu_backward_lanes(const float* g, const float* u, const float* d, float* dg, float* du,
                           int64_t n) {
  using V = typename P::V;
  constexpr int L = P::kLanes;
  V one;
  P::bcast(one, 1.0f);
  for (int64_t i = 0; i < n; i += L) {
    const int m = static_cast<int>(std::min<int64_t>(L, n - i));
    V gv, uv, dv;
    load_n<P>(gv, g + i, m);
    load_n<P>(uv, u + i, m);
    load_n<P>(dv, d + i, m);
    V s;
    sigmoid_lanes<P>(s, gv, one);
    V oms = one, f = one, a = dv, b = dv;
    P::sub(oms, s);         // 1 - s
    P::madd(f, gv, oms);    // 1 + g (1 - s)
    P::mul(a, uv);
    P::mul(a, s);
    P::mul(a, f);
    P::mul(b, gv);
    P::mul(b, s);
    store_n<P>(dg + i, a, m);
    store_n<P>(du + i, b, m);
  }
}

// The per-ISA entry points: `flatten` inlines the policy's target code into them.
using simd::Avx2Softmax;
using simd::Avx512Softmax;
using simd::Sse2Softmax;

__attribute__((flatten)) void forward_sse2(const float* g, const float* u, float* o, int64_t n) {
  swiglu_forward_lanes<Sse2Softmax<float>>(g, u, o, n);
}
R1_TARGET_AVX2 __attribute__((flatten)) void forward_avx2(const float* g, const float* u,
                                                          float* o, int64_t n) {
  swiglu_forward_lanes<Avx2Softmax<float>>(g, u, o, n);
}
R1_TARGET_AVX512 __attribute__((flatten)) void forward_avx512(const float* g, const float* u,
                                                              float* o, int64_t n) {
  swiglu_forward_lanes<Avx512Softmax<float>>(g, u, o, n);
}
__attribute__((flatten)) void backward_sse2(const float* g, const float* u, const float* d,
                                            float* dg, float* du, int64_t n) {
  swiglu_backward_lanes<Sse2Softmax<float>>(g, u, d, dg, du, n);
}
R1_TARGET_AVX2 __attribute__((flatten)) void backward_avx2(const float* g, const float* u,
                                                           const float* d, float* dg, float* du,
                                                           int64_t n) {
  swiglu_backward_lanes<Avx2Softmax<float>>(g, u, d, dg, du, n);
}
R1_TARGET_AVX512 __attribute__((flatten)) void backward_avx512(const float* g, const float* u,
                                                               const float* d, float* dg,
                                                               float* du, int64_t n) {
  swiglu_backward_lanes<Avx512Softmax<float>>(g, u, d, dg, du, n);
}

using ForwardFn = void (*)(const float*, const float*, float*, int64_t);
using BackwardFn = void (*)(const float*, const float*, const float*, float*, float*, int64_t);

ForwardFn forward_f32() {
  switch (softmax_isa()) {
    case SoftmaxIsa::kAvx512: return forward_avx512;
    case SoftmaxIsa::kAvx2: return forward_avx2;
    default: return forward_sse2;
  }
}
BackwardFn backward_f32() {
  switch (softmax_isa()) {
    case SoftmaxIsa::kAvx512: return backward_avx512;
    case SoftmaxIsa::kAvx2: return backward_avx2;
    default: return backward_sse2;
  }
}

// Elements per OpenMP task: a multiple of every ISA's lanes, so a thread's slice starts on a
// vector boundary and only the last slice ends in a partial vector.
constexpr int64_t kSlice = 4096;

// gate, up (N, F) -> out (N, F).
void swiglu_forward_cpu(const Tensor& gate, const Tensor& up, Tensor& out) {
  check_same("swiglu_forward", gate, up);
  check_same("swiglu_forward", gate, out);
  const int64_t n = gate.numel();
  if (gate.dtype() == DType::F32) {
    const float *g = gate.data<float>(), *u = up.data<float>();
    float* o = out.data<float>();
    const ForwardFn fn = forward_f32();
#pragma omp parallel for if (worth_parallel(n))
    for (int64_t i = 0; i < n; i += kSlice) fn(g + i, u + i, o + i, std::min(kSlice, n - i));
    return;
  }
  dispatch_float(gate.dtype(), "swiglu_forward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* g = gate.data<T>();
    const T* u = up.data<T>();
    T* o = out.data<T>();
#pragma omp parallel for if (worth_parallel(n))
    for (int64_t i = 0; i < n; ++i) o[i] = g[i] * sigmoid(g[i]) * u[i];
  });
}

// dgate = dout * up * s * (1 + g * (1 - s)), dup = dout * g * s, with s = sigmoid(g).
void swiglu_backward_cpu(const Tensor& gate, const Tensor& up, const Tensor& dout,
                         Tensor& dgate, Tensor& dup) {
  check_same("swiglu_backward", gate, up);
  check_same("swiglu_backward", gate, dout);
  const int64_t n = gate.numel();
  if (gate.dtype() == DType::F32) {
    const float *g = gate.data<float>(), *u = up.data<float>(), *d = dout.data<float>();
    float *dg = dgate.data<float>(), *du = dup.data<float>();
    const BackwardFn fn = backward_f32();
#pragma omp parallel for if (worth_parallel(n))
    for (int64_t i = 0; i < n; i += kSlice)
      fn(g + i, u + i, d + i, dg + i, du + i, std::min(kSlice, n - i));
    return;
  }
  dispatch_float(gate.dtype(), "swiglu_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* g = gate.data<T>();
    const T* u = up.data<T>();
    const T* d = dout.data<T>();
    T* dg = dgate.data<T>();
    T* du = dup.data<T>();
#pragma omp parallel for if (worth_parallel(n))
    for (int64_t i = 0; i < n; ++i) {
      const T s = sigmoid(g[i]);
      dg[i] = d[i] * u[i] * s * (T(1) + g[i] * (T(1) - s));
      du[i] = d[i] * g[i] * s;
    }
  });
}

}  // namespace

R1_REGISTER_KERNEL(swiglu_forward, CPU, swiglu_forward_cpu);
R1_REGISTER_KERNEL(swiglu_backward, CPU, swiglu_backward_cpu);

}  // namespace r1::cpu
