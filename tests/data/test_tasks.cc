// Every task: the reference answer always verifies (directly and through a full R1-Zero
// completion), mutated answers never do, prompts come in both languages, generation is
// deterministic. The tiny-language interpreter's limits stop runaway programs.
#include <gtest/gtest.h>

#include <functional>
#include <numeric>
#include <optional>
#include <regex>
#include <sstream>
#include <set>

#include "data/answer.h"
#include "data/corpus.h"
#include "data/tasks/program.h"
#include "data/tasks/task.h"
#include "engine/error.h"
#include "tests/harness.h"

namespace r1::data {
namespace {

bool has_cjk(const std::string& s) {
  for (size_t i = 0; i + 2 < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0xE4 && c <= 0xE9) return true;  // U+4E00..U+9FFF lead bytes
  }
  return false;
}
bool is_ascii(const std::string& s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

// Wrong answers that are wrong by construction for the task.
std::vector<std::string> mutations(const TaskInstance& inst) {
  const std::string& a = inst.answer;
  std::vector<std::string> m = {"", "banana"};
  // Doubled text: numbers like "0" stay equal and a program may halt in its first copy.
  if (inst.task == "countdown" || inst.task == "list" || inst.task == "ordering") m.push_back(a + a);
  if (inst.task == "countdown") {
    // Any change to the multiset of numbers used is wrong, whatever the value.
    m.push_back(a + " + 1");
    m.push_back("(" + a + ") * 2");
    m.push_back(inst.meta["target"].dump());
    m.push_back(a.substr(0, a.rfind(' ', a.rfind(' ') - 1)));  // drop the last operand
  } else if (inst.task == "list" || inst.task == "ordering") {
    std::vector<std::string> items;
    for (size_t s = 0, e; s <= a.size(); s = e + 2) {
      e = std::min(a.find(", ", s), a.size());
      items.push_back(a.substr(s, e - s));
    }
    const auto join = [](const std::vector<std::string>& v) {
      std::string s;
      for (size_t i = 0; i < v.size(); ++i) s += (i ? ", " : "") + v[i];
      return s;
    };
    for (size_t i = 0; i + 1 < items.size(); ++i)
      if (items[i] != items[i + 1]) {
        auto sw = items;
        std::swap(sw[i], sw[i + 1]);
        m.push_back(join(sw));
        break;
      }
    auto dropped = items;
    dropped.pop_back();
    m.push_back(join(dropped));
    auto extra = items;
    extra.push_back(items[0]);
    m.push_back(join(extra));
    if (inst.task == "list") {
      auto bumped = items;
      bumped[0] = std::to_string(std::stoll(bumped[0]) + 1);
      m.push_back(join(bumped));
    }
  } else if (inst.task == "program") {
    m.push_back("print 0\n" + a);
    m.push_back(a + "\nprint 0\n");
    m.push_back("spin:\njmp spin\n" + a);
    m.push_back("div a 0\n" + a);
    m.push_back("system rm\n" + a);
  } else {  // one exact number
    const auto r = parse_number(a);
    EXPECT_TRUE(r.has_value()) << inst.task << " answer " << a;
    m.push_back(fmt::format("{}/{}", r->num + 1, r->den));
    m.push_back(fmt::format("{}/{}", r->num - 1, r->den));
    m.push_back(fmt::format("{}/{}", r->num * 10 + 1, r->den * 10));
    if (r->num != 0) m.push_back(fmt::format("{}/{}", -r->num, r->den));
    m.push_back(a + " apples");
  }
  return m;
}

TEST(Tasks, ReferenceVerifiesMutationsNever) {
  const uint64_t base = test::case_seed(1);
  for (const Task& task : all_tasks()) {
    for (int d = 1; d <= 5; ++d) {
      for (int k = 0; k < 40; ++k) {
        const Lang lang = k % 2 ? Lang::Zh : Lang::En;
        const TaskInstance inst = generate_task(task.name, base + 1000 * d + k, d, lang);
        const std::string where = fmt::format("{} d={} k={} prompt: {}", task.name, d, k, inst.prompt);
        ASSERT_FALSE(inst.prompt.empty()) << where;
        EXPECT_TRUE(verify_task(inst, inst.answer)) << where << "\nanswer: " << inst.answer;
        const std::string completion =
            "<think>" + inst.solution + "</think> <answer>" + inst.answer + "</answer>";
        const auto extracted = extract_answer(completion);
        ASSERT_TRUE(extracted.has_value()) << where;
        EXPECT_TRUE(verify_task(inst, *extracted)) << where;
        for (const std::string& bad : mutations(inst))
          EXPECT_FALSE(verify_task(inst, bad)) << where << "\nmutated answer: " << bad;
        if (lang == Lang::Zh) {
          EXPECT_TRUE(has_cjk(inst.prompt)) << where;
        } else {
          EXPECT_TRUE(is_ascii(inst.prompt)) << where;
        }
      }
    }
  }
}

TEST(Tasks, DeterministicAndVaried) {
  for (const Task& task : all_tasks()) {
    const auto a = generate_task(task.name, 42, 3, Lang::En);
    const auto b = generate_task(task.name, 42, 3, Lang::En);
    EXPECT_EQ(a.prompt, b.prompt);
    EXPECT_EQ(a.answer, b.answer);
    EXPECT_EQ(a.meta, b.meta);
    std::set<std::string> prompts;
    for (uint64_t s = 0; s < 20; ++s) prompts.insert(generate_task(task.name, s, 3, Lang::En).prompt);
    EXPECT_GE(prompts.size(), 15u) << task.name;
  }
  EXPECT_THROW(find_task("chess"), InputError);
  EXPECT_THROW(generate_task("arithmetic", 1, 9, Lang::En), InputError);
  EXPECT_THROW(lang_from_string("fr"), InputError);
}

// The value of "n op n op n ..." (+ - * /, * and / first; every division exact), or nullopt
// if the tokens are not such an expression.
std::optional<int64_t> eval_side(const std::vector<std::string>& t) {
  if (t.empty() || t.size() % 2 == 0) return std::nullopt;
  std::vector<int64_t> terms;  // signed products
  int64_t cur = 0;
  char sign = '+';
  for (size_t i = 0; i < t.size(); i += 2) {
    if (!std::regex_match(t[i], std::regex(R"(-?\d{1,12})"))) return std::nullopt;
    const int64_t x = std::stoll(t[i]);
    const char prev = i == 0 ? '+' : t[i - 1][0];
    if (prev == '*') cur *= x;
    else if (prev == '/') {
      if (x == 0 || cur % x != 0) return std::nullopt;
      cur /= x;
    } else {
      if (i > 0) terms.push_back(sign == '+' ? cur : -cur);
      sign = prev, cur = x;
    }
  }
  terms.push_back(sign == '+' ? cur : -cur);
  return std::accumulate(terms.begin(), terms.end(), int64_t{0});
}

// Every equation a careful solution writes ("a * b = a * 10 + a * 4 = 260 + 104 = 364", the
// column steps "4 + 3 + 1 = 8", "5 - 1 - 3 = 1", countdown's tries) is true arithmetic; a
// countdown search rejects only results that differ from the target and accepts exactly one,
// the target.
TEST(Tasks, CarefulSolutionsCheckTheirWork) {
  const uint64_t base = test::case_seed(3);
  const std::regex clause_sep("[.;,:]|\xef\xbc\x8c|\xe3\x80\x82|\xef\xbc\x9a|\xef\xbc\x9b");  // ， 。 ： ；
  const std::regex tried(R"((\d+) [-+*/] (\d+) = (\d+)(, not (\d+)|, equal to the target|，不是 (\d+)|，等于目标))");
  for (const char* name : {"countdown", "arithmetic", "ordering"}) {
    for (int d = 1; d <= 5; ++d) {
      for (int k = 0; k < 40; ++k) {
        const Lang lang = k % 2 ? Lang::Zh : Lang::En;
        const TaskInstance inst = generate_task(name, base + 1000 * d + k, d, lang);
        const std::string& c = inst.careful_solution;
        const std::string where = fmt::format("{} d={} k={}: {}\ncareful: {}", name, d, k, inst.prompt, c);
        ASSERT_FALSE(c.empty()) << where;
        ASSERT_NE(c, inst.solution) << where;
        // It ends by naming the answer, which verifies through a full completion.
        const size_t at = c.rfind(inst.answer);
        ASSERT_NE(at, std::string::npos) << where;
        EXPECT_LE(c.size() - at - inst.answer.size(), 3u) << where;
        const auto extracted = extract_answer("<think>" + c + "</think> <answer>" + inst.answer + "</answer>");
        ASSERT_TRUE(extracted.has_value()) << where;
        EXPECT_TRUE(verify_task(inst, *extracted)) << where;
        int equations = 0;
        for (std::sregex_token_iterator it(c.begin(), c.end(), clause_sep, -1), e; it != e; ++it) {
          // Maximal runs of number / operator / "=" tokens; a run with "=" is a chain of sides.
          std::vector<std::vector<std::string>> sides(1);
          std::istringstream words(it->str());
          const auto check = [&] {
            if (sides.size() < 2) return;
            ++equations;
            const auto v0 = eval_side(sides[0]);
            for (const auto& side : sides) {
              const auto v = eval_side(side);
              ASSERT_TRUE(v0 && v) << where << "\nclause: " << it->str();
              EXPECT_EQ(*v, *v0) << where << "\nclause: " << it->str();
            }
          };
          for (std::string w; words >> w;) {
            if (w == "=") {
              sides.emplace_back();
            } else if (std::regex_match(w, std::regex(R"(-?\d+|[-+*/])"))) {
              sides.back().push_back(w);
            } else {
              check();
              sides.assign(1, {});
            }
          }
          check();
        }
        if (std::string(name) != "ordering") {
          EXPECT_GE(equations, 1) << where;
        }
        if (std::string(name) == "countdown") {
          const int64_t target = inst.meta.at("target").get<int64_t>();
          int hits = 0;
          for (auto it = std::sregex_iterator(c.begin(), c.end(), tried); it != std::sregex_iterator(); ++it) {
            const std::smatch& m = *it;
            if (m[5].matched || m[6].matched) {
              EXPECT_NE(std::stoll(m[3]), target) << where;
            } else {
              ++hits;
              EXPECT_EQ(std::stoll(m[3]), target) << where;
            }
          }
          EXPECT_EQ(hits, 1) << where;
        }
      }
    }
  }
}

TEST(Corpus, CarefulShareSwitchesTheSolution) {
  CorpusOptions co;
  co.documents = 400;
  co.seed = test::case_seed(4);
  co.general_share = 0;
  co.tasks = {"countdown"};
  co.min_difficulty = co.max_difficulty = 1;
  co.chinese_share = 0;
  const auto count = [&](double share) {
    co.careful_share = share;
    int careful = 0;
    for (const std::string& d : generate_corpus(co)) careful += d.find("Check each operation") != std::string::npos;
    return careful;
  };
  EXPECT_EQ(count(0.0), 0);
  EXPECT_EQ(count(1.0), 400);
  const int half = count(0.5);
  EXPECT_GT(half, 150);  // binomial(400, 0.5): mean 200, sd 10
  EXPECT_LT(half, 250);
}

TEST(Corpus, TaskWeightsSetTheMix) {
  CorpusOptions co;
  co.documents = 800;
  co.seed = test::case_seed(5);
  co.general_share = 0;
  co.min_difficulty = co.max_difficulty = 1;
  co.chinese_share = 0;
  const auto countdown_docs = [&](std::vector<std::string> tasks) {
    co.tasks = std::move(tasks);
    int n = 0;
    for (const std::string& d : generate_corpus(co)) n += d.find("Using the numbers") != std::string::npos;
    return n;
  };
  // Equal weights are the unweighted corpus, document for document.
  co.tasks = {"countdown", "list"};
  const std::vector<std::string> plain = generate_corpus(co);
  co.tasks = {"countdown:2", "list:2"};
  EXPECT_EQ(generate_corpus(co), plain);
  // countdown:3, list:1 -> binomial(800, 0.75): mean 600, sd 12.2; unweighted: mean 400.
  const int heavy = countdown_docs({"countdown:3", "list:1"});
  EXPECT_GT(heavy, 550);
  EXPECT_LT(heavy, 650);
  const int even = countdown_docs({"countdown", "list"});
  EXPECT_GT(even, 350);
  EXPECT_LT(even, 450);
  for (const char* bad : {"countdown:", "countdown:x", "countdown:0", "countdown:-1", "countdown:1e999"}) {
    co.tasks = {bad, "list"};
    EXPECT_THROW(generate_corpus(co), r1::InputError) << bad;
  }
  co.tasks = {"nosuchtask:1"};
  EXPECT_THROW(generate_corpus(co), r1::InputError);
}

TEST(TinyLanguage, RunsAndStopsAtLimits) {
  // gcd by the reference algorithm, against std::gcd on random inputs.
  const char* gcd = "loop:\njz b end\nset t a\nmod t b\nset a b\nset b t\njmp loop\nend:\nprint a\n";
  TaskRng rng(test::case_seed(2));
  for (int k = 0; k < 50; ++k) {
    const int64_t a = rng.uniform(1, 100000), b = rng.uniform(1, 100000);
    const auto r = run_program(gcd, {a, b});
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.outputs, (std::vector<int64_t>{std::gcd(a, b)}));
  }
  const auto err = [](const char* src) { return run_program(src, {3, 4}).error; };
  EXPECT_NE(err("l:\njmp l\n").find("step limit"), std::string::npos);
  EXPECT_NE(err("l:\npush 1\njmp l\n").find("stack limit"), std::string::npos);
  EXPECT_NE(err("l:\nprint 1\njmp l\n").find("output limit"), std::string::npos);
  EXPECT_NE(err("set a 2\nl:\nmul a a\njmp l\n").find("overflow"), std::string::npos);
  EXPECT_NE(err("mod a 0\n").find("division by zero"), std::string::npos);
  EXPECT_NE(err("pop a\n").find("empty stack"), std::string::npos);
  EXPECT_NE(err("jmp nowhere\n").find("no label"), std::string::npos);
  EXPECT_NE(err("x:\nx:\n").find("defined twice"), std::string::npos);
  EXPECT_NE(err("exec a\n").find("unknown instruction"), std::string::npos);
  EXPECT_NE(err("set 5 a\n").find("bad operand"), std::string::npos);
  EXPECT_NE(err("add a\n").find("operands"), std::string::npos);
  const auto ok = run_program("push a\npush b\npop a\npop b\nprint a\nprint b # swap\nhalt\nprint 9", {3, 4});
  EXPECT_TRUE(ok.ok);
  EXPECT_EQ(ok.outputs, (std::vector<int64_t>{4, 3}));
}

}  // namespace
}  // namespace r1::data
