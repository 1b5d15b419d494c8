// CUDA: one fused AdamW step (PyTorch torch.optim.AdamW semantics, decoupled weight decay),
// as kernels/cpu/adamw.cc computes it. Contract in engine/kernels.h.
// p, m, v: f32 master weights and moments; g: f32 or bf16 (uint16_t bits).
//
// Memory bound: per element it reads p, m, v, g and writes p, m, v (28 bytes with an f32 g,
// 26 with bf16). Ceiling: HBM bandwidth (H200 ~4.8 TB/s). Each thread takes 4 consecutive
// elements per step: p, m, v as one 16-byte vector each, g as a 16-byte (f32) or 8-byte (bf16)
// vector; a group that is not whole or not aligned goes element by element. Not yet measured.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>

#include "engine/convert.h"
#include "engine/cuda/cuda_check.h"
#include "engine/cuda/stream.h"
#include "engine/kernels.h"
#include "kernels/cuda/common/launch.cuh"

namespace r1::cuda {
namespace {

constexpr int kGroup = 4;        // elements per thread per step: one float4 of p, m, v

// The step's scalars, formed in f64 on the host and rounded to f32 once (as the CPU kernel
// does for f32): 1 - beta2^step loses digits in f32 when beta2 = 0.999 and step is small.
struct AdamScalars {
  float decay;      // 1 - lr * weight_decay
  float b1, b2;     // beta1, beta2
  float one_b1;     // 1 - beta1
  float one_b2;     // 1 - beta2
  float step_size;  // lr / (1 - beta1^step)
  float bc2s;       // sqrt(1 - beta2^step)
  float eps;
  float gs;  // grad_scale
};

// One element, in the CPU kernel's order of operations (PyTorch's).
__device__ inline void adamw_element(float& p, float g, float& m, float& v, const AdamScalars& a) {
  const float gi = g * a.gs;
  m = a.b1 * m + a.one_b1 * gi;
  v = a.b2 * v + a.one_b2 * gi * gi;
  const float denom = sqrtf(v) / a.bc2s + a.eps;
  p = p * a.decay - a.step_size * m / denom;
}

// p, m, v (n) f32, g (n) G -> p, m, v updated in place.
template <class G>
__global__ void adamw_kernel(float* p, const G* g, float* m, float* v, int64_t n,
                             AdamScalars a) {
  constexpr size_t kGBytes = kGroup * sizeof(G);  // 16 (f32) or 8 (bf16)
  for (int64_t i0 = global_thread() * kGroup; i0 < n; i0 += grid_threads() * kGroup) {
    const bool whole = i0 + kGroup <= n &&
                       ((reinterpret_cast<uintptr_t>(p + i0) | reinterpret_cast<uintptr_t>(m + i0) |
                         reinterpret_cast<uintptr_t>(v + i0)) & 15) == 0 &&
                       reinterpret_cast<uintptr_t>(g + i0) % kGBytes == 0;
    if (whole) {
      float4 pv = *reinterpret_cast<const float4*>(p + i0);
      float4 mv = *reinterpret_cast<const float4*>(m + i0);
      float4 vv = *reinterpret_cast<const float4*>(v + i0);
      G ge[kGroup];
      if constexpr (kGBytes == 16) {
        const uint4 u = *reinterpret_cast<const uint4*>(g + i0);
        memcpy(ge, &u, 16);
      } else {
        const uint2 u = *reinterpret_cast<const uint2*>(g + i0);
        memcpy(ge, &u, 8);
      }
      adamw_element(pv.x, to_f32(ge[0]), mv.x, vv.x, a);
      adamw_element(pv.y, to_f32(ge[1]), mv.y, vv.y, a);
      adamw_element(pv.z, to_f32(ge[2]), mv.z, vv.z, a);
      adamw_element(pv.w, to_f32(ge[3]), mv.w, vv.w, a);
      *reinterpret_cast<float4*>(p + i0) = pv;
      *reinterpret_cast<float4*>(m + i0) = mv;
      *reinterpret_cast<float4*>(v + i0) = vv;
      continue;
    }
    const int64_t end = i0 + kGroup < n ? i0 + kGroup : n;
    for (int64_t i = i0; i < end; ++i) {
      float pi = p[i], mi = m[i], vi = v[i];
      adamw_element(pi, to_f32(g[i]), mi, vi, a);
      p[i] = pi;
      m[i] = mi;
      v[i] = vi;
    }
  }
}

// p, m, v f32 and g f32/bf16, all one shape. m, v updated, then p.
void adamw_step_cuda(Tensor& p, const Tensor& g, Tensor& m, Tensor& v, double lr, double beta1,
                     double beta2, double eps, double weight_decay, int64_t step,
                     double grad_scale) {
  R1_CHECK(g.shape() == p.shape() && m.shape() == p.shape() && v.shape() == p.shape(),
           "adamw_step: p {}, g {}, m {}, v {}", p.str(), g.str(), m.str(), v.str());
  R1_CHECK(p.dtype() == DType::F32 && m.dtype() == DType::F32 && v.dtype() == DType::F32,
           "adamw_step: CUDA keeps p, m, v in f32, got p {}, m {}, v {}", dtype_name(p.dtype()),
           dtype_name(m.dtype()), dtype_name(v.dtype()));
  R1_CHECK(g.dtype() == DType::F32 || g.dtype() == DType::BF16,
           "adamw_step: CUDA takes an f32 or bf16 gradient, got {}", dtype_name(g.dtype()));
  R1_CHECK(step >= 1, "adamw_step: step {} (counts from 1)", step);
  const int64_t n = p.numel();
  if (n == 0) return;
  const double bc1 = 1.0 - std::pow(beta1, static_cast<double>(step));
  const double bc2_sqrt = std::sqrt(1.0 - std::pow(beta2, static_cast<double>(step)));
  const AdamScalars a{static_cast<float>(1.0 - lr * weight_decay),
                      static_cast<float>(beta1),
                      static_cast<float>(beta2),
                      static_cast<float>(1.0 - beta1),
                      static_cast<float>(1.0 - beta2),
                      static_cast<float>(lr / bc1),
                      static_cast<float>(bc2_sqrt),
                      static_cast<float>(eps),
                      static_cast<float>(grad_scale)};
  const int dev = p.device().index;
  DeviceGuard guard(dev);
  const cudaStream_t s = current_stream(dev);
  const int grid = grid_for((n + kGroup - 1) / kGroup, dev);
  float* pp = p.data<float>();
  float* pm = m.data<float>();
  float* pv = v.data<float>();
  if (g.dtype() == DType::F32) {
    adamw_kernel<float><<<grid, kThreads, 0, s>>>(pp, g.data<float>(), pm, pv, n, a);
  } else {
    adamw_kernel<uint16_t><<<grid, kThreads, 0, s>>>(pp, g.data<uint16_t>(), pm, pv, n, a);
  }
  R1_CUDA_CHECK_LAUNCH();
}

}  // namespace

R1_REGISTER_KERNEL(adamw_step, CUDA, adamw_step_cuda);

}  // namespace r1::cuda
