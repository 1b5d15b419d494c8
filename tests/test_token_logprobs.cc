// token_logprobs (engine/ops_logprob.h). CPU: f64 against the unfused graph of existing ops
// (log_softmax(h w^T / temperature) gathered at the tokens) for values and gradients, the
// entropy against an f64 loop, finite differences, f32 against f64, rows against the batch,
// bad input. CUDA (skipped without a GPU): the op in f32 and bf16 against the CPU in f64 on
// the same rounded inputs, and the kernels against the CPU kernels with poisoned outputs.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "engine/autograd.h"
#include "engine/kernels_logprob.h"
#include "engine/ops.h"
#include "engine/ops_logprob.h"
#include "tests/harness.h"

namespace r1 {
namespace {

using test::case_seed;
using test::expect_close;
using test::poisoned;
using test::rounded_f64;

// Printed at start-up, so a skipped run still names its seed.
[[maybe_unused]] const uint64_t kRunSeed = test::run_seed();
const Device kCpu = Device::cpu();

struct Case {
  int64_t T, D, V, chunk;
  double temperature;
};

std::string case_name(const Case& c, DType dt) {
  return fmt::format("{} T {} D {} V {} chunk {} temp {}", dtype_name(dt), c.T, c.D, c.V,
                     c.chunk, c.temperature);
}

// h (T, D) ~ N(0, 1), w (V, D) ~ N(0, (sd / sqrt(D))^2): logits of about sd before the
// temperature. f32 on the host; a test rounds them to the dtype it runs in.
struct Inputs {
  Tensor h, w, tokens;
};
Inputs make_inputs(const Case& c, uint64_t k, double sd = 3.0, DType tokens_dt = DType::I64) {
  return {Tensor::randn({c.T, c.D}, case_seed(k)),
          Tensor::randn({c.V, c.D}, case_seed(k + 1), DType::F32, kCpu,
                        sd / std::sqrt(static_cast<double>(c.D))),
          Tensor::randint({c.T}, case_seed(k + 2), 0, c.V, tokens_dt)};
}

// x as a fresh leaf that requires grad.
Tensor leaf(const Tensor& x) {
  Tensor t = x.detach().clone();
  t.set_requires_grad();
  return t;
}

// The unfused graph, built from existing ops: (T) log-probabilities of the tokens.
Tensor unfused_logp(const Tensor& h, const Tensor& w, const Tensor& tokens, double temperature) {
  const Tensor lsm = log_softmax(matmul(h, w, false, true) * (1.0 / temperature));
  return gather(lsm, 1, tokens.view({h.size(0), 1})).view({h.size(0)});
}

// Per-row lse and entropy of softmax(h w^T / temperature): the product from matmul, the rest
// in f64 loops. h, w f64.
struct RowRef {
  std::vector<double> lse, entropy;
};
RowRef row_reference(const Tensor& h, const Tensor& w, double temperature) {
  NoGrad ng;
  const int64_t T = h.size(0), V = w.size(0);
  const std::vector<double> z = matmul(h, w, false, true).to_double_vector();
  RowRef r;
  for (int64_t t = 0; t < T; ++t) {
    const double* zr = z.data() + t * V;
    double m = -INFINITY, s = 0, e = 0;
    for (int64_t v = 0; v < V; ++v) m = std::max(m, zr[v] / temperature);
    for (int64_t v = 0; v < V; ++v) s += std::exp(zr[v] / temperature - m);
    const double lse = m + std::log(s);
    for (int64_t v = 0; v < V; ++v) {
      const double lp = zr[v] / temperature - lse;
      e -= std::exp(lp) * lp;
    }
    r.lse.push_back(lse);
    r.entropy.push_back(e);
  }
  return r;
}

double max_abs(const std::vector<double>& v) {
  double m = 0;
  for (double x : v) m = std::max(m, std::fabs(x));
  return m;
}

// ||a - b|| / ||b|| over all elements.
double normwise_error(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = a.to_double_vector(), y = b.to_double_vector();
  EXPECT_EQ(x.size(), y.size());
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
    num += (x[i] - y[i]) * (x[i] - y[i]);
    den += y[i] * y[i];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

// The empty state of T rows (contract in engine/kernels_logprob.h) on dev.
Tensor empty_stats(int64_t T, DType dt, Device dev) {
  std::vector<double> v(static_cast<size_t>(T) * 4, 0.0);
  for (int64_t t = 0; t < T; ++t) {
    v[t * 4 + 0] = -INFINITY;
    v[t * 4 + 2] = std::numeric_limits<double>::quiet_NaN();
  }
  return Tensor::from_vector(v, {T, 4}, dt, dev);
}

// The fused op with backward(logp, g): logp, entropy and the gradients of h and w.
struct Result {
  Tensor logp, entropy, dh, dw;
};
Result run_fused(const Tensor& h, const Tensor& w, const Tensor& tokens, const Case& c,
                 const Tensor& g) {
  Tensor hl = leaf(h), wl = leaf(w);
  const TokenLogprobs out = token_logprobs(hl, wl, tokens, c.temperature, c.chunk);
  backward(out.logp, g);
  return {out.logp.detach(), out.entropy, hl.grad(), wl.grad()};
}

// ---- CPU ---------------------------------------------------------------------------------

TEST(TokenLogprobs, CpuF64MatchesUnfusedGraph) {
  // V not a multiple of chunk, chunk == V, chunk > V, chunk 1, V = 1, a wider case.
  const Case cases[] = {{5, 8, 13, 4, 1.0},   {5, 8, 13, 13, 0.7}, {3, 6, 11, 100, 1.0},
                        {4, 5, 9, 1, 0.7},    {3, 4, 1, 3, 1.0},   {7, 16, 1000, 256, 0.7},
                        {6, 32, 777, 100, 1.0}};
  uint64_t k = 100;
  for (const Case& c : cases) {
    const std::string name = case_name(c, DType::F64);
    const DType tdt = (k & 1) ? DType::I32 : DType::I64;
    const Inputs in = make_inputs(c, k += 4, 3.0, tdt);
    const Tensor h = in.h.to(DType::F64), w = in.w.to(DType::F64);
    const Tensor g = Tensor::randn({c.T}, case_seed(++k), DType::F64);
    const Result f = run_fused(h, w, in.tokens, c, g);
    ASSERT_EQ(f.logp.dtype(), DType::F64) << name;
    ASSERT_EQ(f.logp.shape(), (Shape{c.T})) << name;
    ASSERT_EQ(f.entropy.shape(), (Shape{c.T})) << name;
    EXPECT_FALSE(f.entropy.requires_grad()) << name;

    Tensor hr = leaf(h), wr = leaf(w);
    const Tensor ref = unfused_logp(hr, wr, in.tokens, c.temperature);
    backward(ref, g);
    expect_close(name + " logp", f.logp, ref.detach(), 1e-11, 1e-11);
    const RowRef rr = row_reference(h, w, c.temperature);
    expect_close(name + " entropy", f.entropy.to_double_vector(), rr.entropy, 1e-11, 1e-11);
    expect_close(name + " dh", f.dh, hr.grad(), 1e-10, 1e-10);
    expect_close(name + " dw", f.dw, wr.grad(), 1e-10, 1e-10);
  }
}

TEST(TokenLogprobs, Gradcheck) {
  struct GradCase {
    Case c;
    bool grad_h, grad_w;
  };
  const GradCase cases[] = {{{3, 4, 7, 3, 0.7}, true, true},
                            {{2, 3, 5, 1, 1.0}, true, false},
                            {{4, 3, 6, 16, 1.3}, false, true}};
  uint64_t k = 200;
  for (const GradCase& gc : cases) {
    const Case c = gc.c;
    const Inputs in = make_inputs(c, k += 4, 2.0);
    Tensor h = in.h.to(DType::F64), w = in.w.to(DType::F64);
    if (gc.grad_h) h.set_requires_grad();
    if (gc.grad_w) w.set_requires_grad();
    test::expect_gradcheck(
        case_name(c, DType::F64),
        [&](const std::vector<Tensor>& x) {
          return token_logprobs(x[0], x[1], in.tokens, c.temperature, c.chunk).logp;
        },
        {h, w}, case_seed(++k));
  }
}

TEST(TokenLogprobs, CpuF32MatchesF64) {
  const Case cases[] = {{9, 32, 700, 128, 0.7}, {4, 16, 50, 64, 1.0}};
  uint64_t k = 300;
  for (const Case& c : cases) {
    const std::string name = case_name(c, DType::F32);
    const Inputs in = make_inputs(c, k += 4);
    const Tensor g = Tensor::randn({c.T}, case_seed(++k));
    const Result f32 = run_fused(in.h, in.w, in.tokens, c, g);
    ASSERT_EQ(f32.logp.dtype(), DType::F32) << name;
    const Tensor h64 = rounded_f64(in.h, DType::F32), w64 = rounded_f64(in.w, DType::F32);
    const Result f64 = run_fused(h64, w64, in.tokens, c, g.to(DType::F64));
    const double scale = max_abs(row_reference(h64, w64, c.temperature).lse);
    expect_close(name + " logp", f32.logp, f64.logp, 2e-5 * scale, 0);
    expect_close(name + " entropy", f32.entropy, f64.entropy, 2e-5 * scale, 0);
    EXPECT_LT(normwise_error(f32.dh, f64.dh), 2e-5) << name << " dh";
    EXPECT_LT(normwise_error(f32.dw, f64.dw), 2e-5) << name << " dw";
  }
}

// A row's logp and entropy computed alone (or with 4 neighbours) against the same row in the
// batch. The logprob kernels walk each row in an order fixed by the chunk width alone, so on
// the same logits they agree bit for bit (checked first). The op's logits come from the CPU
// gemm, OpenBLAS, which is not batch invariant: its kernels (and a gemv path for one row) sum
// a logit's D products in an order that depends on T, and f32 rows were seen to move by a
// few ulps (2e-6 at |logp| ~ 15). So the op is held to 1e-6 of the row's magnitude
// (max |lse|) in f32 and 1e-12 of it in f64, not to bit equality.
TEST(TokenLogprobs, CpuRowsDoNotDependOnTheBatch) {
  const Case c{33, 48, 500, 128, 0.7};
  uint64_t k = 400;
  for (DType dt : {DType::F32, DType::F64}) {
    const Inputs in = make_inputs(c, k += 4);
    const Tensor h = in.h.to(dt), w = in.w.to(dt);
    const double scale = max_abs(row_reference(h.to(DType::F64), w.to(DType::F64),
                                               c.temperature).lse);
    const double atol = (dt == DType::F32 ? 1e-6 : 1e-12) * scale;
    const TokenLogprobs all = token_logprobs(h, w, in.tokens, c.temperature, c.chunk);
    const Tensor logits = matmul(h, w, false, true);
    Tensor stats = empty_stats(c.T, dt, kCpu);
    kernels::logprob_chunk_update()(kCpu, logits, in.tokens, 0, stats);
    for (int64_t row : {int64_t{0}, int64_t{17}, c.T - 1})
      for (int64_t n : {int64_t{1}, int64_t{5}}) {
        const int64_t r0 = std::min(row, c.T - n);
        const std::string name = fmt::format("{} rows [{}, {})", dtype_name(dt), r0, r0 + n);
        Tensor part_stats = empty_stats(n, dt, kCpu);
        kernels::logprob_chunk_update()(kCpu, logits.narrow(0, r0, n).contiguous(),
                                        in.tokens.narrow(0, r0, n), 0, part_stats);
        expect_close(name + " kernel stats", part_stats, stats.narrow(0, r0, n), 0, 0);
        const TokenLogprobs part = token_logprobs(h.narrow(0, r0, n), w,
                                                  in.tokens.narrow(0, r0, n), c.temperature,
                                                  c.chunk);
        expect_close(name + " logp", part.logp, all.logp.narrow(0, r0, n), atol, 0);
        expect_close(name + " entropy", part.entropy, all.entropy.narrow(0, r0, n), atol, 0);
      }
  }
}

TEST(TokenLogprobs, CpuBackwardKernelInPlaceMatchesOutOfPlace) {
  const int64_t T = 5, C = 37, offset = 11;
  const Tensor logits = Tensor::randn({T, C}, case_seed(500), DType::F64, kCpu, 3.0);
  const Tensor tokens = Tensor::randint({T}, case_seed(501), 0, 60);
  const Tensor lse = Tensor::randn({T}, case_seed(502), DType::F64, kCpu, 1.0);
  const Tensor dlogp = Tensor::randn({T}, case_seed(503), DType::F64);
  Tensor out = poisoned({T, C}, DType::F64, kCpu);
  kernels::logprob_chunk_backward()(kCpu, logits, tokens, offset, lse, dlogp, 0.5, out);
  Tensor inplace = logits.clone();
  kernels::logprob_chunk_backward()(kCpu, inplace, tokens, offset, lse, dlogp, 0.5, inplace);
  expect_close("in place", inplace, out, 0, 0);
  // And the formula itself, element by element.
  const auto x = logits.to_double_vector(), z = lse.to_double_vector(),
             g = dlogp.to_double_vector();
  const auto t = tokens.to_int_vector();
  std::vector<double> ref;
  for (int64_t n = 0; n < T; ++n)
    for (int64_t j = 0; j < C; ++j)
      ref.push_back(g[n] * 0.5 *
                    ((offset + j == t[n] ? 1.0 : 0.0) - std::exp(x[n * C + j] - z[n])));
  expect_close("formula", out.to_double_vector(), ref, 1e-15, 1e-14);
}

TEST(TokenLogprobs, NoGradAndEmptyBatch) {
  const Tensor h = Tensor::randn({3, 4}, case_seed(600)), w = Tensor::randn({6, 4}, case_seed(601));
  const Tensor t = Tensor::from_vector(std::vector<int64_t>{0, 5, 2}, {3});
  const TokenLogprobs a = token_logprobs(h, w, t);
  EXPECT_FALSE(a.logp.requires_grad());
  EXPECT_EQ(tape_size(), 0u);
  const TokenLogprobs e = token_logprobs(Tensor::randn({0, 4}, 1), w,
                                         Tensor::from_vector(std::vector<int64_t>{}, {0}), 1.0, 4);
  EXPECT_EQ(e.logp.shape(), (Shape{0}));
  EXPECT_EQ(e.entropy.shape(), (Shape{0}));
}

TEST(TokenLogprobs, BadInputIsAnError) {
  const Tensor h = Tensor::randn({3, 4}, case_seed(700)), w = Tensor::randn({6, 4}, case_seed(701));
  const Tensor t = Tensor::from_vector(std::vector<int64_t>{0, 5, 2}, {3});
  auto tok = [](std::vector<int64_t> v) {
    const int64_t n = static_cast<int64_t>(v.size());
    return Tensor::from_vector(v, {n});
  };
  EXPECT_NO_THROW(token_logprobs(h, w, t));
  EXPECT_THROW(token_logprobs(h, w, tok({0, 6, 2})), Error);   // token == V
  EXPECT_THROW(token_logprobs(h, w, tok({0, -1, 2})), Error);  // negative token
  EXPECT_THROW(token_logprobs(h, w, tok({0, 1})), Error);      // T differs
  EXPECT_THROW(token_logprobs(h, w, t.view({3, 1})), Error);   // tokens not (T)
  EXPECT_THROW(token_logprobs(h, Tensor::randn({6, 5}, 1), t), Error);     // D differs
  EXPECT_THROW(token_logprobs(h.view({3, 2, 2}), w, t), Error);            // h not (T, D)
  EXPECT_THROW(token_logprobs(h, Tensor::randn({0, 4}, 1), tok({})), Error);  // V = 0
  EXPECT_THROW(token_logprobs(h, w.to(DType::F64), t), Error);             // dtypes differ
  EXPECT_THROW(token_logprobs(h, w, t.to(DType::F32)), Error);             // float tokens
  EXPECT_THROW(token_logprobs(h, w, t, 0.0), Error);
  EXPECT_THROW(token_logprobs(h, w, t, -0.5), Error);
  EXPECT_THROW(token_logprobs(h, w, t, std::numeric_limits<double>::infinity()), Error);
  EXPECT_THROW(token_logprobs(h, w, t, std::numeric_limits<double>::quiet_NaN()), Error);
  EXPECT_THROW(token_logprobs(h, w, t, 1.0, 0), Error);
  EXPECT_THROW(token_logprobs(h, w, t, 1.0, -8), Error);
  // The kernels check their own operands: stats of the wrong dtype or shape.
  Tensor stats = Tensor::zeros({3, 4}, DType::F64);
  EXPECT_THROW(kernels::logprob_chunk_update()(kCpu, Tensor::randn({3, 6}, 1), t, 0, stats),
               Error);
  Tensor stats3 = Tensor::zeros({3, 3});
  EXPECT_THROW(kernels::logprob_chunk_update()(kCpu, Tensor::randn({3, 6}, 1), t, 0, stats3),
               Error);
}

// ---- CUDA --------------------------------------------------------------------------------

const Device kGpu = Device::cuda(0);

// The op on the GPU in dt (f32 or bf16) against the CPU in f64 on the same rounded inputs.
TEST(TokenLogprobs, CudaOpMatchesCpuF64) {
  R1_SKIP_WITHOUT_CUDA();
  const Case cases[] = {{64, 256, 32000, 8192, 1.0}, {64, 256, 32000, 8192, 0.7},
                        {5, 40, 1001, 300, 1.0}};
  uint64_t k = 800;
  for (DType dt : {DType::F32, DType::BF16})
    for (const Case& c : cases) {
      const std::string name = case_name(c, dt);
      // Logits of sd ~2 after the temperature: bf16 rounds a logit l by up to |l| 2^-9, which
      // moves its probability by that relative amount; larger logits would eat the 1e-2.
      const DType tdt = (k & 1) ? DType::I32 : DType::I64;
      const Inputs in = make_inputs(c, k += 4, 2.0 * c.temperature, tdt);
      const Tensor g = Tensor::randn({c.T}, case_seed(++k));
      const Result gpu = run_fused(in.h.to(dt).to(kGpu), in.w.to(dt).to(kGpu),
                                   in.tokens.to(kGpu), c, g.to(kGpu));
      ASSERT_EQ(gpu.logp.dtype(), DType::F32) << name;
      ASSERT_TRUE(gpu.dh.device().is_cuda() && gpu.dw.device().is_cuda()) << name;
      const Tensor h64 = rounded_f64(in.h, dt), w64 = rounded_f64(in.w, dt);
      const Result cpu = run_fused(h64, w64, in.tokens, c, rounded_f64(g, DType::F32));
      const double scale = max_abs(row_reference(h64, w64, c.temperature).lse);
      const bool bf16 = dt == DType::BF16;
      const double vtol = (bf16 ? 2e-2 : 2e-5) * scale, gtol = bf16 ? 1e-2 : 1e-4;
      expect_close(name + " logp", gpu.logp.to(kCpu), cpu.logp, vtol, 0);
      expect_close(name + " entropy", gpu.entropy.to(kCpu), cpu.entropy, vtol, 0);
      EXPECT_LT(normwise_error(gpu.dh.to(kCpu), cpu.dh), gtol) << name << " dh";
      EXPECT_LT(normwise_error(gpu.dw.to(kCpu), cpu.dw), gtol) << name << " dw";
    }
}

// The kernels on two chunks (widths C1, C2 at offsets 0 and C1; every token in one of them)
// on the GPU against the CPU kernels in f64 on the same rounded logits; then the backward
// of chunk 2 out of place (poisoned output) and in place, and a row alone against the batch.
TEST(TokenLogprobs, CudaKernelsMatchCpuKernels) {
  R1_SKIP_WITHOUT_CUDA();
  struct KCase {
    int64_t T, C1, C2;
  };
  const KCase cases[] = {{1, 1, 1}, {3, 7, 5}, {37, 1000, 999}, {9, 8192, 5003}, {4, 16, 32768}};
  uint64_t k = 900;
  for (DType dt : {DType::F32, DType::BF16})
    for (const KCase& c : cases) {
      const std::string name = fmt::format("{} T {} C {} + {}", dtype_name(dt), c.T, c.C1, c.C2);
      const Tensor l1 = Tensor::randn({c.T, c.C1}, case_seed(++k), DType::F32, kCpu, 3.0);
      const Tensor l2 = Tensor::randn({c.T, c.C2}, case_seed(++k), DType::F32, kCpu, 4.0);
      const DType tdt = (k & 1) ? DType::I32 : DType::I64;
      const Tensor tokens = Tensor::randint({c.T}, case_seed(++k), 0, c.C1 + c.C2, tdt);
      const Tensor tg = tokens.to(kGpu);
      Tensor s64 = empty_stats(c.T, DType::F64, kCpu), sg = empty_stats(c.T, DType::F32, kGpu);
      kernels::logprob_chunk_update()(kCpu, rounded_f64(l1, dt), tokens, 0, s64);
      kernels::logprob_chunk_update()(kCpu, rounded_f64(l2, dt), tokens, c.C1, s64);
      const Tensor l1g = l1.to(dt).to(kGpu), l2g = l2.to(dt).to(kGpu);
      kernels::logprob_chunk_update()(kGpu, l1g, tg, 0, sg);
      kernels::logprob_chunk_update()(kGpu, l2g, tg, c.C1, sg);
      for (int64_t col = 0; col < 4; ++col) {
        const Tensor ref = s64.narrow(1, col, 1).contiguous();
        const test::Tol tol = test::tol_for(DType::F32, max_abs(ref.to_double_vector()) + 1);
        expect_close(fmt::format("{} stats[{}]", name, col),
                     sg.to(kCpu).narrow(1, col, 1).contiguous(), ref, tol.atol, tol.rtol);
      }

      Tensor lp64 = Tensor::empty({c.T}, DType::F64), h64 = Tensor::empty({c.T}, DType::F64),
             z64 = Tensor::empty({c.T}, DType::F64);
      kernels::logprob_finalize()(kCpu, s64, lp64, h64, z64);
      Tensor lpg = poisoned({c.T}, DType::F32, kGpu), hg = poisoned({c.T}, DType::F32, kGpu),
             zg = poisoned({c.T}, DType::F32, kGpu);
      kernels::logprob_finalize()(kGpu, sg, lpg, hg, zg);
      const double scale = max_abs(z64.to_double_vector()) + 1;
      const test::Tol tol = test::tol_for(DType::F32, scale);
      expect_close(name + " logp", lpg.to(kCpu), lp64, tol.atol, 0);
      expect_close(name + " entropy", hg.to(kCpu), h64, tol.atol, 0);
      expect_close(name + " lse", zg.to(kCpu), z64, tol.atol, tol.rtol);

      // Backward of chunk 2 from the same f32 lse and dlogp on both sides.
      const Tensor lse32 = z64.to(DType::F32), lse32g = lse32.to(kGpu);
      const Tensor dlogp = Tensor::randn({c.T}, case_seed(++k));
      Tensor d64 = Tensor::empty({c.T, c.C2}, DType::F64);
      kernels::logprob_chunk_backward()(kCpu, rounded_f64(l2, dt), tokens, c.C1,
                                        rounded_f64(lse32, DType::F32),
                                        rounded_f64(dlogp, DType::F32), 1 / 0.7, d64);
      Tensor dg = poisoned({c.T, c.C2}, dt, kGpu);
      kernels::logprob_chunk_backward()(kGpu, l2g, tg, c.C1, lse32g, dlogp.to(kGpu), 1 / 0.7,
                                        dg);
      // An element's error is the output rounding (rtol) plus |dlogp| inv_t times the error of
      // p = expf(l - lse), at most ~1.5e-7 absolute in fp32 (atol): a target with p near 1
      // leaves 1 - p small and its relative error large, so the atol is not from the mean.
      double mean = 0;
      for (double v : d64.to_double_vector()) mean += std::fabs(v);
      const test::Tol dtol = test::tol_for(dt, mean / static_cast<double>(d64.numel()));
      const double patol = 1e-6 * max_abs(dlogp.to_double_vector()) / 0.7;
      expect_close(name + " dlogits", dg.to(kCpu), d64, dtol.atol + patol, dtol.rtol);
      Tensor inplace = l2g.clone();
      kernels::logprob_chunk_backward()(kGpu, inplace, tg, c.C1, lse32g, dlogp.to(kGpu),
                                        1 / 0.7, inplace);
      expect_close(name + " dlogits in place", inplace.to(kCpu), dg.to(kCpu), 0, 0);

      // Batch invariance of the update: the last row alone, bit for bit.
      const int64_t r = c.T - 1;
      Tensor s1 = empty_stats(1, DType::F32, kGpu);
      kernels::logprob_chunk_update()(kGpu, l1g.narrow(0, r, 1), tg.narrow(0, r, 1), 0, s1);
      kernels::logprob_chunk_update()(kGpu, l2g.narrow(0, r, 1), tg.narrow(0, r, 1), c.C1, s1);
      expect_close(name + " row alone", s1.to(kCpu), sg.narrow(0, r, 1).to(kCpu), 0, 0);
    }
  // stats must be f32 on CUDA.
  Tensor s64g = Tensor::zeros({2, 4}, DType::F64, kGpu);
  EXPECT_THROW(kernels::logprob_chunk_update()(kGpu, Tensor::randn({2, 5}, 1, DType::F32, kGpu),
                                               Tensor::zeros({2}, DType::I64, kGpu), 0, s64g),
               Error);
}

}  // namespace
}  // namespace r1
