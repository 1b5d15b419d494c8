// Model ops: forward values against fp64 loops written here, gradients against finite
// differences (expect_gradcheck), and bad input. RoPE is checked against a direct complex
// rotation and its YaRN frequencies against a transcription of DeepSeek-V3's
// precompute_freqs_cis.
#include <gtest/gtest.h>

#include <cmath>
#include <complex>
#include <numbers>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "tests/harness.h"

namespace r1 {
namespace {

using test::case_seed;
using test::expect_close;
using test::expect_gradcheck;

Tensor randn64(const Shape& s, uint64_t k, double sd = 1.0) {
  Tensor t = Tensor::randn(s, case_seed(k), DType::F64, Device::cpu(), sd);
  t.set_requires_grad();
  return t;
}

// Tolerances for an f32 kernel against an f64 reference; f64 agrees to rounding.
double atol_for(DType t) { return t == DType::F32 ? 2e-5 : 1e-12; }

// ---- embedding ---------------------------------------------------------------------------

TEST(Embedding, ForwardMatchesRowGather) {
  for (DType dt : {DType::F32, DType::F64}) {
    const Tensor table = Tensor::randn({11, 6}, case_seed(1), dt);
    const Tensor ids = Tensor::randint({3, 4}, case_seed(2), 0, 11, DType::I32);
    const Tensor out = embedding(ids, table);
    ASSERT_EQ(out.shape(), (Shape{3, 4, 6}));
    const auto tv = table.to_double_vector();
    const auto iv = ids.to_int_vector();
    std::vector<double> ref;
    for (int64_t id : iv)
      for (int64_t d = 0; d < 6; ++d) ref.push_back(tv[id * 6 + d]);
    expect_close("embedding forward", out.to_double_vector(), ref, 0, 0);
  }
}

TEST(Embedding, GradcheckWithRepeatedIds) {
  // 10 ids over 4 rows: repeats are certain, and one row may get none.
  const Tensor ids = Tensor::randint({2, 5}, case_seed(3), 0, 4);
  expect_gradcheck("embedding (2,5) over (4,3)",
                   [&](const std::vector<Tensor>& in) { return embedding(ids, in[0]); },
                   {randn64({4, 3}, 4)}, case_seed(5));
  const Tensor ids1 = Tensor::from_vector(std::vector<int64_t>{2, 2, 0, 2}, {4});
  expect_gradcheck("embedding fixed repeats",
                   [&](const std::vector<Tensor>& in) { return embedding(ids1, in[0]); },
                   {randn64({3, 70}, 6)}, case_seed(7));  // D > one 64-column block
}

TEST(Embedding, IdOutOfRangeIsAnError) {
  const Tensor table = Tensor::randn({5, 2}, case_seed(8));
  EXPECT_THROW(embedding(Tensor::from_vector(std::vector<int64_t>{0, 5}, {2}), table), Error);
  EXPECT_THROW(embedding(Tensor::from_vector(std::vector<int32_t>{-1}, {1}), table), Error);
  EXPECT_THROW(embedding(Tensor::randn({2}, 1), table), Error);  // float ids
}

// ---- rmsnorm -----------------------------------------------------------------------------

TEST(RmsNorm, ForwardMatchesReference) {
  const double eps = 1e-5;
  for (DType dt : {DType::F32, DType::F64}) {
    const Tensor x = Tensor::randn({4, 3, 37}, case_seed(10), dt);
    const Tensor w = Tensor::randn({37}, case_seed(11), dt);
    const auto xv = x.to_double_vector(), wv = w.to_double_vector();
    std::vector<double> ref(xv.size());
    for (int64_t n = 0; n < 12; ++n) {
      double ss = 0;
      for (int64_t d = 0; d < 37; ++d) ss += xv[n * 37 + d] * xv[n * 37 + d];
      const double r = 1 / std::sqrt(ss / 37 + eps);
      for (int64_t d = 0; d < 37; ++d) ref[n * 37 + d] = xv[n * 37 + d] * r * wv[d];
    }
    expect_close("rmsnorm forward", rmsnorm(x, w, eps).to_double_vector(), ref, atol_for(dt),
                 dt == DType::F32 ? 1e-5 : 1e-12);
  }
}

TEST(RmsNorm, Gradcheck) {
  const auto f = [](const std::vector<Tensor>& in) { return rmsnorm(in[0], in[1], 1e-6); };
  expect_gradcheck("rmsnorm (3,5)", f, {randn64({3, 5}, 12), randn64({5}, 13)}, case_seed(14));
  expect_gradcheck("rmsnorm (2,3,8)", f, {randn64({2, 3, 8}, 15), randn64({8}, 16)},
                   case_seed(17));
  // More rows than one dw block (32), so the block partial sums are exercised.
  expect_gradcheck("rmsnorm (70,4)", f, {randn64({70, 4}, 18), randn64({4}, 19)}, case_seed(20));
  // A transposed (non-contiguous) input goes through a copy and the transpose's backward.
  expect_gradcheck("rmsnorm of x^T",
                   [](const std::vector<Tensor>& in) {
                     return rmsnorm(in[0].transpose(0, 1), in[1], 1e-6);
                   },
                   {randn64({6, 3}, 21), randn64({6}, 22)}, case_seed(23));
}

// ---- rope --------------------------------------------------------------------------------

// DeepSeek-V3 inference/model.py precompute_freqs_cis, transcribed line by line (in f64),
// with YaRN whenever factor > 1. clamp = false drops find_correction_range's clamps, so a
// test can confirm that its clamp cases depend on them.
std::vector<double> deepseek_freqs(const RopeConfig& a, bool clamp = true) {
  const double dim = static_cast<double>(a.dim), base = a.theta;
  const double orig = static_cast<double>(a.original_max_position_embeddings);
  auto find_correction_dim = [&](double num_rotations) {
    return dim * std::log(orig / (num_rotations * 2 * std::numbers::pi)) / (2 * std::log(base));
  };
  double low = std::floor(find_correction_dim(a.beta_fast));
  double high = std::ceil(find_correction_dim(a.beta_slow));
  if (clamp) {
    low = std::max(low, 0.0);
    high = std::min(high, dim - 1);
  }
  std::vector<double> freqs;
  for (int64_t i = 0; i < a.dim; i += 2) freqs.push_back(1.0 / std::pow(base, i / dim));
  if (a.yarn_factor > 1) {
    if (low == high) high += 0.001;
    for (int64_t i = 0; i < a.dim / 2; ++i) {
      double ramp = (i - low) / (high - low);
      ramp = std::min(std::max(ramp, 0.0), 1.0);
      const double smooth = 1 - ramp;
      freqs[i] = freqs[i] / a.yarn_factor * (1 - smooth) + freqs[i] * smooth;
    }
  }
  return freqs;
}

TEST(Rope, TableMatchesDeepSeekFrequencies) {
  RopeConfig v3;  // DeepSeek-V3: qk_rope_head_dim 64, factor 40, original 4096
  v3.yarn_factor = 40;
  RopeConfig low_clamp = v3;  // short original context: the beta_fast dim is negative
  low_clamp.original_max_position_embeddings = 64;
  low_clamp.dim = 16;
  RopeConfig high_clamp = v3;  // long original context, small theta: beyond dim - 1
  high_clamp.original_max_position_embeddings = 100000000;
  high_clamp.theta = 100;
  high_clamp.dim = 16;
  RopeConfig plain = v3;
  plain.yarn_factor = 1;
  const std::vector<std::pair<const char*, RopeConfig>> cases = {
      {"v3", v3}, {"low clamp", low_clamp}, {"high clamp", high_clamp}, {"no yarn", plain}};
  for (const auto& [name, cfg] : cases) {
    const std::vector<double> freqs = deepseek_freqs(cfg);
    const bool clamps = freqs != deepseek_freqs(cfg, false);
    EXPECT_EQ(clamps, std::string(name).find("clamp") != std::string::npos) << name;
    const int64_t P = 300, half = cfg.dim / 2;
    const RopeTable table(cfg, P, DType::F64);
    ASSERT_EQ(table.cos.shape(), (Shape{P, half}));
    std::vector<double> rc, rs;
    for (int64_t p = 0; p < P; ++p)
      for (int64_t j = 0; j < half; ++j) {
        rc.push_back(std::cos(p * freqs[j]));
        rs.push_back(std::sin(p * freqs[j]));
      }
    expect_close(std::string(name) + " cos", table.cos.to_double_vector(), rc, 1e-12, 0);
    expect_close(std::string(name) + " sin", table.sin.to_double_vector(), rs, 1e-12, 0);
  }
  // For V3's shapes YaRN keeps the fastest pair and divides the slowest by the factor.
  const std::vector<double> f = deepseek_freqs(v3);
  EXPECT_NEAR(f[0], 1.0, 1e-15);
  EXPECT_NEAR(f[31], std::pow(1e4, -62.0 / 64) / 40, 1e-15);
  EXPECT_DOUBLE_EQ(yarn_mscale(40, 1.0), 0.1 * std::log(40.0) + 1);
  EXPECT_DOUBLE_EQ(yarn_mscale(40, 0.707), 0.1 * 0.707 * std::log(40.0) + 1);
  EXPECT_EQ(yarn_mscale(1.0, 1.0), 1.0);
}

// The rotation applied directly: pair j as a complex number times e^{i p f_j}.
std::vector<double> rope_reference(const std::vector<double>& x, const std::vector<int64_t>& pos,
                                   bool pos_bt, int64_t B, int64_t T, int64_t H, int64_t D,
                                   const std::vector<double>& freqs, bool interleaved) {
  std::vector<double> y(x.size());
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      for (int64_t h = 0; h < H; ++h)
        for (int64_t j = 0; j < D / 2; ++j) {
          const int64_t base = ((b * T + t) * H + h) * D;
          const int64_t i0 = interleaved ? base + 2 * j : base + j;
          const int64_t i1 = interleaved ? base + 2 * j + 1 : base + j + D / 2;
          const double p = static_cast<double>(pos_bt ? pos[b * T + t] : pos[t]);
          const std::complex<double> z =
              std::complex<double>(x[i0], x[i1]) * std::polar(1.0, p * freqs[j]);
          y[i0] = z.real();
          y[i1] = z.imag();
        }
  return y;
}

TEST(Rope, ForwardMatchesComplexRotationAndGradcheck) {
  const int64_t B = 2, T = 3, H = 2, D = 8, P = 50;
  uint64_t k = 100;
  for (bool interleaved : {true, false})
    for (double factor : {1.0, 4.0})
      for (bool pos_bt : {false, true}) {
        RopeConfig cfg;
        cfg.dim = D;
        cfg.interleaved = interleaved;
        cfg.yarn_factor = factor;
        cfg.original_max_position_embeddings = 16;
        cfg.beta_fast = 4;
        const std::string name = std::string(interleaved ? "interleaved" : "halves") +
                                 (factor > 1 ? " yarn" : "") + (pos_bt ? " pos(B,T)" : " pos(T)");
        // Non-trivial positions: random, not sorted, repeated across the batch or not.
        const Tensor pos = Tensor::randint(pos_bt ? Shape{B, T} : Shape{T}, case_seed(k++), 0, P);
        const std::vector<double> freqs = deepseek_freqs(cfg);
        for (DType dt : {DType::F32, DType::F64}) {
          const RopeTable table(cfg, P, dt);
          const Tensor x = Tensor::randn({B, T, H, D}, case_seed(k++), dt);
          const auto ref = rope_reference(x.to_double_vector(), pos.to_int_vector(), pos_bt, B,
                                          T, H, D, freqs, interleaved);
          expect_close(name + " forward", rope(x, pos, table).to_double_vector(), ref,
                       atol_for(dt), 0);
        }
        const RopeTable table(cfg, P, DType::F64);
        expect_gradcheck(name,
                         [&](const std::vector<Tensor>& in) { return rope(in[0], pos, table); },
                         {randn64({B, T, H, D}, k++)}, case_seed(k++));
      }
}

TEST(Rope, BadInputIsAnError) {
  RopeConfig odd;
  odd.dim = 7;
  EXPECT_THROW(RopeTable(odd, 10), Error);
  RopeConfig cfg;
  cfg.dim = 8;
  const RopeTable table(cfg, 10);
  const Tensor pos = Tensor::arange(3);
  EXPECT_THROW(rope(Tensor::randn({1, 3, 2, 6}, 1), pos, table), Error);  // D != table dim
  EXPECT_THROW(rope(Tensor::randn({1, 3, 2, 8}, 1), Tensor::arange(4), table), Error);  // T
  EXPECT_THROW(rope(Tensor::randn({1, 3, 2, 8}, 1),
                    Tensor::from_vector(std::vector<int64_t>{0, 10, 1}, {3}), table),
               Error);  // position beyond the table
  EXPECT_THROW(rope(Tensor::randn({1, 3, 2, 8}, 1, DType::F64), pos, table), Error);  // dtype
}

// ---- mla_qkv -----------------------------------------------------------------------------

// The fused op against the rotation written out here (rope_reference) and plain copies, and its
// gradients against finite differences: every output's features, head by head.
TEST(MlaQkv, ForwardMatchesCopiesAndRotationAndGradcheck) {
  const int64_t B = 2, T = 3, H = 3, n = 4, r = 6, vd = 5, P = 40;
  uint64_t k = 300;
  for (bool interleaved : {true, false})
    for (bool pos_bt : {false, true}) {
      RopeConfig cfg;
      cfg.dim = r;
      cfg.interleaved = interleaved;
      const std::string name = std::string("mla_qkv ") + (interleaved ? "interleaved" : "halves") +
                               (pos_bt ? " pos(B,T)" : " pos(T)");
      const Tensor pos = Tensor::randint(pos_bt ? Shape{B, T} : Shape{T}, case_seed(k++), 0, P);
      const std::vector<double> freqs = deepseek_freqs(cfg);
      for (DType dt : {DType::F32, DType::F64}) {
        const RopeTable table(cfg, P, dt);
        const Tensor q = Tensor::randn({B, T, H, n + r}, case_seed(k++), dt);
        const Tensor kv = Tensor::randn({B, T, H, n + vd}, case_seed(k++), dt);
        const Tensor kr = Tensor::randn({B, T, r}, case_seed(k++), dt);
        const std::vector<Tensor> out = mla_qkv(q, kv, kr, pos, table);
        ASSERT_EQ(out.size(), 3u);
        const auto qv = q.to_double_vector(), kvv = kv.to_double_vector(), krv = kr.to_double_vector();
        // The RoPE parts rotated by the reference: q's per head, k_rope's once (one "head").
        std::vector<double> q_pe, k_pe;
        for (int64_t i = 0; i < B * T * H; ++i)
          q_pe.insert(q_pe.end(), qv.begin() + i * (n + r) + n, qv.begin() + (i + 1) * (n + r));
        q_pe = rope_reference(q_pe, pos.to_int_vector(), pos_bt, B, T, H, r, freqs, interleaved);
        k_pe = rope_reference(krv, pos.to_int_vector(), pos_bt, B, T, 1, r, freqs, interleaved);
        std::vector<double> ref_q, ref_k, ref_v;
        for (int64_t bt = 0; bt < B * T; ++bt)
          for (int64_t h = 0; h < H; ++h) {
            const int64_t i = bt * H + h;
            ref_q.insert(ref_q.end(), qv.begin() + i * (n + r), qv.begin() + i * (n + r) + n);
            ref_q.insert(ref_q.end(), q_pe.begin() + i * r, q_pe.begin() + (i + 1) * r);
            ref_k.insert(ref_k.end(), kvv.begin() + i * (n + vd), kvv.begin() + i * (n + vd) + n);
            ref_k.insert(ref_k.end(), k_pe.begin() + bt * r, k_pe.begin() + (bt + 1) * r);
            ref_v.insert(ref_v.end(), kvv.begin() + i * (n + vd) + n, kvv.begin() + (i + 1) * (n + vd));
          }
        expect_close(name + " q", out[0].to_double_vector(), ref_q, atol_for(dt), 0);
        expect_close(name + " k", out[1].to_double_vector(), ref_k, atol_for(dt), 0);
        expect_close(name + " v", out[2].to_double_vector(), ref_v, 0, 0);
      }
      const RopeTable table(cfg, P, DType::F64);
      expect_gradcheck(
          name,
          [&](const std::vector<Tensor>& in) {
            const std::vector<Tensor> o = mla_qkv(in[0], in[1], in[2], pos, table);
            return concat({o[0].reshape({o[0].numel()}), o[1].reshape({o[1].numel()}), o[2].reshape({o[2].numel()})}, 0);
          },
          {randn64({B, T, H, n + r}, k++), randn64({B, T, H, n + vd}, k++), randn64({B, T, r}, k++)},
          case_seed(k++));
    }
}

TEST(MlaQkv, BadInputIsAnError) {
  RopeConfig cfg;
  cfg.dim = 4;
  const RopeTable table(cfg, 10);
  const Tensor pos = Tensor::arange(3);
  const Tensor q = Tensor::randn({1, 3, 2, 6}, 1), kv = Tensor::randn({1, 3, 2, 5}, 2);
  EXPECT_NO_THROW(mla_qkv(q, kv, Tensor::randn({1, 3, 4}, 3), pos, table));
  EXPECT_THROW(mla_qkv(q, kv, Tensor::randn({1, 3, 6}, 3), pos, table), Error);  // r != dim
  EXPECT_THROW(mla_qkv(q, Tensor::randn({1, 3, 3, 5}, 2), Tensor::randn({1, 3, 4}, 3), pos, table),
               Error);  // heads differ
  EXPECT_THROW(mla_qkv(q, Tensor::randn({1, 3, 2, 2}, 2), Tensor::randn({1, 3, 4}, 3), pos, table),
               Error);  // kv too narrow for n = 2 and any v
  EXPECT_THROW(mla_qkv(q, kv, Tensor::randn({1, 3, 4}, 3),
                       Tensor::from_vector(std::vector<int64_t>{0, 10, 1}, {3}), table),
               Error);  // position beyond the table
}

// ---- swiglu ------------------------------------------------------------------------------

TEST(SwiGLU, ForwardMatchesReferenceAndGradcheck) {
  for (DType dt : {DType::F32, DType::F64}) {
    const Tensor g = Tensor::randn({5, 33}, case_seed(200), dt, Device::cpu(), 4.0);
    const Tensor u = Tensor::randn({5, 33}, case_seed(201), dt);
    const auto gv = g.to_double_vector(), uv = u.to_double_vector();
    std::vector<double> ref(gv.size());
    for (size_t i = 0; i < gv.size(); ++i) ref[i] = gv[i] / (1 + std::exp(-gv[i])) * uv[i];
    expect_close("swiglu forward", swiglu(g, u).to_double_vector(), ref, atol_for(dt),
                 dt == DType::F32 ? 1e-5 : 1e-12);
  }
  const auto f = [](const std::vector<Tensor>& in) { return swiglu(in[0], in[1]); };
  expect_gradcheck("swiglu (4,7)", f, {randn64({4, 7}, 202, 3.0), randn64({4, 7}, 203)},
                   case_seed(204));
  expect_gradcheck("swiglu (2,3,5)", f, {randn64({2, 3, 5}, 205), randn64({2, 3, 5}, 206)},
                   case_seed(207));
  EXPECT_THROW(swiglu(Tensor::randn({2, 3}, 1), Tensor::randn({3, 2}, 1)), Error);
}

// ---- softmax -----------------------------------------------------------------------------

TEST(Softmax, ForwardMatchesReferenceAndIsStable) {
  for (DType dt : {DType::F32, DType::F64})
    for (bool log : {false, true}) {
      // Scale 300: exp without the max subtraction would overflow in f32 and f64 alike.
      const Tensor x = Tensor::randn({3, 4, 29}, case_seed(300), dt, Device::cpu(), 300.0);
      const auto xv = x.to_double_vector();
      std::vector<double> ref(xv.size());
      for (int64_t n = 0; n < 12; ++n) {
        double m = -INFINITY, s = 0;
        for (int64_t v = 0; v < 29; ++v) m = std::max(m, xv[n * 29 + v]);
        for (int64_t v = 0; v < 29; ++v) s += std::exp(xv[n * 29 + v] - m);
        for (int64_t v = 0; v < 29; ++v)
          ref[n * 29 + v] = log ? xv[n * 29 + v] - m - std::log(s)
                                : std::exp(xv[n * 29 + v] - m) / s;
      }
      const Tensor y = log ? log_softmax(x) : softmax(x);
      // log-softmax is x - lse with both up to ~1e3: the f32 rounding of lse (half an ulp of
      // max|x|) is an absolute error, so the tolerance scales with max|x|.
      double maxabs = 0;
      for (double v : xv) maxabs = std::max(maxabs, std::fabs(v));
      const double atol = dt == DType::F32 ? (log ? 3e-7 * maxabs : 1e-6) : 1e-12;
      expect_close(log ? "log_softmax forward" : "softmax forward", y.to_double_vector(), ref,
                   atol, dt == DType::F32 ? 1e-6 : 1e-12);
    }
}

TEST(Softmax, Gradcheck) {
  for (bool log : {false, true}) {
    const auto f = [log](const std::vector<Tensor>& in) {
      return log ? log_softmax(in[0]) : softmax(in[0]);
    };
    const std::string n = log ? "log_softmax" : "softmax";
    expect_gradcheck(n + " (3,6)", f, {randn64({3, 6}, 310)}, case_seed(311));
    expect_gradcheck(n + " (2,2,9)", f, {randn64({2, 2, 9}, 312, 3.0)}, case_seed(313));
    expect_gradcheck(n + " (5)", f, {randn64({5}, 314)}, case_seed(315));
  }
}

// ---- cross_entropy -----------------------------------------------------------------------

// Mean over non-ignored rows of logsumexp - logit[target], in f64.
double ce_reference(const std::vector<double>& x, const std::vector<int64_t>& t, int64_t V,
                    int64_t ignore) {
  double total = 0;
  int64_t count = 0;
  for (size_t n = 0; n < t.size(); ++n) {
    if (t[n] == ignore) continue;
    double m = -INFINITY, s = 0;
    for (int64_t v = 0; v < V; ++v) m = std::max(m, x[n * V + v]);
    for (int64_t v = 0; v < V; ++v) s += std::exp(x[n * V + v] - m);
    total += m + std::log(s) - x[n * V + t[n]];
    ++count;
  }
  return total / count;
}

// Targets in [0, V) with rows 1 and 4 (when present) set to ignore_index.
Tensor targets_with_ignored(int64_t N, int64_t V, uint64_t k, int64_t ignore) {
  std::vector<int64_t> t = Tensor::randint({N}, case_seed(k), 0, V).to_int_vector();
  for (int64_t n : {1, 4})
    if (n < N) t[n] = ignore;
  return Tensor::from_vector(t, {N});
}

TEST(CrossEntropy, ForwardMatchesReferenceAcrossChunks) {
  uint64_t k = 400;
  // V below, at, just over and well over one 4096-column chunk.
  for (int64_t V : {7, 4096, 4099, 8192 + 5})
    for (DType dt : {DType::F32, DType::F64}) {
      const int64_t N = 6;
      Tensor x = Tensor::randn({N, V}, case_seed(k++), DType::F64, Device::cpu(), 5.0);
      // Row maxima in the first, last and a middle chunk test the online merge.
      std::vector<double> xv = x.to_double_vector();
      xv[0 * V + 0] = 60;
      xv[2 * V + V - 1] = 70;
      xv[3 * V + V / 2] = -40;
      x = Tensor::from_vector(xv, {N, V}, dt);
      xv = x.to_double_vector();
      const Tensor t = targets_with_ignored(N, V, k++, -100);
      const double ref = ce_reference(xv, t.to_int_vector(), V, -100);
      const double got = cross_entropy(x, t).item();
      EXPECT_NEAR(got, ref, dt == DType::F32 ? 2e-5 * std::fabs(ref) + 1e-5 : 1e-11)
          << "V " << V << " " << dtype_name(dt);
    }
}

// Masked logits (-inf) filling whole 4096-column chunks: the chunk adds nothing (it made the
// row NaN before 2026-12-01: exp(-inf - (-inf)) in the chunk's sum), in the first, a middle
// and the last chunk; all -inf with a NaN among them makes the row NaN.
TEST(CrossEntropy, MaskedChunksAddNothing) {
  const int64_t V = 3 * 4096 + 5, N = 3;
  for (DType dt : {DType::F32, DType::F64}) {
    std::vector<double> xv =
        Tensor::randn({N, V}, case_seed(470), DType::F64, Device::cpu(), 3.0).to_double_vector();
    for (int64_t v = 0; v < 4096; ++v) xv[0 * V + v] = -INFINITY;
    for (int64_t v = 4096; v < 8192; ++v) xv[1 * V + v] = -INFINITY;
    for (int64_t v = 8192; v < V; ++v) xv[2 * V + v] = -INFINITY;
    const Tensor x = Tensor::from_vector(xv, {N, V}, dt);
    const Tensor t = Tensor::from_vector(std::vector<int64_t>{V - 1, 5, 4100}, {N});
    const double ref = ce_reference(x.to_double_vector(), t.to_int_vector(), V, -100);
    const double got = cross_entropy(x, t).item();
    ASSERT_TRUE(std::isfinite(ref));
    EXPECT_NEAR(got, ref, dt == DType::F32 ? 2e-5 * std::fabs(ref) + 1e-5 : 1e-11)
        << dtype_name(dt);
    for (int64_t v = 4096; v < 8192; ++v) xv[v] = -INFINITY;  // row 0: chunks 0 and 1 masked
    xv[5000] = NAN;
    const Tensor xn = Tensor::from_vector(xv, {N, V}, dt).narrow(0, 0, 1).contiguous();
    EXPECT_TRUE(std::isnan(cross_entropy(xn, t.narrow(0, 0, 1).contiguous()).item()))
        << dtype_name(dt);
  }
}

TEST(CrossEntropy, Gradcheck) {
  for (int64_t V : {13, 4099}) {
    const int64_t N = V > 4096 ? 3 : 7;
    const Tensor t = targets_with_ignored(N, V, 410 + V, -100);
    expect_gradcheck("cross_entropy V=" + std::to_string(V),
                     [&](const std::vector<Tensor>& in) { return cross_entropy(in[0], t); },
                     {randn64({N, V}, 420 + V, 2.0)}, case_seed(430 + V));
  }
  // A custom ignore_index that is a valid class id elsewhere (0), i32 targets.
  const Tensor t = Tensor::from_vector(std::vector<int32_t>{3, 0, 5, 0, 1}, {5});
  expect_gradcheck("cross_entropy ignore 0",
                   [&](const std::vector<Tensor>& in) { return cross_entropy(in[0], t, 0); },
                   {randn64({5, 6}, 440)}, case_seed(441));
}

TEST(CrossEntropy, AllIgnoredIsZeroWithZeroGrad) {
  Tensor x = randn64({3, 5}, 450);
  const Tensor t = Tensor::full({3}, -100, DType::I64);
  const Tensor loss = cross_entropy(x, t);
  EXPECT_EQ(loss.item(), 0.0);
  backward(loss);
  for (double g : x.grad().to_double_vector()) EXPECT_EQ(g, 0.0);
}

TEST(CrossEntropy, TargetOutOfRangeIsAnError) {
  const Tensor x = Tensor::randn({2, 5}, case_seed(460));
  EXPECT_THROW(cross_entropy(x, Tensor::from_vector(std::vector<int64_t>{0, 5}, {2})), Error);
  EXPECT_THROW(cross_entropy(x, Tensor::from_vector(std::vector<int64_t>{-1, 2}, {2})), Error);
  EXPECT_THROW(cross_entropy(x, Tensor::from_vector(std::vector<int64_t>{0, 1, 2}, {3})), Error);
  // -100 is fine by default, an error once ignore_index is something else.
  EXPECT_NO_THROW(cross_entropy(x, Tensor::from_vector(std::vector<int64_t>{-100, 2}, {2})));
  EXPECT_THROW(cross_entropy(x, Tensor::from_vector(std::vector<int64_t>{-100, 2}, {2}), -1),
               Error);
}

}  // namespace
}  // namespace r1
