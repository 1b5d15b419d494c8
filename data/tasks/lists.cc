// List manipulation (sort, reverse, dedupe, top-k) and a logic puzzle family (ordering
// people by height from pairwise clues). Answers are comma-separated lists, compared
// element by element after parsing.
#include <algorithm>
#include <set>

#include "data/tasks/task.h"
#include "engine/error.h"

namespace r1::data {

namespace {

std::string join(const std::vector<std::string>& v) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
  return s;
}

std::vector<std::string> to_strings(const std::vector<int64_t>& v) {
  std::vector<std::string> s;
  for (int64_t x : v) s.push_back(std::to_string(x));
  return s;
}

// Items of a list answer: optional [..], separated by ',', '，', ';', '>' or whitespace.
std::vector<std::string> split_items(std::string_view a) {
  std::string s;  // full-width and ideographic commas become ','
  for (size_t i = 0; i < a.size(); ++i) {
    const std::string_view rest = a.substr(i);
    if (rest.starts_with("\xef\xbc\x8c") || rest.starts_with("\xe3\x80\x81")) {
      s += ',';
      i += 2;
    } else {
      s += a[i];
    }
  }
  std::vector<std::string> items;
  std::string cur;
  const auto flush = [&] {
    if (!cur.empty()) items.push_back(cur);
    cur.clear();
  };
  size_t b = 0, e = s.size();
  while (b < e && s[b] == ' ') ++b;
  while (e > b && s[e - 1] == ' ') --e;
  if (e - b >= 2 && s[b] == '[' && s[e - 1] == ']') ++b, --e;
  for (size_t i = b; i < e; ++i) {
    const char c = s[i];
    if (c == ',' || c == ';' || c == '>' || c == ' ' || c == '\n' || c == '\t') flush();
    else cur += c;
  }
  flush();
  return items;
}

enum class ListOp { SortAsc, SortDesc, Reverse, Dedupe, TopK };

}  // namespace

TaskInstance list_generate(uint64_t seed, int difficulty, Lang lang) {
  TaskRng rng(seed);
  const int n = 1 + 2 * difficulty;  // 3 numbers at difficulty 1 (a ~1M-parameter base's level), 11 at 5
  const int64_t span = 10 * difficulty;
  std::vector<int64_t> v(n);
  for (auto& x : v) x = rng.uniform(-span, span);
  // Difficulty 1 asks for one of the three order operations (sort either way, reverse): with
  // all five, a ~1M-parameter base could not tell the instructions apart and RL only moved
  // probability between them (docs/rl.md); from difficulty 2 on, dedupe and top-k join.
  const auto op = static_cast<ListOp>(rng.next() % (difficulty == 1 ? 3 : 5));
  const int64_t k = rng.uniform(2, n - 1);
  std::vector<int64_t> r = v;
  std::string en, zh;
  switch (op) {
    case ListOp::SortAsc:
      std::sort(r.begin(), r.end());
      en = "Sort the list in ascending order";
      zh = "把列表按从小到大排序";
      break;
    case ListOp::SortDesc:
      std::sort(r.rbegin(), r.rend());
      en = "Sort the list in descending order";
      zh = "把列表按从大到小排序";
      break;
    case ListOp::Reverse:
      std::reverse(r.begin(), r.end());
      en = "Reverse the list";
      zh = "把列表倒序排列";
      break;
    case ListOp::Dedupe: {
      std::set<int64_t> seen;
      r.clear();
      for (int64_t x : v)
        if (seen.insert(x).second) r.push_back(x);
      en = "Remove repeated numbers from the list, keeping the first occurrence of each";
      zh = "去掉列表中重复的数，每个数只保留第一次出现";
      break;
    }
    case ListOp::TopK:
      std::sort(r.rbegin(), r.rend());
      r.resize(k);
      en = fmt::format("List the {} largest numbers of the list, largest first", k);
      zh = fmt::format("按从大到小列出列表中最大的 {} 个数", k);
      break;
  }
  const std::string list = "[" + join(to_strings(v)) + "]";
  TaskInstance inst;
  inst.prompt = lang == Lang::En ? fmt::format("{}: {}. Answer with the numbers separated by commas.", en, list)
                                 : fmt::format("{}：{}。答案用逗号分隔。", zh, list);
  inst.answer = join(to_strings(r));
  inst.solution = lang == Lang::En
      ? fmt::format("The list is {}. {} gives {}.", list, en, inst.answer)
      : fmt::format("列表是 {}。{}，得到 {}。", list, zh, inst.answer);
  inst.meta = {{"list", v}, {"op", static_cast<int>(op)}, {"k", k}, {"expected", r}};
  return inst;
}

