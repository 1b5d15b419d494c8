// Byte-level BPE training (Sennrich et al. 2016, on bytes as GPT-2): count pre-tokens, then
// repeatedly merge the most frequent adjacent pair. Pair counts are kept incrementally; the
// heap holds possibly stale counts and is corrected lazily when a stale top is popped (as
// HF's BpeTrainer does).
#include <algorithm>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "data/tokenizer.h"
#include "engine/error.h"

namespace r1::data {

using nlohmann::json;

namespace {

uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(a) << 32) | static_cast<uint32_t>(b);
}

struct HeapEntry {
  int64_t count;
  uint64_t pair;
  // Max-heap on count; on ties the smaller (left, right) pair wins, for determinism.
  bool operator<(const HeapEntry& o) const {
    return count != o.count ? count < o.count : pair > o.pair;
  }
};

// Pre-token counts of the corpus, with special tokens cut out of the text first.
std::unordered_map<std::string, int64_t> count_words(const std::vector<std::string>& texts,
                                                     const BpeTrainOptions& opt,
                                                     const PreTokenizer& pre) {
  std::unordered_map<std::string, int64_t> counts;
  for (const std::string& text : texts) {
    std::vector<std::string_view> parts{text};
    for (const std::string& sp : opt.special_tokens) {
      std::vector<std::string_view> next;
      for (std::string_view p : parts) {
        for (size_t at; (at = p.find(sp)) != std::string_view::npos; p = p.substr(at + sp.size()))
          if (at > 0) next.push_back(p.substr(0, at));
        if (!p.empty()) next.push_back(p);
      }
      parts.swap(next);
    }
    PieceArena arena;
    pre_tokenize(pre, &parts, &arena);
    for (std::string_view w : parts) ++counts[std::string(w)];
  }
  return counts;
}

json pre_tokenizer_json(const std::string& regex) {
  return {{"type", "Sequence"},
          {"pretokenizers",
           json::array({{{"type", "Split"},
                         {"pattern", {{"Regex", regex}}},
                         {"behavior", "Isolated"},
                         {"invert", false}},
                        {{"type", "ByteLevel"},
                         {"add_prefix_space", false},
                         {"trim_offsets", false},
                         {"use_regex", false}}})}};
}

json post_processor_json(const std::string& bos, int32_t bos_id) {
  if (bos.empty()) return {{"type", "ByteLevel"}, {"add_prefix_space", false},
                           {"trim_offsets", false}, {"use_regex", false}};
  const json tok = {{"SpecialToken", {{"id", bos}, {"type_id", 0}}}};
  const json tok1 = {{"SpecialToken", {{"id", bos}, {"type_id", 1}}}};
  return {{"type", "TemplateProcessing"},
          {"single", json::array({tok, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}})},
          {"pair", json::array({tok, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}, tok1,
                                {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}})},
          {"special_tokens",
           {{bos, {{"id", bos}, {"ids", json::array({bos_id})}, {"tokens", json::array({bos})}}}}}};
}

}  // namespace

