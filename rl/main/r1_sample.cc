// r1-sample: completions (with per-token logprobs) for a checkpoint and a prompt file, by the
// KV-cached generator (rl/generate.h).
//   r1-sample --checkpoint dir --prompts prompts.jsonl [--template r1_zero_short|r1_zero|none]
//             [--samples 4] [--temperature 0.6] [--top-p 0.95] [--top-k 0] [--out out.jsonl]
// prompts: JSONL with a "prompt" field (r1-data tasks writes them), or a text file with one
// prompt per line. Without --out, prints the completions. Output rows: {"prompt",
// "sample", "completion", "tokens", "logprobs", "truncated"}.
// Bad input: one line "r1-sample: <file or flag>: <problem>" and exit code 2.
#include <CLI/CLI.hpp>
#include <fmt/format.h>

#include <cstdio>
#include <fstream>

#include "data/dataset.h"
#include "data/templates.h"
#include "data/tokenizer.h"
#include "model/checkpoint.h"
#include "model/config.h"
#include "rl/generate.h"
#include "rl/grpo.h"

namespace {

using namespace r1;
using nlohmann::json;

struct Options {
  std::string checkpoint, prompts, out, templ = "r1_zero_short", device = "cpu", decode = "auto";
  int64_t samples = 1, max_new_tokens = 128, top_k = 0;
  double temperature = 0.6, top_p = 0.95;
  uint64_t seed = 1;
};

std::vector<std::string> read_prompt_texts(const std::string& path) {
  std::vector<std::string> out;
  if (path.ends_with(".jsonl")) {
    data::read_jsonl(path, [&](const json& j, size_t no) {
      R1_INPUT_CHECK(j.contains("prompt") && j["prompt"].is_string(), "{}:{}: field \"prompt\" missing or not a string", path, no);
      out.push_back(j["prompt"].get<std::string>());
    });
  } else {
    std::ifstream f(path);
    R1_INPUT_CHECK(f.good(), "{}: cannot open", path);
    for (std::string line; std::getline(f, line);)
      if (!line.empty()) out.push_back(line);
  }
  R1_INPUT_CHECK(!out.empty(), "{}: no prompts", path);
  return out;
}

int run(const Options& o) {
  R1_INPUT_CHECK(o.templ == "r1_zero" || o.templ == "r1_zero_short" || o.templ == "none",
                 "--template {}: r1_zero, r1_zero_short or none", o.templ);
  const ModelConfig cfg = load_model_config(o.checkpoint + "/config.json");
  const data::Tokenizer tok = data::Tokenizer::from_file(o.checkpoint + "/tokenizer.json");
  const std::vector<std::string> texts = read_prompt_texts(o.prompts);
  const Device dev = device_from_flag(o.device);
  DeepseekV3 model(cfg, load_checkpoint(o.checkpoint, cfg, DType::F32, dev), cfg.max_position_embeddings);
  std::vector<std::vector<int32_t>> prompts;
  for (const auto& t : texts) prompts.push_back(tok.encode(o.templ == "none" ? t : rl::render_prompt(o.templ, t), true));
  rl::GenerationConfig gc;
  gc.max_new_tokens = o.max_new_tokens;
  gc.sampling.temperature = static_cast<float>(o.temperature);
  gc.sampling.top_p = static_cast<float>(o.top_p);
  gc.sampling.top_k = o.top_k;
  gc.decode = rl::decode_mode_from_name(o.decode, "--decode");
  gc.stop_tokens = {*tok.token_to_id(data::kEos)};
  gc.seed = o.seed;
  rl::GenerationStats st;
  const auto samples = rl::generate(model, prompts, o.samples, gc, 0, &st);
  std::vector<json> rows;
  for (const auto& s : samples) {
    const std::string text = tok.decode(s.tokens);
    if (o.out.empty()) {
      std::printf("--- prompt %lld sample %lld%s\n%s%s\n", static_cast<long long>(s.prompt),
                  static_cast<long long>(s.stream % static_cast<uint64_t>(o.samples)),
                  s.truncated ? " (truncated)" : "", texts[s.prompt].c_str(), text.c_str());
    } else {
      rows.push_back({{"prompt", texts[s.prompt]}, {"sample", s.stream % static_cast<uint64_t>(o.samples)},
                      {"completion", text}, {"tokens", s.tokens}, {"logprobs", s.logprobs},
                      {"truncated", s.truncated}});
    }
  }
  if (!o.out.empty()) data::write_jsonl(o.out, rows);
  std::fprintf(stderr, "r1-sample: %lld prompts x %lld samples, %lld tokens (prefill %.2fs, decode %.2fs %s: %.0f tok/s)\n",
               static_cast<long long>(prompts.size()), static_cast<long long>(o.samples),
               static_cast<long long>(st.generated_tokens), st.prefill_s, st.decode_s,
               rl::decode_mode_name(st.decode),
               static_cast<double>(st.generated_tokens) / std::max(1e-9, st.prefill_s + st.decode_s));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"r1-sample: completions with per-token logprobs from a checkpoint"};
  app.add_option("--checkpoint", o.checkpoint, "checkpoint directory")->required();
  app.add_option("--prompts", o.prompts, "JSONL with \"prompt\", or one prompt per line")->required();
  app.add_option("--out", o.out, "output JSONL (default: print)");
  app.add_option("--template", o.templ, "r1_zero_short, r1_zero or none");
  app.add_option("--samples", o.samples, "samples per prompt")->check(CLI::PositiveNumber);
  app.add_option("--max-new-tokens", o.max_new_tokens, "completion length limit")->check(CLI::PositiveNumber);
  app.add_option("--temperature", o.temperature, "0 = greedy")->check(CLI::NonNegativeNumber);
  app.add_option("--top-p", o.top_p, "nucleus mass")->check(CLI::Range(1e-9, 1.0));
  app.add_option("--top-k", o.top_k, "0 = off")->check(CLI::NonNegativeNumber);
  app.add_option("--seed", o.seed, "sampling seed");
  app.add_option("--device", o.device, "cpu or cuda[:i]");
  app.add_option("--decode", o.decode, "auto, eager, static or graphs (CUDA graphs; rl/generate.h)");
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "r1-sample: %s\n", e.what());
    return 2;
  }
  try {
    return run(o);
  } catch (const InputError& e) {
    std::fprintf(stderr, "r1-sample: %s\n", e.what());
    return 2;
  } catch (const Error& e) {
    std::fprintf(stderr, "r1-sample: internal error: %s\n", e.what());
    return 1;
  }
}
