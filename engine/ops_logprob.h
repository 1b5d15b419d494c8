// token_logprobs: the log-probability of sampled tokens straight from the final hidden states
// and the LM head, the heavy part of the GRPO loss (R1 paper, eq. 1-3: the policy ratio and
// the k3 KL both need log pi(o_t | q, o_<t) of the sampled tokens only). Vocabulary-chunked:
// memory O(T * chunk), never a (T, V) logits tensor. Kernel contracts in
// engine/kernels_logprob.h.
#pragma once
#include <cstdint>

#include "engine/tensor.h"

namespace r1 {

struct TokenLogprobs {
  Tensor logp;     // (T) stat_dtype: log_softmax(h w^T / temperature)[t, tokens[t]]
  Tensor entropy;  // (T) stat_dtype: entropy of softmax(h w^T / temperature), not differentiable
};

// h (T, D) float, w (V, D) float (same dtype and device), tokens (T) i32/i64 in [0, V),
// temperature > 0, chunk > 0 -> logp, entropy (T), stat_dtype(h) (f32 for bf16/f32, f64 for
// f64). logp is differentiable with respect to h and w; entropy is for metrics.
// Forward: per chunk of `chunk` rows of w, logits = gemm(h, w_c^T, alpha = 1/temperature)
// merged into running per-row statistics (logprob_chunk_update). Saves h, w, tokens and the
// per-row lse (T); backward recomputes each chunk's logits and forms dh, dw chunk by chunk.
// When one chunk covers the vocabulary (V <= chunk) the forward's logits buffer is that one
// chunk, and the tape keeps it for the backward instead of recomputing it (same memory bound).
// Errors (r1::Error): a token outside [0, V) (checked once on the host), shapes that do not
// fit, dtypes or devices that differ, V = 0, temperature <= 0 or not finite, chunk <= 0.
TokenLogprobs token_logprobs(const Tensor& h, const Tensor& w, const Tensor& tokens,
                             double temperature = 1.0, int64_t chunk = 8192);

}  // namespace r1
