// The DeepSeek-V3 router (engine/ops_moe.h): against a PyTorch transcription of DeepSeek's
// Gate.forward (tests/torch_ref/moe_ref.py), including a case where HF's 0.0 fill of the
// dropped groups picks other experts than DeepSeek's -inf; gradchecks in f64 of the weights
// and of the balance loss (whose value is checked against an f64 loop here); the bias update;
// errors; and CUDA against the CPU kernels (same experts bit for bit, weights and gradients
// within dtype tolerance, outputs poisoned).
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <numeric>
#include <string>
#include <vector>

#include <fmt/format.h>

#include "engine/autograd.h"
#include "engine/kernels_moe.h"
#include "engine/ops.h"
#include "engine/ops_moe.h"
#include "engine/safetensors.h"
#include "tests/harness.h"

namespace r1 {
namespace {

using test::case_seed;
[[maybe_unused]] const uint64_t kRunSeed = test::run_seed();
const Device kCpu = Device::cpu();

MoeRouteConfig config(int64_t top_k, int64_t n_group, int64_t topk_group, bool norm,
                      double scale) {
  MoeRouteConfig c;
  c.top_k = top_k;
  c.n_group = n_group;
  c.topk_group = topk_group;
  c.norm_topk_prob = norm;
  c.routed_scaling_factor = scale;
  return c;
}

// Runs f and expects an r1::Error whose message names `field`.
void expect_error(const std::string& what, const std::function<void()>& f,
                  const std::string& field) {
  try {
    f();
    ADD_FAILURE() << what << ": no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(field), std::string::npos)
        << what << ": the error does not name '" << field << "': " << e.what();
  }
}

// ---- PyTorch reference ---------------------------------------------------------------

struct TorchCase {
  std::string name;
  int64_t N, E;
  MoeRouteConfig cfg;
  double bias_lo, bias_hi;
  bool hf_differs = false;  // the case where HF's 0.0 fill must pick other experts
};

TEST(MoeRoute, MatchesDeepSeekGateForward) {
  const std::vector<TorchCase> cases = {
      {"v3", 512, 256, config(8, 8, 4, true, 2.5), -0.1, 0.1},
      {"e16", 256, 16, config(3, 4, 2, true, 1.0), -0.3, 0.3},
      {"e8_norm", 128, 8, config(2, 1, 1, true, 1.0), -0.3, 0.3},
      {"e8_nonorm", 128, 8, config(2, 1, 1, false, 1.5), -0.3, 0.3},
      // b = s + bias < 0 everywhere: a 0.0 fill beats every kept expert.
      {"negative_bias", 64, 16, config(3, 4, 2, true, 2.5), -2.0, -1.5, true},
  };
  namespace fs = std::filesystem;
  std::string dir = "/tmp/r1_moe_ref_" + std::to_string(kRunSeed) + "_XXXXXX";
  ASSERT_NE(::mkdtemp(dir.data()), nullptr);
  std::vector<std::pair<std::string, Tensor>> files;
  nlohmann::json spec = {{"cases", nlohmann::json::array()}};
  std::vector<MoeRoute> ours;
  uint64_t k = 100;
  for (const TorchCase& c : cases) {
    const Tensor logits = Tensor::randn({c.N, c.E}, case_seed(++k), DType::F32, kCpu, 2.0);
    const Tensor bias = Tensor::rand({c.E}, case_seed(++k), c.bias_lo, c.bias_hi);
    ours.push_back(moe_route(logits, bias, c.cfg));
    files.emplace_back(c.name + "/logits", logits);
    files.emplace_back(c.name + "/bias", bias);
    spec["cases"].push_back({{"name", c.name}, {"n_group", c.cfg.n_group},
                             {"topk_group", c.cfg.topk_group}, {"top_k", c.cfg.top_k},
                             {"norm_topk_prob", c.cfg.norm_topk_prob},
                             {"routed_scaling_factor", c.cfg.routed_scaling_factor}});
  }
  save_safetensors(dir + "/in.safetensors", files);
  std::ofstream(dir + "/spec.json") << spec.dump(1);
  const std::string cmd = fmt::format("OMP_NUM_THREADS=1 '{}' '{}/tests/torch_ref/moe_ref.py' "
                                      "'{}/spec.json' '{}/in.safetensors' '{}/out.safetensors' "
                                      "2> '{}/stderr.txt'",
                                      test::python(), test::source_dir(), dir, dir, dir, dir);
  const int status = std::system(cmd.c_str());
  const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  std::ifstream err(dir + "/stderr.txt");
  const std::string err_text((std::istreambuf_iterator<char>(err)), {});
  if (rc == 3) {
    fs::remove_all(dir);
    GTEST_SKIP() << "PyTorch is not importable by " << test::python() << " (" << err_text
                 << "): run scripts/setup.sh";
  }
  ASSERT_EQ(rc, 0) << "`" << cmd << "` failed, inputs kept in " << dir << ":\n" << err_text;
  const SafetensorsFile out = SafetensorsFile::open(dir + "/out.safetensors");
  for (size_t i = 0; i < cases.size(); ++i) {
    const TorchCase& c = cases[i];
    const std::string name = fmt::format("{} [seed {}]", c.name, kRunSeed);
    const std::vector<int64_t> ref_idx = out.get(c.name + "/indices").to_int_vector();
    EXPECT_EQ(ours[i].indices.to_int_vector(), ref_idx) << name << ": indices";
    EXPECT_EQ(ours[i].load.to_int_vector(), out.get(c.name + "/load").to_int_vector())
        << name << ": load";
    test::expect_close(name + " weights", ours[i].weights, out.get(c.name + "/weights"), 1e-6,
                       1e-6);
    if (c.hf_differs) {  // the case is meaningful: HF's fill chooses other experts
      const std::vector<int64_t> hf = out.get(c.name + "/hf_indices").to_int_vector();
      EXPECT_NE(hf, ref_idx) << name << ": HF's 0.0 fill should choose differently here";
      // ... and ours stay in the kept groups (every chosen expert's b is finite): the top-k
      // of each row spans at most topk_group groups.
      const int64_t G = c.E / c.cfg.n_group, K = c.cfg.top_k;
      for (int64_t n = 0; n < c.N; ++n) {
        std::vector<int64_t> groups;
        for (int64_t j = 0; j < K; ++j) groups.push_back(ref_idx[n * K + j] / G);
        std::sort(groups.begin(), groups.end());
        groups.erase(std::unique(groups.begin(), groups.end()), groups.end());
        EXPECT_LE(static_cast<int64_t>(groups.size()), c.cfg.topk_group) << name << " row " << n;
      }
    }
  }
  fs::remove_all(dir);
}

// Equal biased scores everywhere: groups and experts in index order.
TEST(MoeRoute, TiesGoToTheLowerIndex) {
  const Tensor logits = Tensor::zeros({3, 16});
  const MoeRoute r = moe_route(logits, Tensor::zeros({16}), config(3, 4, 2, true, 1.0));
  EXPECT_EQ(r.indices.to_int_vector(), (std::vector<int64_t>{0, 1, 2, 0, 1, 2, 0, 1, 2}));
  test::expect_close("tie weights", r.weights, Tensor::full({3, 3}, 1.0 / 3.0), 1e-7, 1e-7);
  // Tied groups too: experts 4 and 12 lead groups 1 and 3 by the same margin; group 1 wins.
  std::vector<float> row(16, 0.0f);
  row[4] = row[12] = 3.0f;
  const MoeRoute g = moe_route(Tensor::from_vector(row, {1, 16}), Tensor::zeros({16}),
                               config(3, 4, 1, true, 1.0));
  EXPECT_EQ(g.indices.to_int_vector(), (std::vector<int64_t>{4, 5, 6}));
}

// ---- gradients (f64) -----------------------------------------------------------------

// The smallest gap, over rows, between a kept and a dropped group's score and between the
// K-th and (K+1)-th biased score of the kept experts: how far the inputs are from a tie.
double selection_margin(const Tensor& logits, const Tensor& bias, const MoeRouteConfig& c) {
  const int64_t N = logits.size(0), E = logits.size(1), G = E / c.n_group;
  const std::vector<double> x = logits.to_double_vector(), bv = bias.to_double_vector();
  double margin = INFINITY;
  for (int64_t n = 0; n < N; ++n) {
    std::vector<double> b(E);
    for (int64_t e = 0; e < E; ++e) b[e] = 1.0 / (1.0 + std::exp(-x[n * E + e])) + bv[e];
    if (c.n_group > 1) {
      std::vector<double> gs(c.n_group);
      for (int64_t g = 0; g < c.n_group; ++g) {
        std::vector<double> v(b.begin() + g * G, b.begin() + g * G + G);
        std::sort(v.rbegin(), v.rend());
        gs[g] = v[0] + v[1];
      }
      std::vector<double> sorted = gs;
      std::sort(sorted.rbegin(), sorted.rend());
      if (c.topk_group < c.n_group)
        margin = std::min(margin, sorted[c.topk_group - 1] - sorted[c.topk_group]);
      for (int64_t g = 0; g < c.n_group; ++g)
        if (gs[g] < sorted[c.topk_group - 1])
          for (int64_t e = g * G; e < g * G + G; ++e) b[e] = -INFINITY;
    }
    std::sort(b.rbegin(), b.rend());
    if (c.top_k < E && std::isfinite(b[c.top_k]))
      margin = std::min(margin, b[c.top_k - 1] - b[c.top_k]);
  }
  return margin;
}

TEST(MoeRoute, GradcheckWeights) {
  const struct {
    int64_t N, E;
    MoeRouteConfig cfg;
  } cases[] = {{6, 16, config(3, 4, 2, true, 2.5)}, {5, 8, config(2, 1, 1, false, 1.5)},
               {4, 32, config(4, 4, 2, true, 1.0)}};
  uint64_t k = 200;
  for (const auto& c : cases) {
    Tensor logits, bias;
    for (int tries = 0; tries < 100; ++tries) {  // inputs at least 1e-3 away from a tie
      logits = Tensor::randn({c.N, c.E}, case_seed(++k), DType::F64);
      bias = Tensor::rand({c.E}, case_seed(++k), -0.2, 0.2, DType::F64);
      if (selection_margin(logits, bias, c.cfg) > 1e-3) break;
    }
    ASSERT_GT(selection_margin(logits, bias, c.cfg), 1e-3) << "no tie-free input found";
    logits.set_requires_grad();
    const MoeRouteConfig cfg = c.cfg;
    test::expect_gradcheck(
        fmt::format("moe_route weights E={} top_k={}", c.E, cfg.top_k),
        [bias, cfg](const std::vector<Tensor>& in) { return moe_route(in[0], bias, cfg).weights; },
        {logits}, case_seed(++k));
  }
}

// L = alpha / B sum_b sum_i f_bi P_bi, by the paper's definitions, in f64.
double balance_loss_f64(const Tensor& logits, const Tensor& indices,
                        const std::vector<int64_t>& lens, double alpha) {
  const int64_t E = logits.size(1), K = indices.size(1);
  const std::vector<double> x = logits.to_double_vector();
  const std::vector<int64_t> idx = indices.to_int_vector();
  double L = 0;
  int64_t t0 = 0;
  for (const int64_t T : lens) {
    std::vector<double> f(E, 0), P(E, 0);
    for (int64_t t = t0; t < t0 + T; ++t) {
      for (int64_t j = 0; j < K; ++j) f[idx[t * K + j]] += static_cast<double>(E) / (K * T);
      double S = 0;
      for (int64_t e = 0; e < E; ++e) S += 1.0 / (1.0 + std::exp(-x[t * E + e]));
      for (int64_t e = 0; e < E; ++e) P[e] += 1.0 / (1.0 + std::exp(-x[t * E + e])) / S / T;
    }
    for (int64_t e = 0; e < E; ++e) L += alpha * f[e] * P[e] / static_cast<double>(lens.size());
    t0 += T;
  }
  return L;
}

TEST(MoeBalanceLoss, ValueAndGradcheck) {
  const std::vector<int64_t> lens = {3, 5, 1, 7};
  const int64_t N = 16, E = 16;
  const double alpha = 1.0;  // large enough that gradcheck's atol means something
  const Tensor logits = Tensor::randn({N, E}, case_seed(300), DType::F64);
  const Tensor indices = moe_route(logits, Tensor::zeros({E}, DType::F64),
                                   config(3, 4, 2, true, 1.0)).indices;
  const Tensor seq_lens = Tensor::from_vector(lens, {4});
  const double want = balance_loss_f64(logits, indices, lens, alpha);
  EXPECT_NEAR(moe_balance_loss(logits, indices, seq_lens, alpha).item(), want, 1e-12 * want);
  // f32 and i32 indices: the same value to f32 precision.
  EXPECT_NEAR(moe_balance_loss(logits.to(DType::F32), indices.to(DType::I32), seq_lens, alpha)
                  .item(),
              want, 1e-5 * want);
  Tensor x = logits.clone();
  x.set_requires_grad();
  test::expect_gradcheck(
      "moe_balance_loss",
      [indices, seq_lens, alpha](const std::vector<Tensor>& in) {
        return moe_balance_loss(in[0], indices, seq_lens, alpha);
      },
      {x}, case_seed(301));
}

// y (N, D) against the combine's loop: y[t, d] = w[t, 0] * src(t K)[d] + w[t, 1] *
// src(t K + 1)[d] + ..., each product rounded, then added in k order (the kernel contract:
// these bits exactly). src(p): the D values pair p reads.
void expect_combine_loop(const Tensor& y, const Tensor& w, int64_t K, int64_t D,
                         const std::function<const float*(int64_t)>& src) {
  const std::vector<float> got = y.to_float_vector(), wv = w.to_float_vector();
  const int64_t N = y.size(0);
  for (int64_t t = 0; t < N; ++t)
    for (int64_t d = 0; d < D; ++d) {
      float acc = 0;
      for (int64_t k = 0; k < K; ++k) {
        const int64_t p = t * K + k;
        const volatile float prod = wv[p] * src(p)[d];
        acc = k == 0 ? prod : acc + prod;
      }
      EXPECT_EQ(got[t * D + d], acc) << "t " << t << " d " << d;
    }
}

// moe_combine: y[t] = sum_k w[t, k] * ys[part][row], against a loop (the kernel rounds each
// product, then adds in k order: the same bits as this loop), a gradcheck in f64 of the
// outputs and the weights, and the checks on a row read twice or not at all.
TEST(MoeCombine, ValueGradcheckAndChecks) {
  if (!moe_combine_available(Device::cpu())) GTEST_SKIP() << "no CPU moe_combine";
  const int64_t N = 5, K = 2, D = 3;
  // Pairs (t, k) -> (part, row): 3 outputs of 4, 3 and 3 rows, each row read once.
  const std::vector<int64_t> part = {0, 1, 2, 0, 1, 0, 2, 1, 0, 2};
  const std::vector<int64_t> row = {0, 0, 0, 1, 1, 2, 1, 2, 3, 2};
  const Tensor pt = Tensor::from_vector(part, {N * K}), rt = Tensor::from_vector(row, {N * K});
  std::vector<Tensor> ys = {Tensor::randn({4, D}, case_seed(400), DType::F32),
                            Tensor::randn({3, D}, case_seed(401), DType::F32),
                            Tensor::randn({3, D}, case_seed(402), DType::F32)};
  const Tensor w = Tensor::randn({N, K}, case_seed(403), DType::F32);
  std::vector<std::vector<float>> yv;
  for (const Tensor& y : ys) yv.push_back(y.to_float_vector());
  expect_combine_loop(moe_combine(ys, w, pt, rt), w, K, D,
                      [&](int64_t p) { return &yv[part[p]][row[p] * D]; });
  std::vector<Tensor> in;
  for (const Tensor& y : ys) in.push_back(y.to(DType::F64).set_requires_grad());
  in.push_back(w.to(DType::F64).set_requires_grad());
  test::expect_gradcheck(
      "moe_combine",
      [pt, rt](const std::vector<Tensor>& x) {
        return moe_combine({x[0], x[1], x[2]}, x[3], pt, rt);
      },
      in, case_seed(404));
  std::vector<int64_t> twice = row;
  twice[1] = 1;  // row 1 of output 1 read twice, row 0 never
  EXPECT_THROW(moe_combine(ys, w, pt, Tensor::from_vector(twice, {N * K})), Error);
  std::vector<int64_t> out_of_range = row;
  out_of_range[0] = 4;
  EXPECT_THROW(moe_combine(ys, w, pt, Tensor::from_vector(out_of_range, {N * K})), Error);
}

// moe_combine_all (every expert on every token): y[t] = sum_k w[t, k] * ys[idx[t, k]][t],
// against the same loop, and the bits of moe_combine over the routed rows (the decode step
// under CUDA graphs relies on it); forward only; an expert index out of range is refused.
TEST(MoeCombineAll, EqualsRoutedCombine) {
  const int64_t N = 7, K = 3, D = 5, E = 6;
  const std::vector<int64_t> idx =  // K distinct experts per token
      {0, 3, 5, 2, 1, 4, 5, 0, 3, 1, 2, 0, 4, 5, 2, 3, 0, 1, 5, 4, 3};
  std::vector<Tensor> all;
  for (int64_t e = 0; e < E; ++e) all.push_back(Tensor::randn({N, D}, case_seed(410 + e)));
  const Tensor w = Tensor::randn({N, K}, case_seed(420));
  const Tensor it = Tensor::from_vector(idx, {N, K});
  std::vector<std::vector<float>> av;
  for (const Tensor& y : all) av.push_back(y.to_float_vector());
  expect_combine_loop(moe_combine_all(all, w, it), w, K, D,
                      [&](int64_t p) { return &av[idx[p]][p / K * D]; });
  // The routed form: each expert's rows gathered (token order), then moe_combine.
  std::vector<Tensor> routed;
  std::vector<int64_t> part(N * K), row(N * K), rows_of(E, 0);
  std::vector<std::vector<int64_t>> toks(E);
  for (int64_t p = 0; p < N * K; ++p) {
    part[p] = idx[p];
    row[p] = rows_of[idx[p]]++;
    toks[idx[p]].push_back(p / K);
  }
  std::vector<int64_t> renum(E, -1);  // experts chosen at least once, renumbered
  for (int64_t e = 0; e < E; ++e)
    if (!toks[e].empty()) {
      renum[e] = static_cast<int64_t>(routed.size());
      routed.push_back(index_select(all[e], 0, Tensor::from_vector(toks[e], {rows_of[e]})));
    }
  for (int64_t p = 0; p < N * K; ++p) part[p] = renum[part[p]];
  const Tensor y_routed = moe_combine(routed, w, Tensor::from_vector(part, {N * K}),
                                      Tensor::from_vector(row, {N * K}));
  test::expect_close("moe_combine_all vs moe_combine (bits)", moe_combine_all(all, w, it),
                     y_routed, 0, 0);
  std::vector<int64_t> bad = idx;
  bad[4] = E;
  EXPECT_THROW(moe_combine_all(all, w, Tensor::from_vector(bad, {N, K})), Error);
  Tensor wg = w.clone().set_requires_grad();
  EXPECT_THROW(moe_combine_all(all, wg, it), Error);
}

// K distinct experts per token from E: a random start per token, then steps of `stride`
// (coprime with E), so some experts get many tokens and some none.
std::vector<int64_t> distinct_choices(int64_t N, int64_t K, int64_t E, int64_t stride,
                                      uint64_t seed) {
  std::vector<int64_t> idx(static_cast<size_t>(N * K));
  const std::vector<int64_t> start = Tensor::randint({N}, seed, 0, E).to_int_vector();
  for (int64_t t = 0; t < N; ++t)
    for (int64_t k = 0; k < K; ++k) idx[static_cast<size_t>(t * K + k)] = (start[t] + stride * k) % E;
  return idx;
}

// The masked layout (decode under CUDA graphs): slots by an independent loop, the rows
// scattered there (zeros elsewhere), and its combine equal to moe_combine_all's bits.
TEST(MoeMaskedSlots, SlotsRowsAndCombine) {
  const int64_t N = 13, K = 3, D = 6, E = 8;
  const std::vector<int64_t> idx = distinct_choices(N, K, E, 3, case_seed(460));
  const Tensor it = Tensor::from_vector(idx, {N, K});
  const MoeMaskedSlots sl = moe_masked_slots(it, E, N);
  std::vector<int64_t> want_dest(N * K), want_counts(E, 0);
  for (int64_t p = 0; p < N * K; ++p) want_dest[p] = idx[p] * N + want_counts[idx[p]]++;
  EXPECT_EQ(sl.dest.to_int_vector(), want_dest);
  EXPECT_EQ(sl.counts.to_int_vector(), want_counts);
  // Rows: f32 and one-byte rows (e4m3 codes) land in their slots; the rest is zero.
  for (DType dt : {DType::F32, DType::U8}) {
    const Tensor src = dt == DType::U8 ? Tensor::randint({N, D}, case_seed(461), 1, 255).to(dt)
                                       : Tensor::randn({N, D}, case_seed(461));
    const Tensor out = moe_scatter_rows(src, sl.dest, E * N);
    const std::vector<double> o = out.to_double_vector(), sv = src.to_double_vector();
    std::vector<double> want(static_cast<size_t>(E * N * D), 0.0);
    for (int64_t p = 0; p < N * K; ++p)
      for (int64_t d = 0; d < D; ++d) want[want_dest[p] * D + d] = sv[(p / K) * D + d];
    EXPECT_EQ(o, want) << dtype_name(dt);
  }
  // Each expert's outputs in its slots, combined: moe_combine_all's bits.
  std::vector<Tensor> all;
  for (int64_t e = 0; e < E; ++e) all.push_back(Tensor::randn({N, D}, case_seed(470 + e)));
  Tensor rows = Tensor::zeros({E * N, D});
  for (int64_t p = 0; p < N * K; ++p) rows.select(0, want_dest[p]).copy_(all[idx[p]].select(0, p / K));
  const Tensor w = Tensor::randn({N, K}, case_seed(480));
  test::expect_close("moe_combine_rows vs moe_combine_all (bits)", moe_combine_rows(rows, w, sl.dest),
                     moe_combine_all(all, w, it), 0, 0);
  // The CPU checks what CUDA trusts: an expert index out of range, more pairs than slots,
  // a row written twice.
  std::vector<int64_t> bad = idx;
  bad[5] = E;
  EXPECT_THROW(moe_masked_slots(Tensor::from_vector(bad, {N, K}), E, N), Error);
  EXPECT_THROW(moe_masked_slots(it, E, N - 1), Error);  // cap < N
  const Tensor same = Tensor::zeros({4, 3}, DType::I64);  // expert 0 thrice per token
  Tensor dest = Tensor::empty({12}, DType::I64), counts = Tensor::empty({2}, DType::I64);
  EXPECT_THROW(kernels::moe_masked_slots()(kCpu, same.view({12}), 4, dest, counts), Error);
  Tensor dst = Tensor::zeros({4, 2});
  EXPECT_THROW(kernels::moe_scatter_rows()(kCpu, Tensor::ones({2, 2}),
                                           Tensor::from_vector(std::vector<int64_t>{1, 1}, {2}),
                                           dst),
               Error);
}

TEST(MoeUpdateBias, SignOfMeanMinusLoad) {
  Tensor bias = Tensor::from_vector(std::vector<float>{0.5f, -0.25f, 0.0f, 1.0f}, {4});
  // mean 3: above it down, below it up, at it unchanged.
  moe_update_bias(bias, Tensor::from_vector(std::vector<int64_t>{5, 1, 3, 3}, {4}), 0.125);
  EXPECT_EQ(bias.to_double_vector(), (std::vector<double>{0.375, -0.125, 0.0, 1.0}));
}

// ---- errors ----------------------------------------------------------------------------

TEST(MoeRoute, BadInputsAndConfigsThrow) {
  const Tensor logits = Tensor::randn({4, 16}, case_seed(400)), bias = Tensor::zeros({16});
  auto route = [&](MoeRouteConfig c) { return [&, c] { moe_route(logits, bias, c); }; };
  expect_error("n_group not dividing E", route(config(2, 3, 1, true, 1.0)), "n_group");
  expect_error("one expert per group", route(config(1, 16, 1, true, 1.0)), "n_group");
  expect_error("topk_group > n_group", route(config(2, 4, 5, true, 1.0)), "topk_group");
  expect_error("top_k > kept experts", route(config(9, 4, 2, true, 1.0)), "top_k");
  expect_error("top_k = 0", route(config(0, 1, 1, true, 1.0)), "top_k");
  expect_error("scale <= 0", route(config(2, 1, 1, true, 0.0)), "routed_scaling_factor");
  const MoeRouteConfig ok = config(2, 4, 2, true, 1.0);
  expect_error("bias shape", [&] { moe_route(logits, Tensor::zeros({8}), ok); }, "bias");
  expect_error("bias dtype",
               [&] { moe_route(logits, Tensor::zeros({16}, DType::F64), ok); }, "bias");
  expect_error("1-D logits", [&] { moe_route(Tensor::zeros({16}), bias, ok); }, "logits");
  expect_error("int logits",
               [&] { moe_route(Tensor::zeros({4, 16}, DType::I64), bias, ok); }, "logits");
  const Tensor idx = moe_route(logits, bias, ok).indices;
  auto loss = [&](std::vector<int64_t> lens, const Tensor& i) {
    return [&, lens, i] {
      moe_balance_loss(logits, i, Tensor::from_vector(lens, {int64_t(lens.size())}), 1.0);
    };
  };
  expect_error("seq_lens sum", loss({1, 2}, idx), "seq_lens");
  expect_error("empty sequence", loss({4, 0}, idx), "seq_lens");
  expect_error("index outside [0, E)",
               loss({4}, Tensor::full({4, 2}, 16.0, DType::I64)), "index");
  Tensor b = Tensor::zeros({16});
  expect_error("load shape", [&] { moe_update_bias(b, Tensor::zeros({8}, DType::I64), 1.0); },
               "load");
  expect_error("gamma < 0",
               [&] { moe_update_bias(b, Tensor::zeros({16}, DType::I64), -1.0); }, "gamma");
}

// ---- CUDA against the CPU ------------------------------------------------------------------

const Device kGpu = Device::cuda(0);

// x rounded to dt and widened to f32 on the CPU: the values the GPU kernel computes from.
Tensor rounded_f32(const Tensor& x, DType dt) { return x.to(dt).to(DType::F32); }

void expect_gpu_close(const std::string& name, const Tensor& gpu, const Tensor& ref, DType dt) {
  const std::vector<double> v = ref.to_double_vector();
  double scale = 0;
  for (double e : v) scale += std::fabs(e);
  scale = v.empty() || scale == 0 ? 1.0 : scale / static_cast<double>(v.size());
  const test::Tol t = test::tol_for(dt, scale);
  test::expect_close(name, gpu.to(kCpu), ref, t.atol, t.rtol);
}

TEST(CudaMoeRoute, SameExpertsAsCpu) {
  R1_SKIP_WITHOUT_CUDA();
  const struct {
    int64_t N, E;
    MoeRouteConfig cfg;
  } cases[] = {{4096, 256, config(8, 8, 4, true, 2.5)}, {333, 16, config(3, 4, 2, true, 1.0)},
               {257, 8, config(2, 1, 1, false, 1.5)}, {100, 100, config(6, 1, 1, true, 1.0)},
               {64, 256, config(64, 8, 4, true, 1.0)}};
  uint64_t k = 500;
  for (DType dt : {DType::F32, DType::BF16})
    for (const auto& c : cases) {
      const int64_t N = c.N, E = c.E, K = c.cfg.top_k;
      const std::string name = fmt::format("moe_route {} N={} E={} K={} [seed {}]",
                                           dtype_name(dt), N, E, K, kRunSeed);
      const Tensor x = Tensor::randn({N, E}, case_seed(++k), DType::F32, kCpu, 2.0);
      const Tensor bias = Tensor::rand({E}, case_seed(++k), -0.2, 0.2);
      const Tensor dw = Tensor::randn({N, K}, case_seed(++k));
      // CPU f32 on the rounded logits: the reference, bit for bit for the indices.
      const Tensor x32 = rounded_f32(x, dt);
      Tensor ci = Tensor::empty({N, K}, DType::I64), cw = Tensor::empty({N, K});
      Tensor cd = Tensor::empty({N}), cl = Tensor::empty({E}, DType::I64);
      kernels::moe_route_forward()(kCpu, x32, bias, c.cfg, ci, cw, cd, cl);
      Tensor cdx = Tensor::empty({N, E});
      kernels::moe_route_backward()(kCpu, x32, ci, cd, dw, c.cfg, cdx);

      const Tensor xg = x.to(dt).to(kGpu), bg = bias.to(kGpu);
      Tensor gi = test::poisoned({N, K}, DType::I64, kGpu);
      Tensor gw = test::poisoned({N, K}, DType::F32, kGpu);
      Tensor gd = test::poisoned({N}, DType::F32, kGpu);
      Tensor gl = test::poisoned({E}, DType::I64, kGpu);
      kernels::moe_route_forward()(kGpu, xg, bg, c.cfg, gi, gw, gd, gl);
      EXPECT_EQ(gi.to_int_vector(), ci.to_int_vector()) << name << ": indices";
      EXPECT_EQ(gl.to_int_vector(), cl.to_int_vector()) << name << ": load";
      expect_gpu_close(name + " weights", gw, cw, DType::F32);
      expect_gpu_close(name + " denom", gd, cd, DType::F32);
      Tensor gdx = test::poisoned({N, E}, dt, kGpu);
      kernels::moe_route_backward()(kGpu, xg, gi, gd, dw.to(kGpu), c.cfg, gdx);
      expect_gpu_close(name + " dlogits", gdx, cdx, dt);
    }
}

// moe_combine on the GPU against the CPU kernel on the dtype-rounded inputs: a random
// permutation of pairs onto expert rows (every row read once), outputs poisoned; in f32 the
// forward has the CPU's bits (products rounded, then added in k order).
TEST(CudaMoeCombine, MatchesCpu) {
  R1_SKIP_WITHOUT_CUDA();
  const struct {
    int64_t N, K, D, E;
  } cases[] = {{1, 1, 1, 1}, {37, 2, 33, 5}, {512, 8, 128, 64}, {300, 4, 7168, 16}};
  uint64_t k = 700;
  for (DType dt : {DType::F32, DType::BF16})
    for (const auto& c : cases) {
      const int64_t P = c.N * c.K;
      const std::string name = fmt::format("moe_combine {} N={} K={} D={} E={} [seed {}]",
                                           dtype_name(dt), c.N, c.K, c.D, c.E, kRunSeed);
      // Pair p goes to expert part[p]; its row is its rank among that expert's pairs, after a
      // random shuffle of the pairs (so rows are not in token order).
      std::vector<int64_t> part(P), row(P), order(P), rows_of(c.E, 0);
      const std::vector<int64_t> rp = Tensor::randint({P}, case_seed(++k), 0, c.E).to_int_vector();
      const std::vector<double> key = Tensor::rand({P}, case_seed(++k), 0.0, 1.0).to_double_vector();
      for (int64_t p = 0; p < P; ++p) order[p] = p;
      std::sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return key[a] < key[b]; });
      for (int64_t p : order) {
        part[p] = rp[p];
        row[p] = rows_of[part[p]]++;
      }
      std::vector<Tensor> ys, ys_cpu, ys_gpu;
      for (int64_t e = 0; e < c.E; ++e) {
        const Tensor y = Tensor::randn({rows_of[e], c.D}, case_seed(++k));
        ys_cpu.push_back(rounded_f32(y, dt));
        ys_gpu.push_back(y.to(dt).to(kGpu));
      }
      const Tensor w = Tensor::rand({P}, case_seed(++k), 0.1, 1.0);
      const Tensor dy = Tensor::randn({c.N, c.D}, case_seed(++k));
      const Tensor pt = Tensor::from_vector(part, {P}), rt = Tensor::from_vector(row, {P});
      Tensor cy = Tensor::empty({c.N, c.D}), cdw = Tensor::empty({P});
      std::vector<Tensor> cdys;
      for (const Tensor& y : ys_cpu) cdys.push_back(Tensor::empty(y.shape()));
      const Tensor w32 = rounded_f32(w, dt), dy32 = rounded_f32(dy, dt);
      kernels::moe_combine_forward()(kCpu, ys_cpu, w32, pt, rt, cy);
      kernels::moe_combine_backward()(kCpu, ys_cpu, w32, pt, rt, dy32, cdys, cdw);

