#include "data/answer.h"

#include <cctype>

namespace r1::data {

namespace {

// Content of the brace group opening at s[open] ('{'), or nullopt if it never closes.
std::optional<std::string_view> brace_group(std::string_view s, size_t open) {
  if (open >= s.size() || s[open] != '{') return std::nullopt;
  int depth = 0;
  for (size_t i = open; i < s.size(); ++i) {
    if (s[i] == '\\' && i + 1 < s.size() && (s[i + 1] == '{' || s[i + 1] == '}')) {
      ++i;  // an escaped brace does not nest
      continue;
    }
    if (s[i] == '{') ++depth;
    if (s[i] == '}' && --depth == 0) return s.substr(open + 1, i - open - 1);
  }
  return std::nullopt;
}

std::string_view trim(std::string_view s) {
  const auto ws = [](char c) { return c == ' ' || c == '\n' || c == '\t' || c == '\r'; };
  while (!s.empty() && ws(s.front())) s.remove_prefix(1);
  while (!s.empty() && ws(s.back())) s.remove_suffix(1);
  return s;
}

bool all_digits(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s)
    if (c < '0' || c > '9') return false;
  return true;
}

// Removes thousands separators when every group after the first has three digits.
std::optional<std::string> strip_thousands(std::string_view s, char sep) {
  if (s.find(sep) == std::string_view::npos) return std::string(s);
  std::string out;
  size_t start = 0;
  for (size_t group = 0;; ++group) {
    const size_t end = std::min(s.find(sep, start), s.size());
    const std::string_view g = s.substr(start, end - start);
    if (!all_digits(g) || (group == 0 ? g.size() > 3 : g.size() != 3)) return std::nullopt;
    out += g;
    if (end == s.size()) return out;
    start = end + 1;
  }
}

std::optional<Rational> make(__int128 num, __int128 den) {
  if (den == 0) return std::nullopt;
  if (den < 0) num = -num, den = -den;
  __int128 a = num < 0 ? -num : num, b = den;
  while (b != 0) a %= b, std::swap(a, b);
  if (a > 1) num /= a, den /= a;
  constexpr __int128 kMax = INT64_MAX;
  if (num > kMax || num < -kMax || den > kMax) return std::nullopt;
  return Rational{static_cast<int64_t>(num), static_cast<int64_t>(den)};
}

// An unsigned decimal: digits with optional thousands separators, optional fraction part.
std::optional<Rational> parse_decimal(std::string_view s) {
  const size_t dot = s.find('.');
  std::string_view ip = s.substr(0, dot), fp = dot == std::string_view::npos ? "" : s.substr(dot + 1);
  if (dot != std::string_view::npos && fp.find('.') != std::string_view::npos) return std::nullopt;
  const std::optional<std::string> ints =
      strip_thousands(ip, ip.find(',') != std::string_view::npos ? ',' : ' ');
  if (!ints || (ints->empty() && fp.empty())) return std::nullopt;
  if ((!ints->empty() && !all_digits(*ints)) || (!fp.empty() && !all_digits(fp))) return std::nullopt;
  if (ints->size() + fp.size() > 30) return std::nullopt;
  __int128 num = 0, den = 1;
  for (char c : *ints) num = num * 10 + (c - '0');
  for (char c : fp) num = num * 10 + (c - '0'), den *= 10;
  return make(num, den);
}

std::optional<Rational> parse_unsigned(std::string_view s);

// \frac{a}{b}, \dfrac, \tfrac, and the shorthand \frac12.
std::optional<Rational> parse_latex_frac(std::string_view s) {
  for (std::string_view cmd : {"\\frac", "\\dfrac", "\\tfrac"}) {
    if (!s.starts_with(cmd)) continue;
    std::string_view rest = trim(s.substr(cmd.size()));
    if (rest.size() == 2 && all_digits(rest)) return make(rest[0] - '0', rest[1] - '0');
    const auto a = brace_group(rest, 0);
    if (!a) return std::nullopt;
    const std::string_view after = trim(rest.substr(a->size() + 2));
    const auto b = brace_group(after, 0);
    if (!b || after.size() != b->size() + 2) return std::nullopt;
    const auto x = parse_number(*a), y = parse_number(*b);
    if (!x || !y || y->num == 0) return std::nullopt;
    return make(static_cast<__int128>(x->num) * y->den, static_cast<__int128>(x->den) * y->num);
  }
  return std::nullopt;
}

std::optional<Rational> parse_unsigned(std::string_view s) {
  if (s.starts_with("\\")) return parse_latex_frac(s);
  if (s.size() >= 2 && s.front() == '{' && s.back() == '}') return parse_number(s.substr(1, s.size() - 2));
  const size_t slash = s.find('/');
  if (slash == std::string_view::npos) return parse_decimal(s);
  const auto a = parse_decimal(trim(s.substr(0, slash)));
  const auto b = parse_decimal(trim(s.substr(slash + 1)));
  if (!a || !b || b->num == 0) return std::nullopt;
  return make(static_cast<__int128>(a->num) * b->den, static_cast<__int128>(a->den) * b->num);
}

}  // namespace

