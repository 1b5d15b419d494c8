#include "rl/eval.h"

#include <fmt/format.h>

#include "data/answer.h"
#include "engine/error.h"

namespace r1::rl {

using json = nlohmann::json;

double pass_at_k(int64_t n, int64_t c, int64_t k) {
  R1_INPUT_CHECK(n >= 1 && c >= 0 && c <= n && k >= 1 && k <= n,
                 "pass@k: need 0 <= c <= n and 1 <= k <= n, got n={} c={} k={}", n, c, k);
  if (n - c < k) return 1.0;  // every k-subset holds a correct sample
  // C(n-c, k) / C(n, k) = prod_{i=n-c+1..n} (i - k) / i.
  double miss = 1.0;
  for (int64_t i = n - c + 1; i <= n; ++i)
    miss *= 1.0 - static_cast<double>(k) / static_cast<double>(i);
  return 1.0 - miss;
}

MajorityVote majority_vote(const std::vector<std::optional<std::string>>& answers) {
  struct Group {
    std::optional<data::Rational> number;
    std::string text;   // normalized, when not a number
    std::string first;  // the first sample's answer as written
    int64_t votes = 0;
  };
  std::vector<Group> groups;  // k is small: a linear scan beats hashing rationals
  size_t leader = 0;
  for (const auto& a : answers) {
    if (!a) continue;
    const std::optional<data::Rational> number = data::parse_number(*a);
    std::string text = number ? std::string() : data::normalize_answer_text(*a);
    if (!number && text.empty()) continue;
    size_t g = 0;
    while (g < groups.size() &&
           !(number ? groups[g].number == number : !groups[g].number && groups[g].text == text))
      ++g;
    if (g == groups.size()) groups.push_back({number, std::move(text), *a, 0});
    // Strictly more: on a tie the group that reached the count first keeps the lead.
    if (++groups[g].votes > groups[leader].votes) leader = g;
  }
  MajorityVote v;
  if (groups.empty()) return v;
  v.has_vote = true;
  v.answer = groups[leader].first;
  v.votes = groups[leader].votes;
  return v;
}

namespace {

void check_question(const QuestionSamples& q, const std::string& where) {
  R1_INPUT_CHECK(!q.completions.empty(), "{}: no completions to evaluate", where);
  R1_INPUT_CHECK(q.lengths.size() == q.completions.size(),
                 "{}: {} lengths for {} completions", where, q.lengths.size(),
                 q.completions.size());
  for (size_t i = 0; i < q.lengths.size(); ++i)
    R1_INPUT_CHECK(q.lengths[i] >= 0, "{}: completion {} has length {}", where, i, q.lengths[i]);
  R1_INPUT_CHECK((q.task.empty() ? q.record.task : q.task) != "all",
                 "{}: the task name \"all\" is reserved for the overall summary", where);
}

// Sums over questions, turned into means by finish().
struct Totals {
  int64_t questions = 0, samples = 0, cons = 0, any_correct = 0, well_formed = 0, answered = 0,
          length = 0;
  double pass_at_1 = 0;

  void add(const QuestionResult& r) {
    ++questions;
    samples += r.samples;
    pass_at_1 += static_cast<double>(r.correct) / static_cast<double>(r.samples);
    cons += r.cons_correct;
    any_correct += r.correct > 0;
    well_formed += r.well_formed;
    answered += r.answered;
    length += r.length_sum;
  }
  EvalSummary finish() const {
    EvalSummary s;
    s.questions = questions;
    s.samples = samples;
    if (questions == 0) return s;
    const auto per_q = [&](double x) { return x / static_cast<double>(questions); };
    const auto per_s = [&](int64_t x) {
      return static_cast<double>(x) / static_cast<double>(samples);
    };
    s.pass_at_1 = per_q(pass_at_1);
    s.cons_at_k = per_q(static_cast<double>(cons));
    s.pass_at_k = per_q(static_cast<double>(any_correct));
    s.format_rate = per_s(well_formed);
    s.answer_rate = per_s(answered);
    s.mean_length = per_s(length);
    return s;
  }
};

}  // namespace

QuestionResult evaluate_question(const QuestionSamples& q, CompletionStyle style) {
  check_question(q, "question");
  QuestionResult r;
  std::vector<std::optional<std::string>> answers;
  for (size_t i = 0; i < q.completions.size(); ++i) {
    const RewardBreakdown b = score_completion(q.record, q.completions[i], RewardWeights{}, style);
    ++r.samples;
    r.correct += b.accuracy > 0;
    r.well_formed += b.well_formed;
    r.answered += b.has_answer;
    r.length_sum += q.lengths[i];
    answers.push_back(b.has_answer ? std::optional<std::string>(b.answer) : std::nullopt);
  }
  r.vote = majority_vote(answers);
  r.cons_correct = r.vote.has_vote && data::verify_record(q.record, r.vote.answer);
  return r;
}

json EvalSummary::to_json() const {
  return {{"questions", questions},     {"samples", samples},         {"pass@1", pass_at_1},
          {"cons@k", cons_at_k},        {"pass@k", pass_at_k},        {"format_rate", format_rate},
          {"answer_rate", answer_rate}, {"mean_length", mean_length}};
}

std::map<std::string, EvalSummary> evaluate(const std::vector<QuestionSamples>& questions,
                                            CompletionStyle style) {
  std::map<std::string, Totals> totals;
  totals["all"];
  for (size_t i = 0; i < questions.size(); ++i) {
    const QuestionSamples& q = questions[i];
    check_question(q, fmt::format("question {}", i));
    const QuestionResult r = evaluate_question(q, style);
    totals[q.task.empty() ? q.record.task : q.task].add(r);
    totals["all"].add(r);
  }
  std::map<std::string, EvalSummary> out;
  for (const auto& [name, t] : totals) out[name] = t.finish();
  return out;
}

json to_json(const std::map<std::string, EvalSummary>& summaries) {
  json j = json::object();
  for (const auto& [name, s] : summaries) j[name] = s.to_json();
  return j;
}

}  // namespace r1::rl
