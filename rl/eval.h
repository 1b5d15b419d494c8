// Evaluation metrics over k samples per question, as the DeepSeek-R1 paper reports them
// (section 3, "Evaluation Setup"):
//  - pass@1 = (1/k) sum_i p_i per question (p_i: sample i is correct), averaged over questions;
//  - cons@k = majority vote over the k samples' answers, correct if the voted answer verifies;
// and the unbiased pass@k estimator of Chen et al. 2021 (Codex), for n samples, c correct.
// Correctness, answers and format come from the rewards' verifiers (rl/rewards.h).
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "data/dataset.h"
#include "rl/rewards.h"

namespace r1::rl {

// pass@k = 1 - C(n-c, k) / C(n, k): the chance that k of the n samples, drawn without
// replacement, include a correct one. Computed as 1 - prod_{i=n-c+1..n} (1 - k/i), which
// never forms the (huge) binomials. InputError unless 0 <= c <= n and 1 <= k <= n.
double pass_at_k(int64_t n, int64_t c, int64_t k);

// The majority answer of one question's samples. Answers are grouped by value: two answers
// that data::parse_number both parse are equal when the numbers are (so "1/2" and "0.5"
// vote together); otherwise by data::normalize_answer_text. A number never groups with a
// non-number. Samples without an answer (nullopt or empty) do not vote. Ties go to the
// answer that reached the winning count first in sample order. `answer` is the first
// sample's text of the winning group (what gets verified).
struct MajorityVote {
  bool has_vote = false;  // false when no sample has an answer
  std::string answer;
  int64_t votes = 0;
};
MajorityVote majority_vote(const std::vector<std::optional<std::string>>& answers);

// One question and its k samples. `task` names the family it is reported under (empty:
// record.task); "all" is reserved for the overall summary.
struct QuestionSamples {
  data::PromptRecord record;
  std::vector<std::string> completions;
  std::vector<int64_t> lengths;  // response length in tokens, one per completion
  std::string task;
};

// One question's results.
struct QuestionResult {
  int64_t samples = 0, correct = 0, well_formed = 0, answered = 0, length_sum = 0;
  MajorityVote vote;
  bool cons_correct = false;  // the voted answer verifies
};
QuestionResult evaluate_question(const QuestionSamples& q, CompletionStyle style);

// Metrics of a set of questions. pass_at_1 and pass_at_k are means over questions (each
// question weighs the same, however many samples it has); format_rate, answer_rate and
// mean_length are means over samples.
struct EvalSummary {
  int64_t questions = 0, samples = 0;
  double pass_at_1 = 0;    // mean over questions of the share of correct samples
  double cons_at_k = 0;    // share of questions whose majority answer verifies
  double pass_at_k = 0;    // share of questions with a correct sample (k = all their samples)
  double format_rate = 0;  // share of well-formed samples
  double answer_rate = 0;  // share of samples with an extracted answer
  double mean_length = 0;  // tokens per sample
  // {"questions", "samples", "pass@1", "cons@k", "pass@k", "format_rate", "answer_rate",
  //  "mean_length"}.
  nlohmann::json to_json() const;
};

// Summaries per task family plus "all" (present even for no questions). InputError on a
// question without samples, lengths that do not match the completions, a negative length,
// or a task named "all"; the message names the question's index.
std::map<std::string, EvalSummary> evaluate(const std::vector<QuestionSamples>& questions,
                                            CompletionStyle style);
nlohmann::json to_json(const std::map<std::string, EvalSummary>& summaries);

}  // namespace r1::rl
