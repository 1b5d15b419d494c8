// The text pipeline in front of the BPE model, as Hugging Face `tokenizers` defines it:
// normalizers (NFC, NFKC, NFD, NFKD, Lowercase, Replace, Strip, Prepend, Sequence) and
// pre-tokenizers (Split, ByteLevel, Digits, Whitespace, WhitespaceSplit, Sequence).
//
// Everything works on raw bytes, so invalid UTF-8 survives: normalizers touch only the valid
// UTF-8 runs, and regexes run under PCRE2_MATCH_INVALID_UTF, where an invalid byte never
// matches and so lands in a gap piece of its own. The byte-level alphabet (GPT-2's
// bytes_to_unicode) is applied only at the edges (vocab load/save); inside, a pre-token is
// its raw bytes and the vocabulary is keyed by raw bytes.
#pragma once
#include <nlohmann/json.hpp>

#include <array>
#include <cstdint>
#include <deque>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace r1::data {

// ---- UTF-8 -------------------------------------------------------------------------------
// Length of the valid UTF-8 sequence starting at s[i], or 0 if the bytes there are invalid
// (overlong, surrogate, > U+10FFFF, truncated).
int utf8_char_len(std::string_view s, size_t i);
bool utf8_valid(std::string_view s);
// Appends the UTF-8 encoding of code point cp.
void utf8_append(std::string* out, uint32_t cp);

// ---- byte-level alphabet -------------------------------------------------------------------
// GPT-2's bytes_to_unicode: printable bytes map to themselves, the rest to U+0100.. in order.
const std::array<std::string, 256>& byte_level_alphabet();
std::string bytes_to_byte_level(std::string_view bytes);
// Inverse map; false (out untouched) when a character is not in the alphabet.
bool byte_level_to_bytes(std::string_view s, std::string* out);

// ---- regex ---------------------------------------------------------------------------------
// A PCRE2 pattern compiled with UTF, UCP and MATCH_INVALID_UTF, JIT-compiled when the JIT is
// available. Oniguruma (HF's engine) and PCRE2 agree on the syntax the tokenizer regexes use
// (\p{L}, (?i:...), (?!\S), classes).
class Regex {
 public:
  // Throws InputError naming the pattern and PCRE2's message.
  explicit Regex(const std::string& pattern);
  // Non-overlapping matches left to right as [start, end) byte offsets; an empty match moves
  // the search on by one character, as Oniguruma's find_iter does.
  void find_all(std::string_view s, std::vector<std::pair<size_t, size_t>>* out) const;
  const std::string& pattern() const { return pattern_; }

 private:
  struct Code;
  std::string pattern_;
  std::shared_ptr<Code> code_;
};

// ---- normalizers ---------------------------------------------------------------------------
struct Normalizer {
  enum class Kind { NFC, NFD, NFKC, NFKD, Lowercase, Replace, Strip, Prepend, Sequence };
  Kind kind = Kind::Sequence;
  std::shared_ptr<Regex> regex;  // Replace with {"Regex": ...}
  std::string literal;           // Replace with {"String": ...}
  std::string content;           // Replace's replacement, Prepend's prefix
  bool strip_left = false, strip_right = false;
  std::vector<Normalizer> children;  // Sequence
};

// `where` names the file for error messages; unknown types throw InputError.
Normalizer normalizer_from_json(const nlohmann::json& j, const std::string& where);
std::string normalize(const Normalizer& n, std::string_view text);

// ---- pre-tokenizers ------------------------------------------------------------------------
enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

struct PreTokenizer {
  enum class Kind { Split, ByteLevel, Digits, Sequence };
  Kind kind = Kind::Sequence;
  std::shared_ptr<Regex> regex;  // Split (a String pattern is compiled as a quoted regex)
  SplitBehavior behavior = SplitBehavior::Isolated;
  bool invert = false;
  bool add_prefix_space = false;   // ByteLevel
  bool use_regex = true;           // ByteLevel: split with the GPT-2 regex first
  bool individual_digits = false;  // Digits
  std::vector<PreTokenizer> children;
};

PreTokenizer pre_tokenizer_from_json(const nlohmann::json& j, const std::string& where);
// True when the pipeline contains a ByteLevel step (the only model family r1 supports).
bool has_byte_level(const PreTokenizer& p);

// Pieces are views into the input or into `arena` (strings that a step had to build, such
// as a piece with a prefix space); the arena must outlive the pieces.
using PieceArena = std::deque<std::string>;
void pre_tokenize(const PreTokenizer& p, std::vector<std::string_view>* pieces,
                  PieceArena* arena);

// The GPT-2 split regex (ByteLevel's use_regex), and the Llama-3 one that r1 trains with.
extern const char* const kGpt2SplitRegex;
extern const char* const kLlama3SplitRegex;
// Llama-3's regex with every digit its own piece (Qwen2's choice): numbers tokenize digit by
// digit, which tiny models need to learn arithmetic at all.
extern const char* const kDigitSplitRegex;
// kDigitSplitRegex with every CJK ideograph (U+3400-4DBF, 4E00-9FFF, F900-FAFF: explicit
// ranges, since engines disagree on whether \p{Han} takes CJK punctuation) its own piece as
// well. A run of Chinese text is one \p{L}+ piece otherwise, so BPE merges across word
// boundaries: 小华比小芳高 became a few arbitrary byte groups, and a name was no unit a tiny
// model could copy.
extern const char* const kDigitHanSplitRegex;

}  // namespace r1::data
