// Byte-level BPE tokenizer, read from and written to Hugging Face `tokenizer.json`, encoding
// exactly as HF `tokenizers` does: added tokens are split out of the raw text first
// (leftmost-longest; lstrip/rstrip/single_word honoured), the rest is normalized,
// pre-tokenized, and each pre-token is merged by BPE rank (lowest rank first, leftmost
// first on ties; `ignore_merges` takes a pre-token that is itself in the vocabulary whole).
//
// Internally a token is its raw bytes, not its byte-level spelling, so that encode/decode
// round-trip any byte string, invalid UTF-8 included (HF's decoder would replace invalid
// UTF-8 with U+FFFD; ours returns the bytes).
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "data/pretokenize.h"

namespace r1::data {

struct AddedToken {
  int32_t id = 0;
  std::string content;
  bool special = true;
  bool lstrip = false, rstrip = false, single_word = false;
  bool normalized = false;  // matched in the normalized text instead of the raw one
};

class Tokenizer {
 public:
  // Loads a tokenizer.json. Bad JSON, an unsupported model or component type, a merge whose
  // parts are not in the vocabulary: r1::InputError with one line naming the file.
  static Tokenizer from_file(const std::string& path);
  static Tokenizer from_json(const nlohmann::json& j, const std::string& where);
  // Writes the HF layout (version, added_tokens, normalizer, pre_tokenizer, post_processor,
  // decoder, model{type: BPE, vocab, merges as pairs}); the file is replaced atomically.
  void save(const std::string& path) const;
  std::string to_json_string() const;

  // text: any bytes. add_special_tokens applies the post-processor (BOS from a template).
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  std::string decode(std::span<const int32_t> ids, bool skip_special_tokens = false) const;

  int32_t vocab_size() const { return static_cast<int32_t>(tokens_.size()); }
  // A token as tokenizer.json spells it (byte-level form, or an added token's content).
  std::optional<int32_t> token_to_id(std::string_view token) const;
  const std::string& id_to_token(int32_t id) const;
  const std::vector<AddedToken>& added_tokens() const { return added_; }
  bool is_special(int32_t id) const;
  size_t num_merges() const { return merges_.size(); }

 private:
  struct Merge {
    int32_t rank, new_id;
  };
  struct Segment {
    size_t start, end;
    int32_t added_id;  // -1: text
  };

  void build_added_index();
  void split_added(std::string_view s, bool normalized_pass, std::vector<Segment>* out) const;
  void encode_text(std::string_view s, std::vector<int32_t>* out) const;
  void bpe(std::string_view piece, std::vector<int32_t>* out) const;
  void merge_word(std::string_view piece, std::vector<int32_t>* out) const;

  // Model.
  std::vector<std::string> tokens_;   // id -> spelling in tokenizer.json ("" for a hole)
  std::vector<std::string> decoded_;  // id -> bytes (HF ByteLevel decoder's rule)
  std::unordered_map<std::string, int32_t> spelling_to_id_;
  std::unordered_map<std::string, int32_t> bytes_to_id_;  // vocab entries in the alphabet
  std::vector<std::pair<int32_t, int32_t>> merges_;       // by rank
  std::unordered_map<uint64_t, Merge> merge_map_;         // (left << 32 | right) -> merge
  int32_t byte_id_[256];
  bool ignore_merges_ = false;
  std::vector<bool> in_model_;  // by id: an entry of model.vocab (not only an added token)

  // Pipeline.
  std::vector<AddedToken> added_;
  std::vector<bool> special_;                          // by id
  std::vector<std::vector<int32_t>> added_by_byte_;    // first byte -> added_ indices
  std::optional<Normalizer> normalizer_;
  std::optional<PreTokenizer> pre_tokenizer_;
  std::vector<int32_t> template_prefix_, template_suffix_;

  // Saved back as loaded.
  nlohmann::json normalizer_json_, pre_tokenizer_json_, post_processor_json_, decoder_json_;

  // Pre-token -> ids, as HF keeps one (bounded).
  struct Cache {
    std::mutex mu;
    std::unordered_map<std::string, std::vector<int32_t>> map;
  };
  std::shared_ptr<Cache> cache_ = std::make_shared<Cache>();
};

// ---- training ------------------------------------------------------------------------------
struct BpeTrainOptions {
  int32_t vocab_size = 4096;  // 256 bytes + merges + special tokens
  int64_t min_frequency = 2;  // a pair seen fewer times is never merged
  std::vector<std::string> special_tokens;  // appended after the merges, in this order
  std::string bos_token;      // if set (and among special_tokens): TemplateProcessing BOS
  std::string split_regex;    // pre-tokenizer regex; empty -> kLlama3SplitRegex
};

// Trains a byte-level BPE on `texts`: ids 0..255 are the bytes in byte order, then one id
// per merge, then the special tokens. Deterministic: ties go to the smaller (left, right) id
// pair.
Tokenizer train_bpe(const std::vector<std::string>& texts, const BpeTrainOptions& opt);

}  // namespace r1::data