      const Tensor wg = w.to(dt).to(kGpu), pg = pt.to(kGpu), rg = rt.to(kGpu);
      Tensor gy = test::poisoned({c.N, c.D}, dt, kGpu), gdw = test::poisoned({P}, dt, kGpu);
      std::vector<Tensor> gdys;
      for (const Tensor& y : ys_gpu) gdys.push_back(test::poisoned(y.shape(), dt, kGpu));
      kernels::moe_combine_forward()(kGpu, ys_gpu, wg, pg, rg, gy);
      kernels::moe_combine_backward()(kGpu, ys_gpu, wg, pg, rg, dy.to(dt).to(kGpu), gdys, gdw);
      if (dt == DType::F32)
        test::expect_close(name + " y (bits)", gy.to(kCpu), cy, 0, 0);
      else
        expect_gpu_close(name + " y", gy, cy, dt);
      expect_gpu_close(name + " dw", gdw, cdw, dt);
      for (int64_t e = 0; e < c.E; ++e)
        expect_gpu_close(fmt::format("{} dys[{}]", name, e), gdys[e], cdys[e], dt);
    }
}

TEST(CudaMoeCombineAll, MatchesCpu) {
  R1_SKIP_WITHOUT_CUDA();
  const int64_t N = 300, K = 4, D = 129, E = 16;
  // K distinct experts per token: a random rotation of 0..E-1 per token, its first K.
  std::vector<int64_t> idx(N * K);
  const std::vector<int64_t> shift = Tensor::randint({N}, case_seed(430), 0, E).to_int_vector();
  for (int64_t t = 0; t < N; ++t)
    for (int64_t k = 0; k < K; ++k) idx[t * K + k] = (shift[t] + 3 * k) % E;
  for (DType dt : {DType::F32, DType::BF16}) {
    std::vector<Tensor> cpu, gpu;  // the CPU computes in f32 from the dt-rounded values
    for (int64_t e = 0; e < E; ++e) {
      const Tensor y = Tensor::randn({N, D}, case_seed(431 + e));
      cpu.push_back(rounded_f32(y, dt));
      gpu.push_back(y.to(dt).to(kGpu));
    }
    const Tensor w = Tensor::rand({N, K}, case_seed(450), 0.1, 1.0);
    const Tensor it = Tensor::from_vector(idx, {N, K});
    const Tensor want = moe_combine_all(cpu, rounded_f32(w, dt), it);
    const Tensor got = moe_combine_all(gpu, w.to(dt).to(kGpu), it.to(kGpu));
    const std::string name = fmt::format("moe_combine_all {} [seed {}]", dtype_name(dt), kRunSeed);
    if (dt == DType::F32)  // the same rounded products added in the same order
      test::expect_close(name + " (bits)", got.to(kCpu), want, 0, 0);
    else  // f32 math, one bf16 rounding of the result
      expect_gpu_close(name, got, want, dt);
  }
}

