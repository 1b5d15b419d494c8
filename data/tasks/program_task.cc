// The program-writing task: describe a function, give the tiny language (program.h), and
// check the model's program on test inputs against outputs computed here in C++.
#include <cstdlib>
#include <numeric>

#include "data/tasks/program.h"
#include "data/tasks/task.h"
#include "engine/error.h"

namespace r1::data {

namespace {

struct Family {
  const char* en;
  const char* zh;
  int64_t lo_a, hi_a, lo_b, hi_b;
  std::vector<int64_t> (*expected)(int64_t a, int64_t b);
  const char* reference;  // a program in the tiny language
};

std::vector<int64_t> countdown_list(int64_t a, int64_t) {
  std::vector<int64_t> v;
  for (int64_t i = a; i >= 1; --i) v.push_back(i);
  return v;
}
std::vector<int64_t> fib(int64_t a, int64_t) {
  int64_t x = 0, y = 1;
  for (int64_t i = 0; i < a; ++i) x = std::exchange(y, x + y);
  return {x};
}
std::vector<int64_t> power(int64_t a, int64_t b) {
  int64_t p = 1;
  for (int64_t i = 0; i < b; ++i) p *= a;
  return {p};
}
std::vector<int64_t> factorial(int64_t a, int64_t) {
  int64_t f = 1;
  for (int64_t i = 2; i <= a; ++i) f *= i;
  return {f};
}

// Families by difficulty (two per level).
const std::vector<Family>& families() {
  static const std::vector<Family> f = {
      {"prints a + b", "输出 a + b", -1000, 1000, -1000, 1000,
       [](int64_t a, int64_t b) { return std::vector<int64_t>{a + b}; }, "add a b\nprint a\n"},
      {"prints a * b", "输出 a * b", -1000, 1000, -1000, 1000,
       [](int64_t a, int64_t b) { return std::vector<int64_t>{a * b}; }, "mul a b\nprint a\n"},
      {"prints the larger of a and b", "输出 a 和 b 中较大的一个", -1000, 1000, -1000, 1000,
       [](int64_t a, int64_t b) { return std::vector<int64_t>{std::max(a, b)}; },
       "jlt a b second\nprint a\nhalt\nsecond:\nprint b\n"},
      {"prints |a - b|", "输出 |a - b|", -1000, 1000, -1000, 1000,
       [](int64_t a, int64_t b) { return std::vector<int64_t>{std::abs(a - b)}; },
       "sub a b\njlt a 0 neg\nprint a\nhalt\nneg:\nset b 0\nsub b a\nprint b\n"},
      {"prints 1 + 2 + ... + a (a >= 0)", "输出 1 + 2 + ... + a（a >= 0）", 0, 60, 0, 0,
       [](int64_t a, int64_t) { return std::vector<int64_t>{a * (a + 1) / 2}; },
       "set s 0\nloop:\njz a end\nadd s a\nsub a 1\njmp loop\nend:\nprint s\n"},
      {"prints a, a-1, ..., 1, one print each (a >= 0)", "依次输出 a, a-1, ..., 1，每个数一次 print（a >= 0）",
       0, 12, 0, 0, countdown_list, "loop:\njz a end\nprint a\nsub a 1\njmp loop\nend:\n"},
      {"prints a! (0 <= a <= 12)", "输出 a 的阶乘（0 <= a <= 12）", 0, 12, 0, 0, factorial,
       "set f 1\nloop:\njz a end\nmul f a\nsub a 1\njmp loop\nend:\nprint f\n"},
      {"prints a to the power b (b >= 0)", "输出 a 的 b 次方（b >= 0）", -9, 9, 0, 8, power,
       "set p 1\nloop:\njz b end\nmul p a\nsub b 1\njmp loop\nend:\nprint p\n"},
      {"prints the greatest common divisor of a and b (a, b > 0)", "输出 a 和 b 的最大公约数（a, b > 0）",
       1, 1000, 1, 1000, [](int64_t a, int64_t b) { return std::vector<int64_t>{std::gcd(a, b)}; },
       "loop:\njz b end\nset t a\nmod t b\nset a b\nset b t\njmp loop\nend:\nprint a\n"},
      {"prints the a-th Fibonacci number (F0 = 0, F1 = 1, a >= 0)",
       "输出第 a 个斐波那契数（F0 = 0，F1 = 1，a >= 0）", 0, 50, 0, 0, fib,
       "set x 0\nset y 1\nloop:\njz a end\nset t y\nadd y x\nset x t\nsub a 1\njmp loop\nend:\nprint x\n"},
  };
  return f;
}

}  // namespace

TaskInstance program_generate(uint64_t seed, int difficulty, Lang lang) {
  TaskRng rng(seed);
  const size_t idx = 2 * static_cast<size_t>(difficulty - 1) + rng.next() % 2;
  const Family& f = families()[idx];
  nlohmann::json tests = nlohmann::json::array();
  // Tests reach every branch: with symmetric ranges a < b, a > b and a == b all occur; with
  // one input, the smallest one (0!, F0, an empty countdown) is always among them.
  const bool symmetric = f.lo_a == f.lo_b && f.hi_a == f.hi_b;
  for (int k = 0; k < 6; ++k) {
    int64_t a = rng.uniform(f.lo_a, f.hi_a), b = rng.uniform(f.lo_b, f.hi_b);
    if (symmetric && (a < b) != (k % 2 == 0)) std::swap(a, b);
    if (symmetric && k == 5) b = a;
    if (!symmetric && k == 5) a = f.lo_a;
    tests.push_back({{"inputs", {a, b}}, {"outputs", f.expected(a, b)}});
  }
  const auto& t0 = tests[0];
  TaskInstance inst;
  const bool zh = lang == Lang::Zh;
  inst.prompt = zh ? fmt::format("写一个程序，读入 a 和 b，{}。{}例如 a = {}, b = {} 时输出 {}。"
                                 "答案只写程序。", f.zh, program_language_help(true),
                                 t0["inputs"][0].get<int64_t>(), t0["inputs"][1].get<int64_t>(),
                                 t0["outputs"].dump())
                   : fmt::format("Write a program that reads a and b and {}. {} For example, for "
                                 "a = {}, b = {} it prints {}. Answer with the program only.", f.en,
                                 program_language_help(false), t0["inputs"][0].get<int64_t>(),
                                 t0["inputs"][1].get<int64_t>(), t0["outputs"].dump());
  inst.answer = f.reference;
  inst.solution = (zh ? "逐步构造程序：\n" : "We build the program step by step:\n") +
                  std::string(f.reference);
  inst.meta = {{"family", idx}, {"tests", tests}};
  return inst;
}

bool program_verify(const TaskInstance& inst, std::string_view answer) {
  for (const auto& t : inst.meta.at("tests")) {
    const ProgramResult r = run_program(answer, t.at("inputs").get<std::vector<int64_t>>());
    if (!r.ok || r.outputs != t.at("outputs").get<std::vector<int64_t>>()) return false;
  }
  return true;
}

}  // namespace r1::data
