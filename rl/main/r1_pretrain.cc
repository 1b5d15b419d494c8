// r1-pretrain: the base model for tiny R1-Zero runs (tiny models have no downloadable base).
// Generates the synthetic corpus (data/corpus.h: worked task solutions in English and
// Chinese, general text, and, as configured, R1-Zero-format conversations and wrong work),
// trains a byte-level BPE tokenizer on it (or loads one), packs documents into rows, and
// trains a DeepSeek-V3 config (MLA + MoE) with next-token cross-entropy, AdamW, warmup +
// cosine decay, gradient clipping, the sequence-wise balance loss and the auxiliary-loss-free
// router bias update. Writes metrics.jsonl, a progress line, and out/checkpoint (HF config +
// model.safetensors + tokenizer.json + trainer state); rerunning with the same out resumes
// from the checkpoint and reproduces the uninterrupted run bit for bit.
//   r1-pretrain --config configs/tiny.json --out runs/r1-zero/base --steps 1500 [--device cuda]
// --device: where the model trains (the corpus, tokenizer and batches are made on the host);
// the same initial weights and batches on every device (init_params draws per-tensor Philox
// streams on the host), so a CUDA run can be held against the CPU's step for step.
// Bad input: one line "r1-pretrain: <file or flag>: <problem>" and exit code 2.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "data/corpus.h"
#include "data/dataset.h"
#include "data/pretokenize.h"
#include "data/templates.h"
#include "data/tokenizer.h"
#include "engine/autograd.h"
#include "engine/metrics.h"
#include "engine/ops.h"
#include "engine/ops_moe.h"
#include "engine/optim.h"
#include "model/config.h"
#include "model/deepseek_v3.h"
#include "rl/run_state.h"

namespace {

using namespace r1;
using nlohmann::json;

struct Options {
  std::string config = "configs/tiny.json", out = "runs/r1-zero/base", tokenizer, holdout;
  std::string device = "cpu";
  int64_t steps = 1500, batch = 16, seq = 256, docs = 30000, warmup = 50, save_every = 200;
  // Rows of the packed corpus held out of training (its last val_rows: documents drawn at
  // random by the packing order), whose mean token loss is logged as val_loss every val_every
  // steps and at the last step; 0: none (every row trains).
  int64_t val_rows = 0, val_every = 100;
  // Every shadow_fp8_every steps (and at the first and the last), the step's batch through a
  // second model over the same parameter tensors with the projections in fp8 (forward only,
  // before the update): its loss is logged as shadow_fp8_loss beside loss. FP8's arithmetic
  // cost at the weights the run has reached, free of the trajectory drift that separates two
  // runs; 0: off. shadow_bf16_every: the same with bf16 projections (shadow_bf16_loss), for an
  // f32 run: the yardstick of what a change of rounding does at the same weights, and with
  // both, fp8 against bf16 at the same weights (the FP8 issue's comparison, paired).
  int64_t shadow_fp8_every = 0, shadow_bf16_every = 0;
  double lr = 3e-3, min_lr_ratio = 0.1, weight_decay = 0.1, clip = 1.0, bias_gamma = 1e-3;
  double balance_alpha = 1e-3;  // DeepSeek-V3 config.json aux_loss_alpha (sequence-wise)
  uint64_t seed = 1;
  std::string tasks = "countdown,ordering,list", difficulty = "1";
  bool single_digits = true;  // the trained tokenizer splits numbers digit by digit
  bool han_chars = false;     // ... and Chinese text character by character
  std::string precision;      // "fp8", "bf16" or "default": overrides the model config's
  // Projections kept out of FP8 wherever this run uses it (the run at --precision fp8, or its
  // fp8 shadow): comma-separated substrings of parameter names (ModelConfig::fp8_keep).
  std::string fp8_keep;
  double general_share = 0.05, chinese_share = 0.2, r1_format_share = 0.5, wrong_share = 0.3,
         careful_share = 0.0;
};

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  size_t start = 0;
  for (size_t k; (k = s.find(',', start)) != std::string::npos; start = k + 1)
    if (k > start) out.push_back(s.substr(start, k - start));
  if (start < s.size()) out.push_back(s.substr(start));
  return out;
}

