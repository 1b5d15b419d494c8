// Paged KV cache operations (kernel contracts and the math in engine/kernels_paged.h): write
// new tokens' entries into the cache, attend over it. Forward only: generation runs under
// NoGrad and the trainer recomputes through the differentiable model forward.
#pragma once

#include "engine/kernels_paged.h"
#include "engine/tensor.h"

namespace r1 {

// entries (N, W) float into pool (blocks, block_size, W) at (seq[n], pos[n]).
void paged_cache_write(const Tensor& entries, const Tensor& block_table, const Tensor& seq,
                       const Tensor& pos, Tensor& pool);

// q (N, H, Dk) -> (N, H, Dv): row n attends to positions 0..pos[n] of sequence seq[n].
Tensor paged_attention(const Tensor& q, const Tensor& pool, const Tensor& block_table,
                       const Tensor& seq, const Tensor& pos, const PagedLayout& layout,
                       double scale);

}  // namespace r1
