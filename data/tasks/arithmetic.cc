// Number tasks whose answer is one exact number: multi-digit arithmetic, modular
// arithmetic, linear equations in one unknown.
#include <numeric>

#include "data/tasks/task.h"
#include "engine/error.h"

namespace r1::data {

namespace {

int64_t pow10(int n) {
  int64_t p = 1;
  while (n-- > 0) p *= 10;
  return p;
}

int64_t random_digits(TaskRng& rng, int digits) {
  return rng.uniform(pow10(digits - 1), pow10(digits) - 1);
}

std::string t(Lang lang, const std::string& en, const std::string& zh) {
  return lang == Lang::En ? en : zh;
}

// a * b as the sum of a times each digit of b in place: the worked long multiplication.
std::string multiplication_steps(int64_t a, int64_t b) {
  std::string parts, sums;
  const std::string digits = std::to_string(b);
  int64_t total = 0;
  for (size_t i = 0; i < digits.size(); ++i) {
    const int64_t place = pow10(static_cast<int>(digits.size() - 1 - i));
    const int64_t d = (digits[i] - '0') * place;
    if (d == 0) continue;
    parts += fmt::format("{}{} * {}", parts.empty() ? "" : " + ", a, d);
    sums += fmt::format("{}{}", sums.empty() ? "" : " + ", a * d);
    total += a * d;
  }
  return fmt::format("{} * {} = {} = {} = {}", a, b, parts, sums, total);
}

// Column addition of non-negative a + b, ones first: "7 + 5 = 12, write 2 carry 1; ...".
std::string column_add(int64_t a, int64_t b, Lang lang) {
  std::string s;
  int64_t carry = 0;
  for (int64_t pa = a, pb = b; pa > 0 || pb > 0 || carry > 0; pa /= 10, pb /= 10) {
    const int64_t da = pa % 10, db = pb % 10, sum = da + db + carry;
    const std::string terms = carry ? fmt::format("{} + {} + {}", da, db, carry) : fmt::format("{} + {}", da, db);
    s += fmt::format("{}{} = {}", s.empty() ? "" : "; ", terms, sum);
    s += sum >= 10 ? (lang == Lang::En ? fmt::format(", write {} carry 1", sum % 10) : fmt::format("，写 {} 进 1", sum % 10))
                   : (lang == Lang::En ? fmt::format(", write {}", sum) : fmt::format("，写 {}", sum));
    carry = sum / 10;
  }
  return s;
}

// Column subtraction of a - b for a >= b >= 0, ones first, with borrows.
std::string column_sub(int64_t a, int64_t b, Lang lang) {
  std::string s;
  int64_t borrow = 0;
  for (int64_t pa = a, pb = b; pa > 0; pa /= 10, pb /= 10) {
    const int64_t da = pa % 10, db = pb % 10;
    const int64_t top = da - borrow;
    const std::string left = borrow ? fmt::format("{} - 1", da) : std::to_string(da);
    if (top < db) {
      const std::string sep = s.empty() ? "" : "; ";
      s += lang == Lang::En ? fmt::format("{}{} - {}: borrow 10, {} - {} = {}", sep, left, db, top + 10, db, top + 10 - db)
                            : fmt::format("{}{} - {}：借 10，{} - {} = {}", sep, left, db, top + 10, db, top + 10 - db);
      borrow = 1;
    } else {
      s += fmt::format("{}{} - {} = {}", s.empty() ? "" : "; ", left, db, top - db);
      borrow = 0;
    }
  }
  return s;
}

}  // namespace

TaskInstance arithmetic_generate(uint64_t seed, int difficulty, Lang lang) {
  TaskRng rng(seed);
  const int digits = difficulty + 1;
  const int64_t a = random_digits(rng, digits), b = random_digits(rng, digits);
  const char op = "+-*"[rng.next() % 3];
  const int64_t r = op == '+' ? a + b : op == '-' ? a - b : a * b;
  TaskInstance inst;
  inst.prompt = t(lang, fmt::format("Compute {} {} {}.", a, op, b),
                  fmt::format("计算 {} {} {}。", a, op, b));
  inst.answer = std::to_string(r);
  const std::string steps = op == '*' ? multiplication_steps(a, b)
                                      : fmt::format("{} {} {} = {}", a, op, b, r);
  inst.solution = t(lang, fmt::format("We work it out step by step: {}. The answer is {}.", steps, r),
                    fmt::format("逐步计算：{}。答案是 {}。", steps, r));
  inst.meta = {{"a", a}, {"b", b}, {"op", std::string(1, op)}};
  // The careful solution works column by column (+, -), or checks the product by division (*).
  std::string work;
  if (op == '+') {
    work = column_add(a, b, lang);
  } else if (op == '-') {
    work = a >= b ? column_sub(a, b, lang)
                  : t(lang, fmt::format("{} < {}, so compute {} - {} and negate: {}", a, b, b, a, column_sub(b, a, lang)),
                      fmt::format("{} < {}，先算 {} - {} 再取负：{}", a, b, b, a, column_sub(b, a, lang)));
  } else {  // the partial products, then a check by division
    work = multiplication_steps(a, b) + t(lang, fmt::format("; check: {} / {} = {}", r, b, a),
                                          fmt::format("；验算：{} / {} = {}", r, b, a));
  }
  inst.careful_solution = t(lang, fmt::format("Column by column: {}. So {} {} {} = {}. The answer is {}.", work, a, op, b, r, r),
                            fmt::format("按位计算：{}。所以 {} {} {} = {}。答案是 {}。", work, a, op, b, r, r));
  return inst;
}

TaskInstance modular_generate(uint64_t seed, int difficulty, Lang lang) {
  TaskRng rng(seed);
  const int64_t m = rng.uniform(3, 7 * pow10(difficulty));
  const int64_t a = rng.uniform(2, 10 * m), e = rng.uniform(2, 4 + 4 * difficulty);
  TaskInstance inst;
  std::string steps;
  int64_t x = 1;
  const int64_t ar = a % m;
  for (int64_t k = 1; k <= e; ++k) {
    x = static_cast<int64_t>((static_cast<__int128>(x) * ar) % m);
    if (k <= 3 || k == e) steps += fmt::format("{}^{} = {} (mod {}); ", a, k, x, m);
    else if (k == 4) steps += "...; ";
  }
  inst.prompt = t(lang, fmt::format("Compute {}^{} mod {}.", a, e, m),
                  fmt::format("计算 {}^{} 除以 {} 的余数。", a, e, m));
  inst.answer = std::to_string(x);
  inst.solution = t(lang,
                    fmt::format("First {} mod {} = {}. Multiply step by step, reducing each time: "
                                "{}so the answer is {}.", a, m, ar, steps, x),
                    fmt::format("先求 {} mod {} = {}。逐次相乘并取余：{}所以答案是 {}。", a, m, ar,
                                steps, x));
  inst.meta = {{"a", a}, {"e", e}, {"m", m}};
  return inst;
}

namespace {

// "3x + 5", "-x - 2", "7"
std::string linear_side(int64_t coef, int64_t c) {
  std::string s;
  if (coef != 0) s = coef == 1 ? "x" : coef == -1 ? "-x" : fmt::format("{}x", coef);
  if (c != 0 || s.empty())
    s += s.empty() ? std::to_string(c) : fmt::format(" {} {}", c < 0 ? '-' : '+', c < 0 ? -c : c);
  return s;
}

}  // namespace

TaskInstance linear_generate(uint64_t seed, int difficulty, Lang lang) {
  TaskRng rng(seed);
  const int64_t span = 5 * difficulty;
  int64_t a = 0, c = 0;
  while (a == c) a = rng.uniform(-span, span), c = rng.uniform(-span / 2, span / 2);
  int64_t b = rng.uniform(-10 * span, 10 * span), d;
  int64_t num, den = a - c;
  if (difficulty <= 3) {  // an integer root
    const int64_t x = rng.uniform(-3 * span, 3 * span);
    d = den * x + b;
    num = x * den;
  } else {  // a fraction in general
    d = rng.uniform(-10 * span, 10 * span);
    num = d - b;
  }
  const int64_t g = std::gcd(num, den) * (den < 0 ? -1 : 1);
  const int64_t p = num / g, q = den / g;
  const std::string root = q == 1 ? std::to_string(p) : fmt::format("{}/{}", p, q);
  const std::string eq = fmt::format("{} = {}", linear_side(a, b), linear_side(c, d));
  TaskInstance inst;
  inst.prompt = t(lang, fmt::format("Solve for x: {}.", eq), fmt::format("解方程 {}，求 x。", eq));
  inst.answer = root;
  inst.solution = t(lang,
                    fmt::format("Move the x terms to the left and the constants to the right: "
                                "({} - {})x = {} - {}, so {}x = {}. Divide by {}: x = {}.",
                                a, c, d, b, a - c, d - b, a - c, root),
                    fmt::format("把含 x 的项移到左边，常数移到右边：({} - {})x = {} - {}，即 {}x = {}。"
                                "两边除以 {}：x = {}。", a, c, d, b, a - c, d - b, a - c, root));
  inst.meta = {{"a", a}, {"b", b}, {"c", c}, {"d", d}};
  return inst;
}

}  // namespace r1::data