// The share of (token, MoE layer) pairs whose set of chosen experts differs between two
// forwards of one batch (routing: per MoE layer, (tokens, top_k) i64); NaN without MoE layers.
double routing_difference(const std::vector<Tensor>& a, const std::vector<Tensor>& b) {
  if (a.empty() || a.size() != b.size()) return std::nan("");
  int64_t differ = 0, pairs = 0;
  for (size_t l = 0; l < a.size(); ++l) {
    const int64_t k = a[l].size(-1);
    std::vector<int64_t> x = a[l].to_int_vector(), y = b[l].to_int_vector();
    if (k <= 0 || x.size() != y.size()) continue;
    for (size_t t = 0; t + static_cast<size_t>(k) <= x.size(); t += static_cast<size_t>(k)) {
      std::sort(x.begin() + static_cast<std::ptrdiff_t>(t), x.begin() + static_cast<std::ptrdiff_t>(t) + k);
      std::sort(y.begin() + static_cast<std::ptrdiff_t>(t), y.begin() + static_cast<std::ptrdiff_t>(t) + k);
      differ += !std::equal(x.begin() + static_cast<std::ptrdiff_t>(t),
                            x.begin() + static_cast<std::ptrdiff_t>(t) + k,
                            y.begin() + static_cast<std::ptrdiff_t>(t));
      ++pairs;
    }
  }
  return pairs > 0 ? static_cast<double>(differ) / static_cast<double>(pairs) : std::nan("");
}

double lr_at(const Options& o, int64_t step) {
  if (step <= o.warmup) return o.lr * static_cast<double>(step) / static_cast<double>(o.warmup);
  const double t = static_cast<double>(step - o.warmup) / static_cast<double>(std::max<int64_t>(1, o.steps - o.warmup));
  return o.lr * (o.min_lr_ratio + (1 - o.min_lr_ratio) * 0.5 * (1 + std::cos(M_PI * std::min(1.0, t))));
}

