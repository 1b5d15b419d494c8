// The batch-invariant CPU matrix product (contract in kernels/cpu/gemm_invariant.h; why in
// DESIGN.md, "Batch invariance", and engine/determinism.h).
//
// Schedule. op(b) is packed once per call into panels of nr columns, k-major (panel q holds
// op(b)[k, q * nr + l] at [k][l], zeros past n), so a register tile reads one contiguous row
// of nr values per k. A register tile is kMr rows by nr = kNv vectors of columns, one
// accumulator per vector, and each accumulator lane is one chain over k in order. Nothing
// that varies with the call changes how a chain is computed:
//  - row remainders run the same loop with fewer rows (one instantiation per row count);
//    column remainders compute the zero-padded columns and do not store them;
//  - K is cut into blocks (a panel's block fits in L1); between blocks a chain's value is
//    stored to a T buffer and reloaded, which is exact, so the chain is unchanged;
//  - the tile shape (6 x 2 or 4 x 3 vectors) follows N, and a lane does the same either way;
//  - rows (and panels, when rows are few) are split over OpenMP threads with a static
//    schedule: the split decides which thread computes an element, never how.
// The kernels are written once over a vector policy (kernels/cpu/gemm_invariant_simd.h) and
// compiled per ISA by small wrappers with the target attribute and `flatten`, which inlines
// the policy's target code into them (the build has no -march: the binary runs on any
// x86-64). The ISA is chosen once per process, so bits never change within a run.
//
// Ceiling: the FMA peak of the widest ISA, 184 GFLOP/s per core measured (AVX-512, 2-core
// Sapphire Rapids KVM guest, shared). Last measured, one thread, the RL model's x @ w^T
// shapes (N 40..1024, K 32..384; bench_gemm_cpu --benchmark_filter=Invariant with
// OMP_NUM_THREADS=1): M 4096 0.68-0.84 of it (125-155 GFLOP/s, OpenBLAS 107-144), M 64
// 0.55-0.78 (101-143, OpenBLAS 84-112), M 1 0.03-0.08 (6-16, OpenBLAS 28-58: its gemv reads
// w along k, while a fixed k order per element with lanes across n needs w transposed, and
// at M 1 the transpose costs more than the product). dw of the lm head (a transposed, K 4096
// tokens): 107 GFLOP/s, OpenBLAS 126.
#include "kernels/cpu/gemm_invariant.h"

#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "engine/log.h"
#include "kernels/cpu/gemm_invariant_simd.h"

