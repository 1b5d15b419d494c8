// r1-eval: pass@1 over k samples and cons@k (majority vote) per task family, as the R1 paper
// reports them (rl/eval.h), for a checkpoint on a held-out prompt file.
//   r1-eval --checkpoint runs/r1-zero/zero/checkpoint --prompts heldout.jsonl --samples 8
//           --temperature 0.6 --top-p 0.95 --out eval.json [--completions samples.jsonl]
// Prints one line per family and writes the summary JSON (atomically).
// Bad input: one line "r1-eval: <file or flag>: <problem>" and exit code 2.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <chrono>
#include <cstdio>

#include "data/dataset.h"
#include "data/tokenizer.h"
#include "data/templates.h"
#include "engine/atomic_file.h"
#include "engine/metrics.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "rl/eval.h"
#include "rl/generate.h"
#include "rl/grpo.h"

namespace {

using namespace r1;
using nlohmann::json;

struct Options {
  std::string checkpoint, prompts, out, completions, templ = "r1_zero_short", device = "cpu";
  int64_t samples = 8, max_new_tokens = 96, batch_questions = 32;
  double temperature = 0.6, top_p = 0.95;
  uint64_t seed = 1234;
};

int run(const Options& o) {
  const ModelConfig cfg = load_model_config(o.checkpoint + "/config.json");
  const data::Tokenizer tok = data::Tokenizer::from_file(o.checkpoint + "/tokenizer.json");
  const std::vector<data::PromptRecord> recs = data::read_prompts(o.prompts);
  R1_INPUT_CHECK(!recs.empty(), "{}: no prompts", o.prompts);
  R1_INPUT_CHECK(o.templ == "r1_zero" || o.templ == "r1_zero_short", "--template {}: r1_zero or r1_zero_short", o.templ);
  const Device dev = device_from_flag(o.device);
  DeepseekV3 model(cfg, load_checkpoint(o.checkpoint, cfg, DType::F32, dev), 1024);
  const int32_t eos = *tok.token_to_id(data::kEos);
  rl::GenerationConfig gc;
  gc.max_new_tokens = o.max_new_tokens;
  gc.sampling.temperature = static_cast<float>(o.temperature);
  gc.sampling.top_p = static_cast<float>(o.top_p);
  gc.stop_tokens = {eos};
  gc.seed = o.seed;
  std::vector<rl::QuestionSamples> qs;
  std::vector<json> rows;
  Progress progress("eval", static_cast<int64_t>(recs.size()));
  int64_t generated = 0;
  const auto t0 = std::chrono::steady_clock::now();
  for (size_t q0 = 0; q0 < recs.size(); q0 += static_cast<size_t>(o.batch_questions)) {
    const size_t q1 = std::min(recs.size(), q0 + static_cast<size_t>(o.batch_questions));
    std::vector<std::vector<int32_t>> prompts;
    for (size_t q = q0; q < q1; ++q) prompts.push_back(tok.encode(rl::render_prompt(o.templ, recs[q].prompt), true));
    const auto samples = rl::generate(model, prompts, o.samples, gc, q0 * static_cast<size_t>(o.samples));
    for (size_t q = q0; q < q1; ++q) {
      rl::QuestionSamples s;
      s.record = recs[q];
      for (int64_t g = 0; g < o.samples; ++g) {
        const rl::Sample& smp = samples[(q - q0) * static_cast<size_t>(o.samples) + static_cast<size_t>(g)];
        std::vector<int32_t> ids = smp.tokens;
        if (!ids.empty() && ids.back() == eos) ids.pop_back();
        s.completions.push_back(tok.decode(ids));
        s.lengths.push_back(static_cast<int64_t>(smp.tokens.size()));
        generated += static_cast<int64_t>(smp.tokens.size());
        if (!o.completions.empty())
          rows.push_back({{"question", q}, {"task", recs[q].task}, {"prompt", recs[q].prompt},
                          {"answer", recs[q].answer}, {"completion", s.completions.back()},
                          {"truncated", smp.truncated}});
      }
      qs.push_back(std::move(s));
    }
    const double dt = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    progress.update(static_cast<int64_t>(q1), fmt::format("{:.0f} tok/s", static_cast<double>(generated) / dt));
  }
  progress.finish();
  const auto summaries = rl::evaluate(qs, rl::CompletionStyle::R1Zero);
  json j = rl::to_json(summaries);
  j["_settings"] = {{"checkpoint", o.checkpoint}, {"prompts", o.prompts}, {"samples", o.samples},
                    {"temperature", o.temperature}, {"top_p", o.top_p}, {"max_new_tokens", o.max_new_tokens},
                    {"seed", o.seed}};
  std::printf("%-12s %9s %8s %8s %8s %8s %8s\n", "task", "questions", "pass@1", "cons@k", "pass@k", "format", "length");
  for (const auto& [task, s] : summaries)
    std::printf("%-12s %9lld %8.3f %8.3f %8.3f %8.3f %8.1f\n", task.c_str(), static_cast<long long>(s.questions),
                s.pass_at_1, s.cons_at_k, s.pass_at_k, s.format_rate, s.mean_length);
  if (!o.out.empty()) write_file_atomic(o.out, j.dump(2) + "\n");
  if (!o.completions.empty()) data::write_jsonl(o.completions, rows);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"r1-eval: pass@1 over k samples and cons@k per task family"};
  app.add_option("--checkpoint", o.checkpoint, "checkpoint directory")->required();
  app.add_option("--prompts", o.prompts, "held-out prompts JSONL (r1-data tasks)")->required();
  app.add_option("--out", o.out, "summary JSON");
  app.add_option("--completions", o.completions, "write every completion to this JSONL");
  app.add_option("--samples", o.samples, "samples per question (k)")->check(CLI::PositiveNumber);
  app.add_option("--temperature", o.temperature, "sampling temperature")->check(CLI::NonNegativeNumber);
  app.add_option("--top-p", o.top_p, "nucleus mass")->check(CLI::Range(1e-9, 1.0));
  app.add_option("--max-new-tokens", o.max_new_tokens, "completion length limit")->check(CLI::PositiveNumber);
  app.add_option("--template", o.templ, "r1_zero or r1_zero_short");
  app.add_option("--seed", o.seed, "sampling seed");
  app.add_option("--device", o.device, "cpu or cuda[:i]");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "r1-eval: %s\n", e.what());
    return 2;
  }
  try {
    return run(o);
  } catch (const InputError& e) {
    std::fprintf(stderr, "r1-eval: %s\n", e.what());
    return 2;
  } catch (const Error& e) {
    std::fprintf(stderr, "r1-eval: internal error: %s\n", e.what());
    return 1;
  }
}