// The masked layout's kernels on the GPU: slots and counts equal the CPU's (more pairs than
// a block's 256 threads; then DeepSeek-V3's 256 experts with tokens choosing among the first
// 64 only, so most experts have no pairs, and i32 indices), the scattered rows' bytes (4-byte
// words and single bytes), and the combine from the slots.
TEST(CudaMoeMaskedSlots, MatchesCpu) {
  R1_SKIP_WITHOUT_CUDA();
  {
    const int64_t N = 40, K = 8, E = 256;
    const std::vector<int64_t> idx = distinct_choices(N, K, 64, 5, case_seed(489));
    const Tensor it = Tensor::from_vector(idx, {N, K}, DType::I32);
    const MoeMaskedSlots want = moe_masked_slots(it, E, N);
    const MoeMaskedSlots got = moe_masked_slots(it.to(kGpu), E, N);
    EXPECT_EQ(got.dest.to_int_vector(), want.dest.to_int_vector()) << "E = 256, i32";
    EXPECT_EQ(got.counts.to_int_vector(), want.counts.to_int_vector()) << "E = 256, i32";
    const std::vector<int64_t> counts = want.counts.to_int_vector();
    EXPECT_GE(std::count(counts.begin(), counts.end(), 0), 192) << "experts 64.. have no pairs";
  }
  const int64_t N = 300, K = 4, E = 16;
  const std::vector<int64_t> idx = distinct_choices(N, K, E, 5, case_seed(490));
  const Tensor it = Tensor::from_vector(idx, {N, K});
  const MoeMaskedSlots want = moe_masked_slots(it, E, N);
  const MoeMaskedSlots got = moe_masked_slots(it.to(kGpu), E, N);
  EXPECT_EQ(got.dest.to_int_vector(), want.dest.to_int_vector());
  EXPECT_EQ(got.counts.to_int_vector(), want.counts.to_int_vector());
  for (auto [dt, D] : {std::pair{DType::F32, int64_t{129}}, std::pair{DType::E4M3, int64_t{7}},
                       std::pair{DType::BF16, int64_t{64}}}) {
    const Tensor src = Tensor::randn({N, D}, case_seed(491)).to(dt);
    const Tensor a = moe_scatter_rows(src, want.dest, E * N);
    const Tensor b = moe_scatter_rows(src.to(kGpu), got.dest, E * N);
    EXPECT_EQ(b.to(DType::F64).to_double_vector(), a.to(DType::F64).to_double_vector())
        << dtype_name(dt);
  }
  const Tensor rows = Tensor::randn({E * N, 33}, case_seed(492));
  const Tensor w = Tensor::rand({N, K}, case_seed(493), 0.1, 1.0);
  test::expect_close("moe_combine_rows f32 (bits)",
                     moe_combine_rows(rows.to(kGpu), w.to(kGpu), got.dest).to(kCpu),
                     moe_combine_rows(rows, w, want.dest), 0, 0);
}

