// The two halves of a GRPO step on the tiny DeepSeek-V3 preset (configs/tiny.json, MLA + MoE)
// with a randomly initialized model and fixed work, the same work that
// scripts/bench_rl_torch.py does in PyTorch eager with the reference model:
//
//   Sampling: Q = 16 prompts of 40 random tokens, G = 8 samples each, exactly 64 new tokens
//     per sample (no stop tokens, temperature 1): rl::generate (paged KV cache, MLA absorbed
//     form, batch invariant as in the RL loop). Counter: generated tokens/s (8192 tokens per
//     call, prefill included in the time).
//   Training: one GRPO update on the 128 sequences of 40 prompt + 64 completion tokens:
//     completion_logprobs (with grad) -> grpo_objective (random advantages, old_logp = the
//     detached logp) -> backward -> AdamW step. Counters: trained (completion) tokens/s and
//     total tokens/s (the forward's B x T = 128 x 103 positions). First arg 1: under
//     BatchInvariantScope, as GrpoTrainer runs; 0: without it (the OpenBLAS products).
//     Second arg 1: each question's prompt computed once for its 8 samples
//     (DeepseekV3::forward_shared, as GrpoTrainer runs); 0: per sample, as the PyTorch twin
//     (and TRL) do.
//
//   Sampling/eager|static|graphs: rl::generate's decode modes (rl/generate.h): the eager step,
//     the graph-safe step run eagerly (padded batch, every expert on every token), and that
//     step replayed from CUDA graphs (registered where the device has graphs).
//
//   ./build/bin/bench_rl [--config configs/tiny.json] [--device cpu|cuda] [--dtype f32|bf16]
//                        [--precision default|fp8] [benchmark flags]
//   (fp8: every projection in FP8; the static and graphs steps then run the experts in the
//   masked layout, docs/cuda.md)
//   (on cuda: the sampling rows only; gpu-check runs them in bf16)
//   scripts/bench-rl.sh      runs this and the PyTorch twin at one thread, prints the ratios
#include <benchmark/benchmark.h>

#include <fmt/format.h>

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/determinism.h"
#include "engine/device.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/ops_grpo.h"
#include "engine/optim.h"
#include "engine/step_graph.h"
#include "model/config.h"
#include "model/deepseek_v3.h"
#include "rl/generate.h"
#include "rl/grpo.h"

