#include "data/corpus.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>

#include "data/tasks/task.h"
#include "data/templates.h"
#include "data/answer.h"
#include "engine/error.h"

namespace r1::data {

namespace {

// General text from a few templates: number facts, comparisons, short everyday scenes.
std::string general_text(TaskRng& rng, Lang lang) {
  static const std::vector<std::string> kNamesEn = {"Alice", "Bob", "Carol", "Dave", "Eve", "Frank"};
  static const std::vector<std::string> kNamesZh = {"小明", "小红", "小刚", "小丽", "小华", "小强"};
  static const std::vector<std::string> kThingsEn = {"apples", "books", "pencils", "coins", "cards"};
  static const std::vector<std::string> kThingsZh = {"苹果", "本书", "支铅笔", "枚硬币", "张卡片"};
  const bool en = lang == Lang::En;
  std::string s;
  const int sentences = 2 + static_cast<int>(rng.next() % 4);
  for (int k = 0; k < sentences; ++k) {
    const int64_t a = rng.uniform(2, 99), b = rng.uniform(2, 99);
    const std::string& who = rng.pick(en ? kNamesEn : kNamesZh);
    const std::string& what = rng.pick(en ? kThingsEn : kThingsZh);
    switch (rng.next() % 5) {
      case 0:
        s += en ? fmt::format("{} is {} number. ", a, a % 2 ? "an odd" : "an even")
                : fmt::format("{} 是{}数。", a, a % 2 ? "奇" : "偶");
        break;
      case 1:
        s += en ? fmt::format("{} has {} {} and buys {} more, so {} now has {} {}. ", who, a, what, b, who, a + b, what)
                : fmt::format("{}有 {} {}，又买了 {} {}，现在一共有 {} {}。", who, a, what, b, what, a + b, what);
        break;
      case 2:
        s += en ? fmt::format("{} is {} than {}. ", a, a > b ? "greater" : a < b ? "less" : "equal to", b)
                : fmt::format("{} {} {}。", a, a > b ? "大于" : a < b ? "小于" : "等于", b);
        break;
      case 3:
        s += en ? fmt::format("{} times {} is {}. ", a, b, a * b)
                : fmt::format("{} 乘以 {} 等于 {}。", a, b, a * b);
        break;
      default:
        s += en ? fmt::format("{} likes to check each step of a calculation twice. ", who)
                : fmt::format("{}喜欢把每一步计算都检查两遍。", who);
        break;
    }
  }
  return s;
}

}  // namespace

std::string corrupt_answer(const TaskInstance& inst, uint64_t seed) {
  TaskRng rng(seed);
  const std::string& a = inst.answer;
  for (int attempt = 0; attempt < 16; ++attempt) {
    std::string w = a;
    if (const auto num = parse_number(a); num && num->den == 1) {
      int64_t d = rng.uniform(1, 10);
      if (rng.next() % 2) d = -d;
      w = std::to_string(num->num + d);
    } else if (a.find(", ") != std::string::npos) {  // a list: swap two items
      std::vector<std::string> items;
      size_t start = 0;
      for (size_t k; (k = a.find(", ", start)) != std::string::npos; start = k + 2)
        items.push_back(a.substr(start, k - start));
      items.push_back(a.substr(start));
      const size_t i = rng.next() % items.size(), j = rng.next() % items.size();
      std::swap(items[i], items[j]);
      w.clear();
      for (size_t k = 0; k < items.size(); ++k) w += (k ? ", " : "") + items[k];
    } else {  // an expression: change one operator
      std::vector<size_t> ops;
      for (size_t k = 1; k + 1 < a.size(); ++k)
        if (a[k - 1] == ' ' && a[k + 1] == ' ' && std::string_view("+-*/").find(a[k]) != std::string_view::npos)
          ops.push_back(k);
      if (ops.empty()) return a;
      w[ops[rng.next() % ops.size()]] = "+-*/"[rng.next() % 4];
    }
    if (!verify_task(inst, w)) return w;
  }
  return a;
}

std::vector<std::string> generate_corpus(const CorpusOptions& opt) {
  R1_INPUT_CHECK(opt.documents >= 0, "corpus: documents must be >= 0, got {}", opt.documents);
  R1_INPUT_CHECK(opt.min_difficulty >= 1 && opt.max_difficulty <= 5 &&
                     opt.min_difficulty <= opt.max_difficulty,
                 "corpus: difficulty range {}..{} is not within 1..5", opt.min_difficulty,
                 opt.max_difficulty);
  TaskRng rng(opt.seed);
  // "name" or "name:weight"; families are drawn in registry order, uniformly unless weighted.
  std::vector<std::pair<std::string, double>> wanted;
  for (const std::string& spec : opt.tasks) {
    const size_t colon = spec.find(':');
    double w = 1.0;
    if (colon != std::string::npos) {
      char* end = nullptr;
      const std::string ws = spec.substr(colon + 1);
      w = std::strtod(ws.c_str(), &end);
      R1_INPUT_CHECK(!ws.empty() && end == ws.c_str() + ws.size() && std::isfinite(w) && w > 0,
                     "corpus: task \"{}\": the weight after ':' must be a positive number", spec);
    }
    wanted.emplace_back(spec.substr(0, colon), w);
    find_task(wanted.back().first);  // InputError on an unknown name
  }
  std::vector<const Task*> tasks;
  std::vector<double> cumulative;
  for (const Task& t : all_tasks()) {
    const auto it = std::find_if(wanted.begin(), wanted.end(), [&](const auto& p) { return p.first == t.name; });
    if (!wanted.empty() && it == wanted.end()) continue;
    tasks.push_back(&t);
    cumulative.push_back((cumulative.empty() ? 0.0 : cumulative.back()) + (it == wanted.end() ? 1.0 : it->second));
  }
  const bool weighted = std::any_of(wanted.begin(), wanted.end(), [&](const auto& p) { return p.second != wanted[0].second; });
  std::vector<std::string> docs;
  docs.reserve(static_cast<size_t>(opt.documents));
  const auto chance = [&](double p) { return static_cast<double>(rng.next() >> 11) * 0x1.0p-53 < p; };
  for (int64_t i = 0; i < opt.documents; ++i) {
    const Lang lang = chance(opt.chinese_share) ? Lang::Zh : Lang::En;
    if (chance(opt.general_share)) {
      docs.push_back(general_text(rng, lang));
      continue;
    }
    size_t pick = 0;
    if (weighted) {
      const double u = static_cast<double>(rng.next() >> 11) * 0x1.0p-53 * cumulative.back();
      while (pick + 1 < tasks.size() && u >= cumulative[pick]) ++pick;
    } else {
      pick = rng.next() % tasks.size();  // the unweighted corpus stays the same for a seed
    }
    const Task& task = *tasks[pick];
    const int d = static_cast<int>(rng.uniform(opt.min_difficulty, opt.max_difficulty));
    TaskInstance inst = generate_task(task.name, rng.next(), d, lang);
    const bool wrong = opt.wrong_share > 0 && chance(opt.wrong_share);
    const bool r1_format = opt.r1_format_share > 0 && chance(opt.r1_format_share);
    if (opt.careful_share > 0 && chance(opt.careful_share) && !inst.careful_solution.empty())
      inst.solution = inst.careful_solution;
    if (wrong) {
      const std::string w = corrupt_answer(inst, rng.next());
      // The work ends in the wrong answer too: its last mention of the answer changes.
      const size_t at = inst.solution.rfind(inst.answer);
      if (at != std::string::npos) inst.solution.replace(at, inst.answer.size(), w);
      inst.answer = w;
    }
    if (r1_format) {
      docs.push_back(r1_zero_prompt_short(inst.prompt) + " <think> " + inst.solution +
                     " </think> <answer> " + inst.answer + " </answer>");
      continue;
    }
    docs.push_back(lang == Lang::En
                       ? fmt::format("Question: {}\nSolution: {}\nAnswer: {}\n", inst.prompt, inst.solution, inst.answer)
                       : fmt::format("问题：{}\n解答：{}\n答案：{}\n", inst.prompt, inst.solution, inst.answer));
  }
  return docs;
}

}  // namespace r1::data
