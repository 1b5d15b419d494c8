// CPU: softmax and log-softmax over the last dim, and their backward from the output.
#include <cmath>

#include "engine/kernels.h"
#include "kernels/cpu/cpu_common.h"

namespace r1::cpu {
namespace {

// x (N, V) -> y (N, V). The row max is subtracted first so exp never overflows.
void softmax_forward_cpu(const Tensor& x, bool log, Tensor& y) {
  R1_CHECK(x.dim() == 2 && y.shape() == x.shape() && y.dtype() == x.dtype(),
           "softmax_forward: x {}, y {}", x.str(), y.str());
  const int64_t N = x.size(0), V = x.size(1);
  dispatch_float(x.dtype(), "softmax_forward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* px = x.data<T>();
    T* py = y.data<T>();
#pragma omp parallel for if (worth_parallel(N * V))
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = px + n * V;
      T* yr = py + n * V;
      T m = -INFINITY;
      for (int64_t v = 0; v < V; ++v) m = std::max(m, xr[v]);
      T s = 0;
      if (log) {
        for (int64_t v = 0; v < V; ++v) s += std::exp(xr[v] - m);
        const T lse = m + std::log(s);
        for (int64_t v = 0; v < V; ++v) yr[v] = xr[v] - lse;
      } else {
        for (int64_t v = 0; v < V; ++v) s += (yr[v] = std::exp(xr[v] - m));
        const T inv = T(1) / s;
        for (int64_t v = 0; v < V; ++v) yr[v] *= inv;
      }
    }
  });
}

// softmax: dx = y * (dy - sum(dy * y)); log-softmax: dx = dy - exp(y) * sum(dy).
void softmax_backward_cpu(const Tensor& y, const Tensor& dy, bool log, Tensor& dx) {
  R1_CHECK(y.dim() == 2 && dy.shape() == y.shape() && dx.shape() == y.shape() &&
               dy.dtype() == y.dtype() && dx.dtype() == y.dtype(),
           "softmax_backward: y {}, dy {}, dx {}", y.str(), dy.str(), dx.str());
  const int64_t N = y.size(0), V = y.size(1);
  dispatch_float(y.dtype(), "softmax_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* py = y.data<T>();
    const T* pg = dy.data<T>();
    T* pd = dx.data<T>();
#pragma omp parallel for if (worth_parallel(N * V))
    for (int64_t n = 0; n < N; ++n) {
      const T* yr = py + n * V;
      const T* gr = pg + n * V;
      T* dr = pd + n * V;
      T s = 0;
      if (log) {
        for (int64_t v = 0; v < V; ++v) s += gr[v];
        for (int64_t v = 0; v < V; ++v) dr[v] = gr[v] - std::exp(yr[v]) * s;
      } else {
        for (int64_t v = 0; v < V; ++v) s += gr[v] * yr[v];
        for (int64_t v = 0; v < V; ++v) dr[v] = yr[v] * (gr[v] - s);
      }
    }
  });
}

}  // namespace

R1_REGISTER_KERNEL(softmax_forward, CPU, softmax_forward_cpu);
R1_REGISTER_KERNEL(softmax_backward, CPU, softmax_backward_cpu);

}  // namespace r1::cpu
