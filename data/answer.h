// Final-answer extraction and checking for verifiable rewards. The answer is the content
// of the last <answer>...</answer> (its \boxed{} if it has one), else the last \boxed{...}
// (braces nested to any depth), else nothing: a completion that never commits to an answer
// gets no credit, however often the right number appears in its reasoning.
//
// Comparison is exact. Numbers are compared as rationals after normalization: signs
// (+, -, U+2212), surrounding spaces and $..$, thousands separators (',' or ' ' in groups of
// three only), decimals (trailing zeros), fractions a/b, \frac{a}{b}, \dfrac, \tfrac, \frac12,
// and a leading "x =". Anything else is compared as whitespace-collapsed text.
#pragma once
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace r1::data {

std::optional<std::string> extract_boxed(std::string_view text);   // the last \boxed{..}
std::optional<std::string> extract_answer(std::string_view completion);

// An exact rational, reduced, den > 0.
struct Rational {
  int64_t num = 0, den = 1;
  bool operator==(const Rational&) const = default;
};
std::optional<Rational> parse_number(std::string_view s);

// Collapses whitespace runs, trims, strips $..$ and \text{..} wrappers and a final period.
std::string normalize_answer_text(std::string_view s);

bool answers_match(std::string_view given, std::string_view reference);
// extract_answer, then answers_match.
bool check_completion(std::string_view completion, std::string_view reference);

}  // namespace r1::data
