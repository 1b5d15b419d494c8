// Countdown: reach a target with the given numbers, each used exactly once, and + - * /
// (as in TinyZero's R1-Zero reproduction). The generator builds the target from a random
// expression over all the numbers, so a solution always exists; the verifier parses the
// model's expression and evaluates it over exact rationals: no host code runs.
#include <algorithm>

#include "data/tasks/task.h"
#include "engine/error.h"

namespace r1::data {

namespace {

struct Q {  // exact rational with overflow detection
  __int128 n = 0, d = 1;
};
constexpr __int128 kLimit = static_cast<__int128>(1) << 100;
bool ok(const Q& q) { return q.d != 0 && q.n < kLimit && q.n > -kLimit && q.d < kLimit && q.d > -kLimit; }

// Recursive-descent parser: expr := term (('+'|'-') term)*, term := factor (('*'|'/') factor)*,
// factor := integer | '(' expr ')'. Unary minus is not allowed: only the given numbers.
class ExprParser {
 public:
  explicit ExprParser(std::string_view s) : s_(s) {}
  bool parse(Q* value, std::vector<int64_t>* numbers) {
    numbers_ = numbers;
    if (!expr(value)) return false;
    skip();
    return pos_ == s_.size();
  }

 private:
  void skip() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n')) ++pos_;
  }
  // One operator among the ASCII and Unicode spellings; returns '\0' if none.
  char op(const char* accepted) {
    skip();
    if (pos_ >= s_.size()) return '\0';
    static const std::pair<std::string_view, char> kOps[] = {
        {"+", '+'}, {"-", '-'}, {"\xe2\x88\x92", '-'}, {"*", '*'}, {"\xc3\x97", '*'},
        {"/", '/'}, {"\xc3\xb7", '/'}};
    for (const auto& [spell, c] : kOps)
      if (std::string_view(accepted).find(c) != std::string_view::npos &&
          s_.substr(pos_).starts_with(spell)) {
        pos_ += spell.size();
        return c;
      }
    return '\0';
  }
  bool expr(Q* v) {
    if (!term(v)) return false;
    for (char o; (o = op("+-")) != '\0';) {
      Q r;
      if (!term(&r)) return false;
      *v = o == '+' ? Q{v->n * r.d + r.n * v->d, v->d * r.d} : Q{v->n * r.d - r.n * v->d, v->d * r.d};
      if (!ok(*v)) return false;
    }
    return true;
  }
  bool term(Q* v) {
    if (!factor(v)) return false;
    for (char o; (o = op("*/")) != '\0';) {
      Q r;
      if (!factor(&r)) return false;
      if (o == '/' && r.n == 0) return false;
      *v = o == '*' ? Q{v->n * r.n, v->d * r.d} : Q{v->n * r.d, v->d * r.n};
      if (!ok(*v)) return false;
      reduce(v);
    }
    return true;
  }
  bool factor(Q* v) {
    skip();
    if (++depth_ > 64 || pos_ >= s_.size()) return false;
    bool good;
    if (s_[pos_] == '(') {
      ++pos_;
      good = expr(v) && (skip(), pos_ < s_.size() && s_[pos_] == ')');
      if (good) ++pos_;
    } else {
      const size_t start = pos_;
      while (pos_ < s_.size() && pos_ - start < 12 && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
      good = pos_ > start && !(pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9');
      if (good) {
        const int64_t x = std::stoll(std::string(s_.substr(start, pos_ - start)));
        numbers_->push_back(x);
        *v = Q{x, 1};
      }
    }
    --depth_;
    return good;
  }
  static void reduce(Q* v) {
    __int128 a = v->n < 0 ? -v->n : v->n, b = v->d < 0 ? -v->d : v->d;
    while (b != 0) a %= b, std::swap(a, b);
    if (a > 1) v->n /= a, v->d /= a;
  }

  std::string_view s_;
  size_t pos_ = 0;
  int depth_ = 0;
  std::vector<int64_t>* numbers_ = nullptr;
};

int64_t apply_op(int64_t a, char o, int64_t b) {
  return o == '+' ? a + b : o == '-' ? a - b : o == '*' ? a * b : a / b;
}

}  // namespace

TaskInstance countdown_generate(uint64_t seed, int difficulty, Lang lang) {
  TaskRng rng(seed);
  // Numbers per difficulty: 1 is a single operation (the level a ~1M-parameter base can
  // start from), 5 is the classic five-number game.
  static constexpr int kCount[5] = {2, 3, 3, 4, 5};
  const int n = kCount[difficulty - 1];
  for (;;) {
    std::vector<int64_t> nums(n);
    for (auto& x : nums) x = rng.uniform(1, 10 + 10 * difficulty);
    // Fold the numbers in a random order with random ops, keeping positive integers.
    std::vector<size_t> order(n);
    for (int i = 0; i < n; ++i) order[i] = i;
    rng.shuffle(order);
    int64_t value = nums[order[0]];
    std::string expr = std::to_string(value), steps;
    int64_t last_left = value;  // the last operation: its left operand and operator
    std::string steps_before_last;
    char last_op = '+';
    for (int i = 1; i < n; ++i) {
      if (i == n - 1) last_left = value, steps_before_last = steps;
      const int64_t x = nums[order[i]];
      char o = "+-*/"[rng.next() % 4];
      if (o == '/' && (x == 0 || value % x != 0)) o = '+';
      if (o == '-' && value <= x) o = '*';
      const int64_t next = apply_op(value, o, x);
      last_op = o;
      steps += fmt::format("{} {} {} = {}. ", value, o, x, next);
      expr = (i > 1 && (o == '*' || o == '/') ? "(" + expr + ")" : expr) + fmt::format(" {} {}", o, x);
      value = next;
    }
    if (value <= 0 || value > 100000) continue;
    std::string list;
    for (int i = 0; i < n; ++i) list += (i ? ", " : "") + std::to_string(nums[i]);
    TaskInstance inst;
    inst.prompt = lang == Lang::En
        ? fmt::format("Using the numbers [{}], each exactly once, and the operations + - * /, "
                      "write an expression equal to {}.", list, value)
        : fmt::format("用数字 [{}]（每个恰好用一次）和运算 + - * /，写出一个等于 {} 的算式。", list, value);
    inst.answer = expr;
    inst.solution = (lang == Lang::En ? "Try combining the numbers: " : "尝试组合这些数字：") +
                    steps + (lang == Lang::En ? "So the expression is " : "所以算式是 ") + expr +
                    (lang == Lang::En ? "." : "。");
    inst.meta = {{"numbers", nums}, {"target", value}};
    // The careful solution searches the last operation: it tries the operations in a random
    // order (its own generator, so prompt and answer do not depend on it), computes each
    // honestly and compares it with the target, and stops at the first that reaches it.
    TaskRng srng(seed ^ 0x5EA4C4ull);
    const int64_t x = nums[order[n - 1]], p = last_left;
    std::vector<char> ops;  // another operation that ties with the answer's (x * 1 = x / 1) is skipped
    for (char o : {'+', '-', '*', '/'})
      if ((o != '-' || p > x) && (o != '/' || (x != 0 && p % x == 0)) &&
          (o == last_op || apply_op(p, o, x) != value))
        ops.push_back(o);
    srng.shuffle(ops);
    std::string tries;
    for (char o : ops) {
      const int64_t r = apply_op(p, o, x);
      if (o != last_op) {
        tries += lang == Lang::En ? fmt::format("{} {} {} = {}, not {}. ", p, o, x, r, value)
                                  : fmt::format("{} {} {} = {}，不是 {}。", p, o, x, r, value);
        continue;
      }
      tries += lang == Lang::En ? fmt::format("{} {} {} = {}, equal to the target. ", p, o, x, r)
                                : fmt::format("{} {} {} = {}，等于目标。", p, o, x, r);
      inst.careful_solution =
          (lang == Lang::En ? "Check each operation: " : "逐个检查运算：") + steps_before_last +
          tries + (lang == Lang::En ? "So the expression is " : "所以算式是 ") + expr +
          (lang == Lang::En ? "." : "。");
      break;
    }
    return inst;
  }
}

bool countdown_verify(const TaskInstance& inst, std::string_view answer) {
  // "expr = target" is accepted: drop the right-hand side.
  if (const size_t eq = answer.find('='); eq != std::string_view::npos) answer = answer.substr(0, eq);
  Q v;
  std::vector<int64_t> used;
  ExprParser p(answer);
  if (!p.parse(&v, &used)) return false;
  std::vector<int64_t> given = inst.meta.at("numbers").get<std::vector<int64_t>>();
  std::sort(used.begin(), used.end());
  std::sort(given.begin(), given.end());
  const int64_t target = inst.meta.at("target").get<int64_t>();
  return used == given && v.n == static_cast<__int128>(target) * v.d;
}

}  // namespace r1::data
