// JSONL records (round trip, malformed lines named by file and line), the shuffled stream
// and its resumable cursor, packing with loss masks, the corpus, and the r1-data binary's
// exit codes.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>

#include "data/corpus.h"
#include "data/dataset.h"
#include "data/templates.h"
#include "engine/error.h"
#include "tests/harness.h"

namespace r1::data {
namespace {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() : path_(fs::temp_directory_path() / fmt::format("r1_ds_{}_{}", ::getpid(), counter_++)) {
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  static inline int counter_ = 0;
  fs::path path_;
};

void write_text(const std::string& path, const std::string& text) { std::ofstream(path, std::ios::binary) << text; }

TEST(Dataset, RecordsRoundTripAndVerifyAfterReading) {
  TempDir dir;
  std::vector<PromptRecord> prompts;
  TaskRng rng(test::case_seed(1));
  for (const Task& t : all_tasks())
    for (Lang lang : {Lang::En, Lang::Zh}) {
      const TaskInstance inst = generate_task(t.name, rng.next(), 1 + rng.next() % 5, lang);
      prompts.push_back(to_prompt_record(inst, r1_zero_prompt(inst.prompt)));
    }
  write_prompts(dir.file("p.jsonl"), prompts);
  const auto back = read_prompts(dir.file("p.jsonl"));
  ASSERT_EQ(back.size(), prompts.size());
  for (size_t i = 0; i < back.size(); ++i) {
    EXPECT_EQ(back[i].prompt, prompts[i].prompt);
    EXPECT_EQ(back[i].meta, prompts[i].meta);
    EXPECT_TRUE(verify_record(back[i], back[i].answer)) << back[i].task;
    EXPECT_FALSE(verify_record(back[i], "not the answer")) << back[i].task;
  }
  const std::vector<SftSample> sft = {{"q\n1", "<think>r</think> a"}, {"问题", "答案"}};
  write_sft(dir.file("s.jsonl"), sft);
  const auto sft_back = read_sft(dir.file("s.jsonl"));
  ASSERT_EQ(sft_back.size(), 2u);
  EXPECT_EQ(sft_back[1].completion, "答案");
  write_preferences(dir.file("r.jsonl"), {{"p", "good", "bad"}});
  EXPECT_EQ(read_preferences(dir.file("r.jsonl"))[0].rejected, "bad");
}

// Sampled text that is not UTF-8 (a completion cut inside a multi-byte character, a stray
// byte) is written with U+FFFD for each bad sequence, the rest as it was: the run that made it
// does not fail at its last write (r1-eval --completions did on an untrained model).
TEST(Dataset, TextThatIsNotUtf8IsWrittenWithReplacementCharacters) {
  TempDir dir;
  const std::string cut = std::string("\xe5\x9b", 2);  // the first two bytes of a 3-byte character
  write_jsonl(dir.file("c.jsonl"), {nlohmann::json{{"completion", "ok " + cut + " \xff end"}},
                                    nlohmann::json{{"completion", "答案"}}});
  std::vector<std::string> got;
  read_jsonl(dir.file("c.jsonl"), [&](const nlohmann::json& j, size_t) {
    got.push_back(j.at("completion").get<std::string>());
  });
  ASSERT_EQ(got.size(), 2u);
  EXPECT_EQ(got[0], "ok \uFFFD \uFFFD end");  // one per bad sequence, as Python's "replace"
  EXPECT_EQ(got[1], "答案");
  EXPECT_FALSE(fs::exists(dir.file("c.jsonl.tmp")));
}

TEST(Dataset, MalformedLinesNameFileAndLine) {
  TempDir dir;
  const auto expect_error = [&](const std::string& text, const std::string& needle, auto reader) {
    const std::string path = dir.file("bad.jsonl");
    write_text(path, text);
    try {
      reader(path);
      ADD_FAILURE() << "accepted: " << text;
    } catch (const InputError& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
      EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    }
  };
  const std::string ok = R"({"prompt": "p", "answer": "1", "task": "arithmetic"})";
  expect_error(ok + "\n\n" + "{\"prompt\": \"p\",\n", "bad.jsonl:3: bad JSON", read_prompts);
  expect_error(ok + "\n" + R"({"prompt": "p", "task": "t"})" + "\n", "bad.jsonl:2: field \"answer\"", read_prompts);
  expect_error(R"({"prompt": 5, "answer": "1", "task": "t"})", "bad.jsonl:1: field \"prompt\"", read_prompts);
  expect_error("[1, 2]\n", "bad.jsonl:1: expected a JSON object", read_prompts);
  expect_error(R"({"prompt": "p", "answer": "1", "task": "t", "meta": 3})", "bad.jsonl:1: field \"meta\"", read_prompts);
  expect_error("{\"prompt\": \"\xff\", \"completion\": \"c\"}\n", "bad.jsonl:1: bad JSON", read_sft);
  expect_error(R"({"prompt": "p", "chosen": "c"})", "bad.jsonl:1: field \"rejected\"", read_preferences);
  EXPECT_THROW(read_prompts(dir.file("missing.jsonl")), InputError);
}

TEST(Dataset, ShuffleIsAPermutationAndDeterministic) {
  const uint64_t seed = test::case_seed(2);
  const auto a = shuffled_order(1000, seed, 0), b = shuffled_order(1000, seed, 0);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, shuffled_order(1000, seed, 1));
  auto sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 0; i < sorted.size(); ++i) ASSERT_EQ(sorted[i], i);
  EXPECT_NE(a, sorted);
}