namespace r1::cpu {
namespace {

using simd::Avx2;
using simd::Avx512;
using simd::Sse2;

// ---- the kernels, written once over a tile shape S -------------------------------------
// A register tile: kMr rows by kNv vectors of columns, one accumulator per vector, 12 in all
// (24 for a transposed a with AVX-512: kWide, isa_kernels below):
// the 4-cycle FMA latency on two pipes needs 8 chains in flight, and 16 xmm/ymm registers
// (without AVX-512) hold 12 plus the panel's vectors and a broadcast. 6 rows x 2 vectors for
// most N; 4 x 3 where its panels pad fewer columns: the kv projections' N 40 and 48 fill
// 40 / 64 and 48 / 64 columns of 32-wide AVX-512 f32 panels, 40 / 48 and 48 / 48 of 48-wide
// ones (measured at M 4096, one thread: 96 -> 112 GFLOP/s at N 40, 111 -> 141 at N 48). A
// 12 x 1 tile, the other way to narrower panels, gained nothing at N 48 (111 GFLOP/s
// either way): it issues 13 loads per 12 FMAs.
template <class Vp_, int kNv_, bool kWide_ = false>
struct TileShape {
  using Vp = Vp_;
  using T = typename Vp::T;
  using V = typename Vp::V;
  static constexpr int kAccs = kWide_ && sizeof(typename Vp_::V) == 64 ? 24 : 12;
  static constexpr int kNv = kNv_, kMr = kAccs / kNv_, kLanes = Vp::kLanes;
  static constexpr int64_t kNr = int64_t{kNv_} * Vp::kLanes;
};

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// One call's operands and its split into work items (row blocks x panel groups).
template <class T>
struct Plan {
  ProductShape s;
  T alpha, beta;
  const T* a;
  const T* b;
  T* c;
  T* packed;             // `panels` panels of (k, nr), zeros past n; null: each item packs
  int64_t nr, mr;        // panel width, register-tile rows (the tile shape's)
  int64_t panels, kc;    // ceil(n / nr); the K block
  int64_t block_rows;    // rows per work item, a multiple of mr
  int64_t groups, panels_per_group;
};

// Packs rows [k0, k0 + kc) of panel q of op(b) (k, n) into dst (kc, nr), zeros past n.
// op(b) stored (k, n) is copied row by row; stored (n, k) (trans_b: a linear layer's
// weight, the model's every projection) is transposed.
template <class S>
void pack_panel(const Plan<typename S::T>& p, int64_t q, int64_t k0, int64_t kc,
                typename S::T* dst) {
  using T = typename S::T;
  constexpr int64_t kNr = S::kNr;
  const int64_t n0 = q * kNr, cols = std::min(kNr, p.s.n - n0), ldb = p.s.ldb;
  if (!p.s.trans_b) {
    for (int64_t k = 0; k < kc; ++k) {
      const T* src = p.b + (k0 + k) * ldb + n0;
      for (int64_t j = 0; j < cols; ++j) dst[k * kNr + j] = src[j];
      for (int64_t j = cols; j < kNr; ++j) dst[k * kNr + j] = T(0);
    }
    return;
  }
  // Square blocks through registers; the remainders one by one. (A scalar transpose is
  // store-bound, one element per store: the lm head at M 1 took 66 us with it, 35 with
  // these; most of the time is still here at M 1.)
  constexpr int64_t kB = S::Vp::kTransposeBlock;
  const T* src = p.b + n0 * ldb + k0;
  const int64_t kb = kc / kB * kB, jb = cols / kB * kB;
  for (int64_t j = 0; j < jb; j += kB) {
    for (int64_t k = 0; k < kb; k += kB)
      S::Vp::transpose_block(src + j * ldb + k, ldb, dst + k * kNr + j, kNr);
    for (int64_t k = kb; k < kc; ++k)
      for (int64_t jj = j; jj < j + kB; ++jj) dst[k * kNr + jj] = src[jj * ldb + k];
  }
  for (int64_t j = jb; j < cols; ++j)
    for (int64_t k = 0; k < kc; ++k) dst[k * kNr + j] = src[j * ldb + k];
  for (int64_t k = 0; k < kc; ++k)
    for (int64_t j = cols; j < kNr; ++j) dst[k * kNr + j] = T(0);
}

// Packs all of panel q into plan.packed (the shared packing, before the work items).
template <class S>
void pack_whole_panel(const Plan<typename S::T>& p, int64_t q) {
  pack_panel<S>(p, q, 0, p.s.k, p.packed + q * p.s.k * S::kNr);
}

// a stored (k, m) (trans_a: the weight gradient's dy^T, K the tokens) read in place costs a
// row of a, lda apart, per k and register tile: 3x slower than OpenBLAS at lda 1024 f32
// (dw of the lm head over 4096 tokens). A block's rows are copied once per K block into
// tiles of kMr rows, k-major (tile t holds op(a)[t * kMr + r, k] at [k][r]), which the tile
// reads as a transposed a of lda kMr: rows x kc from src = a + k0 * lda + r0, each row of a
// read whole, prefetched kAhead rows ahead (a page per row: the hardware prefetcher stops at
// page ends; 82 -> 107 GFLOP/s with it).
template <class S>
void pack_a_block(const typename S::T* src, int64_t lda, int64_t rows, int64_t kc,
                  typename S::T* dst) {
  constexpr int64_t kMr = S::kMr, kAhead = 8, kLine = 64 / sizeof(typename S::T);
  for (int64_t k = 0; k < kc; ++k) {
    if (k + kAhead < kc)
      for (int64_t i = 0; i < rows; i += kLine)
        _mm_prefetch(reinterpret_cast<const char*>(src + (k + kAhead) * lda + i), _MM_HINT_T0);
    for (int64_t i0 = 0; i0 < rows; i0 += kMr) {
      const int64_t n = std::min(kMr, rows - i0);
      for (int64_t r = 0; r < n; ++r) dst[i0 * kc + k * kMr + r] = src[k * lda + i0 + r];
    }
  }
}

// One register tile's operands: R rows of op(a) from row i, one panel, k in [k0, k0 + kc).
template <class T>
struct TileArgs {
  const T* a;         // op(a)[i, k0]: a + i * lda + k0, or the packed tile when trans_a
  int64_t lda;        // lda, or kMr
  const T* panel;     // packed panel at k0
  int64_t kc;
  bool first, last;   // first K block (chains start at 0) / last (write c, else `partial`)
  T* partial;         // the chains' values between K blocks: (R, nr), row stride pld
  int64_t pld;
  T* c;               // c[i, q * nr]
  int64_t ldc, cols;  // cols < nr: the panel's last columns are padding, not stored
  T alpha, beta;
};

template <class S, int R, bool kTransA>
void tile(const TileArgs<typename S::T>& t) {
  using T = typename S::T;
  using V = typename S::V;
  using Vp = typename S::Vp;
  constexpr int L = S::kLanes, kNv = S::kNv;
  constexpr int64_t kNr = S::kNr;
  V acc[R][kNv];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kNv; ++v) {
      if (t.first) Vp::zero(acc[r][v]);
      else Vp::load(acc[r][v], t.partial + r * t.pld + v * L);
    }
  const T* b = t.panel;
#pragma GCC unroll 2
  for (int64_t k = 0; k < t.kc; ++k, b += kNr) {
    V bv[kNv];
#pragma GCC unroll 4
    for (int v = 0; v < kNv; ++v) Vp::load(bv[v], b + v * L);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      V x;
      Vp::bcast(x, kTransA ? t.a[k * t.lda + r] : t.a[r * t.lda + k]);
#pragma GCC unroll 4
      for (int v = 0; v < kNv; ++v) Vp::madd(acc[r][v], x, bv[v]);
    }
  }
  if (!t.last) {
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < kNv; ++v) Vp::store(t.partial + r * t.pld + v * L, acc[r][v]);
    return;
  }
  // c = alpha * s (+ beta * c): the same vector instructions for every column; a partial
  // panel's last vectors move only their first n lanes to and from c.
  V va, vb;
  Vp::bcast(va, t.alpha);
  Vp::bcast(vb, t.beta);
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int v = 0; v < kNv; ++v) {
      const int64_t n = std::min<int64_t>(L, t.cols - v * L);
      if (n <= 0) continue;
      T* cv = t.c + r * t.ldc + v * L;
      V y = acc[r][v];
      if (t.alpha != T(1)) Vp::mul(y, va);  // 1 * s == s exactly: skipping it changes no bit
      if (t.beta != T(0)) {                 // beta == 0 never reads c (BLAS semantics)
        V old;
        if (n == L) Vp::load(old, cv);
        else Vp::load_part(old, cv, static_cast<int>(n));
        Vp::madd(y, vb, old);  // the term's operation: an FMA where the chain has them
      }
      if (n == L) Vp::store(cv, y);
      else Vp::store_part(cv, y, static_cast<int>(n));
    }
}

