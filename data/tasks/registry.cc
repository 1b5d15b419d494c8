#include "data/answer.h"
#include "data/tasks/task.h"
#include "engine/error.h"

namespace r1::data {

Lang lang_from_string(std::string_view s) {
  if (s == "en") return Lang::En;
  if (s == "zh") return Lang::Zh;
  throw InputError(fmt::format("unknown language \"{}\" (en or zh)", s));
}

const char* lang_name(Lang l) { return l == Lang::En ? "en" : "zh"; }

bool numeric_verify(const TaskInstance& inst, std::string_view answer) {
  return parse_number(answer).has_value() && answers_match(answer, inst.answer);
}

const std::vector<Task>& all_tasks() {
  static const std::vector<Task> tasks = {
      {"arithmetic", arithmetic_generate, numeric_verify},
      {"countdown", countdown_generate, countdown_verify},
      {"linear", linear_generate, numeric_verify},
      {"modular", modular_generate, numeric_verify},
      {"list", list_generate, list_verify},
      {"ordering", ordering_generate, ordering_verify},
      {"program", program_generate, program_verify},
  };
  return tasks;
}

const Task& find_task(std::string_view name) {
  std::string known;
  for (const Task& t : all_tasks()) {
    if (name == t.name) return t;
    known += known.empty() ? t.name : std::string(", ") + t.name;
  }
  throw InputError(fmt::format("unknown task \"{}\" (known: {})", name, known));
}

TaskInstance generate_task(std::string_view name, uint64_t seed, int difficulty, Lang lang) {
  R1_INPUT_CHECK(difficulty >= 1 && difficulty <= 5, "difficulty {} is not in 1..5", difficulty);
  TaskInstance inst = find_task(name).generate(seed, difficulty, lang);
  inst.task = std::string(name);
  inst.difficulty = difficulty;
  inst.lang = lang;
  inst.meta["seed"] = seed;
  return inst;
}

bool verify_task(const TaskInstance& inst, std::string_view answer) {
  return find_task(inst.task).verify(inst, answer);
}

}  // namespace r1::data
