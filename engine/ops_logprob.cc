// token_logprobs (engine/ops_logprob.h): logits of one vocabulary chunk at a time from the
// gemm kernel, folded into per-row statistics (forward) or turned into the chunk's share of
// dh and dw (backward). The tape holds one node; it saves h, w, tokens and lse, and the logits
// only when one chunk covers the vocabulary (then they are the forward's one T x chunk buffer).
#include "engine/ops_logprob.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "engine/autograd.h"
#include "engine/kernels_logprob.h"
#include "engine/nvtx.h"

namespace r1 {
namespace {

// The kernel's view of an input: contiguous, with no autograd history (not recorded).
Tensor plain(const Tensor& t) { return t.detach().contiguous(); }

void check_inputs(const Tensor& h, const Tensor& w, const Tensor& tokens, double temperature,
                  int64_t chunk) {
  R1_CHECK(h.defined() && w.defined() && tokens.defined(), "token_logprobs: undefined input");
  R1_CHECK(dtype_is_floating(h.dtype()) && h.dtype() == w.dtype() && h.device() == w.device(),
           "token_logprobs: h {} and w {} must be float tensors of one dtype and device",
           h.str(), w.str());
  R1_CHECK(tokens.dtype() == DType::I32 || tokens.dtype() == DType::I64,
           "token_logprobs: tokens {} must be i32 or i64", tokens.str());
  R1_CHECK(tokens.device() == h.device(), "token_logprobs: tokens {} and h {} on different "
           "devices", tokens.str(), h.str());
  R1_CHECK(h.dim() == 2 && w.dim() == 2 && w.size(1) == h.size(1) && tokens.dim() == 1 &&
               tokens.size(0) == h.size(0),
           "token_logprobs: h {}, w {}, tokens {}: expected (T, D), (V, D) and (T)",
           shape_str(h.shape()), shape_str(w.shape()), shape_str(tokens.shape()));
  R1_CHECK(w.size(0) >= 1, "token_logprobs: w {} has an empty vocabulary", shape_str(w.shape()));
  R1_CHECK(temperature > 0 && std::isfinite(temperature),
           "token_logprobs: temperature {} must be finite and > 0", temperature);
  R1_CHECK(chunk > 0, "token_logprobs: chunk {} must be > 0", chunk);
}

// The chunk loop's operands: h as a (1, T, D) batch of one, w (V, D), and a logits buffer of
// T * C elements whose first T * Cc form each chunk's (T, Cc) (the last chunk is narrower).
// The buffer is allocated per pass (forward, backward), unless one chunk is the whole
// vocabulary: then the backward reuses the forward's logits instead of recomputing them.
struct Chunks {
  Tensor h3, w, buf;
  int64_t T, D, V, C;
  double inv_temperature;

  int64_t width(int64_t o) const { return std::min(C, V - o); }
  Tensor w_rows(int64_t o) const { return w.narrow(0, o, width(o)).view({1, width(o), D}); }
  Tensor logits3(int64_t o) const {
    return buf.narrow(0, 0, T * width(o)).view({1, T, width(o)});
  }
  // logits (1, T, Cc) := h @ w[o : o + Cc]^T / temperature.
  Tensor logits(int64_t o) const {
    Tensor l3 = logits3(o);
    kernels::gemm()(w.device(), h3, w_rows(o), l3, false, true, inv_temperature, 0.0);
    return l3;
  }
};

}  // namespace

TokenLogprobs token_logprobs(const Tensor& h, const Tensor& w, const Tensor& tokens,
                             double temperature, int64_t chunk) {
  R1_NVTX_RANGE("token_logprobs");
  check_inputs(h, w, tokens, temperature, chunk);
  const int64_t T = h.size(0), D = h.size(1), V = w.size(0), C = std::min(chunk, V);
  const Device dev = h.device();
  const DType dt = h.dtype(), sd = stat_dtype(dt);
  const Tensor tc = plain(tokens);
  const std::vector<int64_t> tv = tc.to_int_vector();  // T ints: the one host check
  for (int64_t t = 0; t < T; ++t)
    R1_CHECK(tv[t] >= 0 && tv[t] < V, "token_logprobs: token {} at row {} outside [0, {})",
             tv[t], t, V);

  const Tensor hc = plain(h);
  Chunks saved{hc.view({1, T, D}), plain(w), Tensor(), T, D, V, C, 1.0 / temperature};
  Chunks ch = saved;
  ch.buf = Tensor::empty({T * C}, dt, dev);
  // One chunk covers the vocabulary (V <= chunk): the forward's buffer already holds every
  // logit, so the tape keeps it (still T x chunk memory) and the backward skips the recompute.
  if (C == V) saved.buf = ch.buf;
  // The empty state of every row (contract in engine/kernels_logprob.h).
  std::vector<double> init(static_cast<size_t>(T) * 4);
  for (int64_t t = 0; t < T; ++t) {
    init[t * 4 + 0] = -std::numeric_limits<double>::infinity();
    init[t * 4 + 1] = 0;
    init[t * 4 + 2] = std::numeric_limits<double>::quiet_NaN();
    init[t * 4 + 3] = 0;
  }
  Tensor stats = Tensor::from_vector(init, {T, 4}, sd, dev);
  for (int64_t o = 0; o < V; o += C)
    kernels::logprob_chunk_update()(dev, ch.logits(o).view({T, ch.width(o)}), tc, o, stats);
  Tensor logp = Tensor::empty({T}, sd, dev), entropy = Tensor::empty({T}, sd, dev);
  Tensor lse = Tensor::empty({T}, sd, dev);
  kernels::logprob_finalize()(dev, stats, logp, entropy, lse);

  const bool gh = h.requires_grad(), gw = w.requires_grad();
  record("token_logprobs", {h, w}, {&logp},
         [saved, tc, lse, gh, gw](const std::vector<Tensor>& g) -> std::vector<Tensor> {
           Chunks ch = saved;
           const int64_t T = ch.T, D = ch.D, V = ch.V;
           const bool kept = ch.buf.defined();  // the forward's logits (one chunk: o == 0)
           if (!kept) ch.buf = Tensor::empty({T * ch.C}, ch.w.dtype(), ch.w.device());
           const Device dev = ch.w.device();
           const Tensor dlogp = g[0].contiguous();
           Tensor dh, dw;
           if (gh) dh = Tensor::empty({1, T, D}, ch.w.dtype(), dev);
           if (gw) dw = Tensor::empty({V, D}, ch.w.dtype(), dev);
           for (int64_t o = 0; o < V; o += ch.C) {
             const int64_t Cc = ch.width(o);
             Tensor l3 = kept ? ch.logits3(o) : ch.logits(o), l2 = l3.view({T, Cc});
             // dlogits overwrite the logits in place: one (T, C) buffer in all.
             kernels::logprob_chunk_backward()(dev, l2, tc, o, lse, dlogp, ch.inv_temperature,
                                               l2);
             if (gh)  // dh (+)= dlogits (T, Cc) @ w_c (Cc, D)
               kernels::gemm()(dev, l3, ch.w_rows(o), dh, false, false, 1.0, o == 0 ? 0.0 : 1.0);
             if (gw) {  // dw[o : o + Cc] = dlogits^T (Cc, T) @ h (T, D)
               Tensor dw_c = dw.narrow(0, o, Cc).view({1, Cc, D});
               kernels::gemm()(dev, l3, ch.h3, dw_c, true, false, 1.0, 0.0);
             }
           }
           return {gh ? dh.view({T, D}) : Tensor(), dw};
         });
  return {logp, entropy};
}

}  // namespace r1
