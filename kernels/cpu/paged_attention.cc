// CPU: writes into and attention over a paged KV cache (contract in engine/kernels_paged.h).
// One (row, head) pair per task; each reduces over d and over positions in ascending order
// with one accumulator (a plain loop, no lanes), so its bits depend on nothing but its own
// query and cache: batch invariant, and prefill equals token-by-token decode exactly.
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "engine/kernels_paged.h"
#include "kernels/cpu/cpu_common.h"

namespace r1::cpu {
namespace {

// The entry of (s, p), after checking the sequence, the position and the block id.
struct SlotFinder {
  const int32_t* table;
  int64_t seqs, max_blocks, block_size, num_blocks;
  int64_t slot(int64_t s, int64_t p, const char* what) const {
    R1_CHECK(s >= 0 && s < seqs, "{}: sequence {} outside [0, {})", what, s, seqs);
    R1_CHECK(p >= 0 && p / block_size < max_blocks,
             "{}: position {} beyond the block table ({} blocks of {})", what, p, max_blocks,
             block_size);
    const int64_t b = table[s * max_blocks + p / block_size];
    R1_CHECK(b >= 0 && b < num_blocks, "{}: sequence {} position {} maps to block {} of {}",
             what, s, p, b, num_blocks);
    return b * block_size + p % block_size;
  }
};

SlotFinder finder(const Tensor& pool, const Tensor& bt) {
  return {static_cast<const int32_t*>(bt.data_ptr()), bt.size(0), bt.size(1), pool.size(1),
          pool.size(0)};
}

void paged_cache_write_cpu(const Tensor& entries, const Tensor& block_table, const Tensor& seq,
                           const Tensor& pos, Tensor& pool) {
  check_paged("paged_cache_write", entries, Tensor(), pool, block_table, seq, pos, nullptr,
              Tensor());
  const SlotFinder f = finder(pool, block_table);
  const int64_t N = entries.size(0), W = pool.size(2);
  const int64_t* ps = static_cast<const int64_t*>(seq.data_ptr());
  const int64_t* pp = static_cast<const int64_t*>(pos.data_ptr());
  const size_t row_bytes = static_cast<size_t>(W) * dtype_size(pool.dtype());
  auto* dst = static_cast<char*>(pool.data_ptr());
  const auto* src = static_cast<const char*>(entries.data_ptr());
  for (int64_t n = 0; n < N; ++n)  // in order: the later of two rows naming one slot wins
    std::memcpy(dst + f.slot(ps[n], pp[n], "paged_cache_write") * row_bytes,
                src + n * row_bytes, row_bytes);
}

template <class T>
void attend_rows(const Tensor& q, const Tensor& pool, const Tensor& bt, const int64_t* ps,
                 const int64_t* pp, const PagedLayout& l, double scale, Tensor& out) {
  const SlotFinder f = finder(pool, bt);
  const int64_t N = q.size(0), H = q.size(1), W = pool.size(2), G = H / l.Hk;
  // Check every index before the parallel region (kernels cannot throw inside it).
  int64_t longest = 0;
  for (int64_t n = 0; n < N; ++n) {
    f.slot(ps[n], pp[n], "paged_attention");
    for (int64_t j = 0; j <= pp[n]; j += f.block_size) f.slot(ps[n], j, "paged_attention");
    longest = std::max(longest, pp[n] + 1);
  }
  const T* qd = static_cast<const T*>(q.data_ptr());
  const T* pd = static_cast<const T*>(pool.data_ptr());
  T* od = out.data<T>();
  const T sc = static_cast<T>(scale);
  const bool par = worth_parallel(N * H * longest * (l.Dk + l.Dv));
#pragma omp parallel if (par)
  {
    std::vector<T> s(static_cast<size_t>(longest));
#pragma omp for schedule(static)
    for (int64_t nh = 0; nh < N * H; ++nh) {
      const int64_t n = nh / H, h = nh % H, g = h / G, len = pp[n] + 1;
      const T* qr = qd + nh * l.Dk;
      T m = -std::numeric_limits<T>::infinity();
      for (int64_t j = 0; j < len; ++j) {
        const T* key = pd + f.slot(ps[n], j, "") * W + g * l.Dk;
        T dot = 0;
        for (int64_t d = 0; d < l.Dk; ++d) dot += qr[d] * key[d];
        s[j] = dot * sc;
        m = s[j] > m ? s[j] : m;
      }
      T sum = 0;
      for (int64_t j = 0; j < len; ++j) sum += (s[j] = std::exp(s[j] - m));
      T* o = od + nh * l.Dv;
      for (int64_t d = 0; d < l.Dv; ++d) o[d] = 0;
      for (int64_t j = 0; j < len; ++j) {
        const T* val = pd + f.slot(ps[n], j, "") * W + l.v_offset + g * l.Dv;
        for (int64_t d = 0; d < l.Dv; ++d) o[d] += s[j] * val[d];
      }
      const T inv = T(1) / sum;
      for (int64_t d = 0; d < l.Dv; ++d) o[d] *= inv;
    }
  }
}

void paged_attention_cpu(const Tensor& q, const Tensor& pool, const Tensor& block_table,
                         const Tensor& seq, const Tensor& pos, const PagedLayout& layout,
                         double scale, Tensor& out) {
  check_paged("paged_attention", Tensor(), q, pool, block_table, seq, pos, &layout, out);
  const int64_t* ps = static_cast<const int64_t*>(seq.data_ptr());
  const int64_t* pp = static_cast<const int64_t*>(pos.data_ptr());
  dispatch_float(q.dtype(), "paged_attention", [&](auto tag) {
    using T = typename decltype(tag)::type;
    attend_rows<T>(q, pool, block_table, ps, pp, layout, scale, out);
  });
}

}  // namespace

R1_REGISTER_KERNEL(paged_cache_write, CPU, paged_cache_write_cpu);
R1_REGISTER_KERNEL(paged_attention, CPU, paged_attention_cpu);

}  // namespace r1::cpu