// tile<S, rows> for rows in 1..kMr (the last register tile of a block has fewer rows).
template <class S, bool kTransA, int R = 1>
void tile_rows(const TileArgs<typename S::T>& t, int64_t rows) {
  if constexpr (R < S::kMr) {
    if (rows == R) return tile<S, R, kTransA>(t);
    return tile_rows<S, kTransA, R + 1>(t, rows);
  } else {
    return tile<S, R, kTransA>(t);
  }
}

// Work item `item`: rows [r0, r1) of c by panels [q0, q1), every K block. Without shared
// panels (p.packed null: one row block) the item packs its own, one K block of one panel at
// a time, into an L1-sized buffer, then runs every row tile over it: no other item reads
// them, and packing all of b first writes it out to L2 and reads it back (measured on the
// lm head, one thread: M 1 35 -> 20 us, M 64 179 -> 122 us).
template <class S>
void compute_item(const Plan<typename S::T>& p, int64_t item) {
  using T = typename S::T;
  constexpr int64_t kNr = S::kNr, kMr = S::kMr;
  const ProductShape& s = p.s;
  const int64_t r0 = item / p.groups * p.block_rows, r1 = std::min(s.m, r0 + p.block_rows);
  const int64_t q0 = item % p.groups * p.panels_per_group;
  const int64_t q1 = std::min(p.panels, q0 + p.panels_per_group);
  if (r0 >= r1 || q0 >= q1) return;
  thread_local std::vector<T> partial, a_packed, panel;
  auto grow = [](std::vector<T>& v, int64_t n) {
    if (v.size() < static_cast<size_t>(n)) v.resize(static_cast<size_t>(n));
  };
  const int64_t pld = (q1 - q0) * kNr;
  if (p.kc < s.k) grow(partial, (r1 - r0) * pld);
  if (s.trans_a) grow(a_packed, p.block_rows * p.kc);
  if (!p.packed) grow(panel, p.kc * kNr);
  TileArgs<T> t{};
  t.lda = s.trans_a ? kMr : s.lda;
  t.ldc = s.ldc;
  t.alpha = p.alpha;
  t.beta = p.beta;
  t.pld = pld;
  for (int64_t k0 = 0; k0 < s.k; k0 += p.kc) {
    t.kc = std::min(p.kc, s.k - k0);
    t.first = k0 == 0;
    t.last = k0 + t.kc == s.k;
    if (s.trans_a)
      pack_a_block<S>(p.a + k0 * s.lda + r0, s.lda, r1 - r0, t.kc, a_packed.data());
    // One panel's K block (kc x nr, in L1) under every row tile of the block, whose rows of
    // a stream from L2 (a few bytes per k). The other order, a tile's rows of a in L1 under
    // every panel, streams the panels' vectors from L2: measured 10-20% slower at K 1024 and
    // 4096, within noise at K 128 and 384.
    for (int64_t q = q0; q < q1; ++q) {
      if (p.packed) {
        t.panel = p.packed + (q * s.k + k0) * kNr;
      } else {
        pack_panel<S>(p, q, k0, t.kc, panel.data());
        t.panel = panel.data();
      }
      for (int64_t i = r0; i < r1; i += kMr) {
        t.a = s.trans_a ? a_packed.data() + (i - r0) * t.kc : p.a + i * s.lda + k0;
        t.partial = partial.data() + (i - r0) * pld + (q - q0) * kNr;
        t.c = p.c + i * s.ldc + q * kNr;
        t.cols = std::min(kNr, s.n - q * kNr);
        if (s.trans_a) tile_rows<S, true>(t, std::min(kMr, r1 - i));
        else tile_rows<S, false>(t, std::min(kMr, r1 - i));
      }
    }
  }
}

