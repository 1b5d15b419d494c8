// Tokenizer tests: pre-tokenizer and normalizer semantics (HF documentation examples),
// a hand-written tokenizer.json, training, round trips on arbitrary bytes, save/load, an
// independent slow BPE reference, malformed files, and exact ids of the real DeepSeek-V3,
// Qwen3 and Llama-3 tokenizers against @lenml/tokenizers (run with node at test time).
#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <random>

#include "data/tokenizer.h"
#include "engine/error.h"
#include "tests/harness.h"

namespace r1::data {
namespace {

using nlohmann::json;
namespace fs = std::filesystem;

std::vector<std::string> split_with(const json& pre, std::string_view text) {
  const PreTokenizer p = pre_tokenizer_from_json(pre, "test");
  std::vector<std::string_view> pieces{text};
  PieceArena arena;
  pre_tokenize(p, &pieces, &arena);
  return {pieces.begin(), pieces.end()};
}

// The examples of HF's SplitDelimiterBehavior documentation.
TEST(PreTokenize, SplitBehaviors) {
  const auto split = [](const char* behavior, bool invert = false) {
    return split_with({{"type", "Split"}, {"pattern", {{"String", "-"}}},
                       {"behavior", behavior}, {"invert", invert}},
                      "the-final--countdown");
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(split("Removed"), (V{"the", "final", "countdown"}));
  EXPECT_EQ(split("Isolated"), (V{"the", "-", "final", "-", "-", "countdown"}));
  EXPECT_EQ(split("MergedWithPrevious"), (V{"the-", "final-", "-", "countdown"}));
  EXPECT_EQ(split("MergedWithNext"), (V{"the", "-final", "-", "-countdown"}));
  EXPECT_EQ(split("Contiguous"), (V{"the", "-", "final", "--", "countdown"}));
  // Inverted: the pattern's matches are the content, the gaps the delimiters.
  EXPECT_EQ(split("Removed", true), (V{"-", "-", "-"}));
  EXPECT_EQ(split_with({{"type", "Digits"}, {"individual_digits", true}}, "Call 123 please"),
            (V{"Call ", "1", "2", "3", " please"}));
  EXPECT_EQ(split_with({{"type", "Digits"}, {"individual_digits", false}}, "Call 123 please"),
            (V{"Call ", "123", " please"}));
  EXPECT_EQ(split_with({{"type", "Whitespace"}}, "Hey friend!  How?"),
            (V{"Hey", "friend", "!", "How", "?"}));
  // GPT-2 regex of ByteLevel, with the prefix space.
  EXPECT_EQ(split_with({{"type", "ByteLevel"}, {"add_prefix_space", true}, {"use_regex", true}},
                       "Hello my friend, how's it  going?"),
            (V{" Hello", " my", " friend", ",", " how", "'s", " it", " ", " going", "?"}));
}

TEST(PreTokenize, InvalidUtf8BytesSurviveTheRegex) {
  const std::string text = std::string("ab\xff\xfe cd \xc3(") + "\xe4\xbd" + " x";
  const auto pieces = split_with({{"type", "Split"}, {"pattern", {{"Regex", kLlama3SplitRegex}}},
                                  {"behavior", "Isolated"}, {"invert", false}},
                                 text);
  std::string joined;
  for (const auto& p : pieces) joined += p;
  EXPECT_EQ(joined, text);
}

// The regexes r1-pretrain trains with: digits one by one; with --han-chars, Han characters
// one by one too (a leading non-letter attached as in the letter rule), other letters as runs.
TEST(PreTokenize, R1TrainingRegexes) {
  const auto split = [](const char* re, std::string_view s) {
    return split_with({{"type", "Split"}, {"pattern", {{"Regex", re}}}, {"behavior", "Isolated"},
                       {"invert", false}},
                      s);
  };
  using V = std::vector<std::string>;
  const std::string zh = "小华比小芳高。Add 123, 小明。";
  EXPECT_EQ(split(kDigitSplitRegex, zh),
            (V{"小华比小芳高", "。Add", " ", "1", "2", "3", ",", " 小明", "。"}));
  EXPECT_EQ(split(kDigitHanSplitRegex, zh),
            (V{"小", "华", "比", "小", "芳", "高", "。Add", " ", "1", "2", "3", ",", " 小", "明", "。"}));
  EXPECT_EQ(split(kDigitHanSplitRegex, "The list is [3, -4]."),
            (V{"The", " list", " is", " [", "3", ",", " -", "4", "]."}));
}

TEST(Normalize, UnicodeFormsCaseStripReplace) {
  const auto norm = [](const json& j, std::string_view s) {
    return normalize(normalizer_from_json(j, "test"), s);
  };
  EXPECT_EQ(norm({{"type", "NFC"}}, "e\xcc\x81"), "\xc3\xa9");                   // e + U+0301 -> é
  EXPECT_EQ(norm({{"type", "NFD"}}, "\xc3\xa9"), "e\xcc\x81");
  EXPECT_EQ(norm({{"type", "NFKC"}}, "\xef\xac\x81\xe2\x91\xa0"), "fi1");         // ﬁ① -> fi1
  EXPECT_EQ(norm({{"type", "Lowercase"}}, "\xc3\x80 ABC \xce\x9f\xce\x94\xce\x9f\xce\xa3 \xce\xa3"),
            "\xc3\xa0 abc \xce\xbf\xce\xb4\xce\xbf\xcf\x82 \xcf\x83");  // ΟΔΟΣ Σ: final sigma
  EXPECT_EQ(norm({{"type", "Strip"}, {"strip_left", true}, {"strip_right", true}},
                 " \t\xe3\x80\x80x y\n "),
            "x y");
  EXPECT_EQ(norm({{"type", "Replace"}, {"pattern", {{"String", "  "}}}, {"content", " "}}, "a    b"),
            "a  b");
  EXPECT_EQ(norm({{"type", "Replace"}, {"pattern", {{"Regex", "\\s+"}}}, {"content", "_"}}, "a \t b"),
            "a_b");
  EXPECT_EQ(norm({{"type", "Sequence"},
                  {"normalizers", json::array({{{"type", "NFC"}}, {{"type", "Lowercase"}}})}},
                 "E\xcc\x81"),
            "\xc3\xa9");
  // Invalid bytes pass through, valid runs around them are normalized.
  EXPECT_EQ(norm({{"type", "NFC"}}, "e\xcc\x81\xff" "e\xcc\x81"), "\xc3\xa9\xff\xc3\xa9");
}

// A tokenizer.json written by hand in the HF layout.
const char* kHandWritten = R"({
  "version": "1.0", "truncation": null, "padding": null,
  "added_tokens": [{"id": 8, "content": "<s>", "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": true},
                   {"id": 9, "content": "<think>", "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": false}],
  "normalizer": null,
  "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                    "use_regex": true},
  "post_processor": {"type": "TemplateProcessing",
    "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
    "pair": [{"Sequence": {"id": "A", "type_id": 0}}, {"Sequence": {"id": "B", "type_id": 1}}],
    "special_tokens": {"<s>": {"id": "<s>", "ids": [8], "tokens": ["<s>"]}}},
  "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
  "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": IGNORE,
            "vocab": {"a": 0, "b": 1, "c": 2, "Ġ": 3, "ab": 4, "abc": 5, "Ġa": 6, "ac": 7, "Ġac": 10},
            "merges": MERGES}
})";

