// One CPU training step (forward, cross-entropy, backward, AdamW) of the configs/ presets —
// the DeepSeek-V3 tiny model (MLA, MoE) and the dense Qwen2 student — the same step that
// scripts/bench_model_step_torch.py runs with the PyTorch reference models
// (scripts/reference) in eager mode. scripts/bench-model-step.sh runs both at one thread
// count and prints the ratio.
//
//   ./build/bin/bench_model_step [--config configs/tiny.json] [--batch 8] [--seq 64]
//                                [--precision default|fp8|bf16] [--experts grouped|per-expert]
//                                [benchmark flags]
// --precision overrides the config's (DeepSeek-V3 only); --experts per-expert runs fp8's
// routed experts as one linear_fp8 each instead of grouped layers (the same bits).
#include <benchmark/benchmark.h>

#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "model/config.h"
#include "model/deepseek_v3.h"
#include "model/dense.h"

namespace r1 {
namespace {

std::string g_config = std::string(R1_SOURCE_DIR) + "/configs/tiny.json";
int64_t g_batch = 8, g_seq = 64;
std::string g_precision, g_experts = "grouped";

// The model behind one interface: forward to logits (B, T, V) and its trainable tensors.
struct AnyModel {
  std::unique_ptr<DeepseekV3> v3;
  std::unique_ptr<DenseModel> dense;
  Tensor logits(const Tensor& ids) {
    return v3 ? v3->forward(ids).logits : dense->forward(ids).logits;
  }
  std::vector<Tensor> trainable() const { return v3 ? v3->trainable() : dense->trainable(); }
};

void BM_ModelStep(benchmark::State& st) {
  ModelConfig cfg = load_model_config(g_config);
  if (!g_precision.empty()) {
    cfg.fp8 = g_precision == "fp8";
    cfg.bf16_linear = g_precision == "bf16";
  }
  cfg.fp8_grouped_experts = g_experts == "grouped";
  AnyModel m;
  if (cfg.is_deepseek()) {
    ParamMap p = DeepseekV3::init_params(cfg, 1);
    for (auto& [name, t] : p)  // the router's selection bias is not trained by gradient
      if (name.find("e_score_correction_bias") == std::string::npos) t.set_requires_grad();
    m.v3 = std::make_unique<DeepseekV3>(cfg, std::move(p), g_seq);
  } else {
    m.dense = std::make_unique<DenseModel>(cfg, DenseModel::init_params(cfg, 1), g_seq);
  }
  const std::vector<Tensor> params = m.trainable();
  AdamW opt(params, {.lr = 1e-3, .weight_decay = 0.0});
  const Tensor ids = Tensor::randint({g_batch, g_seq}, 2, 0, cfg.vocab_size);
  const Tensor targets = Tensor::randint({g_batch * g_seq}, 3, 0, cfg.vocab_size);
  double loss = 0;
  for (auto _ : st) {
    const Tensor l = cross_entropy(m.logits(ids).view({g_batch * g_seq, cfg.vocab_size}),
                                   targets);
    backward(l);
    opt.step();
    opt.zero_grad();
    loss = l.item();
  }
  st.counters["tokens/s"] = benchmark::Counter(static_cast<double>(g_batch * g_seq),
                                               benchmark::Counter::kIsIterationInvariantRate);
  st.counters["loss"] = loss;
  const std::string prec = cfg.fp8 ? (cfg.fp8_grouped_experts ? " fp8 (grouped experts)"
                                                                : " fp8 (per-expert)")
                           : cfg.bf16_linear ? " bf16" : "";
  st.SetLabel(cfg.model_type + " " + std::to_string(cfg.num_parameters()) + " params, B=" +
              std::to_string(g_batch) + " T=" + std::to_string(g_seq) + prec);
}

}  // namespace
}  // namespace r1

int main(int argc, char** argv) {
  std::vector<char*> rest = {argv[0]};
  for (int i = 1; i < argc; ++i) {
    auto value = [&](const char* flag) -> const char* {
      return std::strcmp(argv[i], flag) == 0 && i + 1 < argc ? argv[++i] : nullptr;
    };
    if (const char* v = value("--config")) r1::g_config = v;
    else if (const char* v2 = value("--batch")) r1::g_batch = std::atoll(v2);
    else if (const char* v3 = value("--seq")) r1::g_seq = std::atoll(v3);
    else if (const char* v4 = value("--precision")) r1::g_precision = v4;
    else if (const char* v5 = value("--experts")) r1::g_experts = v5;
    else rest.push_back(argv[i]);
  }
  if ((!r1::g_precision.empty() && r1::g_precision != "default" && r1::g_precision != "fp8" &&
       r1::g_precision != "bf16") ||
      (r1::g_experts != "grouped" && r1::g_experts != "per-expert")) {
    std::fprintf(stderr, "bench_model_step: --precision default|fp8|bf16, --experts "
                 "grouped|per-expert (got '%s', '%s')\n", r1::g_precision.c_str(),
                 r1::g_experts.c_str());
    return 2;
  }
  int n = static_cast<int>(rest.size());
  benchmark::Initialize(&n, rest.data());
  benchmark::RegisterBenchmark("ModelStep", r1::BM_ModelStep)
      ->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