// The per-ISA entry points: `flatten` inlines the policy's target functions into them.
template <class T, int kNv>
__attribute__((flatten)) void pack_sse2(const Plan<T>& p, int64_t q) {
  pack_whole_panel<TileShape<Sse2<T>, kNv>>(p, q);
}
template <class T, int kNv>
__attribute__((flatten)) void compute_sse2(const Plan<T>& p, int64_t item) {
  compute_item<TileShape<Sse2<T>, kNv>>(p, item);
}
template <class T, int kNv>
R1_TARGET_AVX2 __attribute__((flatten)) void pack_avx2(const Plan<T>& p, int64_t q) {
  pack_whole_panel<TileShape<Avx2<T>, kNv>>(p, q);
}
template <class T, int kNv>
R1_TARGET_AVX2 __attribute__((flatten)) void compute_avx2(const Plan<T>& p, int64_t item) {
  compute_item<TileShape<Avx2<T>, kNv>>(p, item);
}
template <class T, int kNv, bool kWide = false>
R1_TARGET_AVX512 __attribute__((flatten)) void pack_avx512(const Plan<T>& p, int64_t q) {
  pack_whole_panel<TileShape<Avx512<T>, kNv, kWide>>(p, q);
}
template <class T, int kNv, bool kWide = false>
R1_TARGET_AVX512 __attribute__((flatten)) void compute_avx512(const Plan<T>& p,
                                                              int64_t item) {
  compute_item<TileShape<Avx512<T>, kNv, kWide>>(p, item);
}

// ---- the ISA, once per process ----------------------------------------------------------
enum class IsaId { kSse2, kAvx2, kAvx512 };
constexpr const char* kIsaNames[] = {"sse2", "avx2", "avx512"};

IsaId chosen_isa() {
  static const IsaId isa = [] {
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const bool avx512 = __builtin_cpu_supports("avx512f");
    const IsaId best = avx512 ? IsaId::kAvx512 : avx2 ? IsaId::kAvx2 : IsaId::kSse2;
    IsaId pick = best;
    if (const char* e = std::getenv("R1_INVARIANT_GEMM_ISA")) {
      const std::string want = e;
      int i = 0;
      while (i < 3 && want != kIsaNames[i]) ++i;
      if (i == 3 || i > static_cast<int>(best))
        log_warn("R1_INVARIANT_GEMM_ISA={}: not one of sse2, avx2, avx512 this CPU runs; "
                 "using {}", want, kIsaNames[static_cast<int>(best)]);
      else
        pick = static_cast<IsaId>(i);
    }
    if (pick != IsaId::kAvx512)
      log_info("batch-invariant CPU gemm: {} kernels ({})", kIsaNames[static_cast<int>(pick)],
               pick != best ? "R1_INVARIANT_GEMM_ISA" : "the CPU has no AVX-512F");
    return pick;
  }();
  return isa;
}