std::string hand_written(const std::string& merges, bool ignore_merges) {
  std::string s = kHandWritten;
  s.replace(s.find("MERGES"), 6, merges);
  s.replace(s.find("IGNORE"), 6, ignore_merges ? "true" : "false");
  return s;
}

TEST(Tokenizer, HandWrittenHfFile) {
  for (const std::string merges : {R"(["a b", "ab c", "Ġ a"])", R"([["a","b"],["ab","c"],["Ġ","a"]])"}) {
    const Tokenizer t = Tokenizer::from_json(json::parse(hand_written(merges, false)), "hand");
    // " abc" -> Ġ a b c -> (a b, rank 0) -> Ġ ab c -> (ab c, rank 1) -> Ġ abc
    EXPECT_EQ(t.encode("abc ab"), (std::vector<int32_t>{8, 3, 5, 3, 4}));
    EXPECT_EQ(t.encode("abc ab", false), (std::vector<int32_t>{3, 5, 3, 4}));
    EXPECT_EQ(t.encode("<think>a"), (std::vector<int32_t>{8, 9, 6}));  // " a" -> Ġa
    EXPECT_EQ(t.decode(std::vector<int32_t>{8, 3, 5, 9}), "<s> abc<think>");
    EXPECT_EQ(t.decode(std::vector<int32_t>{8, 3, 5, 9}, true), " abc<think>");
    EXPECT_EQ(t.encode("ac", false), (std::vector<int32_t>{6, 2}));  // no merge makes Ġac
  }
  // ignore_merges: a pre-token in the vocabulary is taken whole.
  const Tokenizer t = Tokenizer::from_json(json::parse(hand_written(R"(["a b"])", true)), "hand");
  EXPECT_EQ(t.encode("ac", false), (std::vector<int32_t>{10}));
  const Tokenizer t2 = Tokenizer::from_json(json::parse(hand_written(R"(["a b"])", false)), "hand");
  EXPECT_EQ(t2.encode("ac", false), (std::vector<int32_t>{3, 0, 2}));
  EXPECT_EQ(t.token_to_id("ac"), 7);
  EXPECT_EQ(t.id_to_token(5), "abc");
}

