// The dense student (model/dense.h) against the independent PyTorch reference
// (scripts/reference/dense.py), fp32 on the CPU: logits and the gradient of sum(G * logits)
// for every parameter, per tensor max|r1 - torch| / max|torch| below kParityTol, over tiny
// configs that vary the family (qwen2 with q/k/v biases and tied embeddings, llama without
// biases and untied, llama with attention_bias), the GQA ratio (4/2, 4/1, 4/4), an explicit
// head_dim != hidden / heads, packed segments and explicit positions. Then plain C++
// properties: causality (bit for bit), packing equals separate runs, and a checkpoint
// round trip gives identical logits.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <string>

#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/safetensors.h"
#include "model/checkpoint.h"
#include "model/dense.h"
#include "tests/harness.h"

namespace r1 {
namespace {

namespace fs = std::filesystem;
using test::case_seed;

// fp32 against fp32, summed in other orders through 4 layers. Each case prints its worst;
// seen over 3 seeds: logits <= 8.3e-7, gradients <= 8.2e-6 (attention q/k projections).
constexpr double kParityTol = 1e-4;
constexpr double kNormBiasNoise = 0.1;  // so norms and biases visibly change the function
constexpr int64_t kB = 2, kT = 16;

struct TempDir {
  std::string path;
  TempDir() {
    path = "/tmp/r1_dense_parity_" + std::to_string(test::run_seed()) + "_XXXXXX";
    R1_CHECK(::mkdtemp(path.data()) != nullptr, "mkdtemp {}", path);
  }
  ~TempDir() {
    if (::testing::Test::HasFailure()) {
      std::printf("[dense parity] files kept in %s\n", path.c_str());
      return;
    }
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

ModelConfig tiny_dense() {
  return load_model_config(std::string(R1_SOURCE_DIR) + "/configs/tiny-dense.json");
}

void make_llama(ModelConfig& c) {
  c.family = ModelFamily::Llama;
  c.model_type = "llama";
  c.architectures = {"LlamaForCausalLM"};
  c.attention_bias = false;
  c.tie_word_embeddings = false;
}

// init_params plus noise on norms and biases (1-D tensors), as dense.py's --init-noise does.
ParamMap noisy_params(const ModelConfig& c, uint64_t seed) {
  ParamMap p = DenseModel::init_params(c, seed);
  uint64_t k = 0;
  for (auto& [name, t] : p)
    if (t.dim() == 1)
      t = t + Tensor::randn(t.shape(), seed + 1000 + k++, DType::F32, Device::cpu(),
                            kNormBiasNoise);
  return p;
}

// max|a - b| / max|b| (max|a - b| when b is all zero).
double rel_error(const Tensor& a, const Tensor& b) {
  const std::vector<double> x = a.to_double_vector(), y = b.to_double_vector();
  EXPECT_EQ(x.size(), y.size());
  double diff = 0, ref = 0;
  for (size_t i = 0; i < x.size() && i < y.size(); ++i) {
    const double d = std::fabs(x[i] - y[i]);
    diff = std::isnan(d) ? INFINITY : std::max(diff, d);
    ref = std::max(ref, std::fabs(y[i]));
  }
  return ref > 0 ? diff / ref : diff;
}

bool torch_available(std::string* why) {
  static const int rc = [] {
    const std::string cmd = fmt::format("'{}' -c 'import torch, numpy' >/dev/null 2>&1",
                                        test::python());
    const int status = std::system(cmd.c_str());
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  }();
  *why = fmt::format("{} cannot import torch and numpy (exit {}): run scripts/setup.sh (it "
                     "installs python3-torch and python3-numpy)", test::python(), rc);
  return rc == 0;
}

enum class Inputs { Plain, Packed, Positions };

struct ParityCase {
  std::string name;
  std::function<void(ModelConfig&)> edit;
  Inputs inputs = Inputs::Plain;
};

// Two rows of packed sequences: lengths 5 + 7 + 4 (segments 0, 1, 2) and 10 + 6 (3, 4).
Tensor packed_segments() {
  std::vector<int64_t> s;
  int64_t id = 0;
  for (int64_t len : {5, 7, 4, 10, 6}) s.insert(s.end(), len, id++);
  return Tensor::from_vector(s, {kB, kT});
}

void run_parity(const ParityCase& pc, uint64_t seed) {
  std::string why;
  if (!torch_available(&why)) GTEST_SKIP() << why;
  ModelConfig cfg = tiny_dense();
  pc.edit(cfg);
  const ParamMap params = noisy_params(cfg, seed);
  TempDir dir;
  const std::string ckpt = dir.path + "/ckpt";
  save_checkpoint(ckpt, cfg, params);

  const Tensor ids = Tensor::randint({kB, kT}, seed + 1, 0, cfg.vocab_size);
  const Tensor G = Tensor::randn({kB, kT, cfg.vocab_size}, seed + 2);
  std::vector<std::pair<std::string, Tensor>> inputs = {{"input_ids", ids}, {"grad_logits", G}};
  Tensor positions, segments;
  if (pc.inputs == Inputs::Packed) {
    segments = packed_segments();
    inputs.emplace_back("segment_ids", segments);
  } else if (pc.inputs == Inputs::Positions) {
    positions = Tensor::randint({kB, kT}, seed + 3, 0, cfg.max_position_embeddings);
    inputs.emplace_back("position_ids", positions);
  }
  save_safetensors(dir.path + "/inputs.safetensors", inputs);

  DenseModel model(cfg, params, cfg.max_position_embeddings);
  const DenseModel::Output out = model.forward(ids, positions, segments);
  backward(sum(out.logits * G));

  const std::string cmd = fmt::format(
      "'{}' '{}/scripts/reference/dense.py' --config '{}/config.json' --weights "
      "'{}/model.safetensors' --ids '{}/inputs.safetensors' --out '{}/out.safetensors' "
      "--backward --threads 1 2> '{}/stderr.txt'",
      test::python(), test::source_dir(), ckpt, ckpt, dir.path, dir.path, dir.path);
  const int status = std::system(cmd.c_str());
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0)
      << "`" << cmd << "` failed (status " << status << "); see " << dir.path << "/stderr.txt";
  const SafetensorsFile ref = SafetensorsFile::open(dir.path + "/out.safetensors");

  const double logits_rel = rel_error(out.logits, ref.get("logits"));
  EXPECT_LE(logits_rel, kParityTol) << pc.name << ": logits";
  double worst = 0;
  std::string worst_name;
  int64_t compared = 0;
  for (const auto& [name, t] : model.params()) {
    ASSERT_TRUE(ref.has("grad." + name)) << pc.name << ": reference has no grad." << name;
    ASSERT_TRUE(t.grad().defined()) << pc.name << ": no gradient reached " << name;
    const double r = rel_error(t.grad(), ref.get("grad." + name));
    EXPECT_LE(r, kParityTol) << pc.name << ": grad of " << name;
    if (r >= worst) worst = r, worst_name = name;
    ++compared;
  }
  for (const std::string& n : ref.names()) {  // nothing the reference trains is missing here
    if (n.rfind("grad.", 0) == 0) {
      EXPECT_TRUE(model.params().count(n.substr(5))) << pc.name << ": r1 lacks " << n;
    }
  }
  std::printf("[dense parity] %-22s logits rel %.2e, worst grad rel %.2e (%s), %lld grads\n",
              pc.name.c_str(), logits_rel, worst, worst_name.c_str(),
              static_cast<long long>(compared));
}

const std::vector<ParityCase>& parity_cases() {
  static const std::vector<ParityCase> cases = {
      {"qwen2_bias_tied_gqa2", [](ModelConfig&) {}},
      {"llama_untied_mqa", [](ModelConfig& c) {
         make_llama(c);
         c.num_key_value_heads = 1;
         c.rope_theta = 500000.0;
       }},
      {"llama_mha_head_dim48", [](ModelConfig& c) {
         make_llama(c);
         c.num_key_value_heads = 4;
         c.head_dim = 48;  // 4 * 48 = 192 != hidden 128
       }},
      {"qwen2_untied_head_dim24", [](ModelConfig& c) {
         c.tie_word_embeddings = false;
         c.num_key_value_heads = 1;
         c.head_dim = 24;
         c.rms_norm_eps = 1e-5;
       }},
      {"llama_attention_bias", [](ModelConfig& c) {
         make_llama(c);
         c.attention_bias = true;  // HF: q/k/v and o_proj biases
         c.tie_word_embeddings = true;
       }},
      {"qwen2_packed_segments", [](ModelConfig&) {}, Inputs::Packed},
      {"llama_explicit_positions", [](ModelConfig& c) { make_llama(c); }, Inputs::Positions},
  };
  return cases;
}

class DenseParity : public ::testing::TestWithParam<size_t> {};

TEST_P(DenseParity, LogitsAndGradientsMatchTorch) {
  run_parity(parity_cases()[GetParam()], case_seed(100 + GetParam()));
}

INSTANTIATE_TEST_SUITE_P(Cases, DenseParity,
                         ::testing::Range<size_t>(0, parity_cases().size()),
                         [](const auto& info) { return parity_cases()[info.param].name; });

// ---- plain C++ properties ----------------------------------------------------------------

std::vector<float> floats(const Tensor& t) { return t.contiguous().to_float_vector(); }

TEST(DenseModel, CausalityIsBitExact) {
  const ModelConfig cfg = tiny_dense();
  DenseModel model(cfg, noisy_params(cfg, case_seed(1)), cfg.max_position_embeddings);
  NoGrad ng;
  const Tensor ids = Tensor::randint({kB, kT}, case_seed(2), 0, cfg.vocab_size);
  Tensor later = ids.clone();
  constexpr int64_t kChanged = 10;
  for (int64_t b = 0; b < kB; ++b) {
    int64_t* p = later.data<int64_t>() + b * kT + kChanged;
    *p = (*p + 1) % cfg.vocab_size;
  }
  const Tensor a = model.forward(ids).logits, b = model.forward(later).logits;
  const std::vector<float> before_a = floats(a.narrow(1, 0, kChanged));
  const std::vector<float> before_b = floats(b.narrow(1, 0, kChanged));
  EXPECT_EQ(0, std::memcmp(before_a.data(), before_b.data(), before_a.size() * sizeof(float)))
      << "logits before the changed token moved";
  EXPECT_GT(rel_error(a.narrow(1, kChanged, kT - kChanged), b.narrow(1, kChanged, kT - kChanged)),
            1e-3) << "the changed token changed nothing";
}

TEST(DenseModel, PackedEqualsSeparate) {
  ModelConfig cfg = tiny_dense();
  make_llama(cfg);  // untied, GQA 4/2
  DenseModel model(cfg, noisy_params(cfg, case_seed(3)), cfg.max_position_embeddings);
  NoGrad ng;
  constexpr int64_t kFirst = 7, kSecond = kT - kFirst;
  const Tensor ids = Tensor::randint({1, kT}, case_seed(4), 0, cfg.vocab_size);
  std::vector<int64_t> seg(kT, 0);
  for (int64_t t = kFirst; t < kT; ++t) seg[t] = 1;
  const Tensor packed = model.forward(ids, Tensor(), Tensor::from_vector(seg, {1, kT})).logits;
  const Tensor one = model.forward(ids.narrow(1, 0, kFirst).contiguous()).logits;
  const Tensor two = model.forward(ids.narrow(1, kFirst, kSecond).contiguous()).logits;
  // f32 with OpenBLAS's products, whose blocking follows M (T packed rows against 7 and T - 7):
  // the two forwards round differently. 41 seeds gave normwise 4e-7 to 1.09e-6 (the last, seed
  // 15523755, failed the bound of 1e-6 this test had); the second segment seeing the first
  // (the bug this test is for: the same ids without segments) is off by 1.2-1.8.
  EXPECT_LE(rel_error(packed.narrow(1, 0, kFirst), one), 1e-5);
  EXPECT_LE(rel_error(packed.narrow(1, kFirst, kSecond), two), 1e-5);
}

TEST(DenseModel, CheckpointRoundTripGivesIdenticalLogits) {
  ModelConfig cfg = tiny_dense();
  cfg.num_key_value_heads = 1;
  DenseModel model(cfg, noisy_params(cfg, case_seed(5)), cfg.max_position_embeddings);
  NoGrad ng;
  const Tensor ids = Tensor::randint({kB, kT}, case_seed(6), 0, cfg.vocab_size);
  TempDir dir;
  save_checkpoint(dir.path + "/ckpt", cfg, model.params());
  const ModelConfig back = load_model_config(dir.path + "/ckpt/config.json");
  DenseModel loaded(back, load_checkpoint(dir.path + "/ckpt", back), back.max_position_embeddings);
  const std::vector<float> a = floats(model.forward(ids).logits);
  const std::vector<float> b = floats(loaded.forward(ids).logits);
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

TEST(DenseModel, HiddenOnlyAndDefaults) {
  const ModelConfig cfg = tiny_dense();
  DenseModel model(cfg, DenseModel::init_params(cfg, case_seed(7)), 64);
  NoGrad ng;
  const Tensor ids = Tensor::randint({kB, kT}, case_seed(8), 0, cfg.vocab_size);
  const DenseModel::Output full = model.forward(ids);
  const DenseModel::Output hidden = model.forward(ids, Tensor(), Tensor(), false);
  EXPECT_FALSE(hidden.logits.defined());
  EXPECT_EQ(full.logits.shape(), (Shape{kB, kT, cfg.vocab_size}));
  EXPECT_EQ(floats(full.hidden), floats(hidden.hidden));
  // Default positions are 0..T-1: the same as passing them.
  EXPECT_EQ(floats(full.logits), floats(model.forward(ids, Tensor::arange(kT)).logits));
  EXPECT_EQ(model.trainable().size(), parameter_specs(cfg).size());
  // Positions restart per segment, even for a segment that comes back later in the row.
  const Tensor seg = Tensor::from_vector(std::vector<int64_t>{4, 4, 9, 9, 9, 4}, {1, 6});
  EXPECT_EQ(positions_within_segments(seg).to_int_vector(),
            (std::vector<int64_t>{0, 1, 0, 1, 2, 2}));
}

TEST(DenseModel, RejectsBadParameters) {
  const ModelConfig cfg = tiny_dense();
  ParamMap p = DenseModel::init_params(cfg, 1);
  ParamMap missing = p;
  missing.erase("model.layers.1.mlp.up_proj.weight");
  EXPECT_THROW(DenseModel(cfg, missing, 64), InputError);
  ParamMap wrong = p;
  wrong["model.norm.weight"] = Tensor::ones({cfg.hidden_size + 1});
  EXPECT_THROW(DenseModel(cfg, wrong, 64), InputError);
  ParamMap extra = p;
  extra["lm_head.weight"] = Tensor::zeros({cfg.vocab_size, cfg.hidden_size});  // tied config
  EXPECT_THROW(DenseModel(cfg, extra, 64), InputError);
}

}  // namespace
}  // namespace r1
