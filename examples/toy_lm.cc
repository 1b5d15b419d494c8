// r1-toy-lm: trains a tiny byte-level language model built from engine ops on generated
// arithmetic text ("123+45=168\n"), on the CPU or a GPU (--device), and writes metrics.jsonl. It is the most
// complete job the engine can do before the model and stage binaries exist: a
// fixed-window (Bengio-style) LM, the transformer's MLP half, no attention yet.
//
// Model (B batch, T positions, W window, D dim, F hidden, V = 256 bytes):
//   e = embedding(ids) (B, T+W-1, D); x = linear(concat of W shifted windows) (B, T, D)
//   L x [ x = x + down(swiglu(gate(rmsnorm(x)), up(rmsnorm(x)))) ]
//   logits = lm_head(rmsnorm(x)) (B*T, V); loss = cross_entropy(logits, next bytes)
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <string>
#include <vector>

#include "engine/autograd.h"
#include "engine/metrics.h"
#include "engine/ops.h"
#include "engine/ops_fp8.h"
#include "engine/optim.h"
#include "engine/rng.h"

namespace {

struct Options {
  int64_t steps = 300, batch = 16, seq = 64, dim = 64, hidden = 192, layers = 2, window = 8;
  double lr = 3e-3, weight_decay = 0.01, clip = 1.0;
  // Cosine decay of the learning rate from lr to lr * min_lr_ratio over the steps (1: constant,
  // the default). A decayed end is the usual schedule (the V3 report's runs decay too), and it
  // narrows the band in which two runs that rounding has sent apart end up.
  double min_lr_ratio = 1.0;
  uint64_t seed = 1;
  std::string out = "runs/toy-lm";
  std::string device = "cpu";  // "cpu" or "cuda[:i]": the same code on either backend
  // "f32"; "bf16": linear layers run bf16 GEMMs with fp32 accumulation (linear_bf16, FP8's
  // baseline); "fp8": FP8 GEMMs (linear_fp8). engine/ops_fp8.h.
  std::string precision = "f32";
  // fp8: the output head in FP8 too. Off by default: DeepSeek-V3's recipe keeps the output
  // head (with the embedding, norms and attention) in the baseline's precision (arXiv
  // 2412.19437 sec. 3.3.1), so under fp8 the head runs linear_bf16, as in the bf16 run.
  bool fp8_head = false;
  // fp8 ablation: "weights" or "acts" quantizes only that operand of each FP8 layer (its
  // 128x128-block or 1x128-tile e4m3 values, straight-through: the gradient passes as if
  // unquantized) and runs the rest as the bf16 layer does; "" (default): the whole recipe.
  std::string fp8_only;
};

// A stream of "a+b=c\n" lines keyed by (seed, line number): deterministic, resumable.
std::string arithmetic_text(uint64_t seed, int64_t first_line, int64_t min_bytes) {
  std::string s;
  for (int64_t line = first_line; static_cast<int64_t>(s.size()) < min_bytes; ++line) {
    const r1::Philox4x32 b = r1::philox_bits(seed, 7, static_cast<uint64_t>(line));
    const int64_t a = b.v[0] % 1000, c = b.v[1] % 1000;
    s += fmt::format("{}+{}={}\n", a, c, a + c);
  }
  return s;
}

struct Model {
  r1::Tensor emb, proj;
  std::vector<r1::Tensor> norm, gate, up, down;
  r1::Tensor final_norm, head;
  std::vector<r1::Tensor> params() const {
    std::vector<r1::Tensor> p = {emb, proj, final_norm, head};
    for (size_t i = 0; i < norm.size(); ++i) p.insert(p.end(), {norm[i], gate[i], up[i], down[i]});
    return p;
  }
};

// Parameters are drawn on the CPU and moved, so a CUDA run starts from the CPU run's weights.
r1::Tensor param(const r1::Shape& s, uint64_t seed, double std, r1::Device dev) {
  return r1::Tensor::randn(s, seed, r1::DType::F32, r1::Device::cpu(), std).to(dev)
      .set_requires_grad();
}

Model init_model(const Options& o, r1::Device dev) {
  Model m;
  auto param = [dev](const r1::Shape& s, uint64_t seed, double std) {
    return ::param(s, seed, std, dev);
  };
  auto ones = [dev](int64_t n) { return r1::Tensor::ones({n}, r1::DType::F32, dev).set_requires_grad(); };
  uint64_t k = o.seed * 1000;
  const double d = static_cast<double>(o.dim);
  m.emb = param({256, o.dim}, ++k, 0.5);
  m.proj = param({o.dim, o.window * o.dim}, ++k, 1.0 / std::sqrt(o.window * d));
  for (int64_t l = 0; l < o.layers; ++l) {
    m.norm.push_back(ones(o.dim));
    m.gate.push_back(param({o.hidden, o.dim}, ++k, 1.0 / std::sqrt(d)));
    m.up.push_back(param({o.hidden, o.dim}, ++k, 1.0 / std::sqrt(d)));
    m.down.push_back(param({o.dim, o.hidden}, ++k, 0.5 / std::sqrt(static_cast<double>(o.hidden))));
  }
  m.final_norm = ones(o.dim);
  m.head = param({256, o.dim}, ++k, 1.0 / std::sqrt(d));
  return m;
}

// ids (B, T+W-1) i64 -> logits (B*T, 256)
r1::Tensor forward(const Model& m, const Options& o, const r1::Tensor& ids) {
  const int64_t T = o.seq;
  // Every linear layer in FP8 or bf16 (fprop, dgrad, wgrad) when asked; the rest stays f32.
  // Under fp8 the output head is bf16 unless --fp8-head (Options::fp8_head).
  auto linear = [&o](const r1::Tensor& x, const r1::Tensor& w, bool head = false) {
    if (o.precision == "fp8" && !head && !o.fp8_only.empty()) {
      // q(v) with v's gradient: v + (q(v) - v), the difference detached.
      auto straight_through = [](const r1::Tensor& v, const r1::Tensor& q) {
        return r1::add(v, r1::sub(q, v.detach()));
      };
      if (o.fp8_only == "weights")
        return r1::linear_bf16(x, straight_through(w, r1::fp8_weight_as_used(w.detach())));
      const r1::Tensor xd = x.detach().contiguous();
      const r1::Tensor xq =
          r1::fp8_dequantize_rows(r1::fp8_quantize_rows(xd), xd.dtype()).reshape(xd.shape());
      return r1::linear_bf16(straight_through(x, xq), w);
    }
    if (o.precision == "fp8" && (!head || o.fp8_head)) return r1::linear_fp8(x, w);
    if (o.precision == "fp8" || o.precision == "bf16") return r1::linear_bf16(x, w);
    return r1::linear(x, w);
  };
  const r1::Tensor e = r1::embedding(ids, m.emb);  // (B, T+W-1, D)
  std::vector<r1::Tensor> windows;
  for (int64_t w = 0; w < o.window; ++w) windows.push_back(e.narrow(1, w, T));
  r1::Tensor x = linear(r1::concat(windows, 2), m.proj);  // (B, T, D)
  for (size_t l = 0; l < m.norm.size(); ++l) {
    const r1::Tensor h = r1::rmsnorm(x, m.norm[l], 1e-6);
    x = r1::add(x, linear(r1::swiglu(linear(h, m.gate[l]), linear(h, m.up[l])), m.down[l]));
  }
  return linear(r1::rmsnorm(x, m.final_norm, 1e-6), m.head, true).reshape({-1, 256});
}

// Batch `step`: B windows of T+W bytes from the text stream.
void make_batch(const Options& o, int64_t step, r1::Device dev, r1::Tensor* ids,
                r1::Tensor* targets) {
  const int64_t span = o.seq + o.window;  // W-1 context bytes, T inputs, 1 extra target
  const std::string text = arithmetic_text(o.seed, step * o.batch * span / 8, o.batch * span);
  std::vector<int64_t> in, tg;
  for (int64_t b = 0; b < o.batch; ++b) {
    const char* p = text.data() + b * span;
    for (int64_t t = 0; t < o.seq + o.window - 1; ++t) in.push_back(static_cast<unsigned char>(p[t]));
    for (int64_t t = 0; t < o.seq; ++t)
      tg.push_back(static_cast<unsigned char>(p[t + o.window]));
  }
  *ids = r1::Tensor::from_vector(in, {o.batch, o.seq + o.window - 1}).to(dev);
  *targets = r1::Tensor::from_vector(tg, {o.batch * o.seq}).to(dev);
}

int run(const Options& o) {
  const r1::Device dev = r1::device_from_flag(o.device);
  std::filesystem::create_directories(o.out);
  Model m = init_model(o, dev);
  std::vector<r1::Tensor> params = m.params();
  int64_t n_params = 0;
  for (const r1::Tensor& p : params) n_params += p.numel();
  fmt::print(stderr, "r1-toy-lm: {} parameters on {} ({}{}), {} steps of {}x{} tokens, out {}\n",
             n_params, dev.str(), o.precision,
             o.precision == "fp8" ? (o.fp8_head ? ", fp8 head" : ", bf16 head") : "", o.steps,
             o.batch, o.seq, o.out);
  r1::AdamW opt(params, {.lr = o.lr, .weight_decay = o.weight_decay});
  r1::MetricsWriter metrics(o.out + "/metrics.jsonl", false);
  r1::Progress progress("toy-lm", o.steps);
  for (int64_t step = 1; step <= o.steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    r1::Tensor ids, targets;
    make_batch(o, step, dev, &ids, &targets);
    const double t = o.steps > 1 ? static_cast<double>(step - 1) / static_cast<double>(o.steps - 1) : 0.0;
    opt.config().lr = o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + std::cos(M_PI * t)));
    const r1::Tensor loss = r1::cross_entropy(forward(m, o, ids), targets);
    r1::backward(loss);
    const double norm = r1::clip_grad_norm(params, o.clip);
    opt.step();
    opt.zero_grad();
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const double l = loss.item();
    metrics.write({{"step", step}, {"loss", l}, {"grad_norm", norm}, {"lr", opt.config().lr},
                   {"step_time_s", dt},
                   {"tokens_per_s", o.batch * o.seq / dt}});
    progress.update(step, fmt::format("loss {:.4f}  {:.0f} tok/s", l, o.batch * o.seq / dt));
  }
  progress.finish();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"r1-toy-lm: train a tiny byte-level MLP language model on the CPU"};
  app.add_option("--steps", o.steps, "training steps")->check(CLI::PositiveNumber);
  app.add_option("--batch", o.batch, "sequences per step")->check(CLI::PositiveNumber);
  app.add_option("--seq", o.seq, "positions per sequence")->check(CLI::PositiveNumber);
  app.add_option("--dim", o.dim, "model width")->check(CLI::PositiveNumber);
  app.add_option("--hidden", o.hidden, "SwiGLU hidden width")->check(CLI::PositiveNumber);
  app.add_option("--layers", o.layers, "MLP blocks")->check(CLI::NonNegativeNumber);
  app.add_option("--window", o.window, "context bytes per prediction")->check(CLI::PositiveNumber);
  app.add_option("--lr", o.lr, "AdamW learning rate")->check(CLI::PositiveNumber);
  app.add_option("--min-lr-ratio", o.min_lr_ratio,
                 "cosine decay to lr * this at the last step (1: constant lr)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--seed", o.seed, "data and init seed");
  app.add_option("--out", o.out, "run directory (metrics.jsonl)");
  app.add_option("--device", o.device, "cpu or cuda[:index]");
  app.add_option("--precision", o.precision, "f32, bf16 (bf16 linear layers) or fp8 (FP8 linear layers)")
      ->check(CLI::IsMember({"f32", "bf16", "fp8"}));
  app.add_option("--fp8-only", o.fp8_only,
                 "with --precision fp8, an ablation: quantize only the weights or only the "
                 "activations (straight-through), the rest as bf16")
      ->check(CLI::IsMember({"weights", "acts"}));
  app.add_flag("--fp8-head", o.fp8_head,
               "with --precision fp8, the output head in FP8 too (default: bf16, as DeepSeek-V3)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "r1-toy-lm: %s\n", e.what());
    return 2;
  }
  if ((o.fp8_head || !o.fp8_only.empty()) && o.precision != "fp8") {
    std::fprintf(stderr, "r1-toy-lm: --fp8-head and --fp8-only need --precision fp8\n");
    return 2;
  }
  try {
    return run(o);
  } catch (const r1::InputError& e) {
    std::fprintf(stderr, "r1-toy-lm: %s\n", e.what());
    return 2;
  }
}