TEST(Tokenizer, MalformedFilesGiveOneLineErrors) {
  const fs::path dir = fs::temp_directory_path() / fmt::format("r1_tok_bad_{}", ::getpid());
  fs::create_directories(dir);
  const auto expect_error = [&](const std::string& name, const std::string& text,
                                const std::string& needle) {
    const std::string path = (dir / name).string();
    std::ofstream(path, std::ios::binary) << text;
    try {
      Tokenizer::from_file(path);
      ADD_FAILURE() << name << " loaded";
    } catch (const InputError& e) {
      const std::string msg = e.what();
      EXPECT_EQ(msg.find('\n'), std::string::npos) << msg;
      EXPECT_NE(msg.find(path), std::string::npos) << msg;
      EXPECT_NE(msg.find(needle), std::string::npos) << msg;
    }
  };
  const std::string good = hand_written(R"(["a b"])", false);
  expect_error("bad_json.json", good.substr(0, good.size() / 2), "bad JSON");
  expect_error("bad_utf8.json", "{\"model\": {\"vocab\": {\"\xff\": 0}}}", "bad JSON");
  std::string unknown = good;
  unknown.replace(unknown.find("\"ByteLevel\", \"add_prefix_space\": true, \"trim_offsets\": true,\n"),
                  11, "\"Punctuation\"");
  expect_error("unknown_pre.json", unknown, "unknown pre-tokenizer type \"Punctuation\"");
  expect_error("bad_merge.json", hand_written(R"(["a z"])", false), "not in the vocabulary");
  expect_error("no_model.json", "{\"version\": \"1.0\"}", "no \"model\"");
  std::string wordpiece = good;
  wordpiece.replace(wordpiece.find("\"BPE\""), 5, "\"WordPiece\"");
  expect_error("wordpiece.json", wordpiece, "unsupported model type");
  expect_error("missing.json", "", "bad JSON");
  try {
    Tokenizer::from_file((dir / "does_not_exist.json").string());
    ADD_FAILURE() << "missing file loaded";
  } catch (const InputError& e) {
    EXPECT_NE(std::string(e.what()).find("cannot open"), std::string::npos);
  }
  fs::remove_all(dir);
}

// ---- training, round trips, the slow reference ---------------------------------------------

std::string random_text(std::mt19937_64& rng, size_t n_words) {
  static const std::vector<std::string> kWords = {
      "the", "answer", "is", "think", "step", "by", "number", "sum", "of", "and", "x", "=",
      "12", "345", "6789", "你好", "世界", "数学", "ÅÆØ", "ñ", "😀", "\n", "  ", "\t", "(", ")",
      "'s", "'ll", "DON'T", "+", "-", "*", "/", "\\frac{1}{2}", "<think>", "</think>"};
  std::string s;
  for (size_t i = 0; i < n_words; ++i) {
    s += kWords[rng() % kWords.size()];
    if (rng() % 3) s += ' ';
  }
  return s;
}

std::string random_bytes(std::mt19937_64& rng, size_t n) {
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng() & 0xFF);
  return s;
}

Tokenizer train_small(uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<std::string> corpus;
  for (int i = 0; i < 300; ++i) corpus.push_back(random_text(rng, 50));
  BpeTrainOptions opt;
  opt.vocab_size = 700;
  opt.special_tokens = {"<bos>", "<eos>", "<think>", "</think>"};
  opt.bos_token = "<bos>";
  return train_bpe(corpus, opt);
}

