// CPU: RMSNorm forward and backward. y = x * rstd * w, rstd = 1 / sqrt(mean(x^2) + eps).
#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/kernels.h"
#include "kernels/cpu/cpu_common.h"

namespace r1::cpu {
namespace {

void check_shapes(const char* op, const Tensor& x, const Tensor& w, const Tensor& rstd) {
  R1_CHECK(x.dim() == 2 && w.dim() == 1 && w.size(0) == x.size(1) && rstd.numel() == x.size(0)
               && w.dtype() == x.dtype() && rstd.dtype() == x.dtype(),
           "{}: x {}, w {}, rstd {}", op, x.str(), w.str(), rstd.str());
}

// x (N, D), w (D) -> y (N, D), rstd (N).
void rmsnorm_forward_cpu(const Tensor& x, const Tensor& w, double eps, Tensor& y,
                         Tensor& rstd) {
  check_shapes("rmsnorm_forward", x, w, rstd);
  const int64_t N = x.size(0), D = x.size(1);
  dispatch_float(x.dtype(), "rmsnorm_forward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* px = x.data<T>();
    const T* pw = w.data<T>();
    T* py = y.data<T>();
    T* pr = rstd.data<T>();
#pragma omp parallel for if (worth_parallel(N * D))
    for (int64_t n = 0; n < N; ++n) {
      const T* xr = px + n * D;
      T ss = 0;
      for (int64_t d = 0; d < D; ++d) ss += xr[d] * xr[d];
      const T r = T(1) / std::sqrt(ss / static_cast<T>(D) + static_cast<T>(eps));
      pr[n] = r;
      for (int64_t d = 0; d < D; ++d) py[n * D + d] = xr[d] * r * pw[d];
    }
  });
}

// dy (N, D) -> dx (N, D), dw (D).
// dx_i = rstd * (w_i dy_i - x_i * rstd^2 / D * sum_j w_j dy_j x_j); dw_i = sum_n dy x rstd.
// dw is summed per fixed block of rows, then the blocks in order: the same result for any
// thread count.
void rmsnorm_backward_cpu(const Tensor& x, const Tensor& w, const Tensor& rstd, const Tensor& dy,
                          Tensor& dx, Tensor& dw) {
  check_shapes("rmsnorm_backward", x, w, rstd);
  R1_CHECK(dy.shape() == x.shape() && dy.dtype() == x.dtype(), "rmsnorm_backward: dy {} for x {}",
           dy.str(), x.str());
  const int64_t N = x.size(0), D = x.size(1);
  constexpr int64_t kRowBlock = 32;
  const int64_t nblocks = (N + kRowBlock - 1) / kRowBlock;
  dispatch_float(x.dtype(), "rmsnorm_backward", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* px = x.data<T>();
    const T* pw = w.data<T>();
    const T* pr = rstd.data<T>();
    const T* pg = dy.data<T>();
    T* pdx = dx.data<T>();
    std::vector<T> partial(static_cast<size_t>(std::max<int64_t>(nblocks, 1) * D), T(0));
#pragma omp parallel for if (worth_parallel(N * D))
    for (int64_t b = 0; b < nblocks; ++b) {
      T* dwb = partial.data() + b * D;
      for (int64_t n = b * kRowBlock; n < std::min(N, (b + 1) * kRowBlock); ++n) {
        const T* xr = px + n * D;
        const T* gr = pg + n * D;
        const T r = pr[n];
        T dot = 0;
        for (int64_t d = 0; d < D; ++d) dot += pw[d] * gr[d] * xr[d];
        const T c = dot * r * r / static_cast<T>(D);
        for (int64_t d = 0; d < D; ++d) {
          pdx[n * D + d] = r * (pw[d] * gr[d] - xr[d] * c);
          dwb[d] += gr[d] * xr[d] * r;
        }
      }
    }
    T* pdw = dw.data<T>();
    for (int64_t d = 0; d < D; ++d) pdw[d] = 0;
    for (int64_t b = 0; b < nblocks; ++b)
      for (int64_t d = 0; d < D; ++d) pdw[d] += partial[b * D + d];
  });
}

}  // namespace

R1_REGISTER_KERNEL(rmsnorm_forward, CPU, rmsnorm_forward_cpu);
R1_REGISTER_KERNEL(rmsnorm_backward, CPU, rmsnorm_backward_cpu);

}  // namespace r1::cpu