// One tile shape's kernels for the chosen ISA.
template <class T>
struct ShapeKernels {
  int64_t nr, mr;
  void (*pack)(const Plan<T>&, int64_t);
  void (*compute)(const Plan<T>&, int64_t);
};

template <class T, template <class> class Vp, int kNv, bool kWide = false>
ShapeKernels<T> shape_kernels(void (*pack)(const Plan<T>&, int64_t),
                              void (*compute)(const Plan<T>&, int64_t)) {
  using S = TileShape<Vp<T>, kNv, kWide>;
  return {S::kNr, S::kMr, pack, compute};
}

// The chosen ISA's kernels for the tile shapes: [0] 6 x 2 vectors, [1] 4 x 3, and for a
// transposed a [2], [3]: with AVX-512's 32 registers 12 x 2 and 8 x 3 (24 accumulators),
// else the same as [0], [1]. The packed transposed a is one contiguous run of kMr values per
// k, so the wider tile costs no more address registers and issues fewer loads per FMA
// (measured on the RL model's weight gradients, K = 13184 tokens: 44-67 -> 61-106 GFLOP/s);
// a's rows read in place need one pointer per row, and 12 of them measured slower there.
template <class T>
const std::array<ShapeKernels<T>, 4>& isa_kernels() {
  static const std::array<ShapeKernels<T>, 4> shapes = [] {
    switch (chosen_isa()) {
      case IsaId::kAvx512:
        return std::array{
            shape_kernels<T, Avx512, 2>(pack_avx512<T, 2>, compute_avx512<T, 2>),
            shape_kernels<T, Avx512, 3>(pack_avx512<T, 3>, compute_avx512<T, 3>),
            shape_kernels<T, Avx512, 2, true>(pack_avx512<T, 2, true>,
                                              compute_avx512<T, 2, true>),
            shape_kernels<T, Avx512, 3, true>(pack_avx512<T, 3, true>,
                                              compute_avx512<T, 3, true>)};
      case IsaId::kAvx2: {
        const auto a = shape_kernels<T, Avx2, 2>(pack_avx2<T, 2>, compute_avx2<T, 2>);
        const auto b = shape_kernels<T, Avx2, 3>(pack_avx2<T, 3>, compute_avx2<T, 3>);
        return std::array{a, b, a, b};
      }
      default: {
        const auto a = shape_kernels<T, Sse2, 2>(pack_sse2<T, 2>, compute_sse2<T, 2>);
        const auto b = shape_kernels<T, Sse2, 3>(pack_sse2<T, 3>, compute_sse2<T, 3>);
        return std::array{a, b, a, b};
      }
    }
  }();
  return shapes;
}

// Below this many flops a call runs on the calling thread: waking the OpenMP team costs a few
// microseconds, about what 2^18 flops take on one core.
constexpr double kParallelFlops = 1 << 18;
// One panel's K block (kc x nr), read by every row tile of a work item: 2/3 of a 48 KiB L1d
// (Sapphire Rapids; 32 KiB on older cores, where it mostly still fits), so kc = 256 for
// 32-wide f32 panels.
constexpr int64_t kPanelL1Bytes = 32 << 10;
constexpr int64_t kMaxKc = 512;
// Rows per work item at most, in register tiles: the item's rows of a for one K block (up to
// 96 x 256 f32, 96 KiB) stay in L2, as does the between-blocks buffer (rows x its columns).
constexpr int64_t kMaxBlockTiles = 16;