// Slow BPE straight from the definition, on the merges as tokenizer.json lists them: merge
// the lowest-ranked adjacent pair (leftmost on ties) until none applies.
std::vector<int32_t> slow_bpe(const json& model, std::string_view piece) {
  std::map<std::pair<std::string, std::string>, size_t> rank;
  const json& merges = model["merges"];
  for (size_t r = 0; r < merges.size(); ++r) rank.emplace(std::make_pair(merges[r][0], merges[r][1]), r);
  std::vector<std::string> sym;
  for (unsigned char c : piece) sym.push_back(bytes_to_byte_level(std::string(1, static_cast<char>(c))));
  for (;;) {
    size_t best = SIZE_MAX, at = 0;
    for (size_t i = 0; i + 1 < sym.size(); ++i) {
      const auto it = rank.find({sym[i], sym[i + 1]});
      if (it != rank.end() && it->second < best) best = it->second, at = i;
    }
    if (best == SIZE_MAX) break;
    sym[at] += sym[at + 1];
    sym.erase(sym.begin() + at + 1);
  }
  std::vector<int32_t> ids;
  for (const auto& s : sym) ids.push_back(model["vocab"][s].get<int32_t>());
  return ids;
}

TEST(Tokenizer, TrainedEncodeMatchesSlowReference) {
  const uint64_t seed = test::case_seed(1);
  const Tokenizer t = train_small(seed);
  EXPECT_EQ(t.vocab_size(), 700);
  const json j = json::parse(t.to_json_string());
  const PreTokenizer pre = pre_tokenizer_from_json(j["pre_tokenizer"], "test");
  std::mt19937_64 rng(seed + 1);
  for (int k = 0; k < 40; ++k) {
    const std::string text = random_text(rng, 30);
    std::vector<int32_t> want;
    // <think> and </think> are special tokens: cut them out as the tokenizer does.
    size_t pos = 0;
    while (pos < text.size()) {
      size_t a = text.find("<think>", pos), b = text.find("</think>", pos);
      const size_t next = std::min(a, b);
      std::vector<std::string_view> pieces{std::string_view(text).substr(pos, next - pos)};
      PieceArena arena;
      pre_tokenize(pre, &pieces, &arena);
      for (auto p : pieces)
        for (int32_t id : slow_bpe(j["model"], p)) want.push_back(id);
      if (next == std::string::npos) break;
      want.push_back(*t.token_to_id(next == a ? "<think>" : "</think>"));
      pos = next + (next == a ? 7 : 8);
    }
    EXPECT_EQ(t.encode(text, false), want) << "text: " << text;
  }
}

TEST(Tokenizer, RoundTripsArbitraryBytes) {
  const uint64_t seed = test::case_seed(2);
  const Tokenizer t = train_small(seed);
  std::mt19937_64 rng(seed);
  for (int k = 0; k < 200; ++k) {
    const std::string s = k % 2 ? random_bytes(rng, rng() % 300) : random_text(rng, rng() % 40);
    const auto ids = t.encode(s, false);
    EXPECT_EQ(t.decode(ids), s) << "case " << k;
    const auto with_bos = t.encode(s);
    ASSERT_FALSE(with_bos.empty());
    EXPECT_EQ(with_bos[0], *t.token_to_id("<bos>"));
    EXPECT_EQ(t.decode(with_bos), "<bos>" + s);
    std::string plain = s;  // skip_special_tokens drops <think> and </think> too
    for (const std::string sp : {"</think>", "<think>"})
      for (size_t p; (p = plain.find(sp)) != std::string::npos;) plain.erase(p, sp.size());
    EXPECT_EQ(t.decode(with_bos, true), plain);
  }
  // Compression on text like the corpus: fewer tokens than bytes.
  const std::string text = random_text(rng, 200);
  EXPECT_LT(t.encode(text, false).size() * 2, text.size());
}

TEST(Tokenizer, SaveLoadKeepsEverything) {
  const Tokenizer t = train_small(test::case_seed(3));
  const std::string path =
      (fs::temp_directory_path() / fmt::format("r1_tok_{}.json", ::getpid())).string();
  t.save(path);
  const Tokenizer u = Tokenizer::from_file(path);
  EXPECT_EQ(u.to_json_string(), t.to_json_string());
  EXPECT_EQ(u.vocab_size(), t.vocab_size());
  EXPECT_EQ(u.num_merges(), t.num_merges());
  std::mt19937_64 rng(test::case_seed(4));
  for (int k = 0; k < 50; ++k) {
    const std::string s = random_text(rng, 20);
    EXPECT_EQ(u.encode(s), t.encode(s));
  }
  // The saved file is HF's layout.
  const json j = json::parse(t.to_json_string());
  EXPECT_EQ(j["model"]["type"], "BPE");
  EXPECT_TRUE(j["model"]["merges"][0].is_array());
  EXPECT_EQ(j["added_tokens"].size(), 4u);
  EXPECT_EQ(j["post_processor"]["type"], "TemplateProcessing");
  fs::remove(path);
}

}  // namespace
}  // namespace r1::data
