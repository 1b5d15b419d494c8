// Answer extraction and checking: one table of tricky cases, both false positives (a wrong
// or absent answer must not pass) and false negatives (an equal answer written differently
// must pass), plus the R1 templates and completion parsing.
#include <gtest/gtest.h>

#include "data/answer.h"
#include "data/templates.h"

namespace r1::data {
namespace {

struct Case {
  const char* completion;
  const char* reference;
  bool expect;
  const char* why;
};

const Case kCases[] = {
    // Plain and well formed.
    {"<think>2+2</think> <answer>4</answer>", "4", true, "plain"},
    {"<think>..</think> <answer> 4 </answer>", "4", true, "spaces inside"},
    {"<answer>5</answer>", "4", false, "wrong number"},
    {"<answer>-4</answer>", "4", false, "sign matters"},
    {"<answer>+4</answer>", "4", true, "explicit plus"},
    {"<answer>- 4</answer>", "-4", true, "space after minus"},
    {"<answer>\xe2\x88\x92" "4</answer>", "-4", true, "unicode minus"},
    {"<answer>04</answer>", "4", true, "leading zero"},
    {"<answer>4.0</answer>", "4", true, "trailing decimal zero"},
    {"<answer>4.</answer>", "4", true, "final period"},
    {"<answer>4.01</answer>", "4", false, "close is not equal"},
    {"<answer>0.5</answer>", "1/2", true, "decimal vs fraction"},
    {"<answer>.5</answer>", "0.5", true, "no leading zero"},
    {"<answer>1/3</answer>", "0.333", false, "rounded third"},
    {"<answer>2/4</answer>", "1/2", true, "unreduced fraction"},
    {"<answer>\\frac{1}{2}</answer>", "1/2", true, "latex frac"},
    {"<answer>\\dfrac{3}{4}</answer>", "0.75", true, "dfrac"},
    {"<answer>\\tfrac{3}{4}</answer>", "3/4", true, "tfrac"},
    {"<answer>\\frac12</answer>", "0.5", true, "frac shorthand"},
    {"<answer>-\\frac{1}{2}</answer>", "-1/2", true, "negative frac"},
    {"<answer>\\frac{-1}{2}</answer>", "-0.5", true, "negative numerator"},
    {"<answer>\\frac{1}{-2}</answer>", "1/2", false, "negative denominator"},
    {"<answer>\\frac{1}{0}</answer>", "1/0", false, "division by zero is no number"},
    {"<answer>1/0</answer>", "0", false, "zero denominator"},
    {"<answer>\\frac{1}{2</answer>", "1/2", false, "unclosed frac"},
    {"<answer>1,234</answer>", "1234", true, "thousands comma"},
    {"<answer>1,234,567</answer>", "1234567", true, "two separators"},
    {"<answer>1 234 567</answer>", "1234567", true, "space separators"},
    {"<answer>12,34</answer>", "1234", false, "bad grouping"},
    {"<answer>1,2345</answer>", "12345", false, "four-digit group"},
    {"<answer>1234,567</answer>", "1234567", false, "first group too long"},
    {"<answer>1,234.5</answer>", "1234.5", true, "separator and decimal"},
    {"<answer>$42$</answer>", "42", true, "math dollars"},
    {"<answer>x = 7</answer>", "7", true, "variable assignment"},
    {"<answer>x=-3/2</answer>", "-1.5", true, "assignment with fraction"},
    {"<answer>7 apples</answer>", "7", false, "number with units"},
    {"<answer>70</answer>", "7", false, "prefix digit"},
    {"<answer>7</answer>", "70", false, "shorter"},
    {"<answer>17</answer>", "7", false, "suffix digit"},
    {"<answer>1e3</answer>", "1000", false, "scientific notation not parsed"},
    {"<answer>12345678901234567890123</answer>", "1", false, "overflow is no number"},
    {"<answer>9223372036854775807</answer>", "9223372036854775807", true, "int64 max"},
    // Where the answer is taken from.
    {"<think>the answer is 4</think>", "4", false, "no answer tag"},
    {"4", "4", false, "bare text is not an answer"},
    {"<think>x</think> <answer>4", "4", false, "unclosed answer"},
    {"<answer>3</answer> then <answer>4</answer>", "4", true, "last answer wins"},
    {"<answer>4</answer> then <answer>3</answer>", "4", false, "last answer wins (wrong)"},
    {"<answer>\\boxed{4}</answer>", "4", true, "boxed inside answer"},
    {"<answer>so \\boxed{4}</answer>", "4", true, "boxed with words inside answer"},
    {"The result is \\boxed{4}.", "4", true, "boxed without tags"},
    {"\\boxed{3} no wait \\boxed{4}", "4", true, "last boxed wins"},
    {"\\boxed{4} no wait \\boxed{3}", "4", false, "last boxed wins (wrong)"},
    {"\\boxed{\\frac{1}{2}}", "1/2", true, "nested braces"},
    {"\\boxed{\\frac{\\frac{1}{2}}{2}}", "1/4", true, "doubly nested"},
    {"\\boxed{4", "4", false, "unclosed boxed"},
    {"\\boxed{4} and \\boxed{", "4", false, "last boxed unclosed"},
    {"\\boxed 4", "4", false, "boxed without braces"},
    {"<answer></answer>", "4", false, "empty answer"},
    {"<answer>  </answer>", "", false, "empty never matches"},
    // Text answers.
    {"<answer>yes</answer>", "yes", true, "text"},
    {"<answer>Yes</answer>", "yes", false, "text is case sensitive"},
    {"<answer>1, 2, 3</answer>", "1, 2, 3", true, "list"},
    {"<answer>1,  2,\n3</answer>", "1, 2, 3", true, "list whitespace collapsed"},
    {"<answer>1, 3, 2</answer>", "1, 2, 3", false, "list order"},
    {"<answer>\\text{Alice}</answer>", "Alice", true, "text wrapper"},
    {"<answer>Alice.</answer>", "Alice", true, "final period on text"},
    {"<answer>Alicea</answer>", "Alice", false, "longer text"},
    {"<answer>(1+2)*3</answer>", "(1+2)*3", true, "expression text"},
    {"<answer>4</answer>", "four", false, "number vs word"},
    {"<answer>1,000</answer>", "1000.0", true, "separator vs decimal"},
    {"<answer>0</answer>", "-0", true, "negative zero"},
    {"<answer>{5}</answer>", "5", true, "braced number"},
};

TEST(Answer, ExtractionTable) {
  static_assert(std::size(kCases) >= 60);
  for (const Case& c : kCases)
    EXPECT_EQ(check_completion(c.completion, c.reference), c.expect)
        << c.why << ": completion \"" << c.completion << "\" reference \"" << c.reference << "\"";
}

TEST(Answer, ParseNumberExact) {
  EXPECT_EQ(parse_number("-1,234.50"), (Rational{-2469, 2}));
  EXPECT_EQ(parse_number("\\frac{6}{-8}"), (Rational{-3, 4}));
  EXPECT_FALSE(parse_number("1.2.3"));
  EXPECT_FALSE(parse_number("--1"));
  EXPECT_FALSE(parse_number(""));
  EXPECT_EQ(extract_boxed("a \\boxed{x^{2}+\\{1\\}} b"), "x^{2}+\\{1\\}");
}

TEST(Templates, R1ZeroPromptIsThePapersTable1) {
  const std::string p = r1_zero_prompt("What is 2+3");
  EXPECT_TRUE(p.starts_with("A conversation between User and Assistant. The user asks a question"));
  EXPECT_NE(p.find("<think> reasoning process here </think> <answer> answer here </answer>. "
                   "User: What is 2+3. Assistant:"),
            std::string::npos);
  EXPECT_TRUE(p.ends_with("Assistant:"));
}

TEST(Templates, ChatRenderAndParse) {
  const std::string s = render_chat({{"system", "Be brief.", ""},
                                     {"user", "2+2?", ""},
                                     {"assistant", "4", "two plus two"},
                                     {"user", "3+3?", ""}},
                                    true);
  EXPECT_EQ(s, std::string(kBos) + "Be brief." + kUser + "2+2?" + kAssistant + "4" + kEos + kUser +
                   "3+3?" + kAssistant + "<think>\n");
  const std::string last = render_chat({{"user", "q", ""}, {"assistant", "A", "R"}}, false);
  EXPECT_EQ(last, std::string(kBos) + kUser + "q" + kAssistant + "<think>\nR\n</think>\n\nA" + kEos);
  const auto c = parse_r1_chat_completion("step one\n</think>\n\nThe answer is 6." + std::string(kEos));
  EXPECT_TRUE(c.well_formed);
  EXPECT_EQ(c.reasoning, "step one");
  EXPECT_EQ(c.answer, "The answer is 6.");
  EXPECT_FALSE(parse_r1_chat_completion("no close tag").well_formed);
}

TEST(Templates, R1ZeroFormat) {
  const auto ok = parse_r1_zero_completion(" <think> a </think>\n<answer> 5 </answer>\n");
  EXPECT_TRUE(ok.well_formed);
  EXPECT_EQ(ok.answer, "5");
  EXPECT_EQ(ok.reasoning, " a ");
  for (const char* bad : {"<answer>5</answer><think>a</think>", "<think>a</think>",
                          "<think>a</think> junk <answer>5</answer>",
                          "<think>a</think><answer>5</answer> trailing",
                          "<think><think>a</think><answer>5</answer>",
                          "<think>a</think><answer>5</answer><answer>6</answer>"})
    EXPECT_FALSE(parse_r1_zero_completion(bad).well_formed) << bad;
}

}  // namespace
}  // namespace r1::data
