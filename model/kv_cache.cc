// The paged KV cache (model/kv_cache.h).
#include "model/kv_cache.h"

#include <algorithm>

#include "engine/error.h"

namespace r1 {

PagedKvCache::PagedKvCache(int64_t layers, int64_t entry_width, int64_t num_blocks,
                           DType dtype, Device dev)
    : width_(entry_width), num_blocks_(num_blocks) {
  R1_CHECK(layers >= 1 && entry_width >= 1 && num_blocks >= 1 && num_blocks < (int64_t{1} << 31),
           "PagedKvCache: layers {}, entry width {}, blocks {} must be positive", layers,
           entry_width, num_blocks);
  for (int64_t l = 0; l < layers; ++l)
    pools_.push_back(Tensor::zeros({num_blocks, kBlockSize, entry_width}, dtype, dev));
  refs_.assign(static_cast<size_t>(num_blocks), 0);
  for (int64_t b = num_blocks - 1; b >= 0; --b) free_.push_back(static_cast<int32_t>(b));
}

void PagedKvCache::check_seq(int64_t seq, const char* what) const {
  R1_CHECK(seq >= 0 && seq < static_cast<int64_t>(len_.size()) && len_[seq] >= 0,
           "PagedKvCache::{}: no live sequence {}", what, seq);
}

int32_t PagedKvCache::take_block() {
  R1_CHECK(!free_.empty(), "PagedKvCache: out of blocks ({} of {} tokens each in use)",
           num_blocks_, kBlockSize);
  const int32_t b = free_.back();
  free_.pop_back();
  refs_[b] = 1;
  return b;
}

int64_t PagedKvCache::add_sequence() {
  R1_CHECK(fixed_seqs_ == 0 || static_cast<int64_t>(blocks_.size()) < fixed_seqs_,
           "PagedKvCache: sequence {} beyond the fixed block table's {} rows", blocks_.size(),
           fixed_seqs_);
  blocks_.emplace_back();
  len_.push_back(0);
  dirty_ = true;
  return static_cast<int64_t>(len_.size()) - 1;
}

int64_t PagedKvCache::fork(int64_t parent) {
  check_seq(parent, "fork");
  const int64_t child = add_sequence();
  std::vector<int32_t> blocks = blocks_[parent];
  const int64_t len = len_[parent];
  for (int32_t b : blocks) ++refs_[b];
  if (len % kBlockSize != 0) {  // the partial last block: the child gets its own copy
    const int32_t src = blocks.back();
    --refs_[src];
    const int32_t dst = take_block();
    for (Tensor& p : pools_) p.narrow(0, dst, 1).copy_(p.narrow(0, src, 1));
    blocks.back() = dst;
  }
  blocks_[child] = std::move(blocks);
  len_[child] = len;
  return child;
}

void PagedKvCache::release(int64_t seq) {
  check_seq(seq, "release");
  for (int32_t b : blocks_[seq])
    if (--refs_[b] == 0) free_.push_back(b);
  blocks_[seq].clear();
  len_[seq] = -1;
  dirty_ = true;
}

int64_t PagedKvCache::extend(int64_t seq, int64_t n) {
  check_seq(seq, "extend");
  R1_CHECK(n >= 0, "PagedKvCache::extend: n {} < 0", n);
  const int64_t start = len_[seq], end = start + n;
  std::vector<int32_t>& blocks = blocks_[seq];
  // A shared partial block is never written: fork copies it, so the last block is owned.
  R1_CHECK(fixed_blocks_ == 0 || end <= fixed_blocks_ * kBlockSize,
           "PagedKvCache::extend: {} tokens for sequence {} exceed the fixed block table's {} "
           "blocks of {}", end, seq, fixed_blocks_, kBlockSize);
  while (static_cast<int64_t>(blocks.size()) * kBlockSize < end) {
    blocks.push_back(take_block());
    dirty_ = true;
  }
  len_[seq] = end;
  return start;
}

int64_t PagedKvCache::length(int64_t seq) const {
  check_seq(seq, "length");
  return len_[seq];
}

void PagedKvCache::fix_table(int64_t max_seqs, int64_t max_blocks) {
  R1_CHECK(max_seqs >= 1 && max_blocks >= 1 && max_seqs * max_blocks < (int64_t{1} << 31),
           "PagedKvCache::fix_table: {} x {} entries", max_seqs, max_blocks);
  R1_CHECK(static_cast<int64_t>(blocks_.size()) <= max_seqs,
           "PagedKvCache::fix_table: {} sequences already, {} rows asked", blocks_.size(),
           max_seqs);
  for (const auto& b : blocks_)
    R1_CHECK(static_cast<int64_t>(b.size()) <= max_blocks,
             "PagedKvCache::fix_table: a sequence holds {} blocks, {} asked", b.size(),
             max_blocks);
  fixed_seqs_ = max_seqs;
  fixed_blocks_ = max_blocks;
  table_ = Tensor::empty({max_seqs, max_blocks}, DType::I32, pools_.front().device());
  dirty_ = true;
}

const Tensor& PagedKvCache::block_table() {
  if (!dirty_) return table_;
  if (fixed_seqs_ > 0) {
    std::vector<int32_t> t(static_cast<size_t>(fixed_seqs_ * fixed_blocks_), -1);
    for (size_t s = 0; s < blocks_.size(); ++s)
      std::copy(blocks_[s].begin(), blocks_[s].end(),
                t.begin() + static_cast<int64_t>(s) * fixed_blocks_);
    copy_bytes(table_.data_ptr(), table_.device(), t.data(), Device::cpu(),
               t.size() * sizeof(int32_t));
    dirty_ = false;
    return table_;
  }
  size_t width = 1;
  for (const auto& b : blocks_) width = std::max(width, b.size());
  std::vector<int32_t> t(blocks_.size() * width, -1);
  for (size_t s = 0; s < blocks_.size(); ++s)
    std::copy(blocks_[s].begin(), blocks_[s].end(), t.begin() + static_cast<int64_t>(s * width));
  table_ = Tensor::from_vector(t, {static_cast<int64_t>(blocks_.size()),
                                   static_cast<int64_t>(width)})
               .to(pools_.front().device());
  dirty_ = false;
  return table_;
}

}  // namespace r1
