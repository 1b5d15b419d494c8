// CPU: one fused AdamW step (PyTorch torch.optim.AdamW, foreach=False semantics).
#include <cmath>

#include "engine/kernels.h"
#include "kernels/cpu/cpu_common.h"

namespace r1::cpu {
namespace {

// p, g, m, v: same shape and float dtype; m and v are updated in place, then p.
// Scalars are formed in f64 once, then cast: bias corrections 1 - beta^step lose digits in
// f32 when beta2 = 0.999 and step is small.
void adamw_step_cpu(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, double lr, double beta1,
                    double beta2, double eps, double weight_decay, int64_t step,
                    double grad_scale) {
  R1_CHECK(g.shape() == p.shape() && m.shape() == p.shape() && v.shape() == p.shape() &&
               g.dtype() == p.dtype() && m.dtype() == p.dtype() && v.dtype() == p.dtype(),
           "adamw_step: p {}, g {}, m {}, v {}", p.str(), g.str(), m.str(), v.str());
  R1_CHECK(step >= 1, "adamw_step: step {} (counts from 1)", step);
  const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(beta2, static_cast<double>(step)));
  const int64_t n = p.numel();
  dispatch_float(p.dtype(), "adamw_step", [&](auto tag) {
    using T = typename decltype(tag)::type;
    T* pp = p.data<T>();
    const T* pg = g.data<T>();
    T* pm = m.data<T>();
    T* pv = v.data<T>();
    const T decay = static_cast<T>(1.0 - lr * weight_decay);
    const T b1 = static_cast<T>(beta1), b2 = static_cast<T>(beta2);
    const T one_b1 = static_cast<T>(1.0 - beta1), one_b2 = static_cast<T>(1.0 - beta2);
    const T step_size = static_cast<T>(lr / bc1), bc2s = static_cast<T>(bc2_sqrt);
    const T e = static_cast<T>(eps), gs = static_cast<T>(grad_scale);
#pragma omp parallel for if (worth_parallel(n))
    for (int64_t i = 0; i < n; ++i) {
      const T gi = pg[i] * gs;
      const T mi = b1 * pm[i] + one_b1 * gi;
      const T vi = b2 * pv[i] + one_b2 * gi * gi;
      pm[i] = mi;
      pv[i] = vi;
      const T denom = std::sqrt(vi) / bc2s + e;  // PyTorch's order of operations
      pp[i] = pp[i] * decay - step_size * mi / denom;
    }
  });
}

}  // namespace

R1_REGISTER_KERNEL(adamw_step, CPU, adamw_step_cpu);

}  // namespace r1::cpu
