// Rewards: accuracy, format and language consistency on real task instances, with
// completions built to be right, wrong, malformed, or to hide the answer in the reasoning;
// language shares counted by hand; weights from JSON; UTF-8 that is not.
#include <gtest/gtest.h>

#include <random>

#include "data/answer.h"
#include "data/templates.h"
#include "engine/error.h"
#include "rl/rewards.h"
#include "tests/harness.h"

namespace r1::rl {
namespace {

using data::Lang;
using json = nlohmann::json;

const char* const kFamilies[] = {"arithmetic", "countdown", "list", "ordering"};

data::PromptRecord record(const std::string& task, uint64_t seed, Lang lang, int difficulty = 2) {
  const data::TaskInstance inst = data::generate_task(task, seed, difficulty, lang);
  return data::to_prompt_record(inst, data::r1_zero_prompt(inst.prompt));
}

// A wrong answer of the same shape: one more digit or letter at the end.
std::string wrong_answer(const data::PromptRecord& rec) { return rec.answer + "1"; }

std::string zero(const std::string& reasoning, const std::string& answer) {
  return "<think> " + reasoning + " </think> <answer> " + answer + " </answer>";
}

RewardBreakdown score(const data::PromptRecord& rec, const std::string& c,
                      CompletionStyle style = CompletionStyle::R1Zero, RewardWeights w = {}) {
  return score_completion(rec, c, w, style);
}

struct Expect {
  double accuracy, format;
  bool has_answer;
};

void expect(const RewardBreakdown& b, Expect e, const std::string& where) {
  EXPECT_EQ(b.accuracy, e.accuracy) << where;
  EXPECT_EQ(b.format, e.format) << where;
  EXPECT_EQ(b.well_formed, e.format == 1.0) << where;
  EXPECT_EQ(b.has_answer, e.has_answer) << where;
  EXPECT_DOUBLE_EQ(b.total, 1.0 * b.accuracy + 0.1 * b.format) << where;  // default weights
}

TEST(Rewards, R1ZeroCompletionsPerFamily) {
  const uint64_t base = test::case_seed(1);
  for (const char* task : kFamilies) {
    for (int k = 0; k < 6; ++k) {
      const data::PromptRecord rec = record(task, base + k, k % 2 ? Lang::Zh : Lang::En, 1 + k % 3);
      const std::string a = rec.answer, w = wrong_answer(rec);
      const std::string where = fmt::format("{} k={} answer '{}'", task, k, a);
      ASSERT_FALSE(data::verify_record(rec, w)) << where;

      const RewardBreakdown right = score(rec, zero("working it out", a));
      expect(right, {1, 1, true}, where + " right");
      EXPECT_EQ(right.answer, a) << where;
      expect(score(rec, zero("working it out", w)), {0, 1, true}, where + " wrong");
      // A trailing EOS is allowed; text after </answer> is not, but the answer still counts.
      expect(score(rec, zero("ok", a) + "\n" + data::kEos), {1, 1, true}, where + " eos");
      expect(score(rec, zero("ok", a) + " Hope this helps."), {1, 0, true}, where + " trailing");
      // \boxed{} inside <answer> is the answer; a bare \boxed{} after the reasoning too.
      expect(score(rec, zero("ok", "\\boxed{" + a + "}")), {1, 1, true}, where + " boxed");
      expect(score(rec, "<think> ok </think> So \\boxed{" + a + "}"), {1, 0, true},
             where + " bare boxed");
      // Malformed shapes.
      expect(score(rec, a), {0, 0, false}, where + " bare answer");
      expect(score(rec, "<answer>" + a + "</answer>"), {1, 0, true}, where + " no think");
      expect(score(rec, "<think>ok</think>"), {0, 0, false}, where + " no answer");
      expect(score(rec, zero("ok", "")), {0, 1, false}, where + " empty answer");
      expect(score(rec, "<think> ok </think> <answer> " + a), {0, 0, false}, where + " unclosed");
      expect(score(rec, "<answer>" + a + "</answer> <think> ok </think>"), {0, 0, false},
             where + " answer before think");
      expect(score(rec, zero("ok", a) + " <answer>" + w + "</answer>"), {0, 0, true},
             where + " two answers: the last counts");
    }
  }
}

TEST(Rewards, AnswerOnlyInReasoningEarnsNothing) {
  const uint64_t base = test::case_seed(2);
  for (const char* task : kFamilies) {
    const data::PromptRecord rec = record(task, base, Lang::En);
    const std::string a = rec.answer;
    const std::string where = std::string(task) + " answer " + a;
    // The right answer sits in the reasoning; outside it there is a wrong one or nothing.
    expect(score(rec, zero("the answer is \\boxed{" + a + "}", "")), {0, 1, false}, where);
    expect(score(rec, zero("<answer>" + a + "</answer>", wrong_answer(rec))), {0, 0, true},
           where + " nested answer tag");
    expect(score(rec, "<think> so \\boxed{" + a + "} <answer>" + a + "</answer> </think>"),
           {0, 0, false}, where + " all inside think");
    expect(score(rec, "<think> so \\boxed{" + a + "} <answer>" + a + "</answer>"), {0, 0, false},
           where + " unclosed think");
    EXPECT_FALSE(extract_final_answer("<think> \\boxed{" + a + "}", CompletionStyle::R1Zero));
    // The chat prompt opened <think>: without </think> everything is reasoning.
    expect(score(rec, "so \\boxed{" + a + "}", CompletionStyle::Chat), {0, 0, false},
           where + " chat, no </think>");
    expect(score(rec, "so \\boxed{" + a + "}</think>\n\nI am not sure.", CompletionStyle::Chat),
           {0, 1, false}, where + " chat, answer in reasoning");
  }
}

TEST(Rewards, ChatCompletions) {
  const uint64_t base = test::case_seed(3);
  for (const char* task : kFamilies) {
    const data::PromptRecord rec = record(task, base, Lang::En);
    const std::string a = rec.answer;
    const std::string where = std::string(task) + " answer " + a;
    const auto chat = [&](const std::string& c) { return score(rec, c, CompletionStyle::Chat); };
    expect(chat("Let me work.\n</think>\n\nThe answer is \\boxed{" + a + "}." + data::kEos),
           {1, 1, true}, where + " right");
    expect(chat("Let me work.\n</think>\n\n<answer>" + a + "</answer>"), {1, 1, true},
           where + " answer tag");
    expect(chat("Let me work.\n</think>\n\n\\boxed{" + wrong_answer(rec) + "}"), {0, 1, true},
           where + " wrong");
    // A summary that never commits to a delimited answer earns format only.
    expect(chat("Let me work.\n</think>\n\nThe answer is " + a + "."), {0, 1, false},
           where + " plain summary");
    expect(chat("Let me work.\n</think>\n\n"), {0, 0, false}, where + " empty summary");
    expect(chat("<think>again</think>\\boxed{" + a + "}"), {1, 0, true}, where + " extra <think>");
  }
}

TEST(Rewards, LanguageTermUsesTheRecordsLanguage) {
  const uint64_t base = test::case_seed(4);
  RewardWeights w;
  w.language = 1.0;
  const data::PromptRecord zh = record("arithmetic", base, Lang::Zh);
  const data::PromptRecord en = record("arithmetic", base, Lang::En);
  ASSERT_EQ(zh.meta.at("lang"), "zh");
  // 我们先算 (4 Chinese words) compute (1 English word); numbers and symbols are not words.
  const std::string c = zero("我们先算 12 + 7, compute", zh.answer);
  const RewardBreakdown bz = score(zh, c, CompletionStyle::R1Zero, w);
  EXPECT_DOUBLE_EQ(bz.language, 4.0 / 5.0);
  EXPECT_DOUBLE_EQ(bz.total, 1.0 + 0.1 + 0.8);
  const std::string c_en = zero("我们先算 12 + 7, compute", en.answer);
  EXPECT_DOUBLE_EQ(score(en, c_en, CompletionStyle::R1Zero, w).language, 1.0 / 5.0);
  // Without meta.lang the target is English; an unknown language is an input error.
  data::PromptRecord bare = zh;
  bare.meta.erase("lang");
  EXPECT_DOUBLE_EQ(score(bare, c).language, 1.0 / 5.0);
  EXPECT_EQ(record_language(bare), Lang::En);
  bare.meta["lang"] = "fr";
  EXPECT_THROW(score(bare, c), InputError);
  bare.meta["lang"] = 3;
  EXPECT_THROW(score(bare, c), InputError);
  // The language term reads the reasoning only, not the answer.
  EXPECT_DOUBLE_EQ(score(zh, zero("compute", "答案")).language, 0.0);
  EXPECT_DOUBLE_EQ(score(zh, zero("计算", "answer")).language, 1.0);
  // Chat: the reasoning is what precedes </think>.
  const std::string chat = "先算 then add</think>\n\n\\boxed{1}";
  EXPECT_DOUBLE_EQ(score(zh, chat, CompletionStyle::Chat).language, 2.0 / 4.0);
}

// ---- language consistency, counted by hand -------------------------------------------------

struct LangCase {
  const char* text;
  double en, zh;  // expected shares
  const char* why;
};

const LangCase kLangCases[] = {
    {"Let me compute 12 + 7 = 19.", 1.0, 0.0, "English: Let, me, compute"},
    {"我们先计算 12 + 7 = 19。", 0.0, 1.0, "Chinese: 我 们 先 计 算"},
    {"首先 compute the sum：3 加 4 得 7", 3.0 / 7, 4.0 / 7, "zh 首 先 加 得, en compute the sum"},
    {"答案是 \\frac{1}{2}", 0.0, 1.0, "a LaTeX command is math, not English"},
    {"答案是 \\\\frac", 0.25, 0.75, "after an escaped backslash letters are text"},
    {"设 x 为 5", 1.0 / 3, 2.0 / 3, "a variable name is an English word"},
    {"It's well-known", 1.0, 0.0, "It, s, well, known: 4 English words"},
    {"café au lait", 1.0, 0.0, "accented Latin letters stay in the word"},
    {"これは test です", 1.0 / 6, 0.0, "kana are words of neither: こ れ は で す + test"},
    {"привет, мир! hello", 1.0 / 3, 0.0, "two Cyrillic words and one English"},
    {"\xef\xa4\x80\xf0\xa0\x80\x80 ok", 1.0 / 3, 2.0 / 3, "U+F900 and U+20000 are ideographs"},
    {"α + β = π, 3.14", 0.0, 0.0, "Greek letters and digits are math: no words"},
    {"", 0.0, 0.0, "empty"},
    {"  123 + 456 = 579 ... !!", 0.0, 0.0, "no words"},
    // Invalid UTF-8: skipped, and it ends the word.
    {"ab\xff" "cd 中", 2.0 / 3, 1.0 / 3, "an invalid byte splits ab|cd"},
    {"中\xe4\xb8", 0.0, 1.0, "a truncated sequence at the end"},
    {"\xe4\xb8x", 1.0, 0.0, "a truncated sequence before ASCII"},
    {"\x80\x80\xbf" "abc", 1.0, 0.0, "stray continuation bytes"},
    {"\xc0\xaf\xe0\x80\xaf 中", 0.0, 1.0, "overlong encodings"},
    {"\xed\xa0\x80\xf4\x90\x80\x80\xf5\xff 中", 0.0, 1.0, "surrogate, past U+10FFFF, bad leads"},
    {"\xe4\xb8\xad\xe4\xb8", 0.0, 1.0, "中 then a cut 中"},
};

TEST(LanguageConsistency, HandCountedShares) {
  for (const LangCase& c : kLangCases) {
    EXPECT_DOUBLE_EQ(language_consistency(c.text, Lang::En), c.en) << c.why;
    EXPECT_DOUBLE_EQ(language_consistency(c.text, Lang::Zh), c.zh) << c.why;
  }
}

TEST(LanguageConsistency, RandomBytesNeverCrashAndStayInRange) {
  std::mt19937_64 rng(test::case_seed(5));
  for (int t = 0; t < 2000; ++t) {
    std::string s(rng() % 64, '\0');
    for (char& ch : s) ch = static_cast<char>(rng() % 256);
    // Random bytes biased toward the interesting leads: multi-byte sequences cut anywhere.
    if (t % 2) s = std::string("中文 mix ").substr(0, rng() % 12) + s;
    for (Lang l : {Lang::En, Lang::Zh}) {
      const double v = language_consistency(s, l);
      EXPECT_GE(v, 0.0);
      EXPECT_LE(v, 1.0);
    }
    const double sum = language_consistency(s, Lang::En) + language_consistency(s, Lang::Zh);
    EXPECT_LE(sum, 1.0 + 1e-12);
  }
}

// ---- weights -------------------------------------------------------------------------------

TEST(RewardWeights, FromJson) {
  const RewardWeights d;
  EXPECT_EQ(d.accuracy, 1.0);
  EXPECT_EQ(d.format, 0.1);
  EXPECT_EQ(d.language, 0.0);
  const RewardWeights w = RewardWeights::from_json(json{{"language", 1}, {"format", 0.5}});
  EXPECT_EQ(w.accuracy, 1.0);
  EXPECT_EQ(w.format, 0.5);
  EXPECT_EQ(w.language, 1.0);
  EXPECT_EQ(RewardWeights::from_json(w.to_json()).to_json(), w.to_json());
  EXPECT_EQ(RewardWeights::from_json(json::object()).to_json(), d.to_json());

  const auto message = [](const json& j) -> std::string {
    try {
      RewardWeights::from_json(j);
    } catch (const InputError& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_NE(message({{"acuracy", 1}}).find("'acuracy'"), std::string::npos);
  EXPECT_NE(message({{"format", "0.1"}}).find("'format'"), std::string::npos);
  EXPECT_NE(message({{"language", nullptr}}).find("'language'"), std::string::npos);
  EXPECT_NE(message({{"accuracy", -1}}).find("'accuracy'"), std::string::npos);
  EXPECT_NE(message(json::array({1, 2})).find("object"), std::string::npos);
}

TEST(RewardWeights, WeightTheTerms) {
  const data::PromptRecord rec = record("list", test::case_seed(6), Lang::En);
  RewardWeights w;
  w.accuracy = 2.0;
  w.format = 0.0;
  w.language = 0.5;
  const RewardBreakdown b =
      score(rec, zero("sort them then count", rec.answer), CompletionStyle::R1Zero, w);
  EXPECT_EQ(b.accuracy, 1.0);
  EXPECT_EQ(b.format, 1.0);
  EXPECT_EQ(b.language, 1.0);
  EXPECT_DOUBLE_EQ(b.total, 2.5);
}

TEST(CompletionStyle, Names) {
  for (CompletionStyle s : {CompletionStyle::R1Zero, CompletionStyle::Chat})
    EXPECT_EQ(completion_style_from_string(completion_style_name(s)), s);
  EXPECT_THROW(completion_style_from_string("zero"), InputError);
}

}  // namespace
}  // namespace r1::rl
