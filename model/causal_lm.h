// What generation needs from a model (rl/generate.h): the KV-cached forward, a cache of the
// right layout, the LM head and the position limit. DeepSeek-V3 (MLA's absorbed latent cache)
// and the dense students (a GQA cache of keys and values) implement it.
#pragma once
#include <cstdint>

#include "engine/tensor.h"
#include "model/kv_cache.h"

namespace r1 {

class CausalLM {
 public:
  virtual ~CausalLM() = default;
  // ids, seq, pos (N): token n of cache sequence seq[n] at position pos[n] (reserved with
  // cache.extend()); writes every layer's entries, attends each token to positions
  // 0..pos[n] of its sequence -> hidden (N, hidden) after the final norm. Forward only.
  virtual Tensor forward_cached(const Tensor& ids, const Tensor& seq, const Tensor& pos,
                                PagedKvCache& cache) = 0;
  virtual PagedKvCache make_cache(int64_t num_blocks) const = 0;
  virtual const Tensor& lm_head() const = 0;  // (V, hidden)
  virtual int64_t max_positions() const = 0;
};

}  // namespace r1
