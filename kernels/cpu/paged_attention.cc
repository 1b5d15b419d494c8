// CPU: writes into and attention over a paged KV cache (contract in engine/kernels_paged.h).
//
// Every chain of the contract (a score: q . key over d ascending; a head's softmax sum and
// each output column: over positions ascending) is one accumulator whatever the batch, so a
// row's bits depend on nothing but its own query and cache: batch invariant, and prefill
// equals token-by-token decode exactly. Two versions:
//  - attend_plain, the math as loops, one (row, head) at a time: runs f64.
//  - attend_group, f32: one task per (row, kv head) takes the G query heads of the kv head
//    together, and vector lanes run independent chains side by side: the scores and the
//    softmax with lanes = heads (q transposed to (Dk, heads); 8 or 16 positions in flight for
//    the FMA latency), P . V with lanes = output columns. Written once over vector policies
//    (kernels/cpu/simd_softmax.h) and compiled per ISA; the process runs the batch-invariant
//    product's ISA: a term is an FMA (avx2, avx512: the same bits at every vector width) or
//    a multiply then an add (sse2); exp is fast_expf (< 1 ulp).
// Both read a sequence's blocks through pointers resolved once per row; every index is
// checked before the parallel region.
//
// Ceiling: the issue rate. The tiny preset's decode (G = 4 heads on one latent, Dk 40,
// Dv 32) costs per (row, position) 40 broadcast-FMAs for the scores (4 heads in 4 lanes),
// an exp and a few ops on 4 lanes, 8 FMAs and 6 loads for P . V: ~75 instructions, ~19
// cycles at 4 per cycle. Last measured, one thread, 128 rows x 72 positions (the kernel
// timed apart): 15 ns per (row, position), ~31 cycles at the 2.1 GHz nominal clock (0.6 of
// it; 2-core Sapphire Rapids KVM guest, shared). In the sampling benchmark (perf record
// build/bin/bench_rl --benchmark_filter=Sampling, OMP_NUM_THREADS=1) it is 15% of the call,
// from 42% for one scalar chain per (row, head) with a checked slot lookup per key.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "engine/kernels_paged.h"
#include "kernels/cpu/cpu_common.h"
#include "kernels/cpu/simd_softmax.h"

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

// One call's operands, indices already checked. q (N, H, Dk), pool (blocks, bs, W),
// out (N, H, Dv); row n attends over positions 0 .. pos[n] of its sequence's blocks.
template <class T>
struct Attend {
  const T* q;
  const T* pool;
  T* out;
  const int32_t* table;  // (seqs, max_blocks)
  const int64_t* seq;
  const int64_t* pos;
  int64_t H, G, W, max_blocks, block_size;
  PagedLayout l;
  T scale;

  // Row n's entries: the block of position j starts at blocks[j / block_size] (entry 0).
  void row_blocks(int64_t n, std::vector<const T*>& blocks) const {
    const int64_t nb = pos[n] / block_size + 1;
    const int32_t* ids = table + seq[n] * max_blocks;
    blocks.resize(static_cast<size_t>(nb));
    for (int64_t b = 0; b < nb; ++b) blocks[b] = pool + ids[b] * block_size * W;
  }
};

// ---- the plain version: one (row, head), scalar loops -------------------------------------
// s: len scratch scores.
template <class T>
void attend_plain(const Attend<T>& a, const std::vector<const T*>& blocks, int64_t n,
                  int64_t h, T* s) {
  const PagedLayout& l = a.l;
  const int64_t g = h / a.G, len = a.pos[n] + 1, bs = a.block_size;
  const T* qr = a.q + (n * a.H + h) * l.Dk;
  auto entry = [&](int64_t j) { return blocks[j / bs] + (j % bs) * a.W; };
  T m = -std::numeric_limits<T>::infinity();
  for (int64_t j = 0; j < len; ++j) {
    const T* key = entry(j) + g * l.Dk;
    T dot = 0;
    for (int64_t d = 0; d < l.Dk; ++d) dot += qr[d] * key[d];
    s[j] = dot * a.scale;
    m = s[j] > m ? s[j] : m;
  }
  T sum = 0;
  for (int64_t j = 0; j < len; ++j) sum += (s[j] = std::exp(s[j] - m));
  T* o = a.out + (n * a.H + h) * l.Dv;
  for (int64_t d = 0; d < l.Dv; ++d) o[d] = 0;
  for (int64_t j = 0; j < len; ++j) {
    const T* val = entry(j) + l.v_offset + g * l.Dv;
    for (int64_t d = 0; d < l.Dv; ++d) o[d] += s[j] * val[d];
  }
  const T inv = T(1) / sum;
  for (int64_t d = 0; d < l.Dv; ++d) o[d] *= inv;
}

