// r1-data: generate a task set or a corpus to JSONL, train a tokenizer, tokenize a file.
//   r1-data tasks --task countdown --n 1000 --seed 1 --difficulty 1-3 --lang both --out p.jsonl
//   r1-data corpus --n 20000 --seed 1 --out corpus.jsonl
//   r1-data train-tokenizer --input corpus.jsonl --vocab-size 4096 --out tokenizer.json
//   r1-data tokenize --tokenizer tokenizer.json --input corpus.jsonl --out ids.jsonl
// Bad input: one line "r1-data: <file>: <problem>" on stderr and exit code 2.
#include <CLI/CLI.hpp>

#include <cstdio>
#include <fstream>

#include "data/corpus.h"
#include "data/dataset.h"
#include "data/templates.h"
#include "data/tokenizer.h"
#include "engine/error.h"

namespace {

using namespace r1::data;
using nlohmann::json;

std::pair<int, int> difficulty_range(const std::string& s) {
  const size_t dash = s.find('-');
  try {
    const int lo = std::stoi(s.substr(0, dash));
    const int hi = dash == std::string::npos ? lo : std::stoi(s.substr(dash + 1));
    R1_INPUT_CHECK(lo >= 1 && hi <= 5 && lo <= hi, "--difficulty {}: not a range within 1..5", s);
    return {lo, hi};
  } catch (const std::logic_error&) {
    throw r1::InputError(fmt::format("--difficulty {}: expected N or LO-HI", s));
  }
}

struct TasksArgs {
  std::string task = "all", difficulty = "1-5", lang = "both", templ = "none", out;
  int64_t n = 100;
  uint64_t seed = 0;
};

void run_tasks(const TasksArgs& a) {
  const auto [lo, hi] = difficulty_range(a.difficulty);
  R1_INPUT_CHECK(a.templ == "none" || a.templ == "r1zero", "--template {}: none or r1zero", a.templ);
  R1_INPUT_CHECK(a.lang == "both" || a.lang == "en" || a.lang == "zh", "--lang {}: en, zh or both", a.lang);
  std::vector<std::string> names;
  if (a.task == "all") {
    for (const Task& t : all_tasks()) names.push_back(t.name);
  } else {
    names.push_back(find_task(a.task).name);
  }
  TaskRng rng(a.seed);
  std::vector<PromptRecord> records;
  for (int64_t i = 0; i < a.n; ++i) {
    const std::string& name = names[static_cast<size_t>(i) % names.size()];
    const int d = static_cast<int>(rng.uniform(lo, hi));
    const Lang lang = a.lang == "both" ? (rng.next() % 2 ? Lang::Zh : Lang::En) : lang_from_string(a.lang);
    const TaskInstance inst = generate_task(name, rng.next(), d, lang);
    records.push_back(to_prompt_record(inst, a.templ == "r1zero" ? r1_zero_prompt(inst.prompt) : inst.prompt));
  }
  write_prompts(a.out, records);
  std::printf("wrote %zu prompts to %s\n", records.size(), a.out.c_str());
}

// Texts of a file: the "text" field of each JSONL line, or the whole file if it is not .jsonl.
std::vector<std::string> read_texts(const std::string& path, const std::string& field) {
  std::vector<std::string> texts;
  if (path.ends_with(".jsonl")) {
    read_jsonl(path, [&](const json& j, size_t no) {
      R1_INPUT_CHECK(j.contains(field) && j[field].is_string(), "{}:{}: field \"{}\" missing or not a string",
                     path, no, field);
      texts.push_back(j[field].get<std::string>());
    });
  } else {
    std::ifstream f(path, std::ios::binary);
    R1_INPUT_CHECK(f.good(), "{}: cannot open", path);
    texts.emplace_back(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
  }
  return texts;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"r1-data: tasks, corpus, tokenizer"};
  app.require_subcommand(1);

  TasksArgs ta;
  auto* tasks = app.add_subcommand("tasks", "generate verifiable task prompts to JSONL");
  tasks->add_option("--task", ta.task, "task name or all");
  tasks->add_option("--n", ta.n, "number of prompts");
  tasks->add_option("--seed", ta.seed, "seed");
  tasks->add_option("--difficulty", ta.difficulty, "N or LO-HI within 1..5");
  tasks->add_option("--lang", ta.lang, "en, zh or both");
  tasks->add_option("--template", ta.templ, "none or r1zero");
  tasks->add_option("--out", ta.out, "output JSONL")->required();

  CorpusOptions co;
  std::string corpus_out;
  auto* corpus = app.add_subcommand("corpus", "generate the base-model corpus to JSONL {text}");
  corpus->add_option("--n", co.documents, "documents");
  corpus->add_option("--seed", co.seed, "seed");
  corpus->add_option("--general-share", co.general_share, "share of general text");
  corpus->add_option("--chinese-share", co.chinese_share, "share of Chinese documents");
  corpus->add_option("--r1-format-share", co.r1_format_share, "share of task documents as R1-Zero conversations")->check(CLI::Range(0.0, 1.0));
  corpus->add_option("--wrong-share", co.wrong_share, "share of task documents with a wrong final answer")->check(CLI::Range(0.0, 1.0));
  corpus->add_option("--careful-share", co.careful_share, "share of task documents with the careful solution")->check(CLI::Range(0.0, 1.0));
  corpus->add_option("--tasks", co.tasks, "task families, each NAME or NAME:WEIGHT (default all, weight 1)")->delimiter(',');
  corpus->add_option("--min-difficulty", co.min_difficulty, "lowest difficulty (1..5)");
  corpus->add_option("--max-difficulty", co.max_difficulty, "highest difficulty (1..5)");
  corpus->add_option("--out", corpus_out, "output JSONL")->required();

  std::string train_in, train_out, field = "text";
  BpeTrainOptions bo;
  auto* train = app.add_subcommand("train-tokenizer", "train a byte-level BPE tokenizer.json");
  train->add_option("--input", train_in, "JSONL (field --field) or plain text")->required();
  train->add_option("--field", field, "JSONL field holding the text");
  train->add_option("--vocab-size", bo.vocab_size, "vocabulary size incl. special tokens");
  train->add_option("--min-frequency", bo.min_frequency, "smallest pair count merged");
  std::string split = "llama3";
  train->add_option("--split", split,
                    "pre-tokenizer regex: llama3 (1-3 digit groups), digits (one per digit, as "
                    "r1-pretrain trains), digits-han (and one piece per CJK ideograph)")
      ->check(CLI::IsMember({"llama3", "digits", "digits-han"}));
  train->add_option("--out", train_out, "output tokenizer.json")->required();

  std::string tok_path, tok_in, tok_out;
  bool no_special = false;
  auto* tokenize = app.add_subcommand("tokenize", "tokenize a file to JSONL {ids}");
  tokenize->add_option("--tokenizer", tok_path, "tokenizer.json")->required();
  tokenize->add_option("--input", tok_in, "JSONL (field --field) or plain text")->required();
  tokenize->add_option("--field", field, "JSONL field holding the text");
  tokenize->add_flag("--no-special", no_special, "do not add BOS");
  tokenize->add_option("--out", tok_out, "output JSONL")->required();

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {  // bad flags: one line, exit code 2, like every r1 tool
    std::fprintf(stderr, "r1-data: %s\n", e.what());
    return 2;
  }
  try {
    if (*tasks) {
      run_tasks(ta);
    } else if (*corpus) {
      std::vector<json> rows;
      for (auto& d : generate_corpus(co)) rows.push_back({{"text", std::move(d)}});
      write_jsonl(corpus_out, rows);
      std::printf("wrote %zu documents to %s\n", rows.size(), corpus_out.c_str());
    } else if (*train) {
      bo.special_tokens = r1_special_tokens();
      bo.bos_token = kBos;
      if (split == "digits") bo.split_regex = kDigitSplitRegex;
      if (split == "digits-han") bo.split_regex = kDigitHanSplitRegex;
      const Tokenizer t = train_bpe(read_texts(train_in, field), bo);
      t.save(train_out);
      std::printf("trained %d tokens (%zu merges) to %s\n", t.vocab_size(), t.num_merges(), train_out.c_str());
    } else if (*tokenize) {
      const Tokenizer t = Tokenizer::from_file(tok_path);
      std::vector<json> rows;
      size_t n_tokens = 0;
      for (const auto& text : read_texts(tok_in, field)) {
        auto ids = t.encode(text, !no_special);
        n_tokens += ids.size();
        rows.push_back({{"ids", std::move(ids)}});
      }
      write_jsonl(tok_out, rows);
      std::printf("wrote %zu rows, %zu tokens to %s\n", rows.size(), n_tokens, tok_out.c_str());
    }
  } catch (const r1::InputError& e) {
    std::fprintf(stderr, "r1-data: %s\n", e.what());
    return 2;
  }
  return 0;
}