namespace r1 {
namespace {

std::string g_config = std::string(R1_SOURCE_DIR) + "/configs/tiny.json";
Device g_device = Device::cpu();
DType g_dtype = DType::F32;
bool g_fp8 = false;  // --precision fp8: the config's linear layers in FP8 (linear_fp8)

// The fixed work (scripts/bench_rl_torch.py has the same numbers).
constexpr int64_t kQuestions = 16, kSamplesPerQuestion = 8;  // Q, G
constexpr int64_t kPromptLen = 40, kNewTokens = 64;
constexpr int64_t kSequences = kQuestions * kSamplesPerQuestion;
constexpr uint64_t kInitSeed = 1, kPromptSeed = 2, kCompletionSeed = 3, kAdvantageSeed = 4;
// GrpoConfig's defaults: the trainer's AdamW and clip range.
constexpr double kLearningRate = 1e-3, kAdamBeta2 = 0.99, kEpsilon = 0.2;

// The tiny model, every parameter but the router's selection bias trained (as the trainer).
DeepseekV3 make_model() {
  ModelConfig cfg = load_model_config(g_config);
  if (g_fp8) cfg.fp8 = true;
  ParamMap p = DeepseekV3::init_params(cfg, kInitSeed, g_dtype);
  for (auto& [name, t] : p) {
    if (!g_device.is_cpu()) t = t.to(g_device);
    if (name.find("e_score_correction_bias") == std::string::npos) t.set_requires_grad();
  }
  return DeepseekV3(cfg, std::move(p), kPromptLen + kNewTokens);
}

// rows x len random token ids in [0, vocab).
std::vector<std::vector<int32_t>> random_tokens(int64_t rows, int64_t len, int64_t vocab,
                                                uint64_t seed) {
  const std::vector<int64_t> flat = Tensor::randint({rows, len}, seed, 0, vocab).to_int_vector();
  std::vector<std::vector<int32_t>> out(static_cast<size_t>(rows));
  for (int64_t r = 0; r < rows; ++r)
    out[r].assign(flat.begin() + r * len, flat.begin() + (r + 1) * len);
  return out;
}

void BM_Sampling(benchmark::State& st) {
  DeepseekV3 model = make_model();
  const auto prompts =
      random_tokens(kQuestions, kPromptLen, model.config().vocab_size, kPromptSeed);
  rl::GenerationConfig gc;
  gc.max_new_tokens = kNewTokens;
  gc.sampling.temperature = 1.0f;
  gc.seed = 5;
  gc.decode = static_cast<rl::DecodeMode>(st.range(0));
  rl::GenerationStats gs;
  rl::generate(model, prompts, kSamplesPerQuestion, gc, 0, &gs);  // warm-up
  double prefill_s = 0, decode_s = 0;
  for (auto _ : st) {
    rl::generate(model, prompts, kSamplesPerQuestion, gc, 0, &gs);
    prefill_s += gs.prefill_s;
    decode_s += gs.decode_s;
  }
  if (gs.generated_tokens != kSequences * kNewTokens)
    st.SkipWithError("generate did not produce exactly Q * G * 64 tokens");
  const double n = static_cast<double>(st.iterations());
  st.counters["generated_tokens/s"] = benchmark::Counter(
      static_cast<double>(gs.generated_tokens), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["prefill_ms"] = prefill_s / n * 1e3;
  st.counters["decode_ms"] = decode_s / n * 1e3;
  st.counters["decode_step_us"] = decode_s / n / static_cast<double>(gs.decode_steps) * 1e6;
  st.SetLabel(fmt::format("Q=16 G=8 prompt 40 new 64, {} {}{} {}", g_device.str(),
                          dtype_name(g_dtype), g_fp8 ? " fp8" : "",
                          rl::decode_mode_name(gs.decode)));
}

void BM_GrpoUpdate(benchmark::State& st) {
  const bool invariant = st.range(0) != 0, share = st.range(1) != 0;
  DeepseekV3 model = make_model();
  const int64_t V = model.config().vocab_size;
  // The G samples of a question share its prompt, as in a rollout batch.
  const auto questions = random_tokens(kQuestions, kPromptLen, V, kPromptSeed);
  std::vector<std::vector<int32_t>> prompts;
  for (int64_t k = 0; k < kSequences; ++k) prompts.push_back(questions[k / kSamplesPerQuestion]);
  const auto completions = random_tokens(kSequences, kNewTokens, V, kCompletionSeed);
  const int64_t N = kSequences * kNewTokens;
  std::vector<int64_t> seq_ids(static_cast<size_t>(N));
  for (int64_t t = 0; t < N; ++t) seq_ids[t] = t / kNewTokens;
  const Tensor seq = Tensor::from_vector(seq_ids, {N});
  const Tensor mask = Tensor::ones({N});
  const Tensor advantages = Tensor::randn({kSequences}, kAdvantageSeed);
  GrpoObjectiveOptions oo;
  oo.epsilon_low = oo.epsilon_high = kEpsilon;
  oo.num_sequences = kSequences;
  AdamW opt(model.trainable(), {.lr = kLearningRate, .beta2 = kAdamBeta2, .weight_decay = 0.0});
  BatchInvariantScope scope(invariant);
  double loss = 0;
  auto update = [&] {
    const TokenLogprobs tl =
        rl::completion_logprobs(model, prompts, completions, 1.0, /*pad_id=*/0, share);
    const GrpoObjective obj =
        grpo_objective(tl.logp, tl.logp.detach(), Tensor(), advantages, seq, mask, oo);
    backward(obj.loss);
    opt.step();
    opt.zero_grad();
    loss = obj.loss.item();
  };
  update();  // warm-up
  for (auto _ : st) update();
  const double forward_positions = static_cast<double>(kSequences * (kPromptLen + kNewTokens - 1));
  st.counters["trained_tokens/s"] =
      benchmark::Counter(static_cast<double>(N), benchmark::Counter::kIsIterationInvariantRate);
  st.counters["total_tokens/s"] =
      benchmark::Counter(forward_positions, benchmark::Counter::kIsIterationInvariantRate);
  st.counters["loss"] = loss;
  st.SetLabel(std::string(invariant ? "batch invariant" : "openblas") +
              (share ? ", prompt shared" : ", prompt per sample"));
}

}  // namespace
}  // namespace r1

int main(int argc, char** argv) {
  std::vector<char*> rest = {argv[0]};
  for (int i = 1; i < argc; ++i) {
    if (std::strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
      r1::g_config = argv[++i];
    } else if (std::strcmp(argv[i], "--device") == 0 && i + 1 < argc) {
      try {
        r1::g_device = r1::device_from_flag(argv[++i]);
      } catch (const r1::InputError& e) {
        std::fprintf(stderr, "bench_rl: %s\n", e.what());
        return 2;
      }
    } else if (std::strcmp(argv[i], "--dtype") == 0 && i + 1 < argc) {
      const std::string d = argv[++i];
      if (d != "f32" && d != "bf16") {
        std::fprintf(stderr, "bench_rl: --dtype %s: f32 or bf16\n", d.c_str());
        return 2;
      }
      r1::g_dtype = d == "bf16" ? r1::DType::BF16 : r1::DType::F32;
    } else if (std::strcmp(argv[i], "--precision") == 0 && i + 1 < argc) {
      const std::string pr = argv[++i];
      if (pr != "fp8" && pr != "default") {
        std::fprintf(stderr, "bench_rl: --precision %s: default or fp8\n", pr.c_str());
        return 2;
      }
      r1::g_fp8 = pr == "fp8";
    } else {
      rest.push_back(argv[i]);
    }
  }
  int n = static_cast<int>(rest.size());
  benchmark::Initialize(&n, rest.data());
  if (benchmark::ReportUnrecognizedArguments(n, rest.data())) return 1;
  using r1::rl::DecodeMode;
  for (DecodeMode m : {DecodeMode::kEager, DecodeMode::kStatic, DecodeMode::kGraphs}) {
    if (m == DecodeMode::kGraphs && !r1::StepGraph::supported(r1::g_device)) continue;
    const std::string name = std::string("Sampling/") + r1::rl::decode_mode_name(m);
    benchmark::RegisterBenchmark(name.c_str(), r1::BM_Sampling)
        ->Arg(static_cast<int64_t>(m))->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(3.0);
  }
  if (r1::g_device.is_cpu())
    benchmark::RegisterBenchmark("GrpoUpdate", r1::BM_GrpoUpdate)
        ->Args({1, 1})->Args({1, 0})->Args({0, 1})->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(3.0);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