// ---- the vector version: one (row, kv head), its G heads together ------------------------
// Positions scored side by side: FMA latency 4 x 2 pipes wants >= 8 independent chains; 16
// for 512-bit policies (32 vector registers).
template <class P>
constexpr int kPositionsInFlight = sizeof(typename P::V) == 64 ? 16 : 8;

// R consecutive positions' scores for one tile of heads: s[r * L + lane] = scale *
// sum_d qt[d * L + lane] * key[r * W + d], each lane of each position one chain over d.
template <class P, int R>
inline void score_positions(const typename P::T* qt, const typename P::T* key, int64_t W,
                            int64_t Dk, const typename P::V& scale, typename P::T* s,
                            typename P::V& m) {
  using V = typename P::V;
  constexpr int L = P::kLanes;
  V acc[R], qv, kv;
  for (int r = 0; r < R; ++r) P::zero(acc[r]);
  for (int64_t d = 0; d < Dk; ++d) {
    P::load(qv, qt + d * L);
    for (int r = 0; r < R; ++r) {
      P::bcast(kv, key[r * W + d]);
      P::madd(acc[r], qv, kv);
    }
  }
  for (int r = 0; r < R; ++r) {
    P::mul(acc[r], scale);
    P::store(s + r * L, acc[r]);
    P::max(m, acc[r]);
  }
}

// The values of one (row, kv head): value_j = blocks[j / bs] + (j % bs) * W + off, Dv numbers.
template <class T>
struct Values {
  const std::vector<const T*>& blocks;
  int64_t len, bs, W, off, Dv;
};

// P . V for NH heads x NV vectors of columns from column c0, one accumulator each (NH * NV
// <= 8: FMA latency x 2 pipes wants 8 chains, and 16 xmm/ymm registers hold them with the
// values): o[a * Dv + c] = inv[a] * sum_j p[j * ps + a] * value_j[c] for the heads a < NH and
// the columns c of the NV vectors (the last holding `tail` columns, or full when tail = 0),
// each lane a chain over j ascending.
template <class Pv, int NH, int NV>
inline void weighted_values(const typename Pv::T* p, int64_t ps, const typename Pv::T* inv,
                            const Values<typename Pv::T>& x, int64_t c0, int tail,
                            typename Pv::T* o) {
  using T = typename Pv::T;
  using V = typename Pv::V;
  constexpr int L = Pv::kLanes;
  V acc[NH][NV], vv[NV], pv;
  for (int a = 0; a < NH; ++a)
    for (int v = 0; v < NV; ++v) Pv::zero(acc[a][v]);
  for (int64_t j0 = 0, b = 0; j0 < x.len; j0 += x.bs, ++b) {
    const T* val = x.blocks[b] + x.off + c0;
    const int64_t cnt = std::min(x.bs, x.len - j0);
    for (int64_t i = 0; i < cnt; ++i, val += x.W) {
      for (int v = 0; v < NV; ++v) {
        if (v == NV - 1 && tail) Pv::load_part(vv[v], val + v * L, tail);
        else Pv::load(vv[v], val + v * L);
      }
      for (int a = 0; a < NH; ++a) {
        Pv::bcast(pv, p[(j0 + i) * ps + a]);
        for (int v = 0; v < NV; ++v) Pv::madd(acc[a][v], pv, vv[v]);
      }
    }
  }
  for (int a = 0; a < NH; ++a) {
    Pv::bcast(pv, inv[a]);
    T* oa = o + a * x.Dv + c0;
    for (int v = 0; v < NV; ++v) {
      Pv::mul(acc[a][v], pv);
      if (v == NV - 1 && tail) Pv::store_part(oa + v * L, acc[a][v], tail);
      else Pv::store(oa + v * L, acc[a][v]);
    }
  }
}

