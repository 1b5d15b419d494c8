// Paged KV cache kernels (engine/kernels_paged.h): the CUDA paged_cache_write and
// paged_attention against the CPU kernels, on random caches with shared blocks, MLA's
// overlapping key/value layout and a GQA layout, poisoned outputs; and the CPU kernel against
// an f64 loop over a contiguous copy of each sequence. The CUDA cases skip without a device.
#include <gtest/gtest.h>

#include <cmath>

#include "engine/ops_paged.h"
#include "tests/harness.h"

namespace r1 {
namespace {

using test::poisoned;

struct Case {
  int64_t H, Hk, Dk, Dv, v_offset, W;
};

// A pool of random entries, 3 sequences of lengths 1, 64 and 150 over shuffled blocks (the
// first two share block 0 as a forked prompt would), queries at every position of seq 2 and
// the last of the others.
struct Problem {
  Tensor pool, table, seq, pos, q;
};

Problem make(const Case& c, uint64_t seed, DType dt) {
  Problem p;
  p.pool = Tensor::randn({8, 64, c.W}, seed, dt);
  p.table = Tensor::from_vector(std::vector<int32_t>{5, -1, -1, 5, -1, -1, 2, 7, 0}, {3, 3});
  std::vector<int64_t> s, t;
  for (int64_t j = 0; j < 150; ++j) s.push_back(2), t.push_back(j);
  s.push_back(0), t.push_back(0);
  s.push_back(1), t.push_back(63);
  const int64_t N = static_cast<int64_t>(s.size());
  p.seq = Tensor::from_vector(s, {N});
  p.pos = Tensor::from_vector(t, {N});
  p.q = Tensor::randn({N, c.H, c.Dk}, seed + 1, dt);
  return p;
}

TEST(PagedAttention, CpuMatchesF64Loop) {
  const uint64_t seed = test::case_seed(1);
  for (const Case& c : {Case{4, 1, 40, 32, 0, 40}, Case{4, 2, 16, 8, 32, 48}}) {
    const Problem p = make(c, seed, DType::F32);
    const PagedLayout l{c.Hk, c.Dk, c.Dv, c.v_offset};
    const double scale = 0.3;
    const Tensor out = paged_attention(p.q, p.pool, p.table, p.seq, p.pos, l, scale).to(DType::F64);
    const std::vector<int64_t> tab = p.table.to_int_vector(), sq = p.seq.to_int_vector(), ps = p.pos.to_int_vector();
    const Tensor pool = p.pool.to(DType::F64), q = p.q.to(DType::F64);
    const double* pd = static_cast<const double*>(pool.data_ptr());
    const double* qd = static_cast<const double*>(q.data_ptr());
    std::vector<double> ref(static_cast<size_t>(out.numel()));
    for (int64_t n = 0; n < p.q.size(0); ++n)
      for (int64_t h = 0; h < c.H; ++h) {
        const int64_t g = h / (c.H / c.Hk), len = ps[n] + 1;
        std::vector<double> sc(len);
        double m = -INFINITY, sum = 0;
        auto entry = [&](int64_t j) { return pd + (tab[sq[n] * 3 + j / 64] * 64 + j % 64) * c.W; };
        for (int64_t j = 0; j < len; ++j) {
          double d = 0;
          for (int64_t k = 0; k < c.Dk; ++k) d += qd[(n * c.H + h) * c.Dk + k] * entry(j)[g * c.Dk + k];
          sc[j] = d * scale;
          m = std::max(m, sc[j]);
        }
        for (double& x : sc) sum += (x = std::exp(x - m));
        for (int64_t d = 0; d < c.Dv; ++d) {
          double o = 0;
          for (int64_t j = 0; j < len; ++j) o += sc[j] * entry(j)[c.v_offset + g * c.Dv + d];
          ref[(n * c.H + h) * c.Dv + d] = o / sum;
        }
      }
    test::expect_close("paged_attention f32 vs f64 loop", out,
                       Tensor::from_vector(ref, out.shape()), 1e-5, 1e-4);
  }
}

TEST(PagedAttention, CudaMatchesCpu) {
  R1_SKIP_WITHOUT_CUDA();
  const uint64_t seed = test::case_seed(2);
  const Device gpu = Device::cuda(0);
  for (DType dt : {DType::F32, DType::BF16})
    for (const Case& c : {Case{4, 1, 40, 32, 0, 40}, Case{8, 2, 64, 64, 128, 256}}) {
      const Problem p = make(c, seed, DType::F32);
      const PagedLayout l{c.Hk, c.Dk, c.Dv, c.v_offset};
      // bf16: both sides read the same rounded inputs.
      const Tensor pool = p.pool.to(dt).to(DType::F32), q = p.q.to(dt).to(DType::F32);
      const Tensor cpu = paged_attention(q, pool, p.table, p.seq, p.pos, l, 0.2);
      const Tensor gpu_out = paged_attention(q.to(dt).to(gpu), pool.to(dt).to(gpu), p.table.to(gpu),
                                             p.seq.to(gpu), p.pos.to(gpu), l, 0.2);
      const double tol = dt == DType::F32 ? 2e-5 : 1e-2;
      test::expect_close("paged_attention cuda vs cpu", gpu_out.to(Device::cpu()).to(DType::F32), cpu, tol, tol);
    }
}

TEST(PagedCacheWrite, CudaMatchesCpu) {
  R1_SKIP_WITHOUT_CUDA();
  const uint64_t seed = test::case_seed(3);
  const Device gpu = Device::cuda(0);
  const Problem p = make(Case{4, 1, 40, 32, 0, 40}, seed, DType::F32);
  const Tensor entries = Tensor::randn({p.seq.size(0), 40}, seed + 5);
  Tensor cpu_pool = p.pool.clone();
  paged_cache_write(entries, p.table, p.seq, p.pos, cpu_pool);
  Tensor gpu_pool = poisoned(p.pool.shape(), DType::F32, gpu);
  gpu_pool.copy_(p.pool.to(gpu));
  paged_cache_write(entries.to(gpu), p.table.to(gpu), p.seq.to(gpu), p.pos.to(gpu), gpu_pool);
  test::expect_close("paged_cache_write cuda vs cpu", gpu_pool.to(Device::cpu()), cpu_pool, 0, 0);
}

TEST(PagedAttention, BadIndicesAreErrors) {
  const Problem p = make(Case{4, 1, 40, 32, 0, 40}, 1, DType::F32);
  const PagedLayout l{1, 40, 32, 0};
  const Tensor bad_pos = Tensor::from_vector(std::vector<int64_t>(p.seq.size(0), 200), {p.seq.size(0)});
  EXPECT_THROW(paged_attention(p.q, p.pool, p.table, p.seq, bad_pos, l, 1.0), Error);
  const Tensor bad_seq = Tensor::from_vector(std::vector<int64_t>(p.seq.size(0), 3), {p.seq.size(0)});
  EXPECT_THROW(paged_attention(p.q, p.pool, p.table, bad_seq, p.pos, l, 1.0), Error);
  EXPECT_THROW(paged_attention(p.q, p.pool, p.table, p.seq, p.pos, PagedLayout{1, 40, 64, 0}, 1.0), Error);
}

}  // namespace
}  // namespace r1