int run(const Options& o) {
  namespace fs = std::filesystem;
  ModelConfig cfg = load_model_config(o.config);
  if (!o.precision.empty()) {
    cfg.fp8 = o.precision == "fp8";
    cfg.bf16_linear = o.precision == "bf16";
  }
  if ((cfg.fp8 || cfg.bf16_linear) && !cfg.is_deepseek())
    throw InputError(o.config + ": --precision " + o.precision +
                     " is implemented for the DeepSeek-V3 model only");
  if (o.shadow_fp8_every > 0 && (cfg.fp8 || !cfg.is_deepseek()))
    throw InputError(o.config + ": --shadow-fp8-every needs a DeepSeek-V3 model trained in "
                     "another precision than fp8 (--precision bf16 or default)");
  if (o.shadow_bf16_every > 0 && (cfg.fp8 || cfg.bf16_linear || !cfg.is_deepseek()))
    throw InputError(o.config + ": --shadow-bf16-every needs a DeepSeek-V3 model trained in "
                     "f32 (--precision default)");
  if (!o.fp8_keep.empty()) {
    if (!cfg.fp8 && o.shadow_fp8_every <= 0)
      throw InputError(o.config + ": --fp8-keep needs fp8 somewhere: --precision fp8 or "
                       "--shadow-fp8-every");
    cfg.fp8_keep = split_list(o.fp8_keep);
    // Every pattern must name some projection (a typo would silently ablate nothing).
    std::vector<std::string> names;
    for (const ParamSpec& s : parameter_specs(cfg)) names.push_back(s.name);
    for (const std::string& k : cfg.fp8_keep)
      if (std::none_of(names.begin(), names.end(), [&](const std::string& n) {
            return n.find(k) != std::string::npos && n.find("_proj") != std::string::npos;
          }))
        throw InputError(o.config + ": --fp8-keep " + k + " names no projection of the model");
  }
  const Device dev = device_from_flag(o.device);
  fs::create_directories(o.out);  // after the checks of the options: a refused run leaves nothing
  const std::string ckpt = o.out + "/checkpoint";
  const bool resume = rl::has_run_checkpoint(ckpt);

  // Corpus: a pure function of the options, regenerated on resume.
  data::CorpusOptions co;
  co.documents = o.docs;
  co.seed = o.seed;
  co.general_share = o.general_share;
  co.chinese_share = o.chinese_share;
  co.r1_format_share = o.r1_format_share;
  co.wrong_share = o.wrong_share;
  co.careful_share = o.careful_share;
  co.tasks = split_list(o.tasks);
  {
    const size_t dash = o.difficulty.find('-');
    try {
      co.min_difficulty = std::stoi(o.difficulty.substr(0, dash));
      co.max_difficulty = dash == std::string::npos ? co.min_difficulty : std::stoi(o.difficulty.substr(dash + 1));
    } catch (const std::logic_error&) {
      throw InputError(fmt::format("--difficulty {}: expected N or LO-HI", o.difficulty));
    }
  }
  std::vector<std::string> docs = data::generate_corpus(co);
  if (!o.holdout.empty()) {  // no held-out question may appear in the base's corpus
    std::vector<std::string> held;
    for (const data::PromptRecord& r : data::read_prompts(o.holdout)) held.push_back(r.prompt);
    const size_t before = docs.size();
    std::erase_if(docs, [&](const std::string& d) {
      for (const std::string& h : held)
        if (d.find(h) != std::string::npos) return true;
      return false;
    });
    fmt::print(stderr, "r1-pretrain: dropped {} corpus documents that contain a held-out question\n",
               before - docs.size());
  }

  // Tokenizer: from the checkpoint when resuming, else --tokenizer, else trained here.
  std::string tok_path = resume ? rl::resolve_run_checkpoint(ckpt) + "/tokenizer.json" : o.tokenizer;
  data::Tokenizer tok = [&] {
    if (!tok_path.empty()) return data::Tokenizer::from_file(tok_path);
    data::BpeTrainOptions bo;
    bo.vocab_size = static_cast<int>(cfg.vocab_size);
    bo.special_tokens = data::r1_special_tokens();
    bo.bos_token = data::kBos;
    if (o.single_digits) bo.split_regex = o.han_chars ? data::kDigitHanSplitRegex : data::kDigitSplitRegex;
    const auto t0 = std::chrono::steady_clock::now();
    data::Tokenizer t = data::train_bpe(docs, bo);
    fmt::print(stderr, "r1-pretrain: trained a {}-token BPE on {} documents in {:.1f}s\n",
               t.vocab_size(), docs.size(),
               std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
    return t;
  }();
  R1_INPUT_CHECK(tok.vocab_size() <= cfg.vocab_size, "{}: tokenizer has {} tokens, the model's vocab_size is {}",
                 o.config, tok.vocab_size(), cfg.vocab_size);
  if (tok.vocab_size() < cfg.vocab_size) {  // a small corpus gives fewer merges: every id decodes
    fmt::print(stderr, "r1-pretrain: vocab_size {} -> {} (the tokenizer's)\n", cfg.vocab_size, tok.vocab_size());
    cfg.vocab_size = tok.vocab_size();
  }
  const int32_t eos = *tok.token_to_id(data::kEos), pad = *tok.token_to_id(data::kPad);

  // Pack every document (BOS ... EOS) once; epoch e visits the rows in its own order.
  data::Packer packer(o.seq, pad);
  int64_t n_tokens = 0;
  for (size_t i : data::shuffled_order(docs.size(), o.seed, 0)) {
    std::vector<int32_t> ids = tok.encode(docs[i], true);
    ids.push_back(eos);
    n_tokens += static_cast<int64_t>(ids.size());
    packer.add(ids, std::vector<uint8_t>(ids.size(), 1));
  }
  const data::PackedBatch rows = packer.finish();
  fmt::print(stderr, "r1-pretrain: {} documents, {} tokens in {} rows of {} ({} truncated)\n",
             docs.size(), n_tokens, rows.rows, o.seq, packer.truncated());
  const int64_t train_rows = rows.rows - o.val_rows;
  R1_INPUT_CHECK(train_rows >= 1, "--val-rows {}: the corpus packs into {} rows of {}, and at least "
                 "one must remain for training", o.val_rows, rows.rows, o.seq);
  if (o.val_rows > 0)
    fmt::print(stderr, "r1-pretrain: {} rows train, {} held out (val_loss every {} steps)\n",
               train_rows, o.val_rows, o.val_every);

  ParamMap params = DeepseekV3::init_params(cfg, o.seed, DType::F32, dev);
  std::vector<Tensor> trainable;
  for (const ParamSpec& s : parameter_specs(cfg)) {
    Tensor& t = params.at(s.name);
    if (s.name.find("e_score_correction_bias") == std::string::npos) {
      t.set_requires_grad();
      trainable.push_back(t);
    }
  }
  DeepseekV3 model(cfg, params, o.seq);
  AdamW opt(trainable, {.lr = o.lr, .weight_decay = o.weight_decay});
  int64_t start = 0;
  if (resume) {
    const json st = rl::load_run_checkpoint(ckpt, cfg, model.params(), &opt);
    start = st.at("step").get<int64_t>();
    fmt::print(stderr, "r1-pretrain: resuming {} at step {}\n", ckpt, start);
  }
  // The shadows (--shadow-fp8-every, --shadow-bf16-every): the same parameter tensors (the
  // optimizer and the balancing bias update them in place, so they always see the run's
  // weights), the projections in fp8 or bf16.
  struct Shadow {
    std::string name;  // "fp8" or "bf16": the metric is shadow_<name>_loss
    int64_t every;
    std::unique_ptr<DeepseekV3> model;
  };
  std::vector<Shadow> shadows;
  for (const auto& [name, every] : {std::pair<std::string, int64_t>{"fp8", o.shadow_fp8_every},
                                    {"bf16", o.shadow_bf16_every}}) {
    if (every <= 0) continue;
    ModelConfig sc = cfg;
    sc.fp8 = name == "fp8";
    sc.bf16_linear = name == "bf16";
    shadows.push_back({name, every, std::make_unique<DeepseekV3>(sc, model.params(), o.seq)});
  }
  fmt::print(stderr, "r1-pretrain: {} parameters on {}, {} steps of {}x{} tokens, lr {}, out {}\n",
             cfg.num_parameters(), dev.str(), o.steps, o.batch, o.seq, o.lr, o.out);
  if (!cfg.fp8_keep.empty())
    fmt::print(stderr, "r1-pretrain: kept out of fp8: projections named *{}*\n",
               fmt::join(cfg.fp8_keep, "*, *"));

  if (resume) rl::truncate_metrics(o.out + "/metrics.jsonl", start);
  MetricsWriter metrics(o.out + "/metrics.jsonl", resume);
  Progress progress("pretrain", o.steps, start);
  std::vector<size_t> order;
  int64_t order_epoch = -1;
  const int64_t T = o.seq;
  // Row r of the packed corpus appended to a batch: tokens, positions, segments, next-token
  // targets (-100 where the loss mask is off).
  struct Batch {
    std::vector<int64_t> ids, pos, seg, tgt;
  };
  auto add_row = [&](Batch& b, int64_t r) {
    for (int64_t t = 0; t < T; ++t) {
      const int64_t i = r * T + t;
      b.ids.push_back(rows.tokens[i]);
      b.pos.push_back(rows.position[i]);
      b.seg.push_back(rows.segment[i]);
      b.tgt.push_back(t + 1 < T && rows.loss_mask[i + 1] ? rows.tokens[i + 1] : -100);
    }
  };
  // Mean cross-entropy per target token over the held-out rows, in batches of --batch rows.
  auto val_loss = [&] {
    NoGrad no_grad;
    double sum = 0;
    int64_t count = 0;
    for (int64_t r0 = train_rows; r0 < rows.rows; r0 += o.batch) {
      const int64_t n = std::min(o.batch, rows.rows - r0);
      Batch b;
      for (int64_t r = r0; r < r0 + n; ++r) add_row(b, r);
      const int64_t targets = std::count_if(b.tgt.begin(), b.tgt.end(), [](int64_t x) { return x >= 0; });
      if (targets == 0) continue;
      const DeepseekV3::Output out = model.forward(Tensor::from_vector(b.ids, {n, T}).to(dev),
                                                   Tensor::from_vector(b.pos, {n, T}).to(dev),
                                                   Tensor::from_vector(b.seg, {n, T}).to(dev));
      sum += cross_entropy(out.logits.view({n * T, cfg.vocab_size}),
                           Tensor::from_vector(b.tgt, {n * T}).to(dev)).item() *
             static_cast<double>(targets);
      count += targets;
    }
    return count > 0 ? sum / static_cast<double>(count) : std::nan("");
  };
  for (int64_t step = start + 1; step <= o.steps; ++step) {
    const auto t0 = std::chrono::steady_clock::now();
    Batch batch;
    for (int64_t b = 0; b < o.batch; ++b) {
      const int64_t g = (step - 1) * o.batch + b, epoch = g / train_rows;
      if (epoch != order_epoch) {
        order = data::shuffled_order(static_cast<size_t>(train_rows), o.seed, static_cast<uint64_t>(epoch));
        order_epoch = epoch;
      }
      add_row(batch, static_cast<int64_t>(order[static_cast<size_t>(g % train_rows)]));
    }
    const double lr = lr_at(o, step);
    opt.config().lr = lr;
    const Tensor segments = Tensor::from_vector(batch.seg, {o.batch, T}).to(dev);
    const Tensor ids = Tensor::from_vector(batch.ids, {o.batch, T}).to(dev);
    const Tensor positions = Tensor::from_vector(batch.pos, {o.batch, T}).to(dev);
    const Tensor targets = Tensor::from_vector(batch.tgt, {o.batch * T}).to(dev);
    DeepseekV3::Output out = model.forward(ids, positions, segments, true, o.balance_alpha);
    const Tensor ce = cross_entropy(out.logits.view({o.batch * T, cfg.vocab_size}), targets);
    const Tensor loss = out.balance_loss.defined() ? add(ce, out.balance_loss) : ce;
    // Per shadow on its steps: its loss, and the share of (token, MoE layer) pairs whose
    // chosen experts differ from the run's (the router sees the shadow's activations).
    struct ShadowResult {
      std::string name;
      double loss, route_diff;
    };
    std::vector<ShadowResult> shadow_results;
    for (const Shadow& sh : shadows) {
      if ((step - 1) % sh.every != 0 && step != o.steps) continue;
      NoGrad no_grad;  // the weights before this step's update, as `loss` saw them
      const DeepseekV3::Output so = sh.model->forward(ids, positions, segments);
      shadow_results.push_back(
          {sh.name, cross_entropy(so.logits.view({o.batch * T, cfg.vocab_size}), targets).item(),
           routing_difference(out.routing, so.routing)});
    }
    backward(loss);
    const double norm = clip_grad_norm(trainable, o.clip);
    opt.step();
    opt.zero_grad();
    // Auxiliary-loss-free balancing: nudge each MoE layer's selection bias by its load.
    double max_load_ratio = 0;
    for (int64_t i = 0, k = 0; i < cfg.num_hidden_layers; ++i) {
      if (!cfg.is_moe_layer(i)) continue;
      Tensor& bias = model.params().at(fmt::format("model.layers.{}.mlp.gate.e_score_correction_bias", i));
      moe_update_bias(bias, out.expert_load[k], o.bias_gamma);
      const std::vector<int64_t> load = out.expert_load[k++].to_int_vector();
      double total = 0, mx = 0;
      for (int64_t l : load) total += static_cast<double>(l), mx = std::max(mx, static_cast<double>(l));
      max_load_ratio = std::max(max_load_ratio, mx * static_cast<double>(load.size()) / std::max(1.0, total));
    }
    const double l = ce.item();  // on a GPU: after the step's work (the read waits for it)
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    json record = {{"step", step}, {"loss", l}, {"lr", lr}, {"grad_norm", norm},
                   {"max_expert_load_ratio", max_load_ratio}, {"step_time_s", dt},
                   {"tokens_per_s", static_cast<double>(o.batch * T) / dt}};
    std::string shown = fmt::format("loss {:.4f}", l);
    for (const ShadowResult& r : shadow_results) {
      record["shadow_" + r.name + "_loss"] = r.loss;
      if (!std::isnan(r.route_diff)) record["shadow_" + r.name + "_route_diff"] = r.route_diff;
      shown += fmt::format("  {} {:+.3f}%", r.name, 100.0 * (r.loss - l) / l);
    }
    if (o.val_rows > 0 && (step % o.val_every == 0 || step == o.steps)) {
      const double v = val_loss();
      record["val_loss"] = v;
      shown += fmt::format("  val {:.4f}", v);
    }
    metrics.write(record);
    progress.update(step, fmt::format("{}  {:.0f} tok/s", shown, static_cast<double>(o.batch * T) / dt));
    if (step % o.save_every == 0 || step == o.steps)
      rl::save_run_checkpoint(ckpt, cfg, model.params(), &opt, {{"step", step}, {"stage", "pretrain"}},
                              tok.to_json_string());
  }
  progress.finish();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"r1-pretrain: pretrain a tiny DeepSeek-V3 base on the synthetic corpus"};
  app.add_option("--config", o.config, "model config.json");
  app.add_option("--out", o.out, "run directory (metrics.jsonl, checkpoint/)");
  app.add_option("--holdout", o.holdout, "prompts JSONL whose questions the corpus must not contain");
  app.add_option("--device", o.device, "where the model trains: cpu or cuda[:i]");
  app.add_option("--tokenizer", o.tokenizer, "tokenizer.json (default: train one on the corpus)");
  app.add_option("--steps", o.steps, "optimizer steps")->check(CLI::PositiveNumber);
  app.add_option("--batch", o.batch, "rows per step")->check(CLI::PositiveNumber);
  app.add_option("--seq", o.seq, "tokens per row")->check(CLI::PositiveNumber);
  app.add_option("--docs", o.docs, "corpus documents")->check(CLI::PositiveNumber);
  app.add_option("--lr", o.lr, "peak learning rate")->check(CLI::PositiveNumber);
  app.add_option("--warmup", o.warmup, "warmup steps")->check(CLI::PositiveNumber);
  app.add_option("--weight-decay", o.weight_decay, "AdamW weight decay")->check(CLI::NonNegativeNumber);
  app.add_option("--save-every", o.save_every, "checkpoint interval")->check(CLI::PositiveNumber);
  app.add_option("--val-rows", o.val_rows,
                 "rows of --seq tokens held out of training (the packed corpus's last, random "
                 "documents); their mean loss is logged as val_loss (0: none)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--val-every", o.val_every, "val_loss interval in steps (and at the last step)")
      ->check(CLI::PositiveNumber);
  app.add_option("--shadow-fp8-every", o.shadow_fp8_every,
                 "every K steps (from the first, and at the last) the step's batch through the same "
                 "weights with fp8 projections, forward only: logged as shadow_fp8_loss (0: off)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--shadow-bf16-every", o.shadow_bf16_every,
                 "the same with bf16 projections, for an f32 run: shadow_bf16_loss (0: off)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--fp8-keep", o.fp8_keep,
                 "projections kept out of fp8 wherever the run uses it (--precision fp8 or the "
                 "fp8 shadow): comma-separated substrings of parameter names, e.g. o_proj or "
                 "experts. (an ablation; training forwards only)");
  app.add_option("--seed", o.seed, "corpus, packing and init seed");
  app.add_option("--single-digits", o.single_digits, "trained tokenizer: one token per digit (true) or Llama-3's 1-3 digit groups");
  app.add_option("--han-chars", o.han_chars, "trained tokenizer (with --single-digits): one piece per Han character, so a Chinese name is a unit BPE can merge");
  app.add_option("--tasks", o.tasks, "task families of the corpus, comma-separated, each NAME or NAME:WEIGHT (default weight 1)");
  app.add_option("--difficulty", o.difficulty, "N or LO-HI within 1..5");
  app.add_option("--general-share", o.general_share, "share of general text")->check(CLI::Range(0.0, 1.0));
  app.add_option("--chinese-share", o.chinese_share, "share of Chinese documents")->check(CLI::Range(0.0, 1.0));
  app.add_option("--r1-format-share", o.r1_format_share, "share of task documents as R1-Zero conversations")->check(CLI::Range(0.0, 1.0));
  app.add_option("--wrong-share", o.wrong_share, "share of task documents with a wrong final answer")->check(CLI::Range(0.0, 1.0));
  app.add_option("--precision", o.precision, "the model's linear layers: fp8 (DeepSeek-V3's block-scaled recipe, engine/ops_fp8.h), bf16 (bf16 GEMMs, fp32 accumulation: FP8's baseline) or default (the config's)")
      ->check(CLI::IsMember({"fp8", "bf16", "default"}));
  app.add_option("--careful-share", o.careful_share, "share of task documents with the family's careful (search/check) solution")->check(CLI::Range(0.0, 1.0));
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "r1-pretrain: %s\n", e.what());
    return 2;
  }
  try {
    return run(o);
  } catch (const InputError& e) {
    std::fprintf(stderr, "r1-pretrain: %s\n", e.what());
    return 2;
  } catch (const Error& e) {
    std::fprintf(stderr, "r1-pretrain: internal error: %s\n", e.what());
    return 1;
  }
}