Tokenizer train_bpe(const std::vector<std::string>& texts, const BpeTrainOptions& opt) {
  const int32_t n_special = static_cast<int32_t>(opt.special_tokens.size());
  R1_INPUT_CHECK(opt.vocab_size >= 256 + n_special,
                 "train_bpe: vocab_size {} is below 256 bytes + {} special tokens", opt.vocab_size,
                 n_special);
  R1_INPUT_CHECK(opt.bos_token.empty() || std::find(opt.special_tokens.begin(),
                                                    opt.special_tokens.end(),
                                                    opt.bos_token) != opt.special_tokens.end(),
                 "train_bpe: bos_token \"{}\" is not among the special tokens", opt.bos_token);
  const std::string regex = opt.split_regex.empty() ? kLlama3SplitRegex : opt.split_regex;
  const json pre_json = pre_tokenizer_json(regex);
  const PreTokenizer pre = pre_tokenizer_from_json(pre_json, "train_bpe");

  // Words as symbol sequences; symbols 0..255 are bytes.
  const auto counts = count_words(texts, opt, pre);
  std::vector<std::vector<int32_t>> words;
  std::vector<int64_t> freq;
  for (const auto& [w, c] : counts) {
    words.emplace_back(w.begin(), w.end());
    for (auto& s : words.back()) s = static_cast<unsigned char>(s);
    freq.push_back(c);
  }
  std::vector<std::string> token_bytes(256);
  for (int b = 0; b < 256; ++b) token_bytes[b] = std::string(1, static_cast<char>(b));
  std::unordered_map<std::string, int32_t> bytes_to_id;
  for (int b = 0; b < 256; ++b) bytes_to_id[token_bytes[b]] = b;

  std::unordered_map<uint64_t, int64_t> pair_count;
  std::unordered_map<uint64_t, std::unordered_set<int32_t>> where;
  for (int32_t w = 0; w < static_cast<int32_t>(words.size()); ++w)
    for (size_t i = 0; i + 1 < words[w].size(); ++i) {
      const uint64_t k = pair_key(words[w][i], words[w][i + 1]);
      pair_count[k] += freq[w];
      where[k].insert(w);
    }
  std::priority_queue<HeapEntry> heap;
  for (const auto& [k, c] : pair_count) heap.push({c, k});

  std::vector<std::pair<int32_t, int32_t>> merges;
  const int32_t target = opt.vocab_size - n_special;
  while (static_cast<int32_t>(token_bytes.size()) < target && !heap.empty()) {
    const HeapEntry top = heap.top();
    heap.pop();
    const auto pc = pair_count.find(top.pair);
    const int64_t now = pc == pair_count.end() ? 0 : pc->second;
    if (now != top.count) {  // stale: requeue with the current count
      if (now > 0) heap.push({now, top.pair});
      continue;
    }
    if (now < opt.min_frequency) break;
    const int32_t a = static_cast<int32_t>(top.pair >> 32), b = static_cast<int32_t>(top.pair);
    const std::string merged = token_bytes[a] + token_bytes[b];
    int32_t id;
    if (const auto it = bytes_to_id.find(merged); it != bytes_to_id.end()) {
      id = it->second;
    } else {
      id = static_cast<int32_t>(token_bytes.size());
      token_bytes.push_back(merged);
      bytes_to_id[merged] = id;
    }
    merges.emplace_back(a, b);
    std::unordered_set<uint64_t> touched;
    const std::unordered_set<int32_t> ws = std::move(where[top.pair]);
    where.erase(top.pair);
    for (int32_t w : ws) {
      auto& sym = words[w];
      for (size_t i = 0; i + 1 < sym.size(); ++i) pair_count[pair_key(sym[i], sym[i + 1])] -= freq[w];
      std::vector<int32_t> out;
      out.reserve(sym.size());
      for (size_t i = 0; i < sym.size(); ++i) {
        if (i + 1 < sym.size() && sym[i] == a && sym[i + 1] == b) {
          out.push_back(id);
          ++i;
        } else {
          out.push_back(sym[i]);
        }
      }
      sym.swap(out);
      for (size_t i = 0; i + 1 < sym.size(); ++i) {
        const uint64_t k = pair_key(sym[i], sym[i + 1]);
        pair_count[k] += freq[w];
        where[k].insert(w);
        touched.insert(k);
      }
    }
    pair_count.erase(top.pair);
    for (uint64_t k : touched)
      if (pair_count[k] > 0) heap.push({pair_count[k], k});
  }

  // Assemble tokenizer.json and load it through the one loading path.
  json vocab = json::object();
  for (size_t id = 0; id < token_bytes.size(); ++id)
    vocab[bytes_to_byte_level(token_bytes[id])] = id;
  json merges_json = json::array();
  for (const auto& [a, b] : merges)
    merges_json.push_back({bytes_to_byte_level(token_bytes[a]), bytes_to_byte_level(token_bytes[b])});
  json added = json::array();
  int32_t bos_id = -1;
  for (int32_t i = 0; i < n_special; ++i) {
    const int32_t id = static_cast<int32_t>(token_bytes.size()) + i;
    if (opt.special_tokens[i] == opt.bos_token) bos_id = id;
    added.push_back({{"id", id}, {"content", opt.special_tokens[i]}, {"single_word", false},
                     {"lstrip", false}, {"rstrip", false}, {"normalized", false},
                     {"special", true}});
  }
  json j = {{"version", "1.0"},
            {"added_tokens", added},
            {"normalizer", nullptr},
            {"pre_tokenizer", pre_json},
            {"post_processor", post_processor_json(opt.bos_token, bos_id)},
            {"decoder", {{"type", "ByteLevel"}, {"add_prefix_space", false},
                         {"trim_offsets", false}, {"use_regex", false}}},
            {"model", {{"type", "BPE"}, {"ignore_merges", false}, {"vocab", vocab},
                       {"merges", merges_json}}}};
  return Tokenizer::from_json(j, "train_bpe");
}

}  // namespace r1::data
