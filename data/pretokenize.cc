// UTF-8 helpers, the byte-level alphabet, the PCRE2 wrapper and the pre-tokenizers.
#include "data/pretokenize.h"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include <algorithm>

#include "engine/error.h"

namespace r1::data {

using nlohmann::json;

const char* const kGpt2SplitRegex =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";
const char* const kLlama3SplitRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

const char* const kDigitSplitRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

const char* const kDigitHanSplitRegex =
    R"((?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\x{3400}-\x{4DBF}\x{4E00}-\x{9FFF}\x{F900}-\x{FAFF}]|[^\r\n\p{L}\p{N}]?[^\P{L}\x{3400}-\x{4DBF}\x{4E00}-\x{9FFF}\x{F900}-\x{FAFF}]+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+)";

// ---- UTF-8 -------------------------------------------------------------------------------

int utf8_char_len(std::string_view s, size_t i) {
  const auto b = [&](size_t k) { return static_cast<uint8_t>(s[k]); };
  const uint8_t c = b(i);
  if (c < 0x80) return 1;
  const size_t left = s.size() - i;
  const auto cont = [&](size_t k) { return (b(k) & 0xC0) == 0x80; };
  if (c >= 0xC2 && c <= 0xDF) return left >= 2 && cont(i + 1) ? 2 : 0;
  if (c >= 0xE0 && c <= 0xEF) {
    if (left < 3 || !cont(i + 1) || !cont(i + 2)) return 0;
    if (c == 0xE0 && b(i + 1) < 0xA0) return 0;   // overlong
    if (c == 0xED && b(i + 1) >= 0xA0) return 0;  // surrogate
    return 3;
  }
  if (c >= 0xF0 && c <= 0xF4) {
    if (left < 4 || !cont(i + 1) || !cont(i + 2) || !cont(i + 3)) return 0;
    if (c == 0xF0 && b(i + 1) < 0x90) return 0;  // overlong
    if (c == 0xF4 && b(i + 1) >= 0x90) return 0;  // > U+10FFFF
    return 4;
  }
  return 0;
}

bool utf8_valid(std::string_view s) {
  for (size_t i = 0; i < s.size();) {
    const int n = utf8_char_len(s, i);
    if (n == 0) return false;
    i += n;
  }
  return true;
}

void utf8_append(std::string* out, uint32_t cp) {
  if (cp < 0x80) {
    out->push_back(static_cast<char>(cp));
  } else if (cp < 0x800) {
    out->push_back(static_cast<char>(0xC0 | (cp >> 6)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else if (cp < 0x10000) {
    out->push_back(static_cast<char>(0xE0 | (cp >> 12)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  } else {
    out->push_back(static_cast<char>(0xF0 | (cp >> 18)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
    out->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
  }
}

// ---- byte-level alphabet -------------------------------------------------------------------

const std::array<std::string, 256>& byte_level_alphabet() {
  static const std::array<std::string, 256> table = [] {
    std::array<std::string, 256> t;
    uint32_t next = 256;
    for (int b = 0; b < 256; ++b) {
      const bool printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || b >= 0xAE;
      utf8_append(&t[b], printable ? static_cast<uint32_t>(b) : next++);
    }
    return t;
  }();
  return table;
}

std::string bytes_to_byte_level(std::string_view bytes) {
  const auto& t = byte_level_alphabet();
  std::string out;
  out.reserve(bytes.size() * 2);
  for (unsigned char c : bytes) out += t[c];
  return out;
}

bool byte_level_to_bytes(std::string_view s, std::string* out) {
  // Alphabet characters are U+0021..U+0143, so one or two UTF-8 bytes each.
  static const std::array<int16_t, 0x144> inverse = [] {
    std::array<int16_t, 0x144> inv;
    inv.fill(-1);
    const auto& t = byte_level_alphabet();
    for (int b = 0; b < 256; ++b) {
      const auto u = reinterpret_cast<const unsigned char*>(t[b].data());
      const uint32_t cp = t[b].size() == 1 ? u[0] : ((u[0] & 0x1F) << 6) | (u[1] & 0x3F);
      inv[cp] = static_cast<int16_t>(b);
    }
    return inv;
  }();
  std::string r;
  r.reserve(s.size());
  for (size_t i = 0; i < s.size();) {
    const auto u = reinterpret_cast<const unsigned char*>(s.data());
    uint32_t cp;
    if (u[i] < 0x80) {
      cp = u[i++];
    } else if ((u[i] & 0xE0) == 0xC0 && i + 1 < s.size() && (u[i + 1] & 0xC0) == 0x80) {
      cp = ((u[i] & 0x1F) << 6) | (u[i + 1] & 0x3F);
      i += 2;
    } else {
      return false;
    }
    if (cp >= inverse.size() || inverse[cp] < 0) return false;
    r.push_back(static_cast<char>(inverse[cp]));
  }
  *out = std::move(r);
  return true;
}

// ---- regex ---------------------------------------------------------------------------------

struct Regex::Code {
  pcre2_code* code = nullptr;
  bool jit = false;
  ~Code() { pcre2_code_free(code); }
};

Regex::Regex(const std::string& pattern) : pattern_(pattern), code_(std::make_shared<Code>()) {
  int err = 0;
  PCRE2_SIZE off = 0;
  code_->code = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.data()), pattern.size(),
                              PCRE2_UTF | PCRE2_UCP | PCRE2_MATCH_INVALID_UTF, &err, &off,
                              nullptr);
  if (code_->code == nullptr) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    throw InputError(fmt::format("bad regex /{}/ at offset {}: {}", pattern, off,
                                 reinterpret_cast<const char*>(msg)));
  }
  code_->jit = pcre2_jit_compile(code_->code, PCRE2_JIT_COMPLETE) == 0;
}

void Regex::find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>* out) const {
  // One match-data block per thread: only the whole-match pair is read.
  struct MatchData {
    pcre2_match_data* md = pcre2_match_data_create(1, nullptr);
    ~MatchData() { pcre2_match_data_free(md); }
  };
  thread_local MatchData tl;
  const auto subject = reinterpret_cast<PCRE2_SPTR>(s.data());
  size_t pos = 0;
  while (pos <= s.size()) {
    const int rc = code_->jit ? pcre2_jit_match(code_->code, subject, s.size(), pos, 0, tl.md,
                                                nullptr)
                              : pcre2_match(code_->code, subject, s.size(), pos, 0, tl.md,
                                            nullptr);
    if (rc == PCRE2_ERROR_NOMATCH) return;
    R1_CHECK(rc >= 0, "pcre2 match failed with code {} for /{}/", rc, pattern_);
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(tl.md);
    out->emplace_back(ov[0], ov[1]);
    if (ov[1] > ov[0]) {
      pos = ov[1];
    } else {  // empty match: step over one character (or one invalid byte)
      if (ov[1] >= s.size()) return;
      const int n = utf8_char_len(s, ov[1]);
      pos = ov[1] + (n > 0 ? n : 1);
    }
  }
}

// ---- pre-tokenizers ------------------------------------------------------------------------

namespace {

SplitBehavior behavior_from_json(const json& j, const std::string& where) {
  const std::string b = j.is_string() ? j.get<std::string>() : "";
  if (b == "Removed") return SplitBehavior::Removed;
  if (b == "Isolated") return SplitBehavior::Isolated;
  if (b == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (b == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (b == "Contiguous") return SplitBehavior::Contiguous;
  throw InputError(fmt::format("{}: unknown Split behavior {}", where, j.dump()));
}

std::string quote_regex(std::string_view lit) {
  std::string r = "\\Q";
  for (size_t i = 0; i < lit.size(); ++i) {
    if (lit.substr(i, 2) == "\\E") {
      r += "\\E\\\\E\\Q";
      ++i;
    } else {
      r += lit[i];
    }
  }
  return r + "\\E";
}

PreTokenizer make_split(const std::string& regex, SplitBehavior behavior, bool invert) {
  PreTokenizer p;
  p.kind = PreTokenizer::Kind::Split;
  p.regex = std::make_shared<Regex>(regex);
  p.behavior = behavior;
  p.invert = invert;
  return p;
}

bool json_bool(const json& j, const char* key, bool dflt) {
  const auto it = j.find(key);
  return it == j.end() || it->is_null() ? dflt : it->get<bool>();
}

}  // namespace

PreTokenizer pre_tokenizer_from_json(const json& j, const std::string& where) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    throw InputError(fmt::format("{}: pre_tokenizer without a type: {}", where,
                                 j.dump().substr(0, 80)));
  const std::string type = j["type"];
  PreTokenizer p;
  if (type == "Sequence") {
    p.kind = PreTokenizer::Kind::Sequence;
    for (const auto& c : j.at("pretokenizers")) p.children.push_back(pre_tokenizer_from_json(c, where));
  } else if (type == "Split") {
    const json& pat = j.at("pattern");
    std::string regex;
    if (pat.contains("Regex")) {
      regex = pat["Regex"].get<std::string>();
    } else if (pat.contains("String")) {
      regex = quote_regex(pat["String"].get<std::string>());
    } else {
      throw InputError(fmt::format("{}: Split pattern must be String or Regex", where));
    }
    p = make_split(regex, behavior_from_json(j.at("behavior"), where), json_bool(j, "invert", false));
  } else if (type == "ByteLevel") {
    p.kind = PreTokenizer::Kind::ByteLevel;
    p.add_prefix_space = json_bool(j, "add_prefix_space", true);
    p.use_regex = json_bool(j, "use_regex", true);
    if (p.use_regex) p.regex = std::make_shared<Regex>(kGpt2SplitRegex);
  } else if (type == "Digits") {
    p.kind = PreTokenizer::Kind::Digits;
    p.individual_digits = json_bool(j, "individual_digits", false);
  } else if (type == "Whitespace") {  // HF: \w+|[^\w\s]+ kept, the rest removed
    p = make_split(R"(\w+|[^\w\s]+)", SplitBehavior::Removed, true);
  } else if (type == "WhitespaceSplit") {
    p = make_split(R"(\s+)", SplitBehavior::Removed, false);
  } else {
    throw InputError(fmt::format("{}: unknown pre-tokenizer type \"{}\"", where, type));
  }
  return p;
}

bool has_byte_level(const PreTokenizer& p) {
  if (p.kind == PreTokenizer::Kind::ByteLevel) return true;
  return std::any_of(p.children.begin(), p.children.end(), has_byte_level);
}

namespace {

struct Segment {
  size_t start, end;
  bool is_match;
};

// HF's NormalizedString::split: turns matches and gaps into kept pieces per the behaviour.
void split_segments(std::string_view piece, const std::vector<Segment>& segs,
                    SplitBehavior behavior, std::vector<std::string_view>* out) {
  struct Span {
    size_t start, end;
    bool remove;
  };
  std::vector<Span> spans;
  spans.reserve(segs.size());
  bool prev = false;
  switch (behavior) {
    case SplitBehavior::Isolated:
      for (const auto& s : segs) spans.push_back({s.start, s.end, false});
      break;
    case SplitBehavior::Removed:
      for (const auto& s : segs) spans.push_back({s.start, s.end, s.is_match});
      break;
    case SplitBehavior::Contiguous:
      for (const auto& s : segs) {
        if (s.is_match == prev && !spans.empty()) spans.back().end = s.end;
        else spans.push_back({s.start, s.end, false});
        prev = s.is_match;
      }
      break;
    case SplitBehavior::MergedWithPrevious:
      for (const auto& s : segs) {
        if (s.is_match && !prev && !spans.empty()) spans.back().end = s.end;
        else spans.push_back({s.start, s.end, false});
        prev = s.is_match;
      }
      break;
    case SplitBehavior::MergedWithNext:
      for (auto it = segs.rbegin(); it != segs.rend(); ++it) {
        if (it->is_match && !prev && !spans.empty()) spans.back().start = it->start;
        else spans.push_back({it->start, it->end, false});
        prev = it->is_match;
      }
      std::reverse(spans.begin(), spans.end());
      break;
  }
  for (const auto& s : spans)
    if (!s.remove && s.end > s.start) out->push_back(piece.substr(s.start, s.end - s.start));
}

// Matches and the gaps between them, as HF's Pattern::find_matches returns them.
void regex_segments(const Regex& re, std::string_view piece, bool invert,
                    std::vector<Segment>* segs) {
  thread_local std::vector<std::pair<size_t, size_t>> matches;
  matches.clear();
  segs->clear();
  re.find_all(piece, &matches);
  size_t prev = 0;
  for (const auto& [s, e] : matches) {
    if (prev != s) segs->push_back({prev, s, invert});
    segs->push_back({s, e, !invert});
    prev = e;
  }
  if (prev != piece.size()) segs->push_back({prev, piece.size(), invert});
}

// Each ASCII digit is a match of its own (HF's char-predicate pattern).
void digit_segments(std::string_view piece, std::vector<Segment>* segs) {
  segs->clear();
  size_t last = 0;
  for (size_t i = 0; i < piece.size(); ++i) {
    if (piece[i] >= '0' && piece[i] <= '9') {
      if (last < i) segs->push_back({last, i, false});
      segs->push_back({i, i + 1, true});
      last = i + 1;
    }
  }
  if (last < piece.size()) segs->push_back({last, piece.size(), false});
}

}  // namespace

void pre_tokenize(const PreTokenizer& p, std::vector<std::string_view>* pieces,
                  PieceArena* arena) {
  if (p.kind == PreTokenizer::Kind::Sequence) {
    for (const auto& c : p.children) pre_tokenize(c, pieces, arena);
    return;
  }
  std::vector<std::string_view> out;
  out.reserve(pieces->size() * 2);
  std::vector<Segment> segs;
  for (std::string_view piece : *pieces) {
    switch (p.kind) {
      case PreTokenizer::Kind::Split:
        regex_segments(*p.regex, piece, p.invert, &segs);
        split_segments(piece, segs, p.behavior, &out);
        break;
      case PreTokenizer::Kind::ByteLevel:
        if (p.add_prefix_space && !piece.empty() && piece[0] != ' ') {
          std::string& owned = arena->emplace_back();
          owned.reserve(piece.size() + 1);
          owned.push_back(' ');
          owned.append(piece);
          piece = arena->back();
        }
        if (p.use_regex) {
          regex_segments(*p.regex, piece, false, &segs);
          split_segments(piece, segs, SplitBehavior::Isolated, &out);
        } else if (!piece.empty()) {
          out.push_back(piece);
        }
        break;
      case PreTokenizer::Kind::Digits:
        digit_segments(piece, &segs);
        split_segments(piece, segs,
                       p.individual_digits ? SplitBehavior::Isolated : SplitBehavior::Contiguous,
                       &out);
        break;
      case PreTokenizer::Kind::Sequence:
        break;
    }
  }
  pieces->swap(out);
}

}  // namespace r1::data
