// grpo_objective and group_advantages (engine/ops_grpo.h). CPU: finite differences in f64 and
// an f64 loop written after TRL's arithmetic, for every loss type x level x beta; the composed
// token_logprobs -> grpo_objective path against an unfused PyTorch reference
// (tests/torch_ref/grpo_ref.py: full logits, log_softmax, gather, TRL's loss on padded
// (B, L) completions) for the loss, dh, dw and the metrics in f32 and f64; the same bits for
// any thread count; masked tokens skipped; group_advantages against hand-computed values; bad
// input. CUDA (skipped without a GPU): the kernels and the op against the CPU in f64.
#include <gtest/gtest.h>
#include <omp.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <limits>
#include <string>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "engine/autograd.h"
#include "engine/kernels_grpo.h"
#include "engine/ops_grpo.h"
#include "engine/ops_logprob.h"
#include "engine/safetensors.h"
#include "tests/harness.h"

namespace r1 {
namespace {

using test::case_seed;
using test::expect_close;

// Printed at start-up, so a skipped run still names its seed.
[[maybe_unused]] const uint64_t kRunSeed = test::run_seed();
const Device kCpu = Device::cpu();

const GrpoLossType kLossTypes[] = {GrpoLossType::Grpo, GrpoLossType::Bnpo,
                                   GrpoLossType::DrGrpo, GrpoLossType::Dapo};
const ImportanceLevel kLevels[] = {ImportanceLevel::Token, ImportanceLevel::Sequence};

const char* trl_name(GrpoLossType t) {
  switch (t) {
    case GrpoLossType::Grpo: return "grpo";
    case GrpoLossType::Bnpo: return "bnpo";
    case GrpoLossType::DrGrpo: return "dr_grpo";
    case GrpoLossType::Dapo: return "dapo";
  }
  return "?";
}
const char* trl_name(ImportanceLevel l) {
  return l == ImportanceLevel::Token ? "token" : "sequence";
}

GrpoObjectiveOptions options(GrpoLossType t, ImportanceLevel l, double beta, int64_t S) {
  GrpoObjectiveOptions o;
  o.epsilon_low = 0.2;
  o.epsilon_high = 0.28;  // clip-higher (DAPO), so the two bounds differ
  o.beta = beta;
  o.loss_type = t;
  o.level = l;
  o.max_completion_length = 12;
  o.num_sequences = S;
  return o;
}

std::string mode_name(const GrpoObjectiveOptions& o) {
  return fmt::format("{} {} beta {} [seed {}]", trl_name(o.loss_type), trl_name(o.level),
                     o.beta, test::run_seed());
}

// ---- inputs ------------------------------------------------------------------------------

// Which sequence each token belongs to, and the mask. S sequences of 1..max_len tokens, except
// sequence S - 1, which has none, and S - 2, whose tokens are all masked; about 20% of the
// other tokens masked. Tokens in sequence order, or interleaved (a random permutation).
struct Layout {
  int64_t S = 0;
  std::vector<int64_t> seq;
  std::vector<double> mask;
  int64_t T() const { return static_cast<int64_t>(seq.size()); }
};

Layout make_layout(int64_t S, int64_t max_len, uint64_t seed, bool interleave) {
  Layout l;
  l.S = S;
  const std::vector<int64_t> len = Tensor::randint({S}, seed, 1, max_len + 1).to_int_vector();
  for (int64_t s = 0; s + 1 < S; ++s)
    for (int64_t i = 0; i < len[s]; ++i) l.seq.push_back(s);
  const std::vector<double> u = Tensor::rand({l.T()}, seed + 1, 0, 1, DType::F64)
                                    .to_double_vector();
  for (int64_t t = 0; t < l.T(); ++t)
    l.mask.push_back(l.seq[t] != S - 2 && u[t] >= 0.2 ? 1.0 : 0.0);
  if (interleave) {  // a random permutation of the tokens: sort by random keys
    const std::vector<double> key = Tensor::rand({l.T()}, seed + 2, 0, 1, DType::F64)
                                        .to_double_vector();
    std::vector<int64_t> p(l.seq.size());
    for (size_t i = 0; i < p.size(); ++i) p[i] = static_cast<int64_t>(i);
    std::sort(p.begin(), p.end(), [&](int64_t a, int64_t b) { return key[a] < key[b]; });
    Layout m = l;
    for (size_t i = 0; i < p.size(); ++i) m.seq[i] = l.seq[p[i]], m.mask[i] = l.mask[p[i]];
    l = m;
  }
  return l;
}

// old = logp + N(0, 0.25^2): about half the tokens leave the clip range [0.8, 1.28] (|log
// ratio| beyond ~0.22); ref = logp + N(0, 0.3^2); advantages N(0, 1) with both signs present.
struct Policy {
  std::vector<double> old_logp, ref_logp, adv;
};

Policy make_policy(const std::vector<double>& logp, int64_t S, uint64_t seed) {
  const int64_t T = static_cast<int64_t>(logp.size());
  const std::vector<double> a = Tensor::randn({T}, seed, DType::F64, kCpu, 0.25)
                                    .to_double_vector();
  const std::vector<double> b = Tensor::randn({T}, seed + 1, DType::F64, kCpu, 0.3)
                                    .to_double_vector();
  Policy p;
  p.adv = Tensor::randn({S}, seed + 2, DType::F64).to_double_vector();
  p.adv[0] = std::fabs(p.adv[0]) + 0.1;
  p.adv[1] = -std::fabs(p.adv[1]) - 0.1;
  for (int64_t t = 0; t < T; ++t) {
    p.old_logp.push_back(logp[t] + a[t]);
    p.ref_logp.push_back(logp[t] + b[t]);
  }
  return p;
}

Tensor vec(const std::vector<double>& v, DType dt, Device dev = kCpu) {
  return Tensor::from_vector(v, {static_cast<int64_t>(v.size())}, dt, dev);
}
Tensor ivec(const std::vector<int64_t>& v, Device dev = kCpu) {
  return Tensor::from_vector(v, {static_cast<int64_t>(v.size())}, DType::I64, dev);
}

// The op's operands for a layout and policy side in dtype dt (mask in mask_dt) on dev.
struct Operands {
  Tensor old_logp, ref_logp, adv, seq, mask;
};
Operands operands(const Layout& l, const Policy& p, double beta, DType dt,
                  DType mask_dt = DType::F32, Device dev = kCpu) {
  return {vec(p.old_logp, dt, dev), beta > 0 ? vec(p.ref_logp, dt, dev) : Tensor(),
          vec(p.adv, dt, dev), ivec(l.seq, dev), vec(l.mask, mask_dt, dev)};
}

GrpoObjective run_op(const Tensor& logp, const Operands& o, const GrpoObjectiveOptions& opt) {
  return grpo_objective(logp, o.old_logp, o.ref_logp, o.adv, o.seq, o.mask, opt);
}

// ---- an f64 reference written after TRL's arithmetic ------------------------------------

struct Reference {
  double loss = 0, kl = 0, low = 0, high = 0, ratio = 0;
};

// Per sequence: its masked tokens' log ratios (or their mean), the per-token loss, the sum
// over the sequence, then TRL's aggregation; metrics over the mask = 1 tokens.
Reference reference(const std::vector<double>& logp, const Layout& l, const Policy& p,
                    const GrpoObjectiveOptions& o) {
  const int64_t S = l.S, T = l.T();
  std::vector<double> n(S, 0), lr_mean(S, 0), seq_loss(S, 0);
  for (int64_t t = 0; t < T; ++t)
    if (l.mask[t] == 1) {
      n[l.seq[t]] += 1;
      lr_mean[l.seq[t]] += logp[t] - p.old_logp[t];
    }
  for (int64_t s = 0; s < S; ++s) lr_mean[s] /= std::max(n[s], 1.0);
  Reference r;
  double N = 0;
  for (int64_t t = 0; t < T; ++t) {
    if (l.mask[t] != 1) continue;
    const int64_t s = l.seq[t];
    const double A = p.adv[s];
    const double lr = o.level == ImportanceLevel::Token ? logp[t] - p.old_logp[t] : lr_mean[s];
    const double c1 = std::exp(lr);
    const double c2 = std::clamp(c1, 1 - o.epsilon_low, 1 + o.epsilon_high);
    const double d = p.ref_logp[t] - logp[t], kl = std::exp(d) - d - 1;
    seq_loss[s] += -std::min(c1 * A, c2 * A) + (o.beta > 0 ? o.beta * kl : 0.0);
    N += 1;
    r.kl += o.beta > 0 ? kl : 0.0;
    r.low += c1 < 1 - o.epsilon_low && A < 0;
    r.high += c1 > 1 + o.epsilon_high && A > 0;
    r.ratio += c1;
  }
  double total = 0;
  for (int64_t s = 0; s < S; ++s) total += seq_loss[s];
  switch (o.loss_type) {
    case GrpoLossType::Grpo:
      for (int64_t s = 0; s < S; ++s) r.loss += seq_loss[s] / std::max(n[s], 1.0) / S;
      break;
    case GrpoLossType::Bnpo:
    case GrpoLossType::Dapo: r.loss = total / std::max(N, 1.0); break;
    case GrpoLossType::DrGrpo:
      r.loss = total / (static_cast<double>(S) * o.max_completion_length);
      break;
  }
  for (double* m : {&r.kl, &r.low, &r.high, &r.ratio}) *m /= std::max(N, 1.0);
  return r;
}

void expect_metrics(const std::string& name, const GrpoObjective& g, const Reference& r,
                    double tol, double clip_tol) {
  EXPECT_NEAR(g.kl_mean, r.kl, tol) << name << " kl_mean";
  EXPECT_NEAR(g.ratio_mean, r.ratio, tol) << name << " ratio_mean";
  EXPECT_NEAR(g.clip_low_frac, r.low, clip_tol) << name << " clip_low_frac";
  EXPECT_NEAR(g.clip_high_frac, r.high, clip_tol) << name << " clip_high_frac";
}

// ---- CPU: gradients and values -----------------------------------------------------------

// logp < 0 as log-probabilities are: -(0.1 + |N(0, 1.5^2)|).
std::vector<double> random_logp(int64_t T, uint64_t seed) {
  std::vector<double> v = Tensor::randn({T}, seed, DType::F64, kCpu, 1.5).to_double_vector();
  for (double& x : v) x = -0.1 - std::fabs(x);
  return v;
}

TEST(GrpoObjective, GradcheckAndValuesEveryModeF64) {
  uint64_t k = 100;
  double clipped = 0;
  for (GrpoLossType lt : kLossTypes)
    for (ImportanceLevel lv : kLevels)
      for (double beta : {0.0, 0.04}) {
        const GrpoObjectiveOptions opt = options(lt, lv, beta, 6);
        const std::string name = mode_name(opt);
        k += 8;
        const Layout l = make_layout(opt.num_sequences, 7, case_seed(k), (k / 8) % 2 == 1);
        const std::vector<double> lp = random_logp(l.T(), case_seed(k + 3));
        const Policy p = make_policy(lp, opt.num_sequences, case_seed(k + 4));
        const Operands o = operands(l, p, beta, DType::F64);
        Tensor logp = vec(lp, DType::F64);
        logp.set_requires_grad();
        test::expect_gradcheck(
            name, [&](const std::vector<Tensor>& x) { return run_op(x[0], o, opt).loss; },
            {logp}, case_seed(k + 5));

        const GrpoObjective g = run_op(logp.detach(), o, opt);
        const Reference r = reference(lp, l, p, opt);
        ASSERT_EQ(g.loss.dtype(), DType::F64) << name;
        ASSERT_EQ(g.loss.dim(), 0) << name;
        EXPECT_NEAR(g.loss.item(), r.loss, 1e-12 * (1 + std::fabs(r.loss))) << name << " loss";
        expect_metrics(name, g, r, 1e-12, 1e-12);
        clipped += r.low + r.high;
      }
  EXPECT_GT(clipped, 0) << "no token left the clip range: the cases test nothing of it";
}

// A masked token's logps never reach the loss or the gradient, whatever they hold.
TEST(GrpoObjective, MaskedTokensAreSkipped) {
  for (ImportanceLevel lv : kLevels) {
    const GrpoObjectiveOptions opt = options(GrpoLossType::Grpo, lv, 0.04, 5);
    const Layout l = make_layout(opt.num_sequences, 9, case_seed(300), true);
    const std::vector<double> lp = random_logp(l.T(), case_seed(301));
    const Policy p = make_policy(lp, opt.num_sequences, case_seed(302));
    Policy bad = p;
    std::vector<double> bad_lp = lp;
    int64_t masked = -1;
    for (int64_t t = 0; t < l.T(); ++t)
      if (l.mask[t] == 0) {
        masked = t;
        bad_lp[t] = -std::numeric_limits<double>::infinity();
        bad.old_logp[t] = std::numeric_limits<double>::quiet_NaN();
        bad.ref_logp[t] = std::numeric_limits<double>::infinity();
      }
    ASSERT_GE(masked, 0);
    Tensor a = vec(lp, DType::F64), b = vec(bad_lp, DType::F64);
    a.set_requires_grad();
    b.set_requires_grad();
    const GrpoObjective ga = run_op(a, operands(l, p, opt.beta, DType::F64), opt);
    backward(ga.loss);
    const GrpoObjective gb = run_op(b, operands(l, bad, opt.beta, DType::F64, DType::U8), opt);
    backward(gb.loss);
    const std::string name = mode_name(opt);
    EXPECT_EQ(ga.loss.item(), gb.loss.item()) << name;
    EXPECT_EQ(ga.kl_mean, gb.kl_mean) << name;
    EXPECT_EQ(ga.ratio_mean, gb.ratio_mean) << name;
    expect_close(name + " dlogp", b.grad(), a.grad(), 0, 0);
    EXPECT_EQ(b.grad().to_double_vector()[masked], 0.0) << name;
  }
}

// Blocks of kGrpoCpuBlock tokens summed in order: the same bits for 1, 2 or 3 threads.
TEST(GrpoObjective, CpuSameBitsForAnyThreadCount) {
  const int saved = omp_get_max_threads();
  for (ImportanceLevel lv : kLevels) {
    const GrpoObjectiveOptions opt = options(GrpoLossType::Bnpo, lv, 0.04, 64);
    const Layout l = make_layout(opt.num_sequences, 1400, case_seed(400), true);
    // Above kernels/cpu's worth_parallel threshold (2^15), so the threads do split the blocks.
    ASSERT_GT(l.T(), int64_t{1} << 15);
    const std::vector<double> lp = random_logp(l.T(), case_seed(401));
    const Operands o = operands(l, make_policy(lp, opt.num_sequences, case_seed(402)), 0.04,
                                DType::F32);
    std::vector<double> loss0, grad0;
    for (int threads : {1, 2, 3}) {
      omp_set_num_threads(threads);
      Tensor logp = vec(lp, DType::F32);
      logp.set_requires_grad();
      const GrpoObjective g = run_op(logp, o, opt);
      backward(g.loss);
      const std::vector<double> loss{g.loss.item(), g.kl_mean, g.ratio_mean, g.clip_low_frac};
      if (threads == 1) {
        loss0 = loss;
        grad0 = logp.grad().to_double_vector();
        continue;
      }
      const std::string name = fmt::format("{} threads {}", mode_name(opt), threads);
      expect_close(name + " loss and metrics", loss, loss0, 0, 0);
      expect_close(name + " dlogp", logp.grad().to_double_vector(), grad0, 0, 0);
    }
  }
  omp_set_num_threads(saved);
}

TEST(GrpoObjective, NoGradEmptyBatchAndGradScale) {
  const GrpoObjectiveOptions opt = options(GrpoLossType::Grpo, ImportanceLevel::Token, 0, 4);
  const Layout l = make_layout(4, 5, case_seed(500), false);
  const std::vector<double> lp = random_logp(l.T(), case_seed(501));
  const Operands o = operands(l, make_policy(lp, 4, case_seed(502)), 0, DType::F64);
  const GrpoObjective g = run_op(vec(lp, DType::F64), o, opt);
  EXPECT_FALSE(g.loss.requires_grad());
  EXPECT_EQ(tape_size(), 0u);
  // The backward scales dloss/dlogp by the incoming gradient.
  Tensor a = vec(lp, DType::F64), b = vec(lp, DType::F64);
  a.set_requires_grad();
  b.set_requires_grad();
  backward(run_op(a, o, opt).loss);
  backward(run_op(b, o, opt).loss, Tensor::scalar(-2.5, DType::F64));
  std::vector<double> scaled = a.grad().to_double_vector();
  for (double& x : scaled) x *= -2.5;
  expect_close("grad scale", b.grad().to_double_vector(), scaled, 1e-15, 1e-15);
  // T = 0: loss 0, metrics 0.
  const Tensor none = Tensor::zeros({0}, DType::F64);
  const GrpoObjective e = grpo_objective(none, none, Tensor(), Tensor::zeros({4}, DType::F64),
                                         Tensor::zeros({0}, DType::I64), none, opt);
  EXPECT_EQ(e.loss.item(), 0.0);
  EXPECT_EQ(e.ratio_mean, 0.0);
}

// ---- CPU: against the unfused PyTorch reference ------------------------------------------

struct ParityCase {
  std::string name;
  DType dt;
  GrpoObjectiveOptions opt;
  double temperature;
  // r1's results
  Tensor logp, dh, dw;
  double loss = 0;
  GrpoObjective metrics;
  int64_t masked = 0;
};

std::string temp_dir() {
  std::string t = "/tmp/r1_grpo_ref_" + std::to_string(test::run_seed()) + "_XXXXXX";
  R1_CHECK(::mkdtemp(t.data()) != nullptr, "mkdtemp {}", t);
  return t;
}

// Runs grpo_ref.py on the files in dir; returns "" or why it failed.
std::string run_reference(const std::string& dir) {
  const std::string cmd = fmt::format("'{}' '{}/tests/torch_ref/grpo_ref.py' '{}/spec.json' "
                                      "'{}/in.safetensors' '{}/out.safetensors' 2> '{}/stderr.txt'",
                                      test::python(), test::source_dir(), dir, dir, dir, dir);
  const int status = std::system(cmd.c_str());
  const int rc = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  if (rc == 0) return "";
  std::ifstream err(dir + "/stderr.txt");
  const std::string text((std::istreambuf_iterator<char>(err)), {});
  if (rc == 3)
    return fmt::format("PyTorch is not importable by {} ({}): run scripts/setup.sh (it "
                       "installs python3-torch and python3-numpy)", test::python(), text);
  return fmt::format("`{}` failed (exit {}), inputs kept in {}:\n{}", cmd, rc, dir, text);
}

// max|got - ref| / max|ref| <= tol.
void expect_match(const std::string& what, const Tensor& got, const Tensor& ref, double tol) {
  ASSERT_TRUE(got.defined()) << what;
  ASSERT_EQ(got.shape(), ref.shape()) << what;
  const std::vector<double> a = got.to_double_vector(), b = ref.to_double_vector();
  double scale = 0;
  for (double v : b) scale = std::max(scale, std::fabs(v));
  expect_close(what, a, b, tol * scale, 0);
}

TEST(GrpoObjective, ComposedPathMatchesUnfusedTorch) {
  constexpr int64_t S = 6, D = 16, V = 50, kChunk = 16;
  std::vector<ParityCase> cases;
  std::vector<std::pair<std::string, Tensor>> files;
  nlohmann::json spec = {{"cases", nlohmann::json::array()}};
  uint64_t k = 600;
  for (DType dt : {DType::F64, DType::F32})
    for (GrpoLossType lt : kLossTypes)
      for (ImportanceLevel lv : kLevels)
        for (double beta : {0.0, 0.04}) {
          k += 8;
          ParityCase c;
          c.dt = dt;
          c.opt = options(lt, lv, beta, S);
          c.temperature = (k / 8) % 2 ? 0.7 : 1.0;
          c.name = fmt::format("{}_{}_{}_{}", dtype_name(dt), trl_name(lt), trl_name(lv),
                               beta > 0 ? "kl" : "nokl");
          const Layout l = make_layout(S, 9, case_seed(k), (k / 8) % 2 == 0);
          const int64_t T = l.T();
          const Tensor h = Tensor::randn({T, D}, case_seed(k + 1)).to(dt);
          const Tensor w = Tensor::randn({V, D}, case_seed(k + 2), DType::F32, kCpu,
                                         3.0 / std::sqrt(static_cast<double>(D))).to(dt);
          const Tensor tokens = Tensor::randint({T}, case_seed(k + 3), 0, V);
          std::vector<double> lp0;
          {
            NoGrad ng;
            lp0 = token_logprobs(h, w, tokens, c.temperature, kChunk).logp.to_double_vector();
          }
          const Policy p = make_policy(lp0, S, case_seed(k + 4));
          const Operands o = operands(l, p, beta, dt, (k / 8) % 3 ? DType::F32 : DType::U8);
          Tensor hl = h.clone(), wl = w.clone();
          hl.set_requires_grad();
          wl.set_requires_grad();
          const Tensor logp = token_logprobs(hl, wl, tokens, c.temperature, kChunk).logp;
          c.metrics = run_op(logp, o, c.opt);
          c.loss = c.metrics.loss.item();
          backward(c.metrics.loss);
          c.logp = logp.detach();
          c.dh = hl.grad();
          c.dw = wl.grad();
          for (double m : l.mask) c.masked += m == 1;
          const std::vector<std::pair<const char*, Tensor>> named{
              {"h", h},         {"w", w},     {"tokens", tokens}, {"old", o.old_logp},
              {"adv", o.adv},   {"seq", o.seq}, {"mask", o.mask}};
          for (const auto& [key, t] : named) files.emplace_back(c.name + "/" + key, t);
          if (beta > 0) files.emplace_back(c.name + "/ref", o.ref_logp);
          spec["cases"].push_back({{"name", c.name}, {"S", S}, {"temperature", c.temperature},
                                   {"epsilon_low", c.opt.epsilon_low},
                                   {"epsilon_high", c.opt.epsilon_high}, {"beta", beta},
                                   {"loss_type", trl_name(lt)}, {"level", trl_name(lv)},
                                   {"max_completion_length", c.opt.max_completion_length}});
          cases.push_back(std::move(c));
        }
  const std::string dir = temp_dir();
  save_safetensors(dir + "/in.safetensors", files);
  std::ofstream(dir + "/spec.json") << spec.dump(1);
  const std::string failed = run_reference(dir);
  ASSERT_TRUE(failed.empty()) << failed;
  const SafetensorsFile out = SafetensorsFile::open(dir + "/out.safetensors");
  for (const ParityCase& c : cases) {
    const std::string name = fmt::format("{} [seed {}]", c.name, test::run_seed());
    if (const auto e = out.metadata().find("error/" + c.name); e != out.metadata().end()) {
      ADD_FAILURE() << name << ": torch threw: " << e->second;
      continue;
    }
    // f32: logps are f32 (~1e-7 of the logits), the loss carries them through exp; f64: the
    // reference differs only in summation order.
    const bool f32 = c.dt == DType::F32;
    const double tol = f32 ? 1e-5 : 1e-11;
    const double ref_loss = out.get(c.name + "/loss").item();
    EXPECT_NEAR(c.loss, ref_loss, tol * (1 + std::fabs(ref_loss))) << name << " loss";
    expect_match(name + " logp", c.logp, out.get(c.name + "/logp").clone(), tol);
    expect_match(name + " dh", c.dh, out.get(c.name + "/dh").clone(), tol);
    expect_match(name + " dw", c.dw, out.get(c.name + "/dw").clone(), tol);
    const std::vector<double> m = out.get(c.name + "/metrics").to_double_vector();
    // A clip decision may flip between f32 and f64 for a ratio within an ulp of the bound:
    // allow one token's share in f32.
    const double clip_tol = f32 ? 1.0 / static_cast<double>(std::max<int64_t>(c.masked, 1)) +
                                      1e-12
                                : 1e-12;
    expect_metrics(name, c.metrics, Reference{0, m[0], m[1], m[2], m[3]}, tol, clip_tol);
  }
  std::filesystem::remove_all(dir);
}

// ---- group_advantages --------------------------------------------------------------------

TEST(GroupAdvantages, HandComputed) {
  // Groups of 2: (1, 0), (0, 1), (0.5, 0.5) (zero variance), (2, 0).
  const std::vector<double> r{1, 0, 0, 1, 0.5, 0.5, 2, 0};
  const double g1 = 0.5 / (std::sqrt(0.5) + 1e-4);  // std of (1, 0): sqrt(0.5 / 1)
  const double g2 = 1.0 / (std::sqrt(2.0) + 1e-4);  // std of (2, 0): sqrt(2 / 1)
  expect_close("group", group_advantages(r, 2, RewardScale::Group),
               {g1, -g1, -g1, g1, 0, 0, g2, -g2}, 1e-15, 1e-14);
  // Batch mean 5/8; squared deviations sum to 3.375, over n - 1 = 7.
  const double sb = std::sqrt(3.375 / 7) + 1e-4;
  expect_close("batch", group_advantages(r, 2, RewardScale::Batch),
               {0.5 / sb, -0.5 / sb, -0.5 / sb, 0.5 / sb, 0, 0, 1 / sb, -1 / sb}, 1e-15, 1e-14);
  expect_close("none", group_advantages(r, 2, RewardScale::None),
               {0.5, -0.5, -0.5, 0.5, 0, 0, 1, -1}, 0, 0);
  // Equal rewards whose mean misses them by an ulp ((0.1 + 0.1 + 0.1) / 3 != 0.1) still
  // give exactly 0 at every scale.
  for (RewardScale sc : {RewardScale::Group, RewardScale::Batch, RewardScale::None}) {
    const std::vector<double> a = group_advantages({0.1, 0.1, 0.1, 0.7, 0.2, 0.3}, 3, sc);
    EXPECT_EQ(a[0], 0.0);
    EXPECT_EQ(a[1], 0.0);
    EXPECT_EQ(a[2], 0.0);
    EXPECT_NE(a[3], 0.0);
  }
}

TEST(GroupAdvantages, RandomRewardsEveryScale) {
  constexpr int64_t S = 24, G = 4;
  // Discrete rewards (0..3), so groups tie and some have zero variance; group 2 forced to.
  std::vector<double> r;
  for (int64_t v : Tensor::randint({S}, case_seed(700), 0, 4).to_int_vector())
    r.push_back(static_cast<double>(v));
  for (int64_t i = 2 * G; i < 3 * G; ++i) r[i] = 1;
  auto mean_std = [](const double* x, int64_t n) {
    double m = 0, ss = 0;
    for (int64_t i = 0; i < n; ++i) m += x[i] / n;
    for (int64_t i = 0; i < n; ++i) ss += (x[i] - m) * (x[i] - m);
    return std::pair<double, double>{m, std::sqrt(ss / (n - 1))};
  };
  const double batch_std = mean_std(r.data(), S).second;
  for (RewardScale sc : {RewardScale::Group, RewardScale::Batch, RewardScale::None}) {
    std::vector<double> want;
    for (int64_t g = 0; g < S; g += G) {
      const auto [m, sd] = mean_std(r.data() + g, G);
      const double den = sc == RewardScale::Group   ? sd + 1e-4
                         : sc == RewardScale::Batch ? batch_std + 1e-4
                                                    : 1.0;
      for (int64_t i = g; i < g + G; ++i) want.push_back(sd == 0 ? 0.0 : (r[i] - m) / den);
    }
    const std::vector<double> got = group_advantages(r, G, sc);
    expect_close(fmt::format("scale {} [seed {}]", static_cast<int>(sc), test::run_seed()),
                 got, want, 1e-13, 1e-13);
    for (int64_t i = 2 * G; i < 3 * G; ++i) EXPECT_EQ(got[i], 0.0);
  }
}

TEST(GroupAdvantages, BadInputAndNames) {
  EXPECT_THROW(group_advantages({1, 2, 3}, 1, RewardScale::Group), Error);  // G < 2
  EXPECT_THROW(group_advantages({1, 2, 3}, 2, RewardScale::Group), Error);  // S % G != 0
  EXPECT_THROW(group_advantages({}, 2, RewardScale::None), Error);
  EXPECT_THROW(group_advantages({1, std::nan("")}, 2, RewardScale::None), Error);
  EXPECT_EQ(grpo_loss_type_from_name("dr_grpo"), GrpoLossType::DrGrpo);
  EXPECT_EQ(grpo_loss_type_from_name("dapo"), GrpoLossType::Dapo);
  EXPECT_EQ(importance_level_from_name("sequence"), ImportanceLevel::Sequence);
  EXPECT_EQ(reward_scale_from_name("false"), RewardScale::None);
  EXPECT_EQ(reward_scale_from_name("batch"), RewardScale::Batch);
  EXPECT_THROW(grpo_loss_type_from_name("ppo"), Error);
  EXPECT_THROW(importance_level_from_name("tokens"), Error);
  EXPECT_THROW(reward_scale_from_name("std"), Error);
}

// ---- bad input ---------------------------------------------------------------------------

// The call throws r1::Error whose message contains `needle`.
template <class Fn>
void expect_error(const std::string& what, Fn&& fn, const std::string& needle) {
  try {
    fn();
    ADD_FAILURE() << what << ": no error";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << what << ": message without '" << needle << "': " << e.what();
  }
}

TEST(GrpoObjective, BadInputIsAnError) {
  constexpr int64_t S = 3;
  const GrpoObjectiveOptions opt = options(GrpoLossType::Grpo, ImportanceLevel::Token, 0.04, S);
  const Tensor lp = vec({-1, -2, -0.5, -3}, DType::F32);
  const Tensor old = vec({-1.1, -2, -0.4, -3}, DType::F32), ref = old.clone();
  const Tensor adv = vec({1, -1, 0.5}, DType::F32);
  const Tensor seq = ivec({0, 0, 1, 2}), mask = vec({1, 1, 0, 1}, DType::F32);
  EXPECT_NO_THROW(grpo_objective(lp, old, ref, adv, seq, mask, opt));
  auto call = [&](const Tensor& l, const Tensor& o, const Tensor& r, const Tensor& a,
                  const Tensor& s, const Tensor& m, const GrpoObjectiveOptions& op) {
    return [=] { grpo_objective(l, o, r, a, s, m, op); };
  };
  expect_error("old (T - 1)", call(lp, old.narrow(0, 0, 3), ref, adv, seq, mask, opt),
               "old_logp");
  expect_error("ref (T + 1)", call(lp, old, vec({0, 0, 0, 0, 0}, DType::F32), adv, seq, mask,
                                   opt), "ref_logp");
  expect_error("advantages (S + 1)", call(lp, old, ref, vec({1, 2, 3, 4}, DType::F32), seq,
                                          mask, opt), "advantages");
  expect_error("seq (T - 1)", call(lp, old, ref, adv, ivec({0, 0, 1}), mask, opt), "seq");
  expect_error("mask (T - 1)", call(lp, old, ref, adv, seq, mask.narrow(0, 0, 3), opt), "mask");
  expect_error("logp (T, 1)", call(lp.view({4, 1}), old, ref, adv, seq, mask, opt), "logp");
  expect_error("seq = S", call(lp, old, ref, adv, ivec({0, 0, 3, 2}), mask, opt), "outside");
  expect_error("seq < 0", call(lp, old, ref, adv, ivec({0, -1, 1, 2}), mask, opt), "outside");
  expect_error("beta > 0 without ref", call(lp, old, Tensor(), adv, seq, mask, opt),
               "needs ref_logp");
  expect_error("mask 0.5", call(lp, old, ref, adv, seq, vec({1, 0.5, 0, 1}, DType::F32), opt),
               "0 or 1");
  expect_error("old f64", call(lp, old.to(DType::F64), ref, adv, seq, mask, opt), "dtype");
  expect_error("float seq", call(lp, old, ref, adv, seq.to(DType::F32), mask, opt), "seq");
  expect_error("int logp", call(seq, seq, seq, adv, seq, mask, opt), "logp");
  // beta = 0: ref is ignored, undefined or not.
  GrpoObjectiveOptions o0 = opt;
  o0.beta = 0;
  EXPECT_NO_THROW(grpo_objective(lp, old, Tensor(), adv, seq, mask, o0));
  // Options name their field.
  GrpoObjectiveOptions bad = opt;
  bad.num_sequences = 0;
  expect_error("num_sequences 0", call(lp, old, ref, adv, seq, mask, bad), "num_sequences");
  bad = opt;
  bad.num_sequences = 4;  // advantages are (3)
  expect_error("num_sequences 4", call(lp, old, ref, adv, seq, mask, bad), "advantages");
  bad = opt;
  bad.loss_type = GrpoLossType::DrGrpo;
  bad.max_completion_length = 0;
  expect_error("dr_grpo without L", call(lp, old, ref, adv, seq, mask, bad),
               "max_completion_length");
  bad = opt;
  bad.epsilon_low = -0.1;
  expect_error("epsilon_low < 0", call(lp, old, ref, adv, seq, mask, bad), "epsilon_low");
  bad = opt;
  bad.epsilon_high = std::nan("");
  expect_error("epsilon_high NaN", call(lp, old, ref, adv, seq, mask, bad), "epsilon_high");
  bad = opt;
  bad.beta = -1;
  expect_error("beta < 0", call(lp, old, ref, adv, seq, mask, bad), "beta");
}

// ---- CUDA --------------------------------------------------------------------------------

const Device kGpu = Device::cuda(0);

// The per-sequence weights and (sequence level) token lists the op builds, for a kernel test.
struct Book {
  std::vector<double> seq_weight;
  std::vector<int64_t> order, offsets;
};
Book book(const Layout& l, int64_t S) {
  Book b;
  std::vector<int64_t> n(S, 0);
  for (int64_t t = 0; t < l.T(); ++t) n[l.seq[t]] += l.mask[t] == 1;
  b.offsets.push_back(0);
  for (int64_t s = 0; s < S; ++s) {
    b.seq_weight.push_back(1.0 / (static_cast<double>(S) * std::max<int64_t>(n[s], 1)));
    for (int64_t t = 0; t < l.T(); ++t)
      if (l.seq[t] == s && l.mask[t] == 1) b.order.push_back(t);
    b.offsets.push_back(static_cast<int64_t>(b.order.size()));
  }
  return b;
}

// The kernels on the GPU (f32) against the CPU kernels in f64 on the same rounded inputs,
// with poisoned outputs; then a second GPU run for the same bits. T up to ~300k tokens: the
// token_terms grid then has more blocks than sums_kernel has threads.
TEST(GrpoObjective, CudaKernelsMatchCpuKernels) {
  R1_SKIP_WITHOUT_CUDA();
  struct KCase {
    int64_t S, max_len;
  };
  uint64_t k = 800;
  for (const KCase& kc : {KCase{3, 2}, KCase{37, 300}, KCase{300, 2000}})
    for (ImportanceLevel lv : kLevels)
      for (double beta : {0.0, 0.04}) {
        const std::string name = fmt::format("S {} len {} {} beta {} [seed {}]", kc.S,
                                             kc.max_len, trl_name(lv), beta, test::run_seed());
        const Layout l = make_layout(kc.S, kc.max_len, case_seed(k += 8), true);
        const int64_t T = l.T();
        const std::vector<double> lp = random_logp(T, case_seed(k + 1));
        const Policy p = make_policy(lp, kc.S, case_seed(k + 2));
        const Book b = book(l, kc.S);
        auto args = [&](DType dt, Device dev) {
          GrpoTermsArgs a;
          a.logp = test::rounded_f64(vec(lp, DType::F32), DType::F32).to(dt).to(dev);
          a.old_logp = test::rounded_f64(vec(p.old_logp, DType::F32), DType::F32).to(dt).to(dev);
          if (beta > 0)
            a.ref_logp = test::rounded_f64(vec(p.ref_logp, DType::F32), DType::F32).to(dt).to(dev);
          a.advantages = test::rounded_f64(vec(p.adv, DType::F32), DType::F32).to(dt).to(dev);
          a.seq = ivec(l.seq, dev);
          a.mask = vec(l.mask, DType::U8, dev);
          a.seq_weight = test::rounded_f64(vec(b.seq_weight, DType::F32), DType::F32)
                             .to(dt).to(dev);
          a.epsilon_low = 0.2;
          a.epsilon_high = 0.28;
          a.beta = beta;
          if (lv == ImportanceLevel::Sequence) {
            a.seq_log_ratio = test::poisoned({kc.S}, dt, dev);
            kernels::grpo_sequence_log_ratio()(
                dev, a.logp, a.old_logp, ivec(b.order, dev), ivec(b.offsets, dev),
                a.seq_log_ratio);
          }
          return a;
        };
        const GrpoTermsArgs ac = args(DType::F64, kCpu), ag = args(DType::F32, kGpu);
        if (lv == ImportanceLevel::Sequence)
          expect_close(name + " seq_log_ratio", ag.seq_log_ratio.to(kCpu), ac.seq_log_ratio,
                       1e-6, 1e-6);
        Tensor sc = Tensor::empty({kGrpoSums}, DType::F64), dc = Tensor::empty({T}, DType::F64);
        kernels::grpo_token_terms()(kCpu, ac, sc, dc);
        Tensor sg = test::poisoned({kGrpoSums}, DType::F64, kGpu);
        Tensor dg = test::poisoned({T}, DType::F32, kGpu);
        kernels::grpo_token_terms()(kGpu, ag, sg, dg);
        const std::vector<double> s1 = sg.to_double_vector(), s0 = sc.to_double_vector();
        // loss and kl: sums of f32 terms of size ~1 / S and ~0.05 each; ratio: T terms ~1.
        EXPECT_NEAR(s1[0], s0[0], 1e-5 * (1 + std::fabs(s0[0]))) << name << " loss";
        EXPECT_NEAR(s1[1], s0[1], 1e-5 * (1 + s0[1])) << name << " kl";
        EXPECT_NEAR(s1[2], s0[2], 2) << name << " low clip count";  // a flip at the bound
        EXPECT_NEAR(s1[3], s0[3], 2) << name << " high clip count";
        EXPECT_NEAR(s1[4], s0[4], 1e-5 * s0[4]) << name << " ratio";
        double scale = 0;
        for (double v : dc.to_double_vector()) scale = std::max(scale, std::fabs(v));
        expect_close(name + " dlogp", dg.to(kCpu), dc, 1e-5 * scale, 1e-5);
        // Again: the same bits (no atomics).
        Tensor sg2 = test::poisoned({kGrpoSums}, DType::F64, kGpu);
        Tensor dg2 = test::poisoned({T}, DType::F32, kGpu);
        kernels::grpo_token_terms()(kGpu, ag, sg2, dg2);
        expect_close(name + " sums again", sg2.to(kCpu), sg.to(kCpu), 0, 0);
        expect_close(name + " dlogp again", dg2.to(kCpu), dg.to(kCpu), 0, 0);
      }
}

// The op with its backward on the GPU (f32) against the CPU (f64 on the rounded inputs), every
// loss type and level; and an empty batch.
TEST(GrpoObjective, CudaOpMatchesCpuF64) {
  R1_SKIP_WITHOUT_CUDA();
  uint64_t k = 900;
  for (GrpoLossType lt : kLossTypes)
    for (ImportanceLevel lv : kLevels) {
      const GrpoObjectiveOptions opt = options(lt, lv, 0.04, 40);
      const std::string name = mode_name(opt);
      const Layout l = make_layout(opt.num_sequences, 500, case_seed(k += 8), true);
      const std::vector<double> lp = random_logp(l.T(), case_seed(k + 1));
      const Policy p = make_policy(lp, opt.num_sequences, case_seed(k + 2));
      Tensor xg = vec(lp, DType::F32, kGpu), xc = test::rounded_f64(xg, DType::F32);
      xg.set_requires_grad();
      xc.set_requires_grad();
      // Forward then backward on each device in turn: backward replays and clears the whole
      // tape (engine/autograd.h), so two forwards before the first backward would leave the
      // second with no node (the H200 run of 9d1645a: xc.grad() undefined).
      const GrpoObjective g = run_op(xg, operands(l, p, 0.04, DType::F32, DType::U8, kGpu), opt);
      ASSERT_TRUE(g.loss.device().is_cuda()) << name;
      ASSERT_EQ(g.loss.dtype(), DType::F32) << name;
      backward(g.loss);
      const Operands oc{test::rounded_f64(vec(p.old_logp, DType::F32), DType::F32),
                        test::rounded_f64(vec(p.ref_logp, DType::F32), DType::F32),
                        test::rounded_f64(vec(p.adv, DType::F32), DType::F32), ivec(l.seq),
                        vec(l.mask, DType::F64)};
      const GrpoObjective c = run_op(xc, oc, opt);
      backward(c.loss);
      EXPECT_NEAR(g.loss.item(), c.loss.item(), 1e-5 * (1 + std::fabs(c.loss.item()))) << name;
      EXPECT_NEAR(g.kl_mean, c.kl_mean, 1e-5) << name;
      EXPECT_NEAR(g.ratio_mean, c.ratio_mean, 1e-5) << name;
      EXPECT_NEAR(g.clip_low_frac, c.clip_low_frac, 1e-3) << name;
      EXPECT_NEAR(g.clip_high_frac, c.clip_high_frac, 1e-3) << name;
      ASSERT_TRUE(xg.grad().defined() && xg.grad().device().is_cuda()) << name;
      ASSERT_TRUE(xc.grad().defined()) << name;
      double scale = 0;
      for (double v : xc.grad().to_double_vector()) scale = std::max(scale, std::fabs(v));
      expect_close(name + " dlogp", xg.grad().to(kCpu), xc.grad(), 1e-5 * scale, 1e-5);
    }
  const Tensor none = Tensor::zeros({0}, DType::F32, kGpu);
  const GrpoObjective e = grpo_objective(
      none, none, Tensor(), Tensor::zeros({2}, DType::F32, kGpu),
      Tensor::zeros({0}, DType::I64, kGpu), none,
      options(GrpoLossType::Grpo, ImportanceLevel::Sequence, 0, 2));
  EXPECT_EQ(e.loss.item(), 0.0);
  // f64 is a CPU dtype only.
  const Tensor x64 = Tensor::zeros({2}, DType::F64, kGpu);
  EXPECT_THROW(grpo_objective(x64, x64, Tensor(), x64, Tensor::zeros({2}, DType::I64, kGpu),
                              Tensor::ones({2}, DType::F32, kGpu),
                              options(GrpoLossType::Grpo, ImportanceLevel::Token, 0, 2)),
               Error);
}

}  // namespace
}  // namespace r1
