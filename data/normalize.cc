// Normalizers. Unicode normalization and lowercasing are ICU's; each runs on the valid
// UTF-8 runs of the text only, so invalid bytes pass through unchanged (HF never sees them:
// its input is a Rust &str).
#include <unicode/locid.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/unistr.h>

#include "data/pretokenize.h"
#include "engine/error.h"

namespace r1::data {

using nlohmann::json;

Normalizer normalizer_from_json(const json& j, const std::string& where) {
  if (!j.is_object() || !j.contains("type") || !j["type"].is_string())
    throw InputError(fmt::format("{}: normalizer without a type: {}", where,
                                 j.dump().substr(0, 80)));
  const std::string type = j["type"];
  Normalizer n;
  using K = Normalizer::Kind;
  if (type == "Sequence") {
    n.kind = K::Sequence;
    for (const auto& c : j.at("normalizers")) n.children.push_back(normalizer_from_json(c, where));
  } else if (type == "NFC") {
    n.kind = K::NFC;
  } else if (type == "NFD") {
    n.kind = K::NFD;
  } else if (type == "NFKC") {
    n.kind = K::NFKC;
  } else if (type == "NFKD") {
    n.kind = K::NFKD;
  } else if (type == "Lowercase") {
    n.kind = K::Lowercase;
  } else if (type == "Strip") {
    n.kind = K::Strip;
    n.strip_left = j.value("strip_left", true);
    n.strip_right = j.value("strip_right", true);
  } else if (type == "Prepend") {
    n.kind = K::Prepend;
    n.content = j.at("prepend").get<std::string>();
  } else if (type == "Replace") {
    n.kind = K::Replace;
    const json& pat = j.at("pattern");
    if (pat.contains("Regex")) n.regex = std::make_shared<Regex>(pat["Regex"].get<std::string>());
    else if (pat.contains("String")) n.literal = pat["String"].get<std::string>();
    else throw InputError(fmt::format("{}: Replace pattern must be String or Regex", where));
    n.content = j.at("content").get<std::string>();
  } else {
    throw InputError(fmt::format("{}: unknown normalizer type \"{}\"", where, type));
  }
  return n;
}

namespace {

bool is_ascii(std::string_view s) {
  for (unsigned char c : s)
    if (c >= 0x80) return false;
  return true;
}

// Applies f to each maximal valid UTF-8 run of s; invalid bytes are copied as they are.
template <class F>
std::string per_valid_run(std::string_view s, F f) {
  std::string out;
  size_t i = 0;
  while (i < s.size()) {
    size_t j = i;
    while (j < s.size()) {
      const int n = utf8_char_len(s, j);
      if (n == 0) break;
      j += n;
    }
    if (j > i) out += f(s.substr(i, j - i));
    while (j < s.size() && utf8_char_len(s, j) == 0) out.push_back(s[j++]);
    i = j;
  }
  return out;
}

std::string icu_normalize(std::string_view s, Normalizer::Kind kind) {
  if (is_ascii(s)) return std::string(s);  // every normal form fixes ASCII
  UErrorCode st = U_ZERO_ERROR;
  const icu::Normalizer2* n2 = nullptr;
  switch (kind) {
    case Normalizer::Kind::NFC: n2 = icu::Normalizer2::getNFCInstance(st); break;
    case Normalizer::Kind::NFD: n2 = icu::Normalizer2::getNFDInstance(st); break;
    case Normalizer::Kind::NFKC: n2 = icu::Normalizer2::getNFKCInstance(st); break;
    default: n2 = icu::Normalizer2::getNFKDInstance(st); break;
  }
  R1_CHECK(U_SUCCESS(st), "ICU normalizer unavailable: {}", u_errorName(st));
  return per_valid_run(s, [&](std::string_view run) {
    UErrorCode e = U_ZERO_ERROR;
    const icu::UnicodeString u = icu::UnicodeString::fromUTF8(
        icu::StringPiece(run.data(), static_cast<int32_t>(run.size())));
    const icu::UnicodeString r = n2->normalize(u, e);
    R1_CHECK(U_SUCCESS(e), "ICU normalize failed: {}", u_errorName(e));
    std::string out;
    r.toUTF8String(out);
    return out;
  });
}

std::string lowercase(std::string_view s) {
  if (is_ascii(s)) {
    std::string out(s);
    for (char& c : out)
      if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
    return out;
  }
  return per_valid_run(s, [](std::string_view run) {
    icu::UnicodeString u = icu::UnicodeString::fromUTF8(
        icu::StringPiece(run.data(), static_cast<int32_t>(run.size())));
    u.toLower(icu::Locale::getRoot());  // full mappings, final sigma: as Rust's to_lowercase
    std::string out;
    u.toUTF8String(out);
    return out;
  });
}

// Code point at i (valid UTF-8 assumed by the caller), or -1.
int32_t code_point_at(std::string_view s, size_t i, int* len) {
  *len = utf8_char_len(s, i);
  if (*len == 0) return -1;
  const auto u = reinterpret_cast<const unsigned char*>(s.data()) + i;
  switch (*len) {
    case 1: return u[0];
    case 2: return ((u[0] & 0x1F) << 6) | (u[1] & 0x3F);
    case 3: return ((u[0] & 0x0F) << 12) | ((u[1] & 0x3F) << 6) | (u[2] & 0x3F);
    default:
      return ((u[0] & 0x07) << 18) | ((u[1] & 0x3F) << 12) | ((u[2] & 0x3F) << 6) | (u[3] & 0x3F);
  }
}

std::string strip(std::string_view s, bool left, bool right) {
  size_t b = 0, e = s.size();
  if (left) {
    int len = 0;
    while (b < e) {
      const int32_t cp = code_point_at(s, b, &len);
      if (cp < 0 || !u_isUWhiteSpace(cp)) break;
      b += len;
    }
  }
  if (right) {
    while (e > b) {
      size_t k = e - 1;  // back up to the start of the last character
      while (k > b && (static_cast<unsigned char>(s[k]) & 0xC0) == 0x80 && e - k < 4) --k;
      int len = 0;
      const int32_t cp = code_point_at(s, k, &len);
      if (cp < 0 || k + len != e || !u_isUWhiteSpace(cp)) break;
      e = k;
    }
  }
  return std::string(s.substr(b, e - b));
}

std::string replace(const Normalizer& n, std::string_view s) {
  std::vector<std::pair<size_t, size_t>> m;
  if (n.regex) {
    n.regex->find_all(s, &m);
  } else if (!n.literal.empty()) {
    for (size_t p = s.find(n.literal); p != std::string_view::npos;
         p = s.find(n.literal, p + n.literal.size()))
      m.emplace_back(p, p + n.literal.size());
  }
  std::string out;
  size_t prev = 0;
  for (const auto& [a, b] : m) {
    if (b == a) continue;
    out.append(s.substr(prev, a - prev));
    out += n.content;
    prev = b;
  }
  out.append(s.substr(prev));
  return out;
}

}  // namespace

std::string normalize(const Normalizer& n, std::string_view text) {
  using K = Normalizer::Kind;
  switch (n.kind) {
    case K::Sequence: {
      std::string s(text);
      for (const auto& c : n.children) s = normalize(c, s);
      return s;
    }
    case K::NFC:
    case K::NFD:
    case K::NFKC:
    case K::NFKD: return icu_normalize(text, n.kind);
    case K::Lowercase: return lowercase(text);
    case K::Strip: return strip(text, n.strip_left, n.strip_right);
    case K::Prepend: return text.empty() ? std::string() : n.content + std::string(text);
    case K::Replace: return replace(n, text);
  }
  return std::string(text);
}

}  // namespace r1::data
