#include "rl/rewards.h"

#include <fmt/format.h>

#include <cmath>

#include "data/answer.h"
#include "data/templates.h"
#include "engine/error.h"

namespace r1::rl {

using json = nlohmann::json;

CompletionStyle completion_style_from_string(std::string_view s) {
  if (s == "r1_zero") return CompletionStyle::R1Zero;
  if (s == "chat") return CompletionStyle::Chat;
  throw InputError(fmt::format("unknown completion style \"{}\" (r1_zero or chat)", s));
}

const char* completion_style_name(CompletionStyle s) {
  return s == CompletionStyle::R1Zero ? "r1_zero" : "chat";
}

// ---- weights ------------------------------------------------------------------------------

void RewardWeights::validate() const {
  const std::pair<const char*, double> fields[] = {
      {"accuracy", accuracy}, {"format", format}, {"language", language}};
  for (const auto& [name, v] : fields)
    R1_INPUT_CHECK(std::isfinite(v) && v >= 0,
                   "reward weights: field '{}': {} must be finite and >= 0", name, v);
}

RewardWeights RewardWeights::from_json(const json& j) {
  R1_INPUT_CHECK(j.is_object(), "reward weights: expected an object, got {}", j.dump());
  RewardWeights w;
  for (const auto& [key, v] : j.items()) {
    double* field = key == "accuracy" ? &w.accuracy
                    : key == "format" ? &w.format
                    : key == "language" ? &w.language
                                        : nullptr;
    R1_INPUT_CHECK(field != nullptr,
                   "reward weights: unknown field '{}' (known: accuracy, format, language)", key);
    R1_INPUT_CHECK(v.is_number(), "reward weights: field '{}': expected a number, got {}", key,
                   v.dump());
    *field = v.get<double>();
  }
  w.validate();
  return w;
}

json RewardWeights::to_json() const {
  return {{"accuracy", accuracy}, {"format", format}, {"language", language}};
}

// ---- scoring ------------------------------------------------------------------------------

std::optional<std::string> extract_final_answer(std::string_view c, CompletionStyle style) {
  const std::string_view close = data::kThinkClose;
  const size_t last_close = c.rfind(close);
  std::string_view after;
  if (last_close != std::string_view::npos) {
    after = c.substr(last_close + close.size());
  } else if (style == CompletionStyle::Chat) {
    return std::nullopt;  // still inside the <think> the prompt opened
  } else {
    after = c.substr(0, c.find(data::kThinkOpen));  // an unclosed <think> runs to the end
  }
  return data::extract_answer(after);
}

data::Lang record_language(const data::PromptRecord& rec) {
  if (!rec.meta.is_object() || !rec.meta.contains("lang")) return data::Lang::En;
  const json& l = rec.meta.at("lang");
  R1_INPUT_CHECK(l.is_string(), "prompt record meta 'lang': expected \"en\" or \"zh\", got {}",
                 l.dump());
  return data::lang_from_string(l.get<std::string>());
}

RewardBreakdown score_completion(const data::PromptRecord& rec, std::string_view completion,
                                 const RewardWeights& w, CompletionStyle style) {
  const data::CompletionParts parts = style == CompletionStyle::R1Zero
                                          ? data::parse_r1_zero_completion(completion)
                                          : data::parse_r1_chat_completion(completion);
  RewardBreakdown b;
  b.well_formed = parts.well_formed;
  if (auto a = extract_final_answer(completion, style); a && !a->empty()) {
    b.has_answer = true;
    b.answer = std::move(*a);
  }
  b.accuracy = b.has_answer && data::verify_record(rec, b.answer) ? 1.0 : 0.0;
  b.format = b.well_formed ? 1.0 : 0.0;
  b.language = language_consistency(parts.reasoning, record_language(rec));
  b.total = w.accuracy * b.accuracy + w.format * b.format + w.language * b.language;
  return b;
}

// ---- language consistency -----------------------------------------------------------------

namespace {

constexpr char32_t kInvalid = 0xFFFFFFFF;

// The code point starting at s[i] and its length in bytes; kInvalid with length 1 for a byte
// that does not start a well-formed sequence (RFC 3629: no overlongs, no surrogates, nothing
// past U+10FFFF).
std::pair<char32_t, size_t> decode_utf8(std::string_view s, size_t i) {
  const auto byte = [&](size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = byte(i);
  if (b0 < 0x80) return {b0, 1};
  size_t len;
  char32_t cp;
  unsigned char lo = 0x80, hi = 0xBF;  // the allowed range of the second byte
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2, cp = b0 & 0x1F;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3, cp = b0 & 0x0F;
    if (b0 == 0xE0) lo = 0xA0;  // overlong
    if (b0 == 0xED) hi = 0x9F;  // surrogates
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4, cp = b0 & 0x07;
    if (b0 == 0xF0) lo = 0x90;  // overlong
    if (b0 == 0xF4) hi = 0x8F;  // past U+10FFFF
  } else {
    return {kInvalid, 1};
  }
  if (i + len > s.size()) return {kInvalid, 1};
  for (size_t k = 1; k < len; ++k) {
    const unsigned char b = byte(i + k);
    if (b < (k == 1 ? lo : 0x80) || b > (k == 1 ? hi : 0xBF)) return {kInvalid, 1};
    cp = (cp << 6) | (b & 0x3F);
  }
  return {cp, len};
}

bool is_latin_letter(char32_t c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
         (c >= 0xC0 && c <= 0x24F && c != 0xD7 && c != 0xF7);  // Latin-1 letters, Ext. A/B
}

bool is_cjk_ideograph(char32_t c) {
  return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
         (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x20000 && c <= 0x2EBEF) ||
         (c >= 0x2F800 && c <= 0x2FA1F);
}

bool is_kana_or_hangul(char32_t c) {
  return (c >= 0x3040 && c <= 0x30FF) || (c >= 0xAC00 && c <= 0xD7AF);
}

bool is_cyrillic_letter(char32_t c) { return c >= 0x400 && c <= 0x4FF; }

}  // namespace

double language_consistency(std::string_view text, data::Lang target) {
  enum class Run { None, English, Command, Cyrillic };  // the word being read
  Run run = Run::None;
  bool after_backslash = false;  // an unpaired '\' just before: letters are a LaTeX command
  int64_t english = 0, chinese = 0, other = 0;
  for (size_t i = 0; i < text.size();) {
    const auto [c, len] = decode_utf8(text, i);
    i += len;
    const bool backslash = c == '\\' && !after_backslash;
    if (is_latin_letter(c)) {
      if (run != Run::English && run != Run::Command) {
        run = after_backslash ? Run::Command : Run::English;
        if (run == Run::English) ++english;
      }
    } else if (is_cyrillic_letter(c)) {
      if (run != Run::Cyrillic) ++other;
      run = Run::Cyrillic;
    } else {
      if (is_cjk_ideograph(c)) ++chinese;
      if (is_kana_or_hangul(c)) ++other;
      run = Run::None;  // anything else, an invalid byte included, ends the word
    }
    after_backslash = backslash;
  }
  const int64_t words = english + chinese + other;
  if (words == 0) return 0.0;
  return static_cast<double>(target == data::Lang::En ? english : chinese) /
         static_cast<double>(words);
}

}  // namespace r1::rl
