// attention: softmax attention over packed sequences, with GQA, causal masking and segment
// masking, differentiable with respect to q, k and v. The one attention op of training: the
// dense students' GQA and MLA's expanded form (Hk = H, Dk = qk_nope + qk_rope = 192,
// Dv = 128 in DeepSeek-V3) both call it. Kernel contracts, with the math, in
// engine/kernels_attention.h.
#pragma once

#include "engine/tensor.h"

namespace r1 {

// q (B, T, H, Dk), k (B, T, Hk, Dk), v (B, T, Hk, Dv) float (one dtype, one device), H a
// multiple of Hk (query head h reads kv head h / (H / Hk)), scale the softmax scale (the
// caller passes it: Dk^-0.5, times yarn_mscale(...)^2 under YaRN), causal, segments (B, T)
// i32/i64 or undefined: position t attends to s only if segments[b, s] == segments[b, t]
// (and s <= t when causal): packed sequences never see each other.
// -> out (B, T, H, Dv) of q's dtype. A row with nothing to attend to (possible only without
// causal, under segments) gives out = 0 and no gradient.
// Saves q, k, v, segments, out and the per-row logsumexp (B, H, T) stat_dtype; backward
// recomputes the probabilities from them (FlashAttention-2), never storing a (T, T) matrix.
// Errors (r1::Error): shapes that do not fit, H not a multiple of Hk, segments not (B, T)
// int, dtypes or devices that differ, a non-finite scale; on CUDA, Dk or Dv > 256.
Tensor attention(const Tensor& q, const Tensor& k, const Tensor& v, double scale, bool causal,
                 const Tensor& segments = Tensor());

}  // namespace r1