bool list_verify(const TaskInstance& inst, std::string_view answer) {
  const auto items = split_items(answer);
  const auto want = inst.meta.at("expected").get<std::vector<int64_t>>();
  if (items.size() != want.size()) return false;
  for (size_t i = 0; i < items.size(); ++i) {
    const std::string& s = items[i];
    const size_t digits_from = !s.empty() && (s[0] == '-' || s[0] == '+') ? 1 : 0;
    if (s.size() == digits_from || s.size() > 19) return false;
    for (size_t j = digits_from; j < s.size(); ++j)
      if (s[j] < '0' || s[j] > '9') return false;
    if (std::stoll(s) != want[i]) return false;
  }
  return true;
}

TaskInstance ordering_generate(uint64_t seed, int difficulty, Lang lang) {
  static const std::vector<std::string> kEn = {"Alice", "Bob", "Carol", "Dave", "Eve", "Frank",
                                               "Grace", "Heidi"};
  static const std::vector<std::string> kZh = {"小明", "小红", "小刚", "小丽", "小华", "小强",
                                               "小芳", "小军"};
  TaskRng rng(seed);
  const size_t n = 2 + static_cast<size_t>(difficulty);  // 3..7 people
  std::vector<std::string> order(lang == Lang::En ? kEn : kZh);
  rng.shuffle(order);
  order.resize(n);  // order[0] is the tallest
  std::vector<std::pair<size_t, size_t>> pairs;  // (taller, shorter) positions
  for (size_t i = 0; i + 1 < n; ++i) pairs.emplace_back(i, i + 1);
  for (int extra = 0; extra < difficulty - 1; ++extra) {  // redundant clues as distractors
    const size_t i = rng.next() % (n - 1), j = i + 1 + rng.next() % (n - 1 - i);
    pairs.emplace_back(i, j);
  }
  rng.shuffle(pairs);
  std::string clues, chain, rewritten;
  for (const auto& [i, j] : pairs) {
    // From difficulty 2 on, a clue may be stated the other way round ("shorter than").
    const bool flip = rng.next() % 2 && difficulty >= 2;
    rewritten += fmt::format("{}{} > {}", rewritten.empty() ? "" : ", ", order[i], order[j]);
    if (lang == Lang::En)
      clues += flip ? fmt::format("{} is shorter than {}. ", order[j], order[i])
                    : fmt::format("{} is taller than {}. ", order[i], order[j]);
    else
      clues += flip ? fmt::format("{}比{}矮。", order[j], order[i])
                    : fmt::format("{}比{}高。", order[i], order[j]);
  }
  for (size_t i = 0; i + 1 < n; ++i) chain += fmt::format("{} > {}{}", order[i], order[i + 1], i + 2 < n ? ", " : "");
  TaskInstance inst;
  inst.prompt = lang == Lang::En
      ? clues + "List everyone from tallest to shortest, separated by commas."
      : clues + "请按从高到矮的顺序列出所有人，用逗号分隔。";
  inst.answer = join(order);
  inst.solution = lang == Lang::En
      ? fmt::format("Chaining the direct comparisons: {}. So the order is {}.", chain, inst.answer)
      : fmt::format("把相邻的比较连起来：{}。所以顺序是 {}。", chain, inst.answer);
  inst.meta = {{"order", order}};
  // The careful solution first rewrites every clue, in the prompt's order, as taller > shorter
  // (a "shorter than" clue flips), then chains from the one nobody is taller than.
  inst.careful_solution = lang == Lang::En
      ? fmt::format("Each clue as taller > shorter: {}. Chaining them: {}. So the order is {}.",
                    rewritten, chain, inst.answer)
      : fmt::format("把每条线索写成 高 > 矮：{}。连起来：{}。所以顺序是 {}。", rewritten, chain,
                    inst.answer);
  return inst;
}

bool ordering_verify(const TaskInstance& inst, std::string_view answer) {
  return split_items(answer) == inst.meta.at("order").get<std::vector<std::string>>();
}

}  // namespace r1::data
