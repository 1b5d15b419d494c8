// Evaluation metrics: the pass@k estimator against enumeration of every k-subset, majority
// votes (ties, numerically equal answers, samples without answers), and a small evaluation
// over real task instances whose every metric is worked out by hand.
#include <gtest/gtest.h>

#include <bit>

#include "data/answer.h"
#include "data/templates.h"
#include "engine/error.h"
#include "rl/eval.h"
#include "tests/harness.h"

namespace r1::rl {
namespace {

using data::Lang;
using json = nlohmann::json;

// ---- pass@k ----------------------------------------------------------------------------------

// Share of the k-subsets of n samples (the first c correct) that hold a correct sample.
double pass_at_k_enumerated(int n, int c, int k) {
  int64_t hit = 0, all = 0;
  for (uint32_t set = 0; set < (1u << n); ++set) {
    if (std::popcount(set) != k) continue;
    ++all;
    hit += (set & ((1u << c) - 1)) != 0;
  }
  return static_cast<double>(hit) / static_cast<double>(all);
}

TEST(PassAtK, MatchesEnumerationOverSubsets) {
  for (int n = 1; n <= 12; ++n)
    for (int c = 0; c <= n; ++c)
      for (int k = 1; k <= n; ++k)
        EXPECT_NEAR(pass_at_k(n, c, k), pass_at_k_enumerated(n, c, k), 1e-12)
            << "n=" << n << " c=" << c << " k=" << k;
}

TEST(PassAtK, EdgesAndLargeN) {
  for (int64_t n : {1, 7, 64, 1000})
    for (int64_t c = 0; c <= n; c += std::max<int64_t>(1, n / 5))
      EXPECT_NEAR(pass_at_k(n, c, 1), static_cast<double>(c) / n, 1e-12);  // pass@1 = c/n
  EXPECT_EQ(pass_at_k(64, 0, 8), 0.0);
  EXPECT_EQ(pass_at_k(64, 57, 8), 1.0);  // n - c < k: every subset hits
  EXPECT_EQ(pass_at_k(5, 5, 5), 1.0);
  // C(200,100) ~ 9e58 overflows any integer; the product form stays in range.
  const double p = pass_at_k(200, 100, 100);
  EXPECT_TRUE(p > 0.999999 && p <= 1.0) << p;
  EXPECT_NEAR(pass_at_k(1000, 1, 10), 0.01, 1e-12);  // one correct sample: k/n
  EXPECT_THROW(pass_at_k(0, 0, 1), InputError);
  EXPECT_THROW(pass_at_k(4, 5, 1), InputError);
  EXPECT_THROW(pass_at_k(4, -1, 1), InputError);
  EXPECT_THROW(pass_at_k(4, 2, 0), InputError);
  EXPECT_THROW(pass_at_k(4, 2, 5), InputError);
}

// ---- majority vote -------------------------------------------------------------------------

using Answers = std::vector<std::optional<std::string>>;

TEST(MajorityVote, TiesGoToTheFirstToReachTheCount) {
  MajorityVote v = majority_vote({"3", "5", "5", "3"});  // 5 reaches 2 votes first
  EXPECT_TRUE(v.has_vote);
  EXPECT_EQ(v.answer, "5");
  EXPECT_EQ(v.votes, 2);
  EXPECT_EQ(majority_vote({"3", "5"}).answer, "3");
  EXPECT_EQ(majority_vote({"3", "5", "3", "5", "5"}).answer, "5");
  EXPECT_EQ(majority_vote({"a", "b", "c", "c", "b", "a"}).answer, "c");
}

TEST(MajorityVote, NumericallyEqualAnswersVoteTogether) {
  MajorityVote v = majority_vote({"1/3", "1/2", "0.5"});
  EXPECT_EQ(v.answer, "1/2");  // the group's first answer as written
  EXPECT_EQ(v.votes, 2);
  // 0.333 is not 1/3, so {1/3, 2/6} only ties {0.5, \frac{1}{2}}, which got there first.
  v = majority_vote({"0.5", "1/3", "\\frac{1}{2}", "0.333", "2/6"});
  EXPECT_EQ(v.answer, "0.5");
  EXPECT_EQ(v.votes, 2);
  v = majority_vote({"1/3", "0.5", "2/6", "1/2"});  // 2-2: 1/3 got its second vote first
  EXPECT_EQ(v.answer, "1/3");
  EXPECT_EQ(majority_vote({"1,000", "1000", "999"}).votes, 2);
  EXPECT_EQ(majority_vote({"x = 7", "7", "$7$", "-7"}).votes, 3);
  // Text answers group after normalization; a number never groups with text.
  v = majority_vote({"Bob, Alice", "Alice,  Bob", "$Alice, Bob$", "Bob, Alice."});
  EXPECT_EQ(v.answer, "Alice,  Bob");
  EXPECT_EQ(v.votes, 2);  // reached 2 at the third sample, before "Bob, Alice" did
  EXPECT_EQ(majority_vote({"7", "seven", "seven"}).answer, "seven");
}

TEST(MajorityVote, SamplesWithoutAnAnswerDoNotVote) {
  MajorityVote v = majority_vote({std::nullopt, std::nullopt, "", "$ $", "4"});
  EXPECT_TRUE(v.has_vote);
  EXPECT_EQ(v.answer, "4");
  EXPECT_EQ(v.votes, 1);
  EXPECT_FALSE(majority_vote({std::nullopt, ""}).has_vote);
  EXPECT_FALSE(majority_vote({}).has_vote);
}

// ---- evaluation over real task instances ------------------------------------------------------

data::PromptRecord record(const std::string& task, uint64_t seed, Lang lang = Lang::En) {
  const data::TaskInstance inst = data::generate_task(task, seed, 2, lang);
  return data::to_prompt_record(inst, data::r1_zero_prompt(inst.prompt));
}

std::string zero(const std::string& answer) {
  return "<think> working </think> <answer>" + answer + "</answer>";
}

QuestionSamples question(const data::PromptRecord& rec, std::vector<std::string> completions,
                         std::vector<int64_t> lengths) {
  return {rec, std::move(completions), std::move(lengths), ""};
}

struct Fixture {
  std::vector<QuestionSamples> questions;
  std::string arithmetic_answer;
};

// Five questions of four families; every metric below is counted from this table.
Fixture build(uint64_t seed) {
  Fixture f;
  const data::PromptRecord ar = record("arithmetic", seed);
  const std::string x = ar.answer, w = ar.answer + "1";  // integers: x.0 and 2x/2 equal x
  f.arithmetic_answer = x;
  const int64_t twice = 2 * data::parse_number(x)->num;
  // correct 3/6, well formed 4/6, answered 5/6; vote: w reaches 2 first, but {x.0, 2x/2, $x$}
  // reaches 3 -> the vote is "x.0", which verifies.
  f.questions.push_back(question(ar,
                                 {zero(w), zero(w), zero(x + ".0"),
                                  zero(fmt::format("\\frac{{{}}}{{2}}", twice)),
                                  zero("$" + x + "$") + " trailing text", "<think> no idea"},
                                 {10, 20, 30, 40, 50, 60}));
  // No answers at all: correct 0, no vote.
  f.questions.push_back(question(record("arithmetic", seed + 1), {"", "<think> hmm"}, {5, 7}));
  // countdown: wrong, wrong, right -> pass 1/3, the vote is wrong.
  const data::PromptRecord cd = record("countdown", seed);
  f.questions.push_back(
      question(cd, {zero(cd.answer + "1"), zero(cd.answer + "1"), zero(cd.answer)}, {3, 3, 3}));
  // list: right, wrong, wrong, right -> 2-2, the wrong answer reached 2 first.
  const data::PromptRecord li = record("list", seed);
  f.questions.push_back(question(
      li, {zero(li.answer), zero(li.answer + "1"), zero(li.answer + "1"), zero(li.answer)},
      {1, 2, 3, 4}));
  // ordering (in Chinese): wrong, right, right, wrong -> 2-2, the right answer first.
  const data::PromptRecord od = record("ordering", seed, Lang::Zh);
  f.questions.push_back(question(
      od, {zero(od.answer + "1"), zero(od.answer), zero(od.answer), zero(od.answer + "1")},
      {4, 4, 4, 4}));
  return f;
}

TEST(Evaluate, QuestionResult) {
  const Fixture f = build(test::case_seed(1));
  const QuestionResult r = evaluate_question(f.questions[0], CompletionStyle::R1Zero);
  EXPECT_EQ(r.samples, 6);
  EXPECT_EQ(r.correct, 3);
  EXPECT_EQ(r.well_formed, 4);
  EXPECT_EQ(r.answered, 5);
  EXPECT_EQ(r.length_sum, 210);
  EXPECT_EQ(r.vote.answer, f.arithmetic_answer + ".0");
  EXPECT_EQ(r.vote.votes, 3);
  EXPECT_TRUE(r.cons_correct);
  const QuestionResult none = evaluate_question(f.questions[1], CompletionStyle::R1Zero);
  EXPECT_FALSE(none.vote.has_vote);
  EXPECT_FALSE(none.cons_correct);
  EXPECT_EQ(none.answered, 0);
}

TEST(Evaluate, SummariesPerFamilyAndOverall) {
  const Fixture f = build(test::case_seed(2));
  const auto s = evaluate(f.questions, CompletionStyle::R1Zero);
  ASSERT_EQ(s.size(), 5u);  // four families and "all"

  const EvalSummary& ar = s.at("arithmetic");
  EXPECT_EQ(ar.questions, 2);
  EXPECT_EQ(ar.samples, 8);
  EXPECT_DOUBLE_EQ(ar.pass_at_1, (0.5 + 0.0) / 2);
  EXPECT_DOUBLE_EQ(ar.cons_at_k, 0.5);
  EXPECT_DOUBLE_EQ(ar.pass_at_k, 0.5);
  EXPECT_DOUBLE_EQ(ar.format_rate, 4.0 / 8);
  EXPECT_DOUBLE_EQ(ar.answer_rate, 5.0 / 8);
  EXPECT_DOUBLE_EQ(ar.mean_length, (210.0 + 12) / 8);

  const EvalSummary& cd = s.at("countdown");
  EXPECT_DOUBLE_EQ(cd.pass_at_1, 1.0 / 3);
  EXPECT_DOUBLE_EQ(cd.cons_at_k, 0.0);
  EXPECT_DOUBLE_EQ(cd.pass_at_k, 1.0);
  EXPECT_DOUBLE_EQ(cd.format_rate, 1.0);
  EXPECT_DOUBLE_EQ(cd.mean_length, 3.0);
  EXPECT_DOUBLE_EQ(s.at("list").pass_at_1, 0.5);
  EXPECT_DOUBLE_EQ(s.at("list").cons_at_k, 0.0);
  EXPECT_DOUBLE_EQ(s.at("list").mean_length, 2.5);
  EXPECT_DOUBLE_EQ(s.at("ordering").pass_at_1, 0.5);
  EXPECT_DOUBLE_EQ(s.at("ordering").cons_at_k, 1.0);

  const EvalSummary& all = s.at("all");
  EXPECT_EQ(all.questions, 5);
  EXPECT_EQ(all.samples, 19);
  EXPECT_DOUBLE_EQ(all.pass_at_1, (0.5 + 0.0 + 1.0 / 3 + 0.5 + 0.5) / 5);  // per question
  EXPECT_DOUBLE_EQ(all.cons_at_k, 2.0 / 5);
  EXPECT_DOUBLE_EQ(all.pass_at_k, 4.0 / 5);
  EXPECT_DOUBLE_EQ(all.format_rate, 15.0 / 19);  // per sample
  EXPECT_DOUBLE_EQ(all.answer_rate, 16.0 / 19);
  EXPECT_DOUBLE_EQ(all.mean_length, (222.0 + 9 + 10 + 16) / 19);

  const json j = to_json(s);
  EXPECT_EQ(j.at("all").at("questions"), 5);
  for (const char* key : {"questions", "samples", "pass@1", "cons@k", "pass@k", "format_rate",
                          "answer_rate", "mean_length"})
    EXPECT_TRUE(j.at("countdown").contains(key)) << key;
  EXPECT_DOUBLE_EQ(j.at("ordering").at("cons@k").get<double>(), 1.0);
}

TEST(Evaluate, TaskNameOverridesTheRecordsAndChatStyle) {
  const data::PromptRecord rec = record("arithmetic", test::case_seed(3));
  const std::string boxed = "\\boxed{" + rec.answer + "}";
  QuestionSamples q =
      question(rec, {"Let me see.</think>\n\nSo " + boxed + ".", "Let me see. " + boxed}, {8, 12});
  q.task = "math-easy";
  const auto s = evaluate({q}, CompletionStyle::Chat);
  ASSERT_EQ(s.size(), 2u);
  const EvalSummary& m = s.at("math-easy");
  EXPECT_DOUBLE_EQ(m.pass_at_1, 0.5);  // the second never closed its reasoning
  EXPECT_DOUBLE_EQ(m.format_rate, 0.5);
  EXPECT_DOUBLE_EQ(m.cons_at_k, 1.0);
  EXPECT_DOUBLE_EQ(m.mean_length, 10.0);
  EXPECT_EQ(s.at("all").questions, 1);
}

TEST(Evaluate, EmptyInputAndBadQuestions) {
  const auto empty = evaluate({}, CompletionStyle::R1Zero);
  ASSERT_EQ(empty.size(), 1u);
  EXPECT_EQ(empty.at("all").questions, 0);
  EXPECT_EQ(empty.at("all").pass_at_1, 0.0);

  const data::PromptRecord rec = record("list", test::case_seed(4));
  const QuestionSamples good = question(rec, {zero(rec.answer)}, {3});
  const auto message = [&](QuestionSamples bad) -> std::string {
    try {
      evaluate({good, bad}, CompletionStyle::R1Zero);
    } catch (const InputError& e) {
      return e.what();
    }
    return "(no error)";
  };
  EXPECT_NE(message(question(rec, {}, {})).find("question 1"), std::string::npos);
  EXPECT_NE(message(question(rec, {"a", "b"}, {1})).find("question 1"), std::string::npos);
  EXPECT_NE(message(question(rec, {"a"}, {-1})).find("question 1"), std::string::npos);
  QuestionSamples all = good;
  all.task = "all";
  EXPECT_NE(message(all).find("reserved"), std::string::npos);
}

}  // namespace
}  // namespace r1::rl
