// The base-model corpus: worked, step-by-step solutions of the tasks in English and Chinese,
// and plain general text (simple facts and short narratives from templates), so that a tiny
// base model pretrained on it has latent skill for R1-Zero to draw out. The corpus never
// uses the <think>/<answer> format by default: that is for RL to elicit, as in the paper.
//
// A tiny base model is not V3, though: it has seen no web text full of tagged conversations
// and cannot discover a tag format by chance in a few minutes of RL, and a base pretrained
// only on clean worked solutions has nothing left for RL to sharpen. Two knobs model what a
// real base has seen: `r1_format_share` of the task documents are conversations in the
// R1-Zero template (r1_zero_prompt_short) with the work in <think> and the answer in
// <answer>; `wrong_share` of the task documents end in a wrong final answer (web text is
// not all correct work); `careful_share` of the task documents show the family's careful
// solution (TaskInstance::careful_solution: search and check, column arithmetic, clue by
// clue) instead of the terse one, so the base knows both behaviours and uses the careful one
// only sometimes: RL finding that it earns reward is the R1-Zero effect in miniature (the
// "cognitive behaviours" that Gandhi et al. 2025 show a base needs for RL to improve it on
// Countdown). All default to 0; the tiny R1-Zero preset sets them and says so.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "data/tasks/task.h"

namespace r1::data {

struct CorpusOptions {
  int64_t documents = 1000;
  uint64_t seed = 0;
  double general_share = 0.3;  // the rest are worked task solutions
  double chinese_share = 0.5;
  int min_difficulty = 1, max_difficulty = 5;
  double r1_format_share = 0.0;  // of the task documents: R1-Zero conversations
  double wrong_share = 0.0;      // of the task documents: a wrong final answer
  double careful_share = 0.0;    // of the task documents (with one): the careful solution
  std::vector<std::string> tasks;  // families to draw from ("name" or "name:weight"); empty = all
};

// A plausible wrong answer for an instance (a different number near the right one, two list
// items swapped, an operator of an expression changed); never equal to the right answer
// under the task's verifier when one can be made, else the answer itself.
std::string corrupt_answer(const TaskInstance& inst, uint64_t seed);

std::vector<std::string> generate_corpus(const CorpusOptions& opt);

}  // namespace r1::data
