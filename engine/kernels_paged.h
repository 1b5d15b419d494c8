// Kernel contracts of attention over a paged KV cache (DESIGN.md "Generation"): the decode
// step and the prefill of KV-cached generation. Kept apart from engine/kernels.h, whose
// general conventions apply (contiguous operands on one device).
//
// The cache of one layer is a pool of blocks, pool (num_blocks, block_size, W) float: every
// cached token owns one entry of W numbers. A sequence's tokens live in the blocks its row of
// block_table (num_seqs, max_blocks) i32 lists, in order: position p of sequence s is entry
// p % block_size of block block_table[s, p / block_size]. Blocks may be shared between
// sequences (the G samples of one prompt share the prompt's full blocks).
//
// The layout says where keys and values sit in an entry: kv head g's key is
// entry[g * Dk, (g + 1) * Dk) and its value entry[v_offset + g * Dv, v_offset + (g + 1) * Dv).
// Dense GQA: Hk kv heads, v_offset = Hk * Dk. MLA's absorbed form (model/mla_decode.h): one
// kv head whose key is [latent, k_pe] (Dk = kv_lora_rank + rope) and whose value is the
// latent itself (v_offset = 0, Dv = kv_lora_rank): keys and values overlap, as FlashMLA reads
// them.
//
// paged_attention, per query row n and head h (kv head g = h / (H / Hk)), over positions
// j = 0 .. pos[n] of sequence seq[n] (all written before the call):
//   S_j = scale * q[n, h, :] . key_j,  P_j = exp(S_j - max S) / sum_j exp(S_j - max S),
//   out[n, h, :] = sum_j P_j value_j
// Every (n, h) reduces over d and over j in ascending order with one accumulator, whatever N,
// the other rows and the number of threads: a row's result depends only on its own query
// and cache (batch invariant), and prefill (many rows of one sequence) and decode (one row
// per sequence) run the same arithmetic. A backend may run independent chains side by side
// (vector lanes over heads, positions or output columns) and fixes the operations of a chain
// once per process: on the CPU a term is one fused multiply-add (avx2, avx512) or a multiply
// then an add (sse2), as the batch-invariant product's ISA, and f32's exp is a polynomial
// (< 1 ulp; kernels/cpu/paged_attention.cc).
#pragma once
#include <cstdint>

#include "engine/kernels.h"

namespace r1 {

struct PagedLayout {
  int64_t Hk = 1, Dk = 0, Dv = 0, v_offset = 0;
};

// entries (N, W) -> pool[block of (seq[n], pos[n]), pos[n] % block_size, :] = entries[n, :].
// seq, pos (N) i64; block_table (S, max_blocks) i32. Two rows naming the same slot: the
// later row wins.
R1_KERNEL(paged_cache_write, void(const Tensor& entries, const Tensor& block_table,
                                  const Tensor& seq, const Tensor& pos, Tensor& pool))
// q (N, H, Dk), pool, block_table, seq, pos (N) i64 -> out (N, H, Dv) of q's dtype.
R1_KERNEL(paged_attention, void(const Tensor& q, const Tensor& pool, const Tensor& block_table,
                                const Tensor& seq, const Tensor& pos, const PagedLayout& layout,
                                double scale, Tensor& out))

// Checks the operands of the two kernels against the contract; every backend calls it first
// (q and out undefined for paged_cache_write, entries undefined for paged_attention). Index
// values (seq, pos, block ids) are checked where they are read.
inline void check_paged(const char* what, const Tensor& entries, const Tensor& q,
                        const Tensor& pool, const Tensor& block_table, const Tensor& seq,
                        const Tensor& pos, const PagedLayout* layout, const Tensor& out) {
  R1_CHECK(pool.defined() && pool.dim() == 3 && dtype_is_floating(pool.dtype()) &&
               pool.is_contiguous(),
           "{}: pool {} must be a contiguous float (blocks, block_size, W)", what,
           pool.defined() ? pool.str() : "undefined");
  const Device dev = pool.device();
  R1_CHECK(block_table.defined() && block_table.dim() == 2 &&
               block_table.dtype() == DType::I32 && block_table.is_contiguous() &&
               block_table.device() == dev,
           "{}: block_table {} must be a contiguous (seqs, max_blocks) i32 on {}", what,
           block_table.defined() ? block_table.str() : "undefined", dev.str());
  const Tensor& rows = entries.defined() ? entries : q;
  R1_CHECK(rows.defined(), "{}: undefined operand", what);
  const int64_t N = rows.size(0);
  R1_CHECK(seq.defined() && pos.defined() && seq.dim() == 1 && pos.dim() == 1 &&
               seq.size(0) == N && pos.size(0) == N && seq.dtype() == DType::I64 &&
               pos.dtype() == DType::I64 && seq.is_contiguous() && pos.is_contiguous() &&
               seq.device() == dev && pos.device() == dev,
           "{}: seq {} and pos {} must be contiguous (N = {}) i64 on {}", what, seq.str(),
           pos.str(), N, dev.str());
  if (entries.defined()) {
    R1_CHECK(entries.dim() == 2 && entries.size(1) == pool.size(2) &&
                 entries.dtype() == pool.dtype() && entries.device() == dev &&
                 entries.is_contiguous(),
             "{}: entries {} must be a contiguous (N, W = {}) {} on {}", what, entries.str(),
             pool.size(2), dtype_name(pool.dtype()), dev.str());
    return;
  }
  R1_CHECK(layout != nullptr, "{}: no layout", what);
  const PagedLayout& l = *layout;
  R1_CHECK(q.dim() == 3 && q.dtype() == pool.dtype() && q.device() == dev && q.is_contiguous(),
           "{}: q {} must be a contiguous (N, H, Dk) {} on {}", what, q.str(),
           dtype_name(pool.dtype()), dev.str());
  const int64_t H = q.size(1);
  R1_CHECK(l.Hk >= 1 && H % l.Hk == 0 && l.Dk == q.size(2) && l.Dk >= 1 && l.Dv >= 1 &&
               l.v_offset >= 0 && l.Hk * l.Dk <= pool.size(2) &&
               l.v_offset + l.Hk * l.Dv <= pool.size(2),
           "{}: layout (Hk {}, Dk {}, Dv {}, v_offset {}) does not fit q {} and entries of {}",
           what, l.Hk, l.Dk, l.Dv, l.v_offset, q.str(), pool.size(2));
  R1_CHECK(out.defined() && out.shape() == Shape({N, H, l.Dv}) && out.dtype() == q.dtype() &&
               out.device() == dev && out.is_contiguous(),
           "{}: out {} must be a contiguous ({}, {}, {}) {}", what,
           out.defined() ? out.str() : "undefined", N, H, l.Dv, dtype_name(q.dtype()));
}

}  // namespace r1
