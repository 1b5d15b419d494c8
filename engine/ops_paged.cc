// Paged KV cache ops (engine/ops_paged.h): one kernel call each, no tape.
#include "engine/ops_paged.h"

#include <cmath>

#include "engine/nvtx.h"

namespace r1 {
namespace {
Tensor plain(const Tensor& t) { return t.detach().contiguous(); }
}  // namespace

void paged_cache_write(const Tensor& entries, const Tensor& block_table, const Tensor& seq,
                       const Tensor& pos, Tensor& pool) {
  R1_NVTX_RANGE("paged_cache_write");
  const Tensor e = plain(entries), bt = plain(block_table), s = plain(seq), p = plain(pos);
  check_paged("paged_cache_write", e, Tensor(), pool, bt, s, p, nullptr, Tensor());
  kernels::paged_cache_write()(pool.device(), e, bt, s, p, pool);
}

Tensor paged_attention(const Tensor& q, const Tensor& pool, const Tensor& block_table,
                       const Tensor& seq, const Tensor& pos, const PagedLayout& layout,
                       double scale) {
  R1_NVTX_RANGE("paged_attention");
  R1_CHECK(std::isfinite(scale), "paged_attention: scale {} must be finite", scale);
  const Tensor qc = plain(q), bt = plain(block_table), s = plain(seq), p = plain(pos);
  R1_CHECK(qc.dim() == 3, "paged_attention: q {} must be (N, H, Dk)", qc.str());
  Tensor out = Tensor::empty({qc.size(0), qc.size(1), layout.Dv}, qc.dtype(), qc.device());
  check_paged("paged_attention", Tensor(), qc, pool, bt, s, p, &layout, out);
  kernels::paged_attention()(pool.device(), qc, pool, bt, s, p, layout, scale, out);
  return out;
}

}  // namespace r1
