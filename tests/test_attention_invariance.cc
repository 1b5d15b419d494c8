// The CPU attention kernels' batch-invariance properties (kernels/cpu/attention.cc), bit for
// bit: a sequence's rows do not change when it is right-padded to a longer T (the padded rows
// with zero dout, as a masked loss gives them, or in a segment of their own), nor with the
// thread count. tests/test_attention.cc checks the batch size.
#include <fmt/format.h>
#include <gtest/gtest.h>
#include <omp.h>

#include <string>
#include <vector>

#include "engine/kernels_attention.h"
#include "engine/tensor.h"
#include "tests/harness.h"

namespace r1 {
namespace {

struct KernelRun {
  Tensor out, lse, dq, dk, dv;
};

// q, k, v, dout (1, T, heads, D); segments (1, T) or undefined.
KernelRun run_kernels(const Tensor& q, const Tensor& k, const Tensor& v, const Tensor& seg,
                const Tensor& dout, bool causal) {
  const DType dt = q.dtype();
  KernelRun r{Tensor::empty(dout.shape(), dt), Tensor::empty({1, q.size(2), q.size(1)}, dt),
        Tensor::empty(q.shape(), dt), Tensor::empty(k.shape(), dt), Tensor::empty(v.shape(), dt)};
  const double scale = 0.2;
  kernels::attention_forward()(Device::cpu(), q, k, v, seg, scale, causal, r.out, r.lse);
  kernels::attention_backward()(Device::cpu(), q, k, v, seg, r.out, r.lse, dout, scale, causal,
                                r.dq, r.dk, r.dv);
  return r;
}

// The first n positions along dim d, contiguous.
Tensor head(const Tensor& t, int64_t d, int64_t n) { return t.narrow(d, 0, n).contiguous(); }

void expect_same_bits(const std::string& what, const Tensor& a, const Tensor& b) {
  test::expect_close(what, a, b, 0, 0);
}

TEST(AttentionInvariance, RowsDoNotDependOnPaddingOrThreads) {
  const int64_t Tp = 103, H = 4, Hk = 2, Dk = 24, Dv = 16;
  const uint64_t seed = test::run_seed();
  for (DType dt : {DType::F32, DType::F64})
    for (auto [causal, segmented] : {std::pair{true, false}, {true, true}, {false, true}})
      for (int64_t Tr : {1, 31, 50, 64, 77}) {
        const std::string n = fmt::format("{} T {} padded to {}{}{}", dtype_name(dt), Tr, Tp,
                                          causal ? " causal" : "", segmented ? " segments" : "");
        const Tensor q = Tensor::randn({1, Tp, H, Dk}, seed, dt);
        const Tensor k = Tensor::randn({1, Tp, Hk, Dk}, seed + 1, dt);
        const Tensor v = Tensor::randn({1, Tp, Hk, Dv}, seed + 2, dt);
        // dout 0 on the padded rows (what a masked loss sends back)
        std::vector<double> g =
            Tensor::randn({1, Tp, H, Dv}, seed + 3, DType::F64).to_double_vector();
        std::fill(g.begin() + Tr * H * Dv, g.end(), 0.0);
        const Tensor dout = Tensor::from_vector(g, {1, Tp, H, Dv}, dt);
        Tensor seg;
        if (segmented) {  // documents of 9 tokens; the padding one segment of its own
          std::vector<int64_t> ids(Tp);
          for (int64_t t = 0; t < Tp; ++t) ids[t] = t < Tr ? t / 9 : 1000;
          seg = Tensor::from_vector(ids, {1, Tp});
        }
        const KernelRun full = run_kernels(q, k, v, seg, dout, causal);
        const KernelRun alone = run_kernels(head(q, 1, Tr), head(k, 1, Tr), head(v, 1, Tr),
                                      segmented ? head(seg, 1, Tr) : seg, head(dout, 1, Tr),
                                      causal);
        expect_same_bits(n + " out", alone.out, head(full.out, 1, Tr));
        expect_same_bits(n + " lse", alone.lse, head(full.lse, 2, Tr));
        expect_same_bits(n + " dq", alone.dq, head(full.dq, 1, Tr));
        expect_same_bits(n + " dk", alone.dk, head(full.dk, 1, Tr));
        expect_same_bits(n + " dv", alone.dv, head(full.dv, 1, Tr));
        if (Tr != 50) continue;
        const int threads = omp_get_max_threads();
        for (int th : {1, 2, 3}) {  // the task splits (fused or not, per group or per block) too
          omp_set_num_threads(th);
          const KernelRun r = run_kernels(q, k, v, seg, dout, causal);
          const std::string m = fmt::format("{} threads {}", n, th);
          expect_same_bits(m + " out", r.out, full.out);
          expect_same_bits(m + " lse", r.lse, full.lse);
          expect_same_bits(m + " dq", r.dq, full.dq);
          expect_same_bits(m + " dk", r.dk, full.dk);
          expect_same_bits(m + " dv", r.dv, full.dv);
        }
        omp_set_num_threads(threads);
      }
}

}  // namespace
}  // namespace r1
