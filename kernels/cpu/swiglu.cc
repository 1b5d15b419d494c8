// CPU: SwiGLU, out = silu(gate) * up, silu(g) = g * sigmoid(g).
#include <cmath>

#include "engine/kernels.h"
#include "kernels/cpu/cpu_common.h"

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

// gate, up (N, F) -> out (N, F).
void swiglu_forward_cpu(const Tensor& gate, const Tensor& up, Tensor& out) {
  check_same("swiglu_forward", gate, up);
  check_same("swiglu_forward", gate, out);
  const int64_t n = gate.numel();
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