TEST(Dataset, StreamResumesFromItsCursor) {
  const DataCursor start{test::case_seed(3), 0, 0};
  ShuffledStream full(37, start);
  std::vector<size_t> want;
  for (int i = 0; i < 200; ++i) want.push_back(full.next());
  // Every epoch visits each item once.
  EXPECT_EQ(std::set<size_t>(want.begin(), want.begin() + 37).size(), 37u);
  ShuffledStream first(37, start);
  for (int i = 0; i < 90; ++i) ASSERT_EQ(first.next(), want[i]);
  const DataCursor saved = DataCursor::from_json(nlohmann::json::parse(first.cursor().to_json().dump()));
  EXPECT_EQ(saved, first.cursor());
  ShuffledStream resumed(37, saved);
  for (int i = 90; i < 200; ++i) ASSERT_EQ(resumed.next(), want[i]) << i;
  EXPECT_THROW(DataCursor::from_json({{"seed", 1}}), InputError);
  EXPECT_THROW(ShuffledStream(10, DataCursor{0, 0, 11}), InputError);
}

TEST(Dataset, PackingKeepsTokensAndMasks) {
  TaskRng rng(test::case_seed(4));
  const int64_t T = 32;
  Packer packer(T, -1);
  std::vector<std::vector<int32_t>> docs;
  std::vector<std::vector<uint8_t>> masks;
  for (int k = 0; k < 40; ++k) {
    const size_t n = 1 + rng.next() % 40;  // some longer than T: truncated
    std::vector<int32_t> t(n);
    std::vector<uint8_t> m(n);
    for (size_t i = 0; i < n; ++i) t[i] = static_cast<int32_t>(rng.next() % 1000), m[i] = i >= n / 3;
    packer.add(t, m);
    docs.push_back(t);
    masks.push_back(m);
  }
  const int64_t truncated = packer.truncated();
  const PackedBatch b = packer.finish();
  ASSERT_EQ(b.tokens.size(), static_cast<size_t>(b.rows * T));
  // Walk the rows and rebuild the documents from segments; check masks by the rule.
  size_t doc = 0;
  int64_t n_trunc = 0;
  for (int64_t r = 0; r < b.rows; ++r) {
    for (int64_t i = 0; i < T;) {
      const int64_t at = r * T + i;
      if (b.segment[at] == 0) {  // padding runs to the end of the row
        for (; i < T; ++i) EXPECT_TRUE(b.segment[r * T + i] == 0 && b.tokens[r * T + i] == -1 && !b.loss_mask[r * T + i]);
        break;
      }
      ASSERT_LT(doc, docs.size());
      const size_t len = std::min<size_t>(docs[doc].size(), T);
      n_trunc += docs[doc].size() > static_cast<size_t>(T);
      for (size_t j = 0; j < len; ++j) {
        EXPECT_EQ(b.tokens[at + j], docs[doc][j]);
        EXPECT_EQ(b.position[at + j], static_cast<int32_t>(j));
        EXPECT_EQ(b.segment[at + j], b.segment[at]);
        EXPECT_EQ(b.loss_mask[at + j], j > 0 && masks[doc][j] ? 1 : 0) << "doc " << doc << " pos " << j;
      }
      i += static_cast<int64_t>(len);
      ++doc;
    }
  }
  EXPECT_EQ(doc, docs.size());
  EXPECT_EQ(n_trunc, truncated);
  EXPECT_LT(b.rows, 40);  // short documents share rows
}

