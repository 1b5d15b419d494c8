// CUDA model-op kernels (rmsnorm, swiglu, rope, softmax, cross-entropy, adamw) against the
// CPU kernels run in f64 on the same dtype-rounded inputs, one table of shapes per op, f32
// and bf16; outputs start poisoned (NaN), so an element a kernel forgets stays NaN and fails.
// Then batch invariance (a row's bits do not depend on the launch's other rows) and the ops
// of engine/ops.h with backward() on the GPU against the same graph on the CPU in f64.
// Every test skips without a GPU.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "engine/autograd.h"
#include "engine/kernels.h"
#include "engine/ops.h"
#include "tests/harness.h"

#if defined(R1_HAVE_CUDA)
#include "kernels/cuda/norm_pipe.h"
#endif

namespace r1 {
namespace {

using test::case_seed;
using test::poisoned;
using test::rounded_f64;

// Printed at start-up, so a skipped run still names its seed.
[[maybe_unused]] const uint64_t kRunSeed = test::run_seed();
const Device kGpu = Device::cuda(0);
const Device kCpu = Device::cpu();
constexpr DType kDTypes[] = {DType::F32, DType::BF16};

// x rounded to dt, on the GPU: the same values rounded_f64(x, dt) gives the reference.
Tensor on_gpu(const Tensor& x, DType dt) { return x.to(dt).to(kGpu); }

double mean_abs(const Tensor& t) {
  const std::vector<double> v = t.to_double_vector();
  double s = 0;
  for (double e : v) s += std::fabs(e);
  return v.empty() || s == 0 ? 1.0 : s / static_cast<double>(v.size());
}

// A GPU result of dtype dt against the f64 reference, tolerance scaled by the reference's
// mean magnitude.
void expect_matches(const std::string& name, const Tensor& gpu, const Tensor& ref, DType dt) {
  const test::Tol t = test::tol_for(dt, mean_abs(ref));
  test::expect_close(name, gpu.to(kCpu), ref, t.atol, t.rtol);
}

Tensor empty64(const Shape& s) { return Tensor::empty(s, DType::F64); }

// Softmax backward against the f64 reference with a per-element bound: dx_i = y_i (dy_i - s)
// (log: dy_i - exp(y_i) s') cancels where dy_i is near s, and s is a sum over the whole row
// that the kernel forms in fp32, so the error at i scales with y_i times the row's sum of
// |dy_j y_j| (|dy_j|), not with |dx_i| or mean |dx| (which failed one element of 387840 in
// an H200 run at rtol 1e-5: -1.6821e-6 vs -1.6820e-6, V = 129280).
void expect_softmax_dx(const std::string& name, const Tensor& gpu, const Tensor& ref,
                       const Tensor& y, const Tensor& dy, bool log, DType dt) {
  const test::Tol t = test::tol_for(dt, mean_abs(ref));
  const std::vector<double> g = gpu.to(kCpu).to_double_vector(), r = ref.to_double_vector(),
                            yv = y.to_double_vector(), dv = dy.to_double_vector();
  const int64_t N = ref.size(0), V = ref.size(1);
  int64_t bad = 0, worst = -1;
  double worst_ratio = 0;
  for (int64_t n = 0; n < N; ++n) {
    double row = 0;
    for (int64_t j = n * V; j < (n + 1) * V; ++j) row += std::fabs(dv[j] * (log ? 1.0 : yv[j]));
    for (int64_t i = n * V; i < (n + 1) * V; ++i) {
      const double yi = log ? std::exp(yv[i]) : std::fabs(yv[i]);
      const double bound = t.atol + t.rtol * (std::fabs(dv[i]) * (log ? 1.0 : yi) + yi * row);
      const double err = std::fabs(g[i] - r[i]);
      if (!(err <= bound)) ++bad;  // NaN fails
      const double ratio = std::isnan(err) ? INFINITY : err / bound;
      if (ratio > worst_ratio) worst_ratio = ratio, worst = i;
    }
  }
  EXPECT_EQ(bad, 0) << name << ": " << bad << " of " << N * V << " elements off; worst at "
                    << worst << ": " << (worst >= 0 ? g[worst] : 0.0) << " vs "
                    << (worst >= 0 ? r[worst] : 0.0) << " (" << worst_ratio << " x its bound)";
}

struct RowCase {
  int64_t N, D;
};

// ---- rmsnorm -----------------------------------------------------------------------------

TEST(CudaModelOps, RmsNormForwardBackward) {
  R1_SKIP_WITHOUT_CUDA();
  // D = 1, odd D (unaligned rows), 64 (warp-per-row packing, N not a multiple of 8),
  // N > 32 (several dw partial blocks), realistic D.
  const RowCase cases[] = {{1, 1}, {3, 7}, {130, 64}, {37, 1001}, {5, 4099}, {70, 7168}};
  uint64_t k = 1000;
  for (DType dt : kDTypes)
    for (const RowCase& c : cases) {
      const std::string name = fmt::format("rmsnorm {} ({}, {})", dtype_name(dt), c.N, c.D);
      const double eps = 1e-5;
      const Tensor x = Tensor::randn({c.N, c.D}, case_seed(++k));
      const Tensor w = Tensor::rand({c.D}, case_seed(++k), 0.5, 1.5);
      const Tensor dy = Tensor::randn({c.N, c.D}, case_seed(++k));
      const Tensor x64 = rounded_f64(x, dt), w64 = rounded_f64(w, dt), dy64 = rounded_f64(dy, dt);
      Tensor y64 = empty64({c.N, c.D}), r64 = empty64({c.N});
      kernels::rmsnorm_forward()(kCpu, x64, w64, eps, y64, r64);
      Tensor dx64 = empty64({c.N, c.D}), dw64 = empty64({c.D});
      kernels::rmsnorm_backward()(kCpu, x64, w64, r64, dy64, dx64, dw64);

      const Tensor xg = on_gpu(x, dt), wg = on_gpu(w, dt), dyg = on_gpu(dy, dt);
      Tensor yg = poisoned({c.N, c.D}, dt, kGpu), rg = poisoned({c.N}, stat_dtype(dt), kGpu);
      kernels::rmsnorm_forward()(kGpu, xg, wg, eps, yg, rg);
      ASSERT_EQ(rg.dtype(), DType::F32);
      expect_matches(name + " y", yg, y64, dt);
      expect_matches(name + " rstd", rg, r64, DType::F32);
      Tensor dxg = poisoned({c.N, c.D}, dt, kGpu), dwg = poisoned({c.D}, dt, kGpu);
      kernels::rmsnorm_backward()(kGpu, xg, wg, rg, dyg, dxg, dwg);
      // dx = rstd (w dy - x c) cancels (to ~0 when D = 1): scale by the terms, not the result.
      const test::Tol tdx = test::tol_for(dt, mean_abs(dy64) * mean_abs(w64) * mean_abs(r64));
      test::expect_close(name + " dx", dxg.to(kCpu), dx64, tdx.atol, tdx.rtol);
      expect_matches(name + " dw", dwg, dw64, dt);
    }
}

// Byte for byte (so +0 and -0 differ, as do NaN payloads): the tensors' host copies.
[[maybe_unused]] void expect_same_bytes(const std::string& name, const Tensor& a,
                                        const Tensor& b) {
  const Tensor ha = a.to(kCpu).contiguous(), hb = b.to(kCpu).contiguous();
  ASSERT_EQ(ha.shape(), hb.shape()) << name;
  ASSERT_EQ(ha.dtype(), hb.dtype()) << name;
  const auto* pa = static_cast<const unsigned char*>(ha.data_ptr());
  const auto* pb = static_cast<const unsigned char*>(hb.data_ptr());
  const size_t es = dtype_size(ha.dtype()), n = static_cast<size_t>(ha.numel());
  size_t bad = 0, first = n;
  for (size_t i = 0; i < n; ++i)
    if (std::memcmp(pa + i * es, pb + i * es, es) != 0 && bad++ == 0) first = i;
  EXPECT_EQ(bad, 0u) << name << ": " << bad << " of " << n << " elements differ, the first at "
                     << first;
}

// The pipelined RMSNorm (kernels/cuda/norm_pipe.cu, R1_ROW_PIPE=1) gives norm_act.cu's bits:
// y, rstd, dx and dw byte for byte, with the pipeline shown to have run. Rows of whole
// 16-byte chunks (its condition), several row blocks with a short last one (N = 70, 130), a
// single row, and the row lengths of V3 (7168) and a small model (64); and an odd D, where
// it must not run. The backward pipeline keeps its dw partial in registers (at most 4 chunks
// per thread): under the default row shapes it runs for every case here, under gpu-check's
// A/B switches of the row shape (R1_ROW_VARIANT, R1_RMSNORM_BWD) it may decline.
TEST(CudaModelOps, RmsNormPipeGivesTheRowKernelsBits) {
  R1_SKIP_WITHOUT_CUDA();
#if defined(R1_HAVE_CUDA)
  const bool default_shapes =
      std::getenv("R1_ROW_VARIANT") == nullptr && std::getenv("R1_RMSNORM_BWD") == nullptr;
  const RowCase cases[] = {{70, 7168}, {130, 64}, {1, 4096}, {33, 2048}, {3, 1001}};
  uint64_t k = 1500;
  for (DType dt : kDTypes)
    for (const RowCase& c : cases) {
      const std::string name = fmt::format("rmsnorm pipe {} ({}, {})", dtype_name(dt), c.N, c.D);
      const bool applies = c.D * static_cast<int64_t>(dtype_size(dt)) % 16 == 0;
      const Tensor x = on_gpu(Tensor::randn({c.N, c.D}, case_seed(++k)), dt);
      const Tensor w = on_gpu(Tensor::rand({c.D}, case_seed(++k), 0.5, 1.5), dt);
      const Tensor dy = on_gpu(Tensor::randn({c.N, c.D}, case_seed(++k)), dt);
      Tensor y[2], r[2], dx[2], dw[2];
      for (int pipe : {0, 1}) {
        cuda::set_row_pipe(pipe);
        const int64_t fwd0 = cuda::row_pipe_launches(false), bwd0 = cuda::row_pipe_launches(true);
        y[pipe] = poisoned({c.N, c.D}, dt, kGpu);
        r[pipe] = poisoned({c.N}, DType::F32, kGpu);
        dx[pipe] = poisoned({c.N, c.D}, dt, kGpu);
        dw[pipe] = poisoned({c.D}, dt, kGpu);
        kernels::rmsnorm_forward()(kGpu, x, w, 1e-5, y[pipe], r[pipe]);
        kernels::rmsnorm_backward()(kGpu, x, w, r[pipe], dy, dx[pipe], dw[pipe]);
        const int64_t fwd = cuda::row_pipe_launches(false) - fwd0;
        const int64_t bwd = cuda::row_pipe_launches(true) - bwd0;
        EXPECT_EQ(fwd, pipe == 1 && applies ? 1 : 0) << name;
        if (pipe == 0 || !applies) {
          EXPECT_EQ(bwd, 0) << name;
        } else if (default_shapes) {
          EXPECT_EQ(bwd, 1) << name;
        }
      }
      cuda::set_row_pipe(-1);
      expect_same_bytes(name + " y", y[1], y[0]);
      expect_same_bytes(name + " rstd", r[1], r[0]);
      expect_same_bytes(name + " dx", dx[1], dx[0]);
      expect_same_bytes(name + " dw", dw[1], dw[0]);
    }
#endif
}

// ---- swiglu ------------------------------------------------------------------------------

TEST(CudaModelOps, SwigluForwardBackward) {
  R1_SKIP_WITHOUT_CUDA();
  const RowCase cases[] = {{1, 1}, {3, 7}, {17, 1001}, {4, 7168}};
  uint64_t k = 2000;
  for (DType dt : kDTypes)
    for (const RowCase& c : cases)
      for (int64_t off : {0, 1}) {  // off = 1: every tensor starts one element past 16 bytes
        const std::string name =
            fmt::format("swiglu {} ({}, {}) off {}", dtype_name(dt), c.N, c.D, off);
        const int64_t n = c.N * c.D;
        const Tensor gate = Tensor::randn({c.N, c.D}, case_seed(++k), DType::F32, kCpu, 3.0);
        const Tensor up = Tensor::randn({c.N, c.D}, case_seed(++k));
        const Tensor dout = Tensor::randn({c.N, c.D}, case_seed(++k));
        const Tensor g64 = rounded_f64(gate, dt), u64 = rounded_f64(up, dt);
        Tensor o64 = empty64({c.N, c.D}), dg64 = empty64({c.N, c.D}), du64 = empty64({c.N, c.D});
        kernels::swiglu_forward()(kCpu, g64, u64, o64);
        kernels::swiglu_backward()(kCpu, g64, u64, rounded_f64(dout, dt), dg64, du64);

        // src as a GPU tensor at element offset `off` of a larger buffer.
        auto placed = [&](const Tensor& src) {
          Tensor base = Tensor::zeros({n + off}, dt);
          base.narrow(0, off, n).copy_(src.to(dt).view({n}));
          return base.to(kGpu).narrow(0, off, n).view({c.N, c.D});
        };
        auto out = [&] { return poisoned({n + off}, dt, kGpu).narrow(0, off, n).view({c.N, c.D}); };
        const Tensor gg = placed(gate), ug = placed(up), dg = placed(dout);
        Tensor og = out(), dgg = out(), dug = out();
        kernels::swiglu_forward()(kGpu, gg, ug, og);
        kernels::swiglu_backward()(kGpu, gg, ug, dg, dgg, dug);
        expect_matches(name + " out", og, o64, dt);
        expect_matches(name + " dgate", dgg, dg64, dt);
        expect_matches(name + " dup", dug, du64, dt);
      }
}

// ---- rope --------------------------------------------------------------------------------

TEST(CudaModelOps, RopeForwardAndInverse) {
  R1_SKIP_WITHOUT_CUDA();
  struct Case {
    int64_t B, T, H, D;
  };
  // D = 2 (one pair), D/2 odd (half-split second half unaligned), head dims 64 and 192, and
  // 37 heads of 64 (a thread's loads span several heads, the last group partial).
  const Case cases[] = {{1, 1, 1, 2}, {2, 3, 2, 14}, {1, 4, 3, 64}, {2, 3, 4, 192}, {1, 2, 37, 64}};
  const int64_t P = 40;
  uint64_t k = 3000;
  int alt = 0;
  for (DType dt : kDTypes)
    for (const Case& c : cases)
      for (bool interleaved : {true, false})
        for (bool inverse : {false, true})
          for (DType tdt : {DType::F32, DType::BF16}) {
            if (tdt == DType::BF16 && dt == DType::F32) continue;  // tables: f32 or x's dtype
            const DType pdt = (++alt % 2) ? DType::I32 : DType::I64;
            const std::string name =
                fmt::format("rope {} ({}, {}, {}, {}) {} {} table {} pos {}", dtype_name(dt),
                            c.B, c.T, c.H, c.D, interleaved ? "interleaved" : "halves",
                            inverse ? "inverse" : "forward", dtype_name(tdt), dtype_name(pdt));
            RopeConfig cfg;
            cfg.dim = c.D;
            cfg.yarn_factor = 4.0;
            cfg.original_max_position_embeddings = 16;
            const RopeTable table(cfg, P, DType::F64);
            const Tensor x = Tensor::randn({c.B, c.T, c.H, c.D}, case_seed(++k));
            const Tensor pos = Tensor::randint({c.B, c.T}, case_seed(++k), 0, P, pdt);
            Tensor y64 = empty64(x.shape());
            kernels::rope()(kCpu, rounded_f64(x, dt), pos, rounded_f64(table.cos, tdt),
                            rounded_f64(table.sin, tdt), interleaved, inverse, y64);
            Tensor yg = poisoned(x.shape(), dt, kGpu);
            kernels::rope()(kGpu, on_gpu(x, dt), pos.to(kGpu), on_gpu(table.cos, tdt),
                            on_gpu(table.sin, tdt), interleaved, inverse, yg);
            expect_matches(name, yg, y64, dt);
            // In place (y is x: every load of a thread's heads before its stores).
            Tensor xg = on_gpu(x, dt).contiguous().clone();
            kernels::rope()(kGpu, xg, pos.to(kGpu), on_gpu(table.cos, tdt),
                            on_gpu(table.sin, tdt), interleaved, inverse, xg);
            expect_matches(name + " in place", xg, y64, dt);
          }
}

// ---- softmax -----------------------------------------------------------------------------

TEST(CudaModelOps, SoftmaxAndLogSoftmaxForwardBackward) {
  R1_SKIP_WITHOUT_CUDA();
  const RowCase cases[] = {{1, 1}, {3, 7}, {5, 33}, {9, 1000}, {4, 4099}, {3, 129280}};
  uint64_t k = 4000;
  for (DType dt : kDTypes)
    for (const RowCase& c : cases)
      for (bool log : {false, true}) {
        const std::string name = fmt::format("{} {} ({}, {})", log ? "log_softmax" : "softmax",
                                             dtype_name(dt), c.N, c.D);
        const Tensor x = Tensor::randn({c.N, c.D}, case_seed(++k), DType::F32, kCpu, 3.0);
        Tensor y64 = empty64({c.N, c.D});
        kernels::softmax_forward()(kCpu, rounded_f64(x, dt), log, y64);
        Tensor yg = poisoned({c.N, c.D}, dt, kGpu);
        kernels::softmax_forward()(kGpu, on_gpu(x, dt), log, yg);
        expect_matches(name + " y", yg, y64, dt);

        // Backward from the same (rounded) forward output on both sides.
        const Tensor dy = Tensor::randn({c.N, c.D}, case_seed(++k));
        Tensor dx64 = empty64({c.N, c.D});
        kernels::softmax_backward()(kCpu, rounded_f64(y64, dt), rounded_f64(dy, dt), log, dx64);
        Tensor dxg = poisoned({c.N, c.D}, dt, kGpu);
        kernels::softmax_backward()(kGpu, on_gpu(y64, dt), on_gpu(dy, dt), log, dxg);
        expect_softmax_dx(name + " dx", dxg, dx64, rounded_f64(y64, dt), rounded_f64(dy, dt),
                          log, dt);
      }
}

// ---- cross-entropy -----------------------------------------------------------------------

TEST(CudaModelOps, CrossEntropyForwardBackward) {
  R1_SKIP_WITHOUT_CUDA();
  struct Case {
    int64_t N, V, ignored;  // the first `ignored` rows get ignore_index
  };
  const Case cases[] = {{1, 1, 0}, {4, 7, 1}, {6, 1000, 2}, {8, 5003, 0}, {3, 129280, 0},
                        {5, 129280, 2}};
  const int64_t ignore = -100;
  uint64_t k = 5000;
  for (DType dt : kDTypes)
    for (const Case& c : cases) {
      const DType tdt = (k & 1) ? DType::I32 : DType::I64;
      const std::string name = fmt::format("cross_entropy {} ({}, {}) ignored {} targets {}",
                                           dtype_name(dt), c.N, c.V, c.ignored, dtype_name(tdt));
      const Tensor logits = Tensor::randn({c.N, c.V}, case_seed(++k), DType::F32, kCpu, 2.0);
      std::vector<int64_t> tv = Tensor::randint({c.N}, case_seed(++k), 0, c.V).to_int_vector();
      for (int64_t i = 0; i < c.ignored; ++i) tv[i] = ignore;
      const Tensor targets = Tensor::from_vector(tv, {c.N}).to(tdt);
      const Tensor l64 = rounded_f64(logits, dt);
      Tensor loss64 = empty64({c.N}), lse64 = empty64({c.N});
      kernels::cross_entropy_forward()(kCpu, l64, targets, ignore, loss64, lse64);

      const Tensor lg = on_gpu(logits, dt), tg = targets.to(kGpu);
      Tensor lossg = poisoned({c.N}, DType::F32, kGpu), lseg = poisoned({c.N}, DType::F32, kGpu);
      kernels::cross_entropy_forward()(kGpu, lg, tg, ignore, lossg, lseg);
      expect_matches(name + " loss", lossg, loss64, DType::F32);
      expect_matches(name + " lse", lseg, lse64, DType::F32);

      // Backward from the same f32 lse and dloss on both sides.
      const Tensor lse32 = lse64.to(DType::F32);
      const Tensor dloss = Tensor::randn({c.N}, case_seed(++k));
      Tensor d64 = empty64({c.N, c.V});
      kernels::cross_entropy_backward()(kCpu, l64, targets, rounded_f64(lse32, DType::F32),
                                        rounded_f64(dloss, DType::F32), ignore, d64);
      Tensor dg = poisoned({c.N, c.V}, dt, kGpu);
      kernels::cross_entropy_backward()(kGpu, lg, tg, lse32.to(kGpu), dloss.to(kGpu), ignore, dg);
      expect_matches(name + " dlogits", dg, d64, dt);
    }
}

// Masked logits (-inf): a row whose first half is -inf (at V = 129280 every thread's first
// steps see nothing else), one whose second half is, one without: softmax and cross-entropy
// against the CPU, the masked entries' probabilities 0. Before 2026-12-01 the first row came
// out NaN on the GPU (exp(-inf - (-inf)) in the row reduction's unpredicated path).
TEST(CudaModelOps, MaskedLogitsHaveZeroProbability) {
  R1_SKIP_WITHOUT_CUDA();
  uint64_t k = 5500;
  for (DType dt : kDTypes)
    for (int64_t V : {int64_t{1000}, int64_t{129280}}) {
      const std::string name = fmt::format("masked {} V {}", dtype_name(dt), V);
      Tensor x = Tensor::randn({3, V}, case_seed(++k), DType::F32, kCpu, 2.0);
      x.narrow(0, 0, 1).narrow(1, 0, V / 2).fill_(-INFINITY);
      x.narrow(0, 1, 1).narrow(1, V / 2, V - V / 2).fill_(-INFINITY);
      const Tensor x64 = rounded_f64(x, dt), xg = on_gpu(x, dt);
      Tensor y64 = empty64({3, V});
      kernels::softmax_forward()(kCpu, x64, false, y64);
      Tensor yg = poisoned({3, V}, dt, kGpu);
      kernels::softmax_forward()(kGpu, xg, false, yg);
      expect_matches(name + " softmax", yg, y64, dt);
      const Tensor targets = Tensor::from_vector(std::vector<int64_t>{V - 1, 0, V / 3}, {3});
      Tensor loss64 = empty64({3}), lse64 = empty64({3});
      kernels::cross_entropy_forward()(kCpu, x64, targets, -100, loss64, lse64);
      Tensor lossg = poisoned({3}, DType::F32, kGpu), lseg = poisoned({3}, DType::F32, kGpu);
      kernels::cross_entropy_forward()(kGpu, xg, targets.to(kGpu), -100, lossg, lseg);
      expect_matches(name + " loss", lossg, loss64, DType::F32);
      expect_matches(name + " lse", lseg, lse64, DType::F32);
      // A NaN among the masked entries still makes its row NaN (the max skips NaN: the
      // all -inf step's early return must not drop it).
      x.narrow(0, 0, 1).narrow(1, 7, 1).fill_(NAN);
      kernels::cross_entropy_forward()(kGpu, on_gpu(x, dt), targets.to(kGpu), -100, lossg, lseg);
      const std::vector<double> l = lossg.to(kCpu).to_double_vector();
      EXPECT_TRUE(std::isnan(l[0]) && std::isfinite(l[1]) && std::isfinite(l[2]))
          << name << ": " << l[0] << " " << l[1] << " " << l[2];
      // Special rows against the CPU: a NaN among masked entries, every entry -inf, one +inf,
      // and a plain row. Per row, softmax, loss and lse agree on NaN / +inf / -inf / finite
      // (the finite ones in value: the plain row's and the masked rows' above).
      Tensor z = Tensor::randn({4, V}, case_seed(++k), DType::F32, kCpu, 2.0);
      z.narrow(0, 0, 1).narrow(1, 0, V / 2).fill_(-INFINITY);
      z.narrow(0, 0, 1).narrow(1, 3, 1).fill_(NAN);
      z.narrow(0, 1, 1).fill_(-INFINITY);
      z.narrow(0, 2, 1).narrow(1, V / 3, 1).fill_(INFINITY);
      const Tensor z64 = rounded_f64(z, dt), zg = on_gpu(z, dt);
      const Tensor t4 = Tensor::from_vector(std::vector<int64_t>{V - 1, 0, 1, V / 2}, {4});
      Tensor sm64 = empty64({4, V}), smg = poisoned({4, V}, dt, kGpu);
      kernels::softmax_forward()(kCpu, z64, false, sm64);
      kernels::softmax_forward()(kGpu, zg, false, smg);
      Tensor l64 = empty64({4}), e64 = empty64({4});
      Tensor lg = poisoned({4}, DType::F32, kGpu), eg = poisoned({4}, DType::F32, kGpu);
      kernels::cross_entropy_forward()(kCpu, z64, t4, -100, l64, e64);
      kernels::cross_entropy_forward()(kGpu, zg, t4.to(kGpu), -100, lg, eg);
      auto kind = [](double v) { return std::isnan(v) ? 'n' : std::isinf(v) ? (v > 0 ? '+' : '-') : 'f'; };
      auto row_kinds = [&](const Tensor& t) {  // per row: the set of kinds of its elements
        const std::vector<double> v = t.to(kCpu).to(DType::F64).to_double_vector();
        const int64_t w = static_cast<int64_t>(v.size()) / 4;
        std::vector<std::string> out(4);
        for (int64_t r = 0; r < 4; ++r)
          for (int64_t c = 0; c < w; ++c) {
            const char ch = kind(v[static_cast<size_t>(r * w + c)]);
            if (out[static_cast<size_t>(r)].find(ch) == std::string::npos) out[static_cast<size_t>(r)] += ch;
          }
        for (std::string& o : out) std::sort(o.begin(), o.end());
        return out;
      };
      EXPECT_EQ(row_kinds(smg), row_kinds(sm64)) << name << ": softmax of the special rows";
      EXPECT_EQ(row_kinds(lg), row_kinds(l64)) << name << ": loss of the special rows";
      EXPECT_EQ(row_kinds(eg), row_kinds(e64)) << name << ": lse of the special rows";
      expect_matches(name + " plain row loss", lg.narrow(0, 3, 1), l64.narrow(0, 3, 1), DType::F32);
    }
}

TEST(CudaModelOps, BadInputsAreErrors) {
  R1_SKIP_WITHOUT_CUDA();
  const Tensor logits = Tensor::randn({2, 5}, case_seed(6000), DType::F32, kGpu);
  Tensor loss = Tensor::empty({2}, DType::F32, kGpu), lse = Tensor::empty({2}, DType::F32, kGpu);
  const Tensor bad = Tensor::from_vector(std::vector<int64_t>{1, 5}, {2}).to(kGpu);
  EXPECT_THROW(kernels::cross_entropy_forward()(kGpu, logits, bad, -100, loss, lse), Error);
  Tensor lse_bf16 = Tensor::empty({2}, DType::BF16, kGpu);  // stats must be f32
  const Tensor ok = Tensor::from_vector(std::vector<int64_t>{1, 4}, {2}).to(kGpu);
  EXPECT_THROW(kernels::cross_entropy_forward()(kGpu, logits, ok, -100, loss, lse_bf16), Error);
  const Tensor x64 = Tensor::randn({2, 5}, case_seed(6001), DType::F64, kGpu);
  Tensor y64 = Tensor::empty({2, 5}, DType::F64, kGpu);
  EXPECT_THROW(kernels::softmax_forward()(kGpu, x64, true, y64), Error);
  Tensor r = Tensor::empty({2}, DType::F64, kGpu);
  EXPECT_THROW(kernels::rmsnorm_forward()(kGpu, x64, Tensor::ones({5}, DType::F64, kGpu), 1e-5,
                                          y64, r),
               Error);
}

// ---- adamw -------------------------------------------------------------------------------

TEST(CudaModelOps, AdamWThreeStepsMatchCpu) {
  R1_SKIP_WITHOUT_CUDA();
  const double lr = 1e-2, b1 = 0.9, b2 = 0.999, eps = 1e-8, wd = 0.1, gs = 0.37;
  uint64_t k = 7000;
  for (DType gdt : kDTypes)
    for (int64_t n : {int64_t{1}, int64_t{7}, int64_t{4099}, (int64_t{1} << 20) + 3})
      for (int64_t off : {0, 1}) {
        const std::string name =
            fmt::format("adamw g {} n {} off {}", dtype_name(gdt), n, off);
        const Tensor p0 = Tensor::randn({n}, case_seed(++k));
        Tensor p64 = rounded_f64(p0, DType::F32), m64 = Tensor::zeros({n}, DType::F64),
               v64 = Tensor::zeros({n}, DType::F64);
        auto placed = [&](const Tensor& src, DType dt) {  // at element offset `off`
          Tensor base = Tensor::zeros({n + off}, dt);
          base.narrow(0, off, n).copy_(src.to(dt));
          return base.to(kGpu).narrow(0, off, n);
        };
        Tensor pg = placed(p0, DType::F32), mg = placed(Tensor::zeros({n}), DType::F32),
               vg = placed(Tensor::zeros({n}), DType::F32);
        for (int64_t step = 1; step <= 3; ++step) {
          const Tensor g = Tensor::randn({n}, case_seed(++k));
          kernels::adamw_step()(kCpu, p64, rounded_f64(g, gdt), m64, v64, lr, b1, b2, eps, wd,
                                step, gs);
          kernels::adamw_step()(kGpu, pg, placed(g, gdt), mg, vg, lr, b1, b2, eps, wd, step, gs);
        }
        expect_matches(name + " p", pg, p64, DType::F32);
        expect_matches(name + " m", mg, m64, DType::F32);
        expect_matches(name + " v", vg, v64, DType::F32);
        // The update itself, not only p (which barely moves): catches a wrong step size.
        std::vector<double> dg = pg.to_double_vector(), d64 = p64.to_double_vector();
        const std::vector<double> start = rounded_f64(p0, DType::F32).to_double_vector();
        for (int64_t i = 0; i < n; ++i) {
          dg[i] -= start[i];
          d64[i] -= start[i];
        }
        test::expect_close(name + " p - p0", dg, d64, 1e-6, 1e-3);
      }
}

// ---- batch invariance --------------------------------------------------------------------

// Row r of a launch over N rows equals the launch over that row alone, bit for bit (the
// lone row sits at another address alignment when D is odd).
TEST(CudaModelOps, RowResultsDoNotDependOnTheBatch) {
  R1_SKIP_WITHOUT_CUDA();
  uint64_t k = 8000;
  for (DType dt : kDTypes)
    for (int64_t D : {int64_t{1001}, int64_t{7168}, int64_t{129280}}) {
      const int64_t N = 37;
      const Tensor x = on_gpu(Tensor::randn({N, D}, case_seed(++k)), dt);
      const Tensor w = on_gpu(Tensor::rand({D}, case_seed(++k), 0.5, 1.5), dt);
      const Tensor t = Tensor::randint({N}, case_seed(++k), 0, D).to(kGpu);
      Tensor y = Tensor::empty({N, D}, dt, kGpu), r = Tensor::empty({N}, DType::F32, kGpu);
      Tensor ls = Tensor::empty({N, D}, dt, kGpu);
      Tensor loss = Tensor::empty({N}, DType::F32, kGpu), lse = Tensor::empty({N}, DType::F32, kGpu);
      kernels::rmsnorm_forward()(kGpu, x, w, 1e-6, y, r);
      kernels::softmax_forward()(kGpu, x, true, ls);
      kernels::cross_entropy_forward()(kGpu, x, t, -100, loss, lse);
      for (int64_t row : {int64_t{0}, int64_t{1}, N - 1}) {
        const std::string name = fmt::format("{} D {} row {}", dtype_name(dt), D, row);
        const Tensor x1 = x.narrow(0, row, 1);
        Tensor y1 = Tensor::empty({1, D}, dt, kGpu), r1 = Tensor::empty({1}, DType::F32, kGpu);
        Tensor ls1 = Tensor::empty({1, D}, dt, kGpu);
        Tensor loss1 = Tensor::empty({1}, DType::F32, kGpu), lse1 = Tensor::empty({1}, DType::F32, kGpu);
        kernels::rmsnorm_forward()(kGpu, x1, w, 1e-6, y1, r1);
        kernels::softmax_forward()(kGpu, x1, true, ls1);
        kernels::cross_entropy_forward()(kGpu, x1, t.narrow(0, row, 1), -100, loss1, lse1);
        test::expect_close(name + " rmsnorm y", y1, y.narrow(0, row, 1), 0, 0);
        test::expect_close(name + " rmsnorm rstd", r1, r.narrow(0, row, 1), 0, 0);
        test::expect_close(name + " log_softmax", ls1, ls.narrow(0, row, 1), 0, 0);
        test::expect_close(name + " ce loss", loss1, loss.narrow(0, row, 1), 0, 0);
        test::expect_close(name + " ce lse", lse1, lse.narrow(0, row, 1), 0, 0);
      }
    }
}

// ---- ops with autograd on the GPU ----------------------------------------------------------

// The op graph f on GPU inputs (dtype dt) against f on the CPU in f64 on the rounded inputs:
// the forward value and every input's gradient under a random cotangent.
void expect_graph_matches(const std::string& name, DType dt, const std::vector<Tensor>& inputs,
                          const std::function<Tensor(const std::vector<Tensor>&)>& f,
                          uint64_t seed, bool log_softmax_grad = false) {
  std::vector<Tensor> g_in, c_in;
  for (const Tensor& x : inputs) {
    g_in.push_back(on_gpu(x, dt).set_requires_grad());
    c_in.push_back(rounded_f64(x, dt).set_requires_grad());
  }
  // One graph at a time: backward() runs (and clears) the thread's whole tape.
  const Tensor yg = f(g_in);
  const Tensor cot = Tensor::randn(yg.shape(), seed);
  backward(yg, on_gpu(cot, yg.dtype()));
  const Tensor yc = f(c_in);
  backward(yc, rounded_f64(cot, yg.dtype()));
  expect_matches(name + " value", yg, yc, yg.dtype());
  for (size_t i = 0; i < inputs.size(); ++i) {
    ASSERT_TRUE(g_in[i].grad().defined()) << name << ": input " << i << " got no gradient";
    EXPECT_TRUE(g_in[i].grad().device().is_cuda()) << name;
    if (log_softmax_grad) {  // the per-element bound of the softmax backward (above)
      const int64_t V = yg.size(-1);
      expect_softmax_dx(fmt::format("{} grad {}", name, i),
                        g_in[i].grad().reshape({yg.numel() / V, V}),
                        c_in[i].grad().reshape({yg.numel() / V, V}),
                        yg.to(kCpu).to(DType::F64).reshape({yg.numel() / V, V}),
                        rounded_f64(cot, yg.dtype()).reshape({yg.numel() / V, V}), true, dt);
      continue;
    }
    expect_matches(fmt::format("{} grad {}", name, i), g_in[i].grad(), c_in[i].grad(), dt);
  }
}

TEST(CudaModelOps, OpsBackwardOnGpuMatchCpu) {
  R1_SKIP_WITHOUT_CUDA();
  uint64_t k = 9000;
  for (DType dt : kDTypes) {
    const std::string d = dtype_name(dt);
    expect_graph_matches("rmsnorm " + d, dt,
                         {Tensor::randn({2, 3, 37}, case_seed(++k)),
                          Tensor::rand({37}, case_seed(++k), 0.5, 1.5)},
                         [](const std::vector<Tensor>& in) { return rmsnorm(in[0], in[1], 1e-5); },
                         case_seed(++k));
    expect_graph_matches("swiglu " + d, dt,
                         {Tensor::randn({4, 33}, case_seed(++k), DType::F32, kCpu, 2.0),
                          Tensor::randn({4, 33}, case_seed(++k))},
                         [](const std::vector<Tensor>& in) { return swiglu(in[0], in[1]); },
                         case_seed(++k));
    expect_graph_matches("log_softmax " + d, dt,
                         {Tensor::randn({3, 5, 77}, case_seed(++k), DType::F32, kCpu, 3.0)},
                         [](const std::vector<Tensor>& in) { return log_softmax(in[0]); },
                         case_seed(++k), /*log_softmax_grad=*/true);
    // rope: the GPU table in x's dtype (the op requires it), the CPU table the same values.
    RopeConfig cfg;
    cfg.dim = 16;
    for (bool il : {true, false}) {
      cfg.interleaved = il;
      const RopeTable tg(cfg, 20, dt, kGpu);
      RopeTable tc(cfg, 20, DType::F64);
      tc.cos = rounded_f64(tg.cos, dt);
      tc.sin = rounded_f64(tg.sin, dt);
      const Tensor pos = Tensor::randint({2, 4}, case_seed(++k), 0, 20);
      const Tensor pos_g = pos.to(kGpu);
      expect_graph_matches(fmt::format("rope {} {}", d, il ? "interleaved" : "halves"), dt,
                           {Tensor::randn({2, 4, 3, 16}, case_seed(++k))},
                           [&](const std::vector<Tensor>& in) {
                             const bool gpu = in[0].device().is_cuda();
                             return rope(in[0], gpu ? pos_g : pos, gpu ? tg : tc);
                           },
                           case_seed(++k));
      // mla_qkv: n = 8 copied features, r = 16 rotated, v = 12; outputs flattened into one.
      expect_graph_matches(fmt::format("mla_qkv {} {}", d, il ? "interleaved" : "halves"), dt,
                           {Tensor::randn({2, 4, 3, 24}, case_seed(++k)),
                            Tensor::randn({2, 4, 3, 20}, case_seed(++k)),
                            Tensor::randn({2, 4, 16}, case_seed(++k))},
                           [&](const std::vector<Tensor>& in) {
                             const bool gpu = in[0].device().is_cuda();
                             const std::vector<Tensor> o =
                                 mla_qkv(in[0], in[1], in[2], gpu ? pos_g : pos, gpu ? tg : tc);
                             return concat({o[0].reshape({o[0].numel()}), o[1].reshape({o[1].numel()}),
                                            o[2].reshape({o[2].numel()})}, 0);
                           },
                           case_seed(++k));
    }
  }
}

TEST(CudaModelOps, CrossEntropyOpBackwardOnGpuMatchesCpu) {
  R1_SKIP_WITHOUT_CUDA();
  if (!kernels::reduce().has(DeviceType::CUDA))
    GTEST_SKIP() << "the cross_entropy op needs the CUDA 'reduce' kernel, not registered yet";
  uint64_t k = 9500;
  for (DType dt : kDTypes) {
    std::vector<int64_t> tv = Tensor::randint({6}, case_seed(++k), 0, 1000).to_int_vector();
    tv[2] = -100;
    const Tensor t = Tensor::from_vector(tv, {6});
    const Tensor tg = t.to(kGpu);
    expect_graph_matches("cross_entropy " + std::string(dtype_name(dt)), dt,
                         {Tensor::randn({6, 1000}, case_seed(++k), DType::F32, kCpu, 2.0)},
                         [&](const std::vector<Tensor>& in) {
                           return cross_entropy(in[0], in[0].device().is_cuda() ? tg : t, -100);
                         },
                         case_seed(++k));
  }
}

}  // namespace
}  // namespace r1