template <class T>
void product(const ProductShape& s, T alpha, const T* a, const T* b, T beta, T* c) {
  // The 4 x 3 tile where its panels pad fewer columns (the choice follows N only, and both
  // shapes give the same bits anyway).
  const std::array<ShapeKernels<T>, 4>& all = isa_kernels<T>();
  const ShapeKernels<T>* kernels = all.data() + (s.trans_a ? 2 : 0);
  const ShapeKernels<T>& k =
      ceil_div(s.n, kernels[1].nr) * kernels[1].nr < ceil_div(s.n, kernels[0].nr) * kernels[0].nr
          ? kernels[1]
          : kernels[0];
  Plan<T> p{s, alpha, beta, a, b, c, nullptr, k.nr, k.mr, ceil_div(s.n, k.nr), 0, 0, 1, 0};
  const int threads = 2.0 * s.m * s.n * s.k >= kParallelFlops ? omp_get_max_threads() : 1;
  // Up to kMaxBlockTiles register tiles of rows (a rollout's decode batch): one row block,
  // the panels split over the threads, each item packing its own. More rows: row blocks
  // split over the threads, every panel packed once and shared.
  const int64_t tiles = ceil_div(s.m, p.mr);
  const int64_t blocks =
      tiles <= kMaxBlockTiles ? 1 : std::max<int64_t>(ceil_div(tiles, kMaxBlockTiles), threads);
  p.block_rows = ceil_div(tiles, blocks) * p.mr;
  const int64_t row_blocks = ceil_div(s.m, p.block_rows);
  if (row_blocks < threads) p.groups = std::min<int64_t>(p.panels, ceil_div(threads, row_blocks));
  p.panels_per_group = ceil_div(p.panels, p.groups);
  p.groups = ceil_div(p.panels, p.panels_per_group);
  // K block: one panel's block stays in L1 under the row tiles.
  p.kc = std::min(
      std::clamp<int64_t>(kPanelL1Bytes / (p.nr * static_cast<int64_t>(sizeof(T))), 64, kMaxKc),
      s.k);

  // Several row blocks share every panel: pack them all first, into a buffer reused across
  // calls (grown, never shrunk: a per-call allocation of a few MB costs page faults each
  // time). One row block: each item packs its own (compute_item).
  thread_local std::vector<T> packed;
  if (row_blocks > 1) {
    const size_t need = static_cast<size_t>(p.panels * p.nr * s.k);
    if (packed.size() < need) packed.resize(need);
    p.packed = packed.data();
  }
  const int64_t items = row_blocks * p.groups;
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    if (p.packed) {
#pragma omp for schedule(static)
      for (int64_t q = 0; q < p.panels; ++q) k.pack(p, q);
    }
#pragma omp for schedule(static)
    for (int64_t it = 0; it < items; ++it) k.compute(p, it);
  }
}

// The contract, one element at a time (the header's pseudo-code): the oracle the tests hold
// the kernels to, bit for bit. fused: one rounding per term (the avx2 and avx512 kernels),
// else a multiply then an add (sse2). Compiled for the baseline target, where `s + x * y`
// is not contracted (no FMA there).
template <class T>
void reference_product(const ProductShape& s, T alpha, const T* a, const T* b, T beta, T* c,
                       bool fused) {
  for (int64_t i = 0; i < s.m; ++i)
    for (int64_t j = 0; j < s.n; ++j) {
      T acc = 0;
      for (int64_t k = 0; k < s.k; ++k) {
        const T x = s.trans_a ? a[k * s.lda + i] : a[i * s.lda + k];
        const T y = s.trans_b ? b[j * s.ldb + k] : b[k * s.ldb + j];
        acc = fused ? std::fma(x, y, acc) : acc + x * y;
      }
      T& out = c[i * s.ldc + j];
      const T t = alpha == T(1) ? acc : alpha * acc;
      if (beta == T(0)) out = t;
      else out = fused ? std::fma(beta, out, t) : t + beta * out;
    }
}

}  // namespace

void invariant_product(const ProductShape& s, float alpha, const float* a, const float* b,
                       float beta, float* c) {
  product<float>(s, alpha, a, b, beta, c);
}
void invariant_product(const ProductShape& s, double alpha, const double* a, const double* b,
                       double beta, double* c) {
  product<double>(s, alpha, a, b, beta, c);
}

void invariant_product_reference(const ProductShape& s, float alpha, const float* a,
                                 const float* b, float beta, float* c, bool fused) {
  reference_product<float>(s, alpha, a, b, beta, c, fused);
}
void invariant_product_reference(const ProductShape& s, double alpha, const double* a,
                                 const double* b, double beta, double* c, bool fused) {
  reference_product<double>(s, alpha, a, b, beta, c, fused);
}

const char* invariant_product_isa() { return kIsaNames[static_cast<int>(chosen_isa())]; }

}  // namespace r1::cpu