TEST(Corpus, BothLanguagesDeterministicNoRlFormat) {
  CorpusOptions opt;
  opt.documents = 300;
  opt.seed = test::case_seed(5);
  const auto a = generate_corpus(opt), b = generate_corpus(opt);
  EXPECT_EQ(a, b);
  int zh = 0, worked = 0;
  for (const auto& d : a) {
    zh += d.find("。") != std::string::npos;
    worked += d.starts_with("Question:") || d.starts_with("问题：");
    EXPECT_EQ(d.find("<think>"), std::string::npos);
    EXPECT_EQ(d.find("<answer>"), std::string::npos);
  }
  EXPECT_GT(zh, 60);
  EXPECT_LT(zh, 240);
  EXPECT_GT(worked, 150);
  EXPECT_LT(worked, 260);
}

// The binary beside this test (build/bin): bad input is one line on stderr and exit code 2.
TEST(R1DataBinary, BadInputExitsWithTwo) {
  const fs::path bin = fs::read_symlink("/proc/self/exe").parent_path() / "r1-data";
  if (!fs::exists(bin)) GTEST_SKIP() << bin << " not built";
  TempDir dir;
  write_text(dir.file("bad.jsonl"), "{\"text\": 1}\n");
  const auto run = [&](const std::string& args) {
    const int rc = std::system(fmt::format("{} {} 2>{}", bin.string(), args, dir.file("err.txt")).c_str());
    std::ifstream f(dir.file("err.txt"));
    std::string err((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
    return std::make_pair(WEXITSTATUS(rc), err);
  };
  auto [rc, err] = run(fmt::format("train-tokenizer --input {} --out {}", dir.file("bad.jsonl"), dir.file("t.json")));
  EXPECT_EQ(rc, 2);
  EXPECT_NE(err.find("bad.jsonl:1: field \"text\""), std::string::npos) << err;
  EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << err;
  std::tie(rc, err) = run(fmt::format("tasks --task chess --out {}", dir.file("p.jsonl")));
  EXPECT_EQ(rc, 2);
  // Bad flags: CLI11's own exit codes (104, 105, ...) are not ours.
  for (const char* bad : {"tasks --n abc --out x.jsonl", "train-tokenizer --split bad --input x --out y",
                          "frobnicate"}) {
    std::tie(rc, err) = run(bad);
    EXPECT_EQ(rc, 2) << bad;
    EXPECT_EQ(std::count(err.begin(), err.end(), '\n'), 1) << bad << ": " << err;
  }
  EXPECT_FALSE(fs::exists("x.jsonl"));
  std::tie(rc, err) = run(fmt::format("corpus --n 200 --seed 1 --out {}", dir.file("c.jsonl")));
  ASSERT_EQ(rc, 0) << err;
  std::tie(rc, err) = run(fmt::format("train-tokenizer --input {} --vocab-size 600 --out {}", dir.file("c.jsonl"),
                                      dir.file("t.json")));
  ASSERT_EQ(rc, 0) << err;
  std::tie(rc, err) = run(fmt::format("train-tokenizer --input {} --vocab-size 600 --split digits-han --out {}",
                                      dir.file("c.jsonl"), dir.file("t-han.json")));
  ASSERT_EQ(rc, 0) << err;
  std::tie(rc, err) = run(fmt::format("tokenize --tokenizer {} --input {} --out {}", dir.file("t.json"),
                                      dir.file("c.jsonl"), dir.file("ids.jsonl")));
  ASSERT_EQ(rc, 0) << err;
  size_t rows = 0;
  read_jsonl(dir.file("ids.jsonl"), [&](const nlohmann::json& j, size_t) { rows += j["ids"].size() > 1; });
  EXPECT_EQ(rows, 200u);
}

}  // namespace
}  // namespace r1::data
