// Rule-based rewards of the R1 pipeline (DeepSeek-R1 paper, 2.2.2 and 2.3.2): verifiers,
// not a learned model.
//  - accuracy: the final answer (data/answer.h extract_answer: the last <answer>..</answer>,
//    its \boxed{} if it has one, else the last \boxed{}) checked by the task's verifier
//    (data::verify_record). The answer is looked for outside the reasoning block only: a
//    completion whose right answer appears only inside <think>..</think> gets no credit.
//  - format: the completion has the shape its template asks for (data/templates.h).
//  - language consistency: the share of target-language words in the reasoning (2.3.2),
//    which R1 adds to accuracy in its reasoning-oriented RL stage.
// total = accuracy_w * accuracy + format_w * format + language_w * language.
#pragma once
#include <nlohmann/json.hpp>

#include <optional>
#include <string>
#include <string_view>

#include "data/dataset.h"
#include "data/tasks/task.h"

namespace r1::rl {

// Which template produced the completion.
//  R1Zero: the prompt ends at "Assistant:"; the completion should be
//          "<think> .. </think> <answer> .. </answer>" (data::parse_r1_zero_completion).
//  Chat:   the prompt ends with "<think>\n"; the completion is "reasoning</think>summary"
//          (data::parse_r1_chat_completion), the answer in the summary's \boxed{} or <answer>.
enum class CompletionStyle { R1Zero, Chat };
CompletionStyle completion_style_from_string(std::string_view s);  // "r1_zero" | "chat"
const char* completion_style_name(CompletionStyle s);

// Defaults are R1-Zero's rewards: accuracy plus a small format term. Format is weighted 0.1
// so that a well-formed wrong answer (0.1) stays far below a right one (1.1): format only
// shapes the output early on, and once every sample of a group is well formed it is a
// constant that group normalization removes. Language consistency is off (0): R1 adds it
// (summed with accuracy, i.e. weight 1) only in the reasoning RL stage after the cold start,
// where the stage config sets it.
struct RewardWeights {
  double accuracy = 1.0;
  double format = 0.1;
  double language = 0.0;

  // Every weight finite and >= 0 (a negative weight would reward failing the verifier);
  // InputError naming the field.
  void validate() const;
  // {"accuracy": .., "format": .., "language": ..}; missing keys keep their defaults.
  // InputError on a non-object, an unknown key or a non-number, naming the key.
  static RewardWeights from_json(const nlohmann::json& j);
  nlohmann::json to_json() const;
};

struct RewardBreakdown {
  double accuracy = 0, format = 0, language = 0, total = 0;  // each term in [0, 1]; total weighted
  bool well_formed = false;
  bool has_answer = false;  // an answer (non-empty) was extracted outside the reasoning
  std::string answer;       // that answer, as extracted
};

// The final answer as the accuracy reward sees it: data::extract_answer over the text after
// the reasoning. The reasoning is everything before the last </think>; with no </think> it
// runs from the first <think> to the end (R1Zero) or is the whole completion (Chat, whose
// prompt opened <think>): an unfinished thought commits to nothing.
std::optional<std::string> extract_final_answer(std::string_view completion, CompletionStyle style);

// The target language of a record: rec.meta["lang"] ("en" | "zh") if present, else English.
// InputError on another value.
data::Lang record_language(const data::PromptRecord& rec);

RewardBreakdown score_completion(const data::PromptRecord& rec, std::string_view completion,
                                 const RewardWeights& w, CompletionStyle style);

// Share of the words of `text` that are in the target language, in [0, 1]. Words:
//  - a run of Latin letters (ASCII, and the accented letters of Latin-1 Supplement and
//    Latin Extended-A/B, so "café" is one word) is one English word, except a LaTeX command
//    name (letters right after a backslash, "\frac"), which is math;
//  - each CJK ideograph (U+4E00-9FFF, Ext. A U+3400-4DBF, Ext. B-F U+20000-2EBEF,
//    compatibility U+F900-FAFF and U+2F800-2FA1F) is one Chinese word;
//  - each kana (U+3040-30FF) and Hangul syllable (U+AC00-D7AF), and each run of Cyrillic
//    letters (U+0400-04FF), is a word of neither target: it counts in the denominator only;
//  - digits, spaces, punctuation, math symbols (Greek letters included) and everything else
//    are not words.
// Single-letter variable names ("x") are English words, as the definition reads.
// Text without words scores 0, so empty or symbol-only reasoning is never rewarded.
// UTF-8 is decoded strictly (no overlongs, surrogates or code points past U+10FFFF); an
// invalid byte is skipped and, like punctuation, ends the current word.
double language_consistency(std::string_view text, data::Lang target);

}  // namespace r1::rl
