// Verifiable reasoning tasks: each is a seeded generator (difficulty 1..5) and an exact
// verifier. A generated instance carries its prompt (English or Chinese), the reference
// answer, a worked step-by-step solution (for the base-model corpus) and the parameters the
// verifier needs (meta), so an instance read back from JSONL verifies the same way.
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace r1::data {

enum class Lang { En, Zh };
Lang lang_from_string(std::string_view s);  // "en" | "zh"; InputError otherwise
const char* lang_name(Lang l);

struct TaskInstance {
  std::string task;
  int difficulty = 1;
  Lang lang = Lang::En;
  std::string prompt;
  std::string answer;    // the reference answer, as <answer> should hold it
  std::string solution;  // worked solution ending with the answer
  // A longer worked solution that checks its work (countdown: try each operation and compare
  // with the target; arithmetic: column by column; ordering: each clue rewritten as
  // taller > shorter before chaining); empty where the family has none. The corpus mixes the
  // two styles (CorpusOptions::careful_share), so a base samples both and RL can learn which
  // one earns reward: the behaviour selection R1-Zero shows at scale.
  std::string careful_solution;
  nlohmann::json meta = nlohmann::json::object();
};

struct Task {
  const char* name;
  TaskInstance (*generate)(uint64_t seed, int difficulty, Lang lang);
  // `answer` is the extracted answer text (see data/answer.h). Never executes host code.
  bool (*verify)(const TaskInstance& inst, std::string_view answer);
};

const std::vector<Task>& all_tasks();
const Task& find_task(std::string_view name);  // InputError naming the known tasks
TaskInstance generate_task(std::string_view name, uint64_t seed, int difficulty, Lang lang);
bool verify_task(const TaskInstance& inst, std::string_view answer);

// splitmix64: a tiny generator whose sequence is the same on every platform (the standard
// distributions are not).
struct TaskRng {
  uint64_t state;
  explicit TaskRng(uint64_t seed) : state(seed ^ 0x9E3779B97F4A7C15ull) {}
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  int64_t uniform(int64_t lo, int64_t hi) {  // inclusive
    return lo + static_cast<int64_t>(next() % static_cast<uint64_t>(hi - lo + 1));
  }
  template <class T>
  const T& pick(const std::vector<T>& v) { return v[next() % v.size()]; }
  template <class T>
  void shuffle(std::vector<T>& v) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[next() % i]);
  }
};

// The task families (one generate/verify pair each), defined in data/tasks/*.cc.
TaskInstance arithmetic_generate(uint64_t seed, int difficulty, Lang lang);
TaskInstance modular_generate(uint64_t seed, int difficulty, Lang lang);
TaskInstance linear_generate(uint64_t seed, int difficulty, Lang lang);
TaskInstance countdown_generate(uint64_t seed, int difficulty, Lang lang);
bool countdown_verify(const TaskInstance& inst, std::string_view answer);
TaskInstance list_generate(uint64_t seed, int difficulty, Lang lang);
bool list_verify(const TaskInstance& inst, std::string_view answer);
TaskInstance ordering_generate(uint64_t seed, int difficulty, Lang lang);
bool ordering_verify(const TaskInstance& inst, std::string_view answer);
TaskInstance program_generate(uint64_t seed, int difficulty, Lang lang);
bool program_verify(const TaskInstance& inst, std::string_view answer);
// Number answers: exact rational equality with the reference (answers_match).
bool numeric_verify(const TaskInstance& inst, std::string_view answer);

}  // namespace r1::data
