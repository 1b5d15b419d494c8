// Kernel contracts of attention (engine/ops_attention.h): softmax attention over packed
// sequences with GQA, forward and the FlashAttention-2 backward (Dao 2023, arXiv 2307.08691,
// alg. 2). Kept apart from engine/kernels.h, whose general conventions apply (contiguous
// operands on one device, stat_dtype statistics).
//
// Shapes: q (B, T, H, Dk), k (B, T, Hk, Dk), v (B, T, Hk, Dv), out and dout (B, T, H, Dv),
// lse (B, H, T) stat_dtype(q), segments (B, T) i32/i64 or undefined. H is a multiple of Hk;
// query head h reads kv head g(h) = h / (H / Hk) (GQA; MLA's expanded form has Hk = H).
// The math, per (b, h) and query row t, over key rows s:
//   allowed(t, s) = (!causal || s <= t) && (segments undefined || seg[b, s] == seg[b, t])
//   S[t, s]   = scale * q[b, t, h, :] . k[b, s, g(h), :]          (allowed s only)
//   lse[t]    = log sum_s exp(S[t, s]),  P[t, s] = exp(S[t, s] - lse[t])
//   out[t, :] = sum_s P[t, s] v[b, s, g(h), :]
// A row with no allowed s (only possible without causal, under segments) is defined:
// out = 0, lse = -inf, and it contributes nothing to any gradient (its P is 0).
// Backward, from the saved out and lse (P recomputed, never stored):
//   D[t] = sum_d dout[t, d] out[t, d],  dP[t, s] = dout[t, :] . v[s, :],
//   dS[t, s] = P[t, s] (dP[t, s] - D[t]),
//   dq[t] = scale sum_s dS[t, s] k[s],
//   dk[s] = scale sum_{h in group} sum_t dS[t, s] q[t],  dv[s] = sum_{h in group} sum_t P[t, s]
//   dout[t].
// dq, dk, dv are written, not accumulated. With GQA, dk and dv of kv head g sum over the
// query heads g * G .. g * G + G - 1 (G = H / Hk) in ascending order, and over t ascending
// within each: the reduction order is fixed, independent of thread counts and of B.
// Precision: the CPU computes in q's dtype (f32 or f64; lse of that dtype), memory O(T) per
// thread (one row of scores), never a (T, T) matrix. CUDA takes f32 or bf16 storage, computes
// in fp32 (expf), lse f32, and needs Dk, Dv <= 256. Every backend is batch invariant: a
// (b, h) row's result depends on its own sequence only, never on B (DESIGN.md).
#pragma once
#include <cstdint>

#include "engine/kernels.h"

namespace r1 {

// q, k, v, segments (maybe undefined) -> out (B, T, H, Dv), lse (B, H, T) stat_dtype.
R1_KERNEL(attention_forward,
          void(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& segments,
               double scale, bool causal, Tensor& out, Tensor& lse))
// q, k, v, segments, out and lse of the forward, dout (B, T, H, Dv) -> dq (q's shape),
// dk (k's shape), dv (v's shape), all written.
R1_KERNEL(attention_backward,
          void(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& segments,
               const Tensor& out, const Tensor& lse, const Tensor& dout, double scale, bool causal,
               Tensor& dq, Tensor& dk, Tensor& dv))

// The sizes of an attention problem, read off q and v.
struct AttentionShape {
  int64_t B, T, H, Hk, Dk, Dv;
  int64_t group() const { return H / Hk; }  // query heads per kv head
};

namespace attention_detail {

inline void check_tensor(const char* what, const char* name, const Tensor& t, const Shape& s,
                         DType dt, Device dev) {
  R1_CHECK(
      t.defined() && t.shape() == s && t.dtype() == dt && t.device() == dev && t.is_contiguous(),
      "{}: {} is {}, expected a contiguous {} {} on {}", what, name,
      t.defined() ? t.str() : std::string("undefined"), shape_str(s), dtype_name(dt), dev.str());
}

}  // namespace attention_detail

// Checks q, k, v, segments, out (or dout) and lse against the contract above; every backend
// calls it first. `float_ok` says whether q's dtype is one the backend takes.
inline AttentionShape check_attention(const char* what, const Tensor& q, const Tensor& k,
                                      const Tensor& v, const Tensor& segments, const Tensor& out,
                                      const Tensor& lse, bool float_ok) {
  R1_CHECK(
      q.defined() && k.defined() && v.defined() && q.dim() == 4 && k.dim() == 4 && v.dim() == 4,
      "{}: q, k, v must be 4-d (B, T, heads, D)", what);
  const AttentionShape a{q.size(0), q.size(1), q.size(2), k.size(2), q.size(3), v.size(3)};
  R1_CHECK(a.Hk >= 1 && a.H % a.Hk == 0 && a.Dk >= 1 && a.Dv >= 1,
           "{}: q {} k {} v {}: H must be a multiple of Hk >= 1 and Dk, Dv >= 1", what,
           shape_str(q.shape()), shape_str(k.shape()), shape_str(v.shape()));
  R1_CHECK(float_ok, "{}: dtype {} not taken by this backend", what, dtype_name(q.dtype()));
  const Device dev = q.device();
  using attention_detail::check_tensor;
  check_tensor(what, "q", q, q.shape(), q.dtype(), dev);
  check_tensor(what, "k", k, {a.B, a.T, a.Hk, a.Dk}, q.dtype(), dev);
  check_tensor(what, "v", v, {a.B, a.T, a.Hk, a.Dv}, q.dtype(), dev);
  check_tensor(what, "out", out, {a.B, a.T, a.H, a.Dv}, q.dtype(), dev);
  check_tensor(what, "lse", lse, {a.B, a.H, a.T}, stat_dtype(q.dtype()), dev);
  if (segments.defined()) {
    R1_CHECK(segments.dtype() == DType::I32 || segments.dtype() == DType::I64,
             "{}: segments must be i32 or i64, got {}", what, segments.str());
    check_tensor(what, "segments", segments, {a.B, a.T}, segments.dtype(), dev);
  }
  return a;
}

// Checks attention_backward's gradients (after check_attention on its other operands).
inline void check_attention_grads(const char* what, const Tensor& q, const Tensor& k,
                                  const Tensor& v, const Tensor& dq, const Tensor& dk,
                                  const Tensor& dv) {
  using attention_detail::check_tensor;
  check_tensor(what, "dq", dq, q.shape(), q.dtype(), q.device());
  check_tensor(what, "dk", dk, k.shape(), q.dtype(), q.device());
  check_tensor(what, "dv", dv, v.shape(), q.dtype(), q.device());
}

}  // namespace r1
