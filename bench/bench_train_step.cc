// One CPU training step (forward, backward, AdamW) of a small transformer-like stack built
// from engine ops, the same stack as scripts/bench_train_step_torch.py builds in PyTorch:
//
//   x = embedding(ids)                                   ids (B, T), table (V, D)
//   L times:  x = x + W_o(W_qkv(rmsnorm(x)))             W_qkv (3D, D), W_o (D, 3D)
//             h = rmsnorm(x)
//             x = x + W_down(swiglu(W_gate h, W_up h))   W_gate, W_up (F, D), W_down (D, F)
//   loss = cross_entropy(W_lm(rmsnorm(x)), targets)      W_lm (V, D)
//
// There is no attention (the QKV projection feeds the output projection directly): the point
// is the engine's per-op and GEMM overhead on training shapes, not attention.
//
//   ./build/bin/bench_train_step [--dim 256] [--hidden 768] [--vocab 2048] [--layers 4]
//                                [--batch 8] [--seq 128] [benchmark flags]
//   scripts/bench-train-step.sh [threads]     runs this and the PyTorch script, prints the ratio
#include <benchmark/benchmark.h>

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/ops.h"
#include "engine/optim.h"
#include "engine/tensor.h"

namespace r1 {
namespace {

struct StackConfig {
  int64_t dim = 256;
  int64_t hidden = 768;
  int64_t vocab = 2048;
  int64_t layers = 4;
  int64_t batch = 8;
  int64_t seq = 128;
};
StackConfig g_cfg;

struct Layer {
  Tensor norm1, w_qkv, w_o, norm2, w_gate, w_up, w_down;
};

struct Stack {
  Tensor embed, final_norm, lm_head;
  std::vector<Layer> layers;

  std::vector<Tensor> params() const {
    std::vector<Tensor> p = {embed, final_norm, lm_head};
    for (const Layer& l : layers)
      p.insert(p.end(), {l.norm1, l.w_qkv, l.w_o, l.norm2, l.w_gate, l.w_up, l.w_down});
    return p;
  }
};

constexpr double kInitStd = 0.02;
constexpr double kNormEps = 1e-6;

Tensor param(const Shape& shape, uint64_t seed) {
  return Tensor::randn(shape, seed, DType::F32, Device::cpu(), kInitStd).set_requires_grad();
}
Tensor norm_weight(int64_t d) { return Tensor::ones({d}).set_requires_grad(); }

Stack make_stack(const StackConfig& c) {
  uint64_t seed = 1000;
  Stack s;
  s.embed = param({c.vocab, c.dim}, ++seed);
  for (int64_t i = 0; i < c.layers; ++i) {
    s.layers.push_back({norm_weight(c.dim), param({3 * c.dim, c.dim}, ++seed),
                        param({c.dim, 3 * c.dim}, ++seed), norm_weight(c.dim),
                        param({c.hidden, c.dim}, ++seed), param({c.hidden, c.dim}, ++seed),
                        param({c.dim, c.hidden}, ++seed)});
  }
  s.final_norm = norm_weight(c.dim);
  s.lm_head = param({c.vocab, c.dim}, ++seed);
  return s;
}

// ids, targets (B, T) i64 -> scalar loss.
Tensor forward(const Stack& s, const Tensor& ids, const Tensor& targets) {
  Tensor x = embedding(ids, s.embed);  // (B, T, D)
  for (const Layer& l : s.layers) {
    x = x + linear(linear(rmsnorm(x, l.norm1, kNormEps), l.w_qkv), l.w_o);
    const Tensor h = rmsnorm(x, l.norm2, kNormEps);
    x = x + linear(swiglu(linear(h, l.w_gate), linear(h, l.w_up)), l.w_down);
  }
  const Tensor logits = linear(rmsnorm(x, s.final_norm, kNormEps), s.lm_head);  // (B, T, V)
  const int64_t n = ids.numel();
  return cross_entropy(logits.view({n, -1}), targets.view({n}));
}

void BM_TrainStep(benchmark::State& state) {
  const StackConfig& c = g_cfg;
  Stack s = make_stack(c);
  AdamW opt(s.params(), AdamWConfig{});
  const Tensor ids = Tensor::randint({c.batch, c.seq}, 7, 0, c.vocab);
  const Tensor targets = Tensor::randint({c.batch, c.seq}, 8, 0, c.vocab);
  double loss = 0;
  for (auto _ : state) {
    opt.zero_grad();
    Tensor l = forward(s, ids, targets);
    backward(l);
    opt.step();
    loss = l.item();
  }
  const double tokens = static_cast<double>(c.batch * c.seq);
  state.counters["tokens/s"] =
      benchmark::Counter(tokens, benchmark::Counter::kIsIterationInvariantRate);
  state.counters["loss"] = loss;
  state.SetLabel("dim " + std::to_string(c.dim) + " hidden " + std::to_string(c.hidden) +
                 " vocab " + std::to_string(c.vocab) + " layers " + std::to_string(c.layers) +
                 " batch " + std::to_string(c.batch) + " seq " + std::to_string(c.seq));
}
BENCHMARK(BM_TrainStep)->UseRealTime()->Unit(benchmark::kMillisecond)->MinTime(2.0);

// Takes "--name value" for the stack's sizes out of argv (the rest goes to the benchmark).
void parse_stack_flags(int* argc, char** argv) {
  struct Flag {
    const char* name;
    int64_t* value;
  } flags[] = {{"--dim", &g_cfg.dim},       {"--hidden", &g_cfg.hidden},
               {"--vocab", &g_cfg.vocab},   {"--layers", &g_cfg.layers},
               {"--batch", &g_cfg.batch},   {"--seq", &g_cfg.seq}};
  int out = 1;
  for (int i = 1; i < *argc; ++i) {
    bool taken = false;
    for (const Flag& f : flags) {
      if (std::strcmp(argv[i], f.name) == 0 && i + 1 < *argc) {
        *f.value = std::atoll(argv[++i]);
        taken = true;
        break;
      }
    }
    if (!taken) argv[out++] = argv[i];
  }
  *argc = out;
}

}  // namespace
}  // namespace r1

int main(int argc, char** argv) {
  r1::parse_stack_flags(&argc, argv);
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
