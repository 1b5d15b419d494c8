// Token sampling (sample_tokens, engine/kernels.h) against an f64 reference written from the
// contract: greedy, the kept sets of top-k and top-p, the draw's distribution (chi-square),
// the untruncated logprob, batch invariance, bad input. Then the CUDA kernel against the
// CPU's (tests begin with R1_SKIP_WITHOUT_CUDA()). Inputs are fresh each run (case_seed).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <set>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "engine/kernels.h"
#include "engine/rng.h"
#include "tests/harness.h"

namespace r1 {
namespace {

using test::case_seed;

[[maybe_unused]] const uint64_t kRunSeed = test::run_seed();
const Device kCpu = Device::cpu();
const Device kGpu = Device::cuda(0);
constexpr double kInf = std::numeric_limits<double>::infinity();

// ---- the f64 reference ---------------------------------------------------------------------

// The distribution a row's draw uses: probs = q truncated to the kept set and renormalized
// (0 outside it), logq = log_softmax(x / T); margin_p = how far top_p is from the cumulative
// masses on either side of the top-p cut (inf without a cut).
struct RefDist {
  std::vector<double> probs, logq;
  std::vector<bool> kept;
  double margin_p = kInf;
};

RefDist ref_dist(const std::vector<double>& x, const SamplingParams& p) {
  const int64_t V = static_cast<int64_t>(x.size());
  const double T = p.temperature, m = *std::max_element(x.begin(), x.end());
  RefDist d;
  std::vector<double> q(V);
  double s = 0;
  for (int64_t i = 0; i < V; ++i) s += q[i] = std::exp((x[i] - m) / T);
  for (int64_t i = 0; i < V; ++i) d.logq.push_back((x[i] - m) / T - std::log(s));
  std::vector<int64_t> rank(V);
  std::iota(rank.begin(), rank.end(), int64_t{0});
  std::stable_sort(rank.begin(), rank.end(), [&](int64_t a, int64_t b) { return x[a] > x[b]; });
  int64_t L = p.top_k > 0 && p.top_k < V ? p.top_k : V;
  if (p.top_p < 1) {
    double mk = 0, c = 0;
    for (int64_t r = 0; r < L; ++r) mk += q[rank[r]];
    for (int64_t r = 0; r < L; ++r) {
      const double before = c / mk;
      c += q[rank[r]];
      if (c / mk >= p.top_p) {
        d.margin_p = std::min(c / mk - p.top_p, r > 0 ? p.top_p - before : kInf);
        L = r + 1;
        break;
      }
    }
  }
  d.kept.assign(V, false);
  double mass = 0;
  for (int64_t r = 0; r < L; ++r) d.kept[rank[r]] = true, mass += q[rank[r]];
  for (int64_t i = 0; i < V; ++i) d.probs.push_back(d.kept[i] ? q[i] / mass : 0.0);
  return d;
}

// The inverse CDF in index order; margin = the distance from u to the chosen token's edges.
struct RefDraw {
  int64_t token;
  double margin;
};

RefDraw ref_draw(const RefDist& d, double u) {
  double c = 0;
  int64_t last = 0;
  for (size_t i = 0; i < d.probs.size(); ++i) {
    if (d.probs[i] == 0) continue;
    const double before = c;
    c += d.probs[i];
    last = static_cast<int64_t>(i);
    if (c > u) return {last, std::min(u - before, c - u)};
  }
  return {last, 0.0};
}

double row_u(uint64_t seed, int64_t seq, int64_t pos) {
  return uniform01(philox_bits(seed, static_cast<uint64_t>(seq), static_cast<uint64_t>(pos)).v[0]);
}

// ---- running the kernel ----------------------------------------------------------------------

struct Drawn {
  std::vector<int64_t> tokens;
  std::vector<double> logprobs;
};

// logits (N, V) (any dtype/device; moved to dev as they are) -> the kernel's outputs.
Drawn sample(Device dev, const Tensor& logits, const std::vector<int64_t>& seq,
             const std::vector<int64_t>& pos, uint64_t seed, const SamplingParams& p) {
  const int64_t N = logits.size(0);
  const Tensor lg = logits.to(dev);
  const Tensor s = Tensor::from_vector(seq, {N}).to(dev);
  const Tensor ps = Tensor::from_vector(pos, {N}).to(dev);
  Tensor tok = test::poisoned({N}, DType::I64, dev);
  Tensor lp = test::poisoned({N}, stat_dtype(logits.dtype()), dev);
  kernels::sample_tokens()(dev, lg, s, ps, seed, p, tok, lp);
  return {tok.to_int_vector(), lp.to_double_vector()};
}

// A (N, V) f64 tensor of `row` repeated N times.
Tensor repeat_row(const std::vector<double>& row, int64_t N) {
  std::vector<double> v;
  for (int64_t n = 0; n < N; ++n) v.insert(v.end(), row.begin(), row.end());
  return Tensor::from_vector(v, {N, static_cast<int64_t>(row.size())});
}

std::vector<int64_t> iota(int64_t n, int64_t from = 0) {
  std::vector<int64_t> v(n);
  std::iota(v.begin(), v.end(), from);
  return v;
}

std::string params_str(const SamplingParams& p) {
  return fmt::format("T {} top_k {} top_p {}", p.temperature, p.top_k, p.top_p);
}

// Survival function of the chi-square distribution with integer df (closed forms).
double chi_square_sf(double x, int df) {
  const double h = x / 2;
  double s = 0;
  if (df % 2 == 0) {
    double term = 1;
    for (int k = 0; k < df / 2; ++k) s += term, term *= h / (k + 1);
    return std::exp(-h) * s;
  }
  for (int k = 1; k <= df / 2; ++k)
    s += std::exp((k - 0.5) * std::log(h) - h - std::lgamma(k + 0.5));
  return std::erfc(std::sqrt(h)) + s;
}

// ---- CPU -----------------------------------------------------------------------------------

// Sampled frequencies of one V = 10 row, 20000 draws (positions 0..19999 of one sequence, one
// launch), against the f64 truncated renormalized softmax: no draw outside the kept set, and
// Pearson's chi-square p-value >= 1e-6, so a correct sampler fails with probability < 1e-6
// per config (up to the chi-square approximation; every expected count is >= 100).
void expect_chi_square(Device dev, DType dt, uint64_t k) {
  const SamplingParams configs[] = {{0.7f, 6, 0.9f}, {1.0f, 0, 1.0f}, {1.5f, 0, 0.8f}};
  const double base[] = {2.0, 1.6, 1.3, 1.0, 0.7, 0.4, 0.1, -0.3, -0.8, -1.5};
  const int64_t V = 10, kDraws = 20000;
  for (const SamplingParams& p : configs) {
    // base permuted, plus noise in [-0.05, 0.05], rounded to dt.
    const std::vector<double> noise = Tensor::rand({V}, case_seed(++k), -0.05, 0.05, DType::F64)
                                          .to_double_vector();
    const std::vector<double> key =
        Tensor::rand({V}, case_seed(++k), 0, 1, DType::F64).to_double_vector();
    std::vector<int64_t> perm = iota(V);
    std::sort(perm.begin(), perm.end(), [&](int64_t a, int64_t b) { return key[a] < key[b]; });
    std::vector<double> x(V);
    for (int64_t i = 0; i < V; ++i) x[i] = base[perm[i]] + noise[i];
    x = test::rounded_f64(Tensor::from_vector(x, {V}), dt).to_double_vector();
    const RefDist d = ref_dist(x, p);
    const uint64_t seed = case_seed(++k);
    const Drawn got = sample(dev, repeat_row(x, kDraws).to(dt), std::vector<int64_t>(kDraws, 7),
                             iota(kDraws), seed, p);
    std::vector<double> count(V, 0.0);
    for (int64_t t : got.tokens) {
      ASSERT_TRUE(t >= 0 && t < V) << t;
      count[t] += 1;
    }
    double chi2 = 0;
    int df = -1;
    for (int64_t i = 0; i < V; ++i) {
      const double expect = d.probs[i] * kDraws;
      if (!d.kept[i]) {
        EXPECT_EQ(count[i], 0) << params_str(p) << ": token " << i << " is outside the kept set";
        continue;
      }
      ASSERT_GE(expect, 100) << "test design: an expected count too small for chi-square";
      chi2 += (count[i] - expect) * (count[i] - expect) / expect;
      ++df;
    }
    const double pv = df > 0 ? chi_square_sf(chi2, df) : 1.0;
    EXPECT_GE(pv, 1e-6) << params_str(p) << " " << dtype_name(dt) << ": chi2 " << chi2 << " df "
                        << df;
  }
}

TEST(Sampling, ChiSquareMatchesTruncatedSoftmax) {
  EXPECT_NEAR(chi_square_sf(3.841458820694124, 1), 0.05, 1e-9);  // the closed forms
  EXPECT_NEAR(chi_square_sf(9.487729036781154, 4), 0.05, 1e-9);
  EXPECT_NEAR(chi_square_sf(11.070497693516351, 5), 0.05, 1e-9);
  expect_chi_square(kCpu, DType::F64, 100);
  expect_chi_square(kCpu, DType::F32, 200);
}

TEST(Sampling, GreedyIsFirstArgmax) {
  uint64_t k = 300;
  for (DType dt : {DType::F64, DType::F32}) {
    const int64_t N = 64, V = 37;
    // Integer logits in [-3, 3]: ties for the maximum in most rows; one -inf per row.
    std::vector<double> x = Tensor::randint({N, V}, case_seed(++k), -3, 4).to_double_vector();
    for (int64_t n = 0; n < N; ++n) x[n * V + (n % V)] = -kInf;
    const Tensor lg = Tensor::from_vector(x, {N, V}).to(dt);
    const SamplingParams p{0.0f, 5, 0.5f};  // greedy ignores top-k and top-p
    const Drawn a = sample(kCpu, lg, iota(N), iota(N), case_seed(++k), p);
    const Drawn b = sample(kCpu, lg, iota(N, 100), iota(N, 5), case_seed(++k), p);
    for (int64_t n = 0; n < N; ++n) {
      const std::vector<double> row(x.begin() + n * V, x.begin() + (n + 1) * V);
      const int64_t want = std::max_element(row.begin(), row.end()) - row.begin();  // first
      EXPECT_EQ(a.tokens[n], want) << "row " << n;
      EXPECT_EQ(b.tokens[n], want) << "row " << n << ": greedy depends on the RNG";
      EXPECT_NEAR(a.logprobs[n], ref_dist(row, {1.0f, 0, 1.0f}).logq[want], 1e-6);
    }
  }
}

// Random rows, random parameters: every draw equals the f64 reference's token (a mismatch is
// allowed only where u or top_p lies within `tol` of a cumulative mass, the compute type's
// rounding); every token of the reference's kept set with probability >= 5e-3 (>= 20 expected
// draws of 4000) appears; the logprob is log_softmax(x / T)[token] to 1e-5.
TEST(Sampling, KeptSetsAndDrawsMatchReference) {
  uint64_t k = 400;
  const int64_t kDraws = 4000;
  for (DType dt : {DType::F64, DType::F32}) {
    const double tol = dt == DType::F64 ? 1e-10 : 1e-5;
    int near = 0, draws = 0;
    for (int c = 0; c < 30; ++c) {
      const std::vector<double> r = Tensor::rand({5}, case_seed(++k), 0, 1, DType::F64)
                                        .to_double_vector();
      const int64_t V = 8 + static_cast<int64_t>(r[0] * 40);
      const int64_t ks[] = {0, 1, 3, V / 2, V - 1, V, V + 5};
      const float ps[] = {1.0f, 0.95f, 0.6f, 0.2f};
      const float ts[] = {0.4f, 1.0f, 1.7f};
      const SamplingParams p{ts[static_cast<int>(r[1] * 3)], ks[static_cast<int>(r[2] * 7)],
                             ps[static_cast<int>(r[3] * 4)]};
      std::vector<double> x = Tensor::randn({V}, case_seed(++k), DType::F64).to_double_vector();
      if (r[4] < 0.5)  // many ties: logits on a grid of 0.5
        for (double& e : x) e = std::round(2 * e) / 2;
      x = test::rounded_f64(Tensor::from_vector(x, {V}), dt).to_double_vector();
      const std::string name = fmt::format("{} case {} V {} {}", dtype_name(dt), c, V,
                                           params_str(p));
      const RefDist d = ref_dist(x, p);
      const uint64_t seed = case_seed(++k);
      const std::vector<int64_t> seq(kDraws, static_cast<int64_t>(case_seed(++k) >> 2));
      const Drawn got = sample(kCpu, repeat_row(x, kDraws).to(dt), seq, iota(kDraws), seed, p);
      std::vector<int> seen(V, 0);
      for (int64_t n = 0; n < kDraws; ++n) {
        const RefDraw want = ref_draw(d, row_u(seed, seq[n], n));
        const int64_t t = got.tokens[n];
        ASSERT_TRUE(t >= 0 && t < V) << name << ": token " << t;
        ++seen[t];
        ++draws;
        if (t != want.token) {
          ASSERT_LT(std::min(want.margin, d.margin_p), tol)
              << name << " draw " << n << ": token " << t << ", reference " << want.token;
          ++near;
        }
        ASSERT_NEAR(got.logprobs[n], d.logq[t], 1e-5) << name << " draw " << n;
      }
      for (int64_t i = 0; i < V; ++i) {
        if (d.margin_p < tol) break;  // the kept set itself is within rounding of the cut
        EXPECT_TRUE(d.kept[i] || seen[i] == 0) << name << ": drew token " << i << " outside";
        if (d.probs[i] >= 5e-3) {
          EXPECT_GT(seen[i], 0) << name << ": kept token " << i;
        }
      }
    }
    EXPECT_LE(near, 1 + draws / 10000) << dtype_name(dt) << ": near-boundary mismatches";
  }
}

// The same row at different places in batches of different sizes, between different rows,
// gets the same token and logprob bits; so do repeated calls.
void expect_batch_invariant(Device dev, DType dt, int64_t V, uint64_t k) {
  const SamplingParams configs[] = {{0.8f, 50, 0.95f}, {1.0f, 0, 0.9f}, {1.3f, 0, 1.0f}};
  for (const SamplingParams& p : configs) {
    const Tensor row = Tensor::randn({1, V}, case_seed(++k), DType::F32, kCpu, 2.0).to(dt);
    const uint64_t seed = case_seed(++k);
    const int64_t seq = 12345, pos = 678;
    const Drawn alone = sample(dev, row, {seq}, {pos}, seed, p);
    for (int64_t N : {int64_t{5}, int64_t{33}}) {
      Tensor batch = Tensor::randn({N, V}, case_seed(++k), DType::F32, kCpu, 2.0).to(dt);
      const int64_t at[] = {0, N / 2, N - 1};
      std::vector<int64_t> sq = iota(N, 1), ps = iota(N, 40);
      for (int64_t a : at) batch.narrow(0, a, 1).copy_(row), sq[a] = seq, ps[a] = pos;
      const Drawn got = sample(dev, batch, sq, ps, seed, p);
      for (int64_t a : at) {
        EXPECT_EQ(got.tokens[a], alone.tokens[0]) << params_str(p) << " N " << N << " at " << a;
        EXPECT_EQ(got.logprobs[a], alone.logprobs[0]) << params_str(p) << " N " << N;
      }
    }
  }
}

TEST(Sampling, RowDoesNotDependOnBatch) {
  expect_batch_invariant(kCpu, DType::F32, 500, 500);
  expect_batch_invariant(kCpu, DType::F64, 500, 600);
  // The draw is keyed by (seq, pos): a flat row over 64 positions does not give one token.
  const Drawn d = sample(kCpu, Tensor::zeros({64, 100}), iota(64), iota(64), 1, {});
  EXPECT_GT(std::set<int64_t>(d.tokens.begin(), d.tokens.end()).size(), 20u);
}

TEST(Sampling, MaskedTokensAndBadRows) {
  // -inf logits are never drawn, even when top-k keeps them.
  const int64_t N = 2000;
  std::vector<double> row = {0.5, -kInf, 0.1, -kInf, -kInf, 0.2, -kInf, -kInf};
  const Drawn d =
      sample(kCpu, repeat_row(row, N), iota(N), iota(N), case_seed(700), {1.0f, 7, 1.0f});
  for (int64_t t : d.tokens) EXPECT_TRUE(t == 0 || t == 2 || t == 5) << t;
  // A NaN or +inf logit, or a row of -inf: token 0, logprob NaN.
  const std::vector<double> bad = {1, NAN, 2, 0, 1, kInf, 2, 0, -kInf, -kInf, -kInf, -kInf};
  for (DType dt : {DType::F64, DType::F32}) {
    const Drawn b = sample(kCpu, Tensor::from_vector(bad, {3, 4}).to(dt), {0, 1, 2}, {0, 0, 0},
                           1, {1.0f, 2, 0.5f});
    for (int n = 0; n < 3; ++n) {
      EXPECT_EQ(b.tokens[n], 0);
      EXPECT_TRUE(std::isnan(b.logprobs[n]));
    }
  }
}

TEST(Sampling, RejectsBadInput) {
  const Tensor x = Tensor::randn({3, 5}, 1);
  const Tensor s = Tensor::arange(3), ps = Tensor::arange(3);
  auto call = [&](const Tensor& lg, const Tensor& sq, const Tensor& po, const SamplingParams& p,
                  DType tok_dt = DType::I64, DType lp_dt = DType::F32, int64_t n_out = 3) {
    Tensor tok = Tensor::empty({n_out}, tok_dt), lp = Tensor::empty({n_out}, lp_dt);
    kernels::sample_tokens()(kCpu, lg, sq, po, 1, p, tok, lp);
  };
  EXPECT_NO_THROW(call(x, s, ps, {}));
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = INFINITY;
  for (float t : {-1.0f, nan, inf}) EXPECT_THROW(call(x, s, ps, {t, 0, 1.0f}), Error) << t;
  for (float tp : {0.0f, -0.1f, 1.5f, nan})
    EXPECT_THROW(call(x, s, ps, {1.0f, 0, tp}), Error) << tp;
  EXPECT_THROW(call(x, s, ps, {1.0f, -1, 1.0f}), Error);
  EXPECT_THROW(call(x, Tensor::arange(4), ps, {}), Error);                  // seq size
  EXPECT_THROW(call(x, s, Tensor::arange(3, DType::I32), {}), Error);       // pos dtype
  EXPECT_THROW(call(x, s, ps, {}, DType::I32), Error);                      // tokens dtype
  EXPECT_THROW(call(x, s, ps, {}, DType::I64, DType::F64), Error);          // logprobs dtype
  EXPECT_THROW(call(x, s, ps, {}, DType::I64, DType::F32, 2), Error);       // outputs' size
  EXPECT_THROW(call(x.view({15}), s, ps, {}), Error);                       // logits 1-d
  EXPECT_THROW(call(Tensor::empty({3, 0}), s, ps, {}), Error);              // V = 0
  EXPECT_THROW(call(x.to(DType::BF16), s, ps, {}), Error);                  // CPU: f32/f64 only
  EXPECT_THROW(call(Tensor::randn({5, 3}, 2).transpose(0, 1), s, ps, {}), Error);  // strided
}

// ---- CUDA ------------------------------------------------------------------------------------

TEST(CudaSampling, ChiSquareMatchesTruncatedSoftmax) {
  R1_SKIP_WITHOUT_CUDA();
  expect_chi_square(kGpu, DType::F32, 1100);
  expect_chi_square(kGpu, DType::BF16, 1200);
}

// GPU tokens against the CPU's (f64, on the same rounded values) on random rows; a mismatch is
// allowed only where the f64 reference puts u or top_p within 1e-5 of a cumulative mass (the
// GPU computes in fp32), and such rows must be rare. Logprobs within 1e-4 of the reference.
// Half of the rows lie on a grid of 0.25 (ties at the top-k and top-p boundaries).
void expect_gpu_matches_cpu(DType dt, int64_t V, int64_t N, uint64_t k) {
  const SamplingParams configs[] = {{1.0f, 0, 1.0f},  {0.7f, 50, 1.0f},   {0.8f, 0, 0.9f},
                                    {1.2f, 20, 0.95f}, {0.5f, 1, 1.0f},   {0.9f, 0, 0.3f},
                                    {1.0f, V - 1, 0.99f}, {0.0f, 0, 1.0f}};
  int near = 0, rows = 0;
  for (const SamplingParams& p : configs) {
    std::vector<double> x = Tensor::randn({N, V}, case_seed(++k), DType::F64, kCpu, 2.0)
                                .to_double_vector();
    for (int64_t i = 0; i < N / 2 * V; ++i) x[i] = std::round(4 * x[i]) / 4;
    const Tensor lg = Tensor::from_vector(x, {N, V}).to(dt);
    const Tensor x64 = test::rounded_f64(lg, dt);
    const std::vector<double> xr = x64.to_double_vector();
    const uint64_t seed = case_seed(++k);
    std::vector<int64_t> seq = Tensor::randint({N}, case_seed(++k), 0, 1 << 30).to_int_vector();
    const std::vector<int64_t> pos =
        Tensor::randint({N}, case_seed(++k), 0, 1 << 20).to_int_vector();
    const Drawn cpu = sample(kCpu, x64, seq, pos, seed, p);
    const Drawn gpu = sample(kGpu, lg, seq, pos, seed, p);
    for (int64_t n = 0; n < N; ++n, ++rows) {
      const std::string name =
          fmt::format("{} V {} {} row {}", dtype_name(dt), V, params_str(p), n);
      const std::vector<double> row(xr.begin() + n * V, xr.begin() + (n + 1) * V);
      const SamplingParams pl = p.temperature == 0 ? SamplingParams{1.0f, 0, 1.0f} : p;
      const RefDist d = ref_dist(row, pl);
      ASSERT_TRUE(gpu.tokens[n] >= 0 && gpu.tokens[n] < V) << name << ": " << gpu.tokens[n];
      if (gpu.tokens[n] != cpu.tokens[n]) {
        ASSERT_NE(p.temperature, 0.0f) << name << ": greedy tokens differ";
        const RefDraw w = ref_draw(d, row_u(seed, seq[n], pos[n]));
        ASSERT_LT(std::min(w.margin, d.margin_p), 1e-5)
            << name << ": gpu " << gpu.tokens[n] << " cpu " << cpu.tokens[n];
        ++near;
      }
      const double want = d.logq[gpu.tokens[n]];
      EXPECT_NEAR(gpu.logprobs[n], want, 1e-4 + 1e-5 * std::fabs(want)) << name;
    }
  }
  EXPECT_LE(near, 1 + rows / 200) << dtype_name(dt) << " V " << V << ": near-boundary mismatches";
}

TEST(CudaSampling, TokensMatchCpu) {
  R1_SKIP_WITHOUT_CUDA();
  expect_gpu_matches_cpu(DType::F32, 10, 256, 1300);
  expect_gpu_matches_cpu(DType::F32, 1000, 256, 1400);
  expect_gpu_matches_cpu(DType::F32, 50000, 32, 1500);
  expect_gpu_matches_cpu(DType::BF16, 129280, 12, 1600);  // DeepSeek-V3's vocabulary
}

// Greedy on rows full of ties: the GPU's token is the CPU's, exactly.
TEST(CudaSampling, GreedyMatchesCpuExactly) {
  R1_SKIP_WITHOUT_CUDA();
  uint64_t k = 1700;
  for (DType dt : {DType::F32, DType::BF16})
    for (int64_t V : {int64_t{7}, int64_t{1000}, int64_t{129280}}) {
      const int64_t N = 16;
      const Tensor lg = Tensor::randint({N, V}, case_seed(++k), -20, 21).to(DType::F32).to(dt);
      const Drawn cpu =
          sample(kCpu, test::rounded_f64(lg, dt), iota(N), iota(N), 1, {0.0f, 0, 1.0f});
      const Drawn gpu = sample(kGpu, lg, iota(N), iota(N), 2, {0.0f, 3, 0.5f});
      for (int64_t n = 0; n < N; ++n) {
        EXPECT_EQ(gpu.tokens[n], cpu.tokens[n]) << dtype_name(dt) << " V " << V << " row " << n;
        EXPECT_NEAR(gpu.logprobs[n], cpu.logprobs[n], 1e-4) << dtype_name(dt) << " V " << V;
      }
    }
}

TEST(CudaSampling, RowDoesNotDependOnBatch) {
  R1_SKIP_WITHOUT_CUDA();
  expect_batch_invariant(kGpu, DType::F32, 1000, 1800);
  expect_batch_invariant(kGpu, DType::BF16, 129280, 1900);
}

}  // namespace
}  // namespace r1