// Logits on a coarse grid and no bias: many exact ties between experts and between group
// scores, which both backends break by the lower index.
TEST(CudaMoeRoute, TiesBrokenAsOnCpu) {
  R1_SKIP_WITHOUT_CUDA();
  const int64_t N = 512, E = 256;
  const MoeRouteConfig cfg = config(8, 8, 4, true, 2.5);
  std::vector<double> grid = Tensor::randint({N, E}, case_seed(550), -3, 4).to_double_vector();
  for (double& v : grid) v *= 0.5;
  const Tensor x = Tensor::from_vector(grid, {N, E}, DType::F32), bias = Tensor::zeros({E});
  const MoeRoute cpu = moe_route(x, bias, cfg);
  for (DType dt : {DType::F32, DType::BF16}) {  // the grid is exact in bf16
    const MoeRoute gpu = moe_route(x.to(dt).to(kGpu), bias.to(kGpu), cfg);
    EXPECT_EQ(gpu.indices.to_int_vector(), cpu.indices.to_int_vector()) << dtype_name(dt);
    EXPECT_EQ(gpu.load.to_int_vector(), cpu.load.to_int_vector()) << dtype_name(dt);
  }
}

TEST(CudaMoeRoute, OpsBalanceLossAndBiasUpdate) {
  R1_SKIP_WITHOUT_CUDA();
  const int64_t N = 4096, E = 256;
  const std::vector<int64_t> lens = {1000, 1, 2047, 1048};
  const MoeRouteConfig cfg = config(8, 8, 4, true, 2.5);
  uint64_t k = 600;
  for (DType dt : {DType::F32, DType::BF16}) {
    const std::string name = fmt::format("moe ops {} [seed {}]", dtype_name(dt), kRunSeed);
    const Tensor x = Tensor::randn({N, E}, case_seed(++k), DType::F32, kCpu, 2.0);
    const Tensor bias = Tensor::rand({E}, case_seed(++k), -0.2, 0.2);
    const Tensor gw = Tensor::randn({N, cfg.top_k}, case_seed(++k));
    const Tensor seq_lens = Tensor::from_vector(lens, {4});
    // The same graph (weights . gw + balance loss) on both devices, then backward.
    auto run = [&](const Tensor& logits, const Tensor& b, const Tensor& g) {
      Tensor l = logits;
      l.set_requires_grad();
      const MoeRoute r = moe_route(l, b, cfg);
      const Tensor loss = moe_balance_loss(l, r.indices, seq_lens.to(l.device()), 0.01);
      const Tensor total = sum(mul(r.weights, g)) + loss;
      backward(total);
      return std::vector<Tensor>{r.indices, r.load, loss, l.grad()};
    };
    const auto cpu = run(rounded_f32(x, dt), bias, gw);
    const auto gpu = run(x.to(dt).to(kGpu), bias.to(kGpu), gw.to(kGpu));
    EXPECT_EQ(gpu[0].to_int_vector(), cpu[0].to_int_vector()) << name << ": indices";
    EXPECT_EQ(gpu[1].to_int_vector(), cpu[1].to_int_vector()) << name << ": load";
    expect_gpu_close(name + " balance loss", gpu[2], cpu[2], DType::F32);
    expect_gpu_close(name + " dlogits", gpu[3], cpu[3], dt);
    // The bias update from that load, on both devices.
    Tensor bc = bias.clone(), bgpu = bias.to(kGpu);
    moe_update_bias(bc, cpu[1], 1e-3);
    moe_update_bias(bgpu, gpu[1], 1e-3);
    EXPECT_EQ(bgpu.to_double_vector(), bc.to_double_vector()) << name << ": bias update";
  }
}

}  // namespace
}  // namespace r1
