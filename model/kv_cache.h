// The paged KV cache of generation (DESIGN.md "Generation"): per layer a pool of blocks of
// kBlockSize = 64 token entries (engine/kernels_paged.h has the layout and the attention over
// it), a block table per sequence, and reference-counted blocks so that the G samples of one
// prompt share the prompt's blocks (prefill once, then fork). MLA caches the absorbed form's
// latent entry per token (kv_lora_rank + rope numbers, shared by all heads); a dense GQA model
// caches keys and values of its kv heads.
#pragma once
#include <cstdint>
#include <vector>

#include "engine/tensor.h"

namespace r1 {

class PagedKvCache {
 public:
  static constexpr int64_t kBlockSize = 64;

  // layers pools of num_blocks blocks of kBlockSize entries of entry_width numbers each.
  PagedKvCache(int64_t layers, int64_t entry_width, int64_t num_blocks, DType dtype, Device dev);

  // A new empty sequence; returns its id (its row of the block table).
  int64_t add_sequence();
  // A new sequence holding the same tokens as `parent`: the parent's full blocks are shared
  // (reference counted, never written again: writes only ever go to a sequence's last,
  // partial block), its partial last block is copied.
  int64_t fork(int64_t parent);
  // Drops the sequence; its blocks return to the free list when no sequence holds them.
  void release(int64_t seq);
  // Makes room for n more tokens; returns the first new position (the old length). Throws
  // r1::Error when the pool is out of blocks.
  int64_t extend(int64_t seq, int64_t n);
  int64_t length(int64_t seq) const;

  // (sequences, max blocks) i32 on the cache's device: unused entries -1. After fix_table,
  // always the same (max_seqs, max_blocks) tensor, rewritten in place when the cache changed.
  const Tensor& block_table();
  // From now on the block table keeps one shape and one address (a captured decode step,
  // engine/step_graph.h, reads it there): rows for sequence ids below max_seqs, max_blocks
  // blocks each. Adding a sequence or a block beyond that throws r1::Error.
  void fix_table(int64_t max_seqs, int64_t max_blocks);
  Tensor& pool(int64_t layer) { return pools_[static_cast<size_t>(layer)]; }
  int64_t layers() const { return static_cast<int64_t>(pools_.size()); }
  int64_t entry_width() const { return width_; }
  int64_t blocks_in_use() const { return num_blocks_ - static_cast<int64_t>(free_.size()); }
  int64_t num_blocks() const { return num_blocks_; }

 private:
  int32_t take_block();
  void check_seq(int64_t seq, const char* what) const;

  int64_t width_, num_blocks_;
  std::vector<Tensor> pools_;
  std::vector<int32_t> free_;      // free block ids, taken from the back
  std::vector<int32_t> refs_;      // per block
  std::vector<std::vector<int32_t>> blocks_;  // per sequence
  std::vector<int64_t> len_;       // per sequence; -1 = released
  Tensor table_;
  bool dirty_ = true;
  int64_t fixed_seqs_ = 0, fixed_blocks_ = 0;  // fix_table's shape; 0: the table grows
};

}  // namespace r1
