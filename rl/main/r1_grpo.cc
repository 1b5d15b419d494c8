// r1-grpo: GRPO with rule-based rewards from a checkpoint (R1-Zero when the checkpoint is a
// base model). rl/grpo.h has the algorithm; this is the driver: config, checkpoint/resume,
// metrics.jsonl, the progress line.
//   r1-grpo --init runs/r1-zero/base/checkpoint --out runs/r1-zero/zero [--config grpo.json]
//           [--holdout heldout.jsonl] [--max-steps N] [--device cpu|cuda]
// The config holds GrpoConfig's TRL-named fields (configs/grpo/*.json); flags override it.
// Rerunning with the same --out resumes from out/checkpoint: the resumed run's metrics equal
// the uninterrupted run's bit for bit (timings aside) on the CPU.
// Bad input: one line "r1-grpo: <file or flag>: <problem>" and exit code 2.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <filesystem>
#include <fstream>

#include "data/dataset.h"
#include "data/tokenizer.h"
#include "engine/atomic_file.h"
#include "engine/metrics.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "rl/grpo.h"
#include "rl/run_state.h"

namespace {

using namespace r1;
using nlohmann::json;

struct Options {
  std::string init, out = "runs/r1-zero/zero", config, holdout, device = "cpu";
  int64_t max_steps = 0;
  int64_t max_positions = 512;
};

json read_json_file(const std::string& path) {
  std::ifstream f(path);
  R1_INPUT_CHECK(f.good(), "{}: cannot open", path);
  try {
    return json::parse(f);
  } catch (const json::exception& e) {
    throw InputError(fmt::format("{}: not valid JSON ({})", path, e.what()));
  }
}

int run(const Options& o) {
  namespace fs = std::filesystem;
  const std::string ckpt = o.out + "/checkpoint";
  const bool resume = rl::has_run_checkpoint(ckpt);
  R1_INPUT_CHECK(resume || !o.init.empty(), "--init: needed (no checkpoint in {} to resume)", o.out);
  const std::string src = resume ? rl::resolve_run_checkpoint(ckpt) : o.init;
  R1_INPUT_CHECK(fs::exists(src + "/config.json"), "{}: no config.json (not a checkpoint)", src);
  const ModelConfig mcfg = load_model_config(src + "/config.json");
  const data::Tokenizer tok = data::Tokenizer::from_file(src + "/tokenizer.json");

  rl::GrpoConfig cfg = o.config.empty() ? rl::GrpoConfig() : rl::GrpoConfig::from_json(read_json_file(o.config), o.config);
  if (o.max_steps > 0) cfg.max_steps = o.max_steps;
  cfg.validate(o.config.empty() ? "defaults" : o.config);

  std::set<std::string> exclude;
  if (!o.holdout.empty())
    for (const data::PromptRecord& r : data::read_prompts(o.holdout)) exclude.insert(r.prompt);

  const Device dev = device_from_flag(o.device);
  ParamMap params = load_checkpoint(src, mcfg, DType::F32, dev);
  for (auto& [name, t] : params)
    if (name.find("e_score_correction_bias") == std::string::npos) t.set_requires_grad();
  DeepseekV3 model(mcfg, params, o.max_positions);
  rl::GrpoTrainer trainer(cfg, model, tok, exclude);
  int64_t start = 0;
  if (resume) {
    const json st = rl::load_run_checkpoint(ckpt, mcfg, model.params(), &trainer.optimizer());
    trainer.restore(st);
    if (cfg.beta > 0) rl::load_run_extra(ckpt, trainer.reference());
    start = st.at("step").get<int64_t>();
    fmt::print(stderr, "r1-grpo: resuming {} at step {}\n", ckpt, start);
  }
  fs::create_directories(o.out);
  write_file_atomic(o.out + "/grpo_config.json", cfg.to_json().dump(2) + "\n");
  fmt::print(stderr, "r1-grpo: {} parameters from {}, {} steps of {} questions x {} samples, out {}\n",
             mcfg.num_parameters(), src, cfg.max_steps, cfg.questions_per_step, cfg.num_generations, o.out);
  if (resume) rl::truncate_metrics(o.out + "/metrics.jsonl", start);
  MetricsWriter metrics(o.out + "/metrics.jsonl", resume);
  Progress progress("grpo", cfg.max_steps, start);
  for (int64_t step = start + 1; step <= cfg.max_steps; ++step) {
    const json m = trainer.step(step);
    metrics.write(m);
    progress.update(step, fmt::format("reward {:.3f}  acc {:.3f}  fmt {:.2f}  len {:.0f}  {:.0f}+{:.0f} tok/s",
                                      m["reward"].get<double>(), m["accuracy"].get<double>(),
                                      m["format_rate"].get<double>(), m["response_length"].get<double>(),
                                      m["rollout_tokens_per_s"].get<double>(), m["train_tokens_per_s"].get<double>()));
    if (step % cfg.save_steps == 0 || step == cfg.max_steps)
      rl::save_run_checkpoint(ckpt, mcfg, model.params(), &trainer.optimizer(), trainer.state(step),
                              tok.to_json_string(), trainer.reference());
  }
  progress.finish();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"r1-grpo: GRPO with rule-based rewards (R1-Zero from a base checkpoint)"};
  app.add_option("--init", o.init, "checkpoint to start from (config.json, model.safetensors, tokenizer.json)");
  app.add_option("--out", o.out, "run directory (metrics.jsonl, checkpoint/)");
  app.add_option("--config", o.config, "GRPO config JSON (TRL GRPOConfig names)");
  app.add_option("--holdout", o.holdout, "prompts JSONL never to train on (the eval set)");
  app.add_option("--max-steps", o.max_steps, "override max_steps")->check(CLI::PositiveNumber);
  app.add_option("--device", o.device, "cpu or cuda[:i]");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "r1-grpo: %s\n", e.what());
    return 2;
  }
  try {
    return run(o);
  } catch (const InputError& e) {
    std::fprintf(stderr, "r1-grpo: %s\n", e.what());
    return 2;
  } catch (const Error& e) {
    std::fprintf(stderr, "r1-grpo: internal error: %s\n", e.what());
    return 1;
  }
}
