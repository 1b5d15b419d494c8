// The base-model corpus: worked, step-by-step solutions of the tasks in English and Chinese,
// and plain general text (simple facts and short narratives from templates), so that a tiny
// base model pretrained on it has latent skill for R1-Zero to draw out. The corpus never
// uses the <think>/<answer> format: that is for RL to elicit, as in the paper.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace r1::data {

struct CorpusOptions {
  int64_t documents = 1000;
  uint64_t seed = 0;
  double general_share = 0.3;  // the rest are worked task solutions
  double chinese_share = 0.5;
  int min_difficulty = 1, max_difficulty = 5;
};

std::vector<std::string> generate_corpus(const CorpusOptions& opt);

}  // namespace r1::data