// weighted_values for NH heads over all Dv columns, in tiles of 4, 2 or 1 vectors.
template <class Pv, int NH>
inline void weighted_values_heads(const typename Pv::T* p, int64_t ps, const typename Pv::T* inv,
                                  const Values<typename Pv::T>& x, typename Pv::T* o) {
  constexpr int L = Pv::kLanes;
  const int64_t nvec = (x.Dv + L - 1) / L;
  for (int64_t v0 = 0; v0 < nvec;) {
    const int64_t left = nvec - v0;
    const int nv = left >= 4 && NH <= 2 ? 4 : left >= 2 ? 2 : 1;
    const int tail = v0 + nv == nvec ? static_cast<int>(x.Dv % L) : 0;
    if (nv == 4) weighted_values<Pv, NH, 4>(p, ps, inv, x, v0 * L, tail, o);
    else if (nv == 2) weighted_values<Pv, NH, 2>(p, ps, inv, x, v0 * L, tail, o);
    else weighted_values<Pv, NH, 1>(p, ps, inv, x, v0 * L, tail, o);
    v0 += nv;
  }
}

// Row n, kv head g: out[n, h] for the G heads h of g. Scores and softmax with lanes = heads
// in policy P, P . V with lanes = columns in policy Pv (both FMA, or both sse2: the same bits
// whatever their widths). qt (Dk, P's lanes) and s (len, P's lanes) scratch.
template <class P, class Pv>
inline void attend_group(const Attend<typename P::T>& a,
                         const std::vector<const typename P::T*>& blocks, int64_t n, int64_t g,
                         typename P::T* qt, typename P::T* s) {
  using T = typename P::T;
  using V = typename P::V;
  constexpr int L = P::kLanes, R = kPositionsInFlight<P>;
  const PagedLayout& l = a.l;
  const int64_t len = a.pos[n] + 1, bs = a.block_size, W = a.W;
  const Values<T> values{blocks, len, bs, W, l.v_offset + g * l.Dv, l.Dv};
  V scale, m, e, sum;
  P::bcast(scale, a.scale);
  for (int64_t h0 = 0; h0 < a.G; h0 += L) {  // a tile of up to L heads
    const int64_t nh = std::min<int64_t>(L, a.G - h0), head0 = g * a.G + h0;
    const T* qh = a.q + (n * a.H + head0) * l.Dk;
    std::memset(qt, 0, sizeof(T) * l.Dk * L);  // lanes past nh: 0, harmless, never read
    for (int64_t lane = 0; lane < nh; ++lane)
      for (int64_t d = 0; d < l.Dk; ++d) qt[d * L + lane] = qh[lane * l.Dk + d];
    // Scores, positions ascending block by block; m = their max per head.
    P::bcast(m, -std::numeric_limits<T>::infinity());
    for (int64_t j0 = 0, b = 0; j0 < len; j0 += bs, ++b) {
      const T* key = blocks[b] + g * l.Dk;
      const int64_t cnt = std::min(bs, len - j0);
      int64_t i = 0;
      for (; i + R <= cnt; i += R)
        score_positions<P, R>(qt, key + i * W, W, l.Dk, scale, s + (j0 + i) * L, m);
      for (; i < cnt; ++i)
        score_positions<P, 1>(qt, key + i * W, W, l.Dk, scale, s + (j0 + i) * L, m);
    }
    // P_j = exp(S_j - m) (unnormalized), the sum over j ascending.
    P::zero(sum);
    for (int64_t j = 0; j < len; ++j) {
      P::load(e, s + j * L);
      P::sub(e, m);
      P::exp(e);
      P::store(s + j * L, e);
      P::add(sum, e);
    }
    alignas(64) T inv[L];
    P::store(inv, sum);
    for (int64_t h = 0; h < nh; ++h) inv[h] = T(1) / inv[h];
    // out[n, head] = inv * sum_j P_j value_j, 4, 2 or 1 heads at a time.
    T* o = a.out + (n * a.H + head0) * l.Dv;
    for (int64_t h = 0; h < nh;) {
      const int64_t left = nh - h;
      if (left >= 4) weighted_values_heads<Pv, 4>(s + h, L, inv + h, values, o + h * l.Dv);
      else if (left >= 2) weighted_values_heads<Pv, 2>(s + h, L, inv + h, values, o + h * l.Dv);
      else weighted_values_heads<Pv, 1>(s + h, L, inv + h, values, o + h * l.Dv);
      h += left >= 4 ? 4 : left >= 2 ? 2 : 1;
    }
  }
}

