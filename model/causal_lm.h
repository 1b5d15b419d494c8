// What generation needs from a model (rl/generate.h): the KV-cached forward, a cache of the
// right layout, the LM head and the position limit. DeepSeek-V3 (MLA's absorbed latent cache)
// and the dense students (a GQA cache of keys and values) implement it.
#pragma once
#include <cstdint>
#include <memory>

#include "engine/tensor.h"
#include "model/kv_cache.h"

namespace r1 {

// What a model prepares once for a generate call's forwards (rl/generate.cc), while its
// weights stay as they are: opaque to the caller, who keeps it alive while they (and the
// CUDA graphs holding its tensors' addresses) run. DeepSeek-V3 in fp8: its experts' weights
// stacked and quantized for the grouped FP8 GEMMs.
struct DecodePrep {
  virtual ~DecodePrep() = default;
};

// How forward_cached may run. The defaults check everything; a captured decode step
// (rl/generate.cc under CUDA graphs, engine/step_graph.h) needs a forward that never reads
// device data on the host.
struct CachedForwardOptions {
  // The caller has checked 0 <= pos[n] < max_positions() on the host: no read-back.
  bool trusted_positions = false;
  // MoE layers run every routed expert on every token and combine by the router's choices on
  // the device (moe_combine_all): no host read of the routing, E / K times the experts' FLOPs.
  // Under BatchInvariantScope the same bits as the routed path. With `prep` (DeepSeek-V3 in
  // fp8), each expert runs on its own tokens only, from the masked layout
  // (moe_masked_slots; gemm_fp8_grouped_masked): the routed path's FLOPs, still without a
  // host read.
  bool device_routing = false;
  // This model's prepare_decode() of the call, or null. Without device_routing, DeepSeek-V3
  // in fp8 runs its experts as grouped GEMMs in the contiguous layout (the routing read on
  // the host, the rows sorted by expert). Forward only, as all of forward_cached.
  const DecodePrep* prep = nullptr;
};

class CausalLM {
 public:
  virtual ~CausalLM() = default;
  // ids, seq, pos (N): token n of cache sequence seq[n] at position pos[n] (reserved with
  // cache.extend()); writes every layer's entries, attends each token to positions
  // 0..pos[n] of its sequence -> hidden (N, hidden) after the final norm. Forward only.
  virtual Tensor forward_cached(const Tensor& ids, const Tensor& seq, const Tensor& pos,
                                PagedKvCache& cache, const CachedForwardOptions& opt) = 0;
  Tensor forward_cached(const Tensor& ids, const Tensor& seq, const Tensor& pos,
                        PagedKvCache& cache) {
    return forward_cached(ids, seq, pos, cache, CachedForwardOptions{});
  }
  virtual PagedKvCache make_cache(int64_t num_blocks) const = 0;
  virtual const Tensor& lm_head() const = 0;  // (V, hidden)
  virtual int64_t max_positions() const = 0;
  // See DecodePrep; nullptr when the model has nothing to prepare. Valid until the weights
  // change (an optimizer step): a generate call makes its own.
  virtual std::shared_ptr<const DecodePrep> prepare_decode() const { return nullptr; }
};

}  // namespace r1