std::optional<std::string> extract_boxed(std::string_view text) {
  // The last \boxed only: if it is unclosed there is no answer (not an earlier one).
  const size_t at = text.rfind("\\boxed");
  if (at == std::string_view::npos) return std::nullopt;
  const auto g = brace_group(text, at + 6);
  if (!g) return std::nullopt;
  return std::string(trim(*g));
}

std::optional<std::string> extract_answer(std::string_view c) {
  const size_t close = c.rfind("</answer>");
  if (close != std::string_view::npos) {
    const size_t open = c.rfind("<answer>", close);
    if (open == std::string_view::npos) return std::nullopt;
    const std::string_view inner = c.substr(open + 8, close - open - 8);
    if (inner.find("\\boxed") != std::string_view::npos) return extract_boxed(inner);
    return std::string(trim(inner));
  }
  if (c.find("<answer>") != std::string_view::npos) return std::nullopt;  // never closed
  return extract_boxed(c);
}

std::string normalize_answer_text(std::string_view s) {
  s = trim(s);
  for (bool changed = true; changed;) {
    changed = false;
    if (s.size() >= 2 && s.front() == '$' && s.back() == '$') {
      s = trim(s.substr(1, s.size() - 2));
      changed = true;
    }
    if (s.starts_with("\\text{") && s.ends_with("}") && brace_group(s, 5) &&
        brace_group(s, 5)->size() + 7 == s.size()) {
      s = trim(s.substr(6, s.size() - 7));
      changed = true;
    }
    if (s.size() > 1 && s.back() == '.') {
      s = trim(s.substr(0, s.size() - 1));
      changed = true;
    }
  }
  std::string out;
  bool space = false;
  for (char c : s) {
    if (c == ' ' || c == '\t' || c == '\n' || c == '\r') {
      space = true;
      continue;
    }
    if (space && !out.empty()) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

std::optional<Rational> parse_number(std::string_view s) {
  std::string t = normalize_answer_text(s);
  // "x = 5": the value of a single-letter variable.
  if (t.size() >= 3 && std::isalpha(static_cast<unsigned char>(t[0]))) {
    const size_t eq = t.find('=');
    if (eq != std::string::npos && trim(std::string_view(t).substr(1, eq - 1)).empty())
      t = std::string(trim(std::string_view(t).substr(eq + 1)));
  }
  std::string_view v = t;
  bool neg = false;
  if (v.starts_with("\xe2\x88\x92")) {  // U+2212 minus sign
    neg = true;
    v = trim(v.substr(3));
  } else if (!v.empty() && (v[0] == '-' || v[0] == '+')) {
    neg = v[0] == '-';
    v = trim(v.substr(1));
  }
  if (v.empty()) return std::nullopt;
  auto r = parse_unsigned(v);
  if (r && neg) r->num = -r->num;
  return r;
}

bool answers_match(std::string_view given, std::string_view reference) {
  const auto a = parse_number(given), b = parse_number(reference);
  if (a && b) return *a == *b;
  if (a || b) return false;  // a number never equals a non-number
  const std::string x = normalize_answer_text(given), y = normalize_answer_text(reference);
  return !x.empty() && x == y;
}

bool check_completion(std::string_view completion, std::string_view reference) {
  const auto a = extract_answer(completion);
  return a && answers_match(*a, reference);
}

}  // namespace r1::data