// The per-ISA entry points: `flatten` inlines the policies' target code into them.
template <class P, class Pv>
__attribute__((target("avx512f,avx2,fma"), flatten)) void attend_group_avx512(
    const Attend<float>& a, const std::vector<const float*>& blocks, int64_t n, int64_t g,
    float* qt, float* s) {
  attend_group<P, Pv>(a, blocks, n, g, qt, s);
}
template <class P, class Pv>
R1_TARGET_AVX2 __attribute__((flatten)) void attend_group_avx2(
    const Attend<float>& a, const std::vector<const float*>& blocks, int64_t n, int64_t g,
    float* qt, float* s) {
  attend_group<P, Pv>(a, blocks, n, g, qt, s);
}
template <class P, class Pv>
__attribute__((flatten)) void attend_group_sse2(const Attend<float>& a,
                                                const std::vector<const float*>& blocks,
                                                int64_t n, int64_t g, float* qt, float* s) {
  attend_group<P, Pv>(a, blocks, n, g, qt, s);
}

using GroupKernel = void (*)(const Attend<float>&, const std::vector<const float*>&, int64_t,
                             int64_t, float*, float*);

// The kernel for G heads per kv head on the process's ISA (softmax_isa): the scores in the
// narrowest vectors that hold G lanes (a lane past G is wasted work), P . V in the widest;
// every FMA width gives the same bits lane for lane. sse2 (no FMA) for both otherwise.
struct GroupKernelChoice {
  GroupKernel fn;
  int lanes;  // the scores' policy's
};
GroupKernelChoice group_kernel(int64_t G) {
  using simd::Avx2Softmax, simd::Avx512Softmax, simd::Fma128Softmax, simd::Sse2Softmax;
  switch (softmax_isa()) {
    case SoftmaxIsa::kAvx512: {
      using Pv = Avx512Softmax<float>;
      if (G > 8) return {attend_group_avx512<Avx512Softmax<float>, Pv>, 16};
      if (G > 4) return {attend_group_avx512<Avx2Softmax<float>, Pv>, 8};
      return {attend_group_avx512<Fma128Softmax, Pv>, 4};
    }
    case SoftmaxIsa::kAvx2: {
      using Pv = Avx2Softmax<float>;
      if (G > 4) return {attend_group_avx2<Avx2Softmax<float>, Pv>, 8};
      return {attend_group_avx2<Fma128Softmax, Pv>, 4};
    }
    default:
      return {attend_group_sse2<Sse2Softmax<float>, Sse2Softmax<float>>, 4};
  }
}

template <class T>
void attend_rows(const Tensor& q, const Tensor& pool, const Tensor& bt, const int64_t* ps,
                 const int64_t* pp, const PagedLayout& l, double scale, Tensor& out) {
  const SlotFinder f = finder(pool, bt);
  const int64_t N = q.size(0), H = q.size(1), W = pool.size(2);
  // Check every index before the parallel region (kernels cannot throw inside it).
  int64_t longest = 0;
  for (int64_t n = 0; n < N; ++n) {
    f.slot(ps[n], pp[n], "paged_attention");
    for (int64_t j = 0; j <= pp[n]; j += f.block_size) f.slot(ps[n], j, "paged_attention");
    longest = std::max(longest, pp[n] + 1);
  }
  const Attend<T> a{static_cast<const T*>(q.data_ptr()), static_cast<const T*>(pool.data_ptr()),
                    out.data<T>(), f.table, ps, pp, H, H / l.Hk, W, f.max_blocks,
                    f.block_size, l, static_cast<T>(scale)};
  const bool par = worth_parallel(N * H * longest * (l.Dk + l.Dv));
  if constexpr (std::is_same_v<T, float>) {
    const GroupKernelChoice k = group_kernel(a.G);
    const int64_t L = k.lanes;
#pragma omp parallel if (par)
    {
      thread_local std::vector<const float*> blocks;
      thread_local std::vector<float> qt, s;
      qt.resize(static_cast<size_t>(l.Dk * L));
      s.resize(static_cast<size_t>(longest * L));
      int64_t blocks_of = -1;  // the row `blocks` holds
#pragma omp for schedule(static)
      for (int64_t ng = 0; ng < N * l.Hk; ++ng) {
        const int64_t n = ng / l.Hk;
        if (n != blocks_of) a.row_blocks(n, blocks), blocks_of = n;
        k.fn(a, blocks, n, ng % l.Hk, qt.data(), s.data());
      }
    }
  } else {
#pragma omp parallel if (par)
    {
      std::vector<const T*> blocks;
      std::vector<T> s(static_cast<size_t>(longest));
      int64_t blocks_of = -1;
#pragma omp for schedule(static)
      for (int64_t nh = 0; nh < N * H; ++nh) {
        const int64_t n = nh / H;
        if (n != blocks_of) a.row_blocks(n, blocks), blocks_of = n;
        attend_plain(a, blocks, n, nh % H, s.data());
      }
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
