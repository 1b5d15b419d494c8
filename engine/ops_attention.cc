// attention (engine/ops_attention.h): checks, one forward kernel call, one tape node whose
// backward is one kernel call. The node saves q, k, v, segments, out and lse; no (T, T)
// tensor exists in either pass.
#include "engine/ops_attention.h"

#include <cmath>

#include "engine/autograd.h"
#include "engine/kernels_attention.h"
#include "engine/nvtx.h"

namespace r1 {
namespace {

// The kernel's view of an input: contiguous, with no autograd history (not recorded).
Tensor plain(const Tensor& t) { return t.detach().contiguous(); }

void check_inputs(const Tensor& q, const Tensor& k, const Tensor& v, double scale,
                  const Tensor& segments) {
  R1_CHECK(q.defined() && k.defined() && v.defined(), "attention: undefined q, k or v");
  R1_CHECK(dtype_is_floating(q.dtype()) && k.dtype() == q.dtype() && v.dtype() == q.dtype() &&
               k.device() == q.device() && v.device() == q.device(),
           "attention: q {}, k {}, v {} must be float tensors of one dtype and device", q.str(),
           k.str(), v.str());
  R1_CHECK(q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
           "attention: q {}, k {}, v {}: expected (B, T, H, Dk), (B, T, Hk, Dk), (B, T, Hk, Dv)",
           shape_str(q.shape()), shape_str(k.shape()), shape_str(v.shape()));
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), Hk = k.size(2);
  R1_CHECK(k.size(0) == B && k.size(1) == T && k.size(3) == q.size(3) && v.size(0) == B &&
               v.size(1) == T && v.size(2) == Hk && q.size(3) >= 1 && v.size(3) >= 1,
           "attention: q {}, k {}, v {}: expected (B, T, H, Dk), (B, T, Hk, Dk), (B, T, Hk, Dv)",
           shape_str(q.shape()), shape_str(k.shape()), shape_str(v.shape()));
  R1_CHECK(Hk >= 1 && H % Hk == 0, "attention: {} query heads are not a multiple of {} kv heads", H,
           Hk);
  R1_CHECK(std::isfinite(scale), "attention: scale {} must be finite", scale);
  if (!segments.defined()) return;
  R1_CHECK(segments.dtype() == DType::I32 || segments.dtype() == DType::I64,
           "attention: segments {} must be i32 or i64", segments.str());
  R1_CHECK(segments.dim() == 2 && segments.size(0) == B && segments.size(1) == T,
           "attention: segments {} must be (B, T) = ({}, {})", shape_str(segments.shape()), B, T);
  R1_CHECK(segments.device() == q.device(),
           "attention: segments {} and q {} on different "
           "devices",
           segments.str(), q.str());
}

}  // namespace

Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale, bool causal,
                 const Tensor& segments) {
  R1_NVTX_RANGE("attention");
  check_inputs(q, k, v, scale, segments);
  const int64_t B = q.size(0), T = q.size(1), H = q.size(2), Dv = v.size(3);
  const Device dev = q.device();
  const Tensor qc = plain(q), kc = plain(k), vc = plain(v);
  const Tensor seg = segments.defined() ? plain(segments) : Tensor();
  Tensor out = Tensor::empty({B, T, H, Dv}, q.dtype(), dev);
  Tensor lse = Tensor::empty({B, H, T}, stat_dtype(q.dtype()), dev);
  kernels::attention_forward()(dev, qc, kc, vc, seg, scale, causal, out, lse);
  const Tensor saved_out = out;  // captured before record gives out its autograd handle
  record("attention", {q, k, v}, {&out},
         [qc, kc, vc, seg, saved_out, lse, scale,
          causal](const std::vector<Tensor>& g) -> std::vector<Tensor> {
           const Device dev = qc.device();
           Tensor dq = Tensor::empty(qc.shape(), qc.dtype(), dev);
           Tensor dk = Tensor::empty(kc.shape(), kc.dtype(), dev);
           Tensor dv = Tensor::empty(vc.shape(), vc.dtype(), dev);
           kernels::attention_backward()(dev, qc, kc, vc, seg, saved_out, lse, g[0].contiguous(),
                                         scale, causal, dq, dk, dv);
           return {dq, dk, dv};
         });
  return out;
}

}  // namespace r1
