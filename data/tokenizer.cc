// Encoding and decoding. Loading and saving are in tokenizer_json.cc, training in
// bpe_train.cc.
#include "data/tokenizer.h"

#include <algorithm>
#include <queue>

#include "engine/error.h"

namespace r1::data {

namespace {

bool is_space_byte(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}
// A word character for single_word tokens: ASCII alphanumerics, '_' and any non-ASCII byte
// (letters of other scripts).
bool is_word_byte(char c) {
  const auto u = static_cast<unsigned char>(c);
  return u >= 0x80 || (u >= '0' && u <= '9') || (u >= 'A' && u <= 'Z') ||
         (u >= 'a' && u <= 'z') || u == '_';
}
constexpr size_t kCacheCapacity = 1 << 16;
constexpr size_t kCacheMaxWord = 256;  // longer pre-tokens are not worth keeping

}  // namespace

std::optional<int32_t> Tokenizer::token_to_id(std::string_view token) const {
  const auto it = spelling_to_id_.find(std::string(token));
  if (it == spelling_to_id_.end()) return std::nullopt;
  return it->second;
}

const std::string& Tokenizer::id_to_token(int32_t id) const {
  R1_CHECK(id >= 0 && id < vocab_size(), "token id {} out of range [0, {})", id, vocab_size());
  return tokens_[id];
}

bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < static_cast<int32_t>(special_.size()) && special_[id];
}

void Tokenizer::build_added_index() {
  added_by_byte_.assign(256, {});
  for (size_t i = 0; i < added_.size(); ++i)
    if (!added_[i].content.empty())
      added_by_byte_[static_cast<unsigned char>(added_[i].content[0])].push_back(
          static_cast<int32_t>(i));
  for (auto& v : added_by_byte_)
    std::stable_sort(v.begin(), v.end(), [&](int32_t a, int32_t b) {
      return added_[a].content.size() > added_[b].content.size();
    });
}

// Splits s on the added tokens of one pass (raw: normalized == false, then normalized text:
// normalized == true), leftmost-longest as HF's Aho-Corasick matcher.
void Tokenizer::split_added(std::string_view s, bool normalized_pass,
                            std::vector<Segment>* out) const {
  size_t text_start = 0, i = 0;
  while (i < s.size()) {
    const AddedToken* hit = nullptr;
    for (int32_t k : added_by_byte_[static_cast<unsigned char>(s[i])]) {
      const AddedToken& t = added_[k];
      if (t.normalized != normalized_pass || s.compare(i, t.content.size(), t.content) != 0)
        continue;
      if (t.single_word) {
        const size_t e = i + t.content.size();
        if ((i > 0 && is_word_byte(s[i - 1])) || (e < s.size() && is_word_byte(s[e]))) continue;
      }
      hit = &t;
      break;
    }
    if (hit == nullptr) {
      ++i;
      continue;
    }
    size_t start = i, end = i + hit->content.size();
    if (hit->lstrip)
      while (start > text_start && is_space_byte(s[start - 1])) --start;
    if (hit->rstrip)
      while (end < s.size() && is_space_byte(s[end])) ++end;
    if (start > text_start) out->push_back({text_start, start, -1});
    out->push_back({start, end, hit->id});
    text_start = i = end;
  }
  if (text_start < s.size()) out->push_back({text_start, s.size(), -1});
}

std::vector<int32_t> Tokenizer::encode(std::string_view text, bool add_special_tokens) const {
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3 + 4);
  if (add_special_tokens) ids.insert(ids.end(), template_prefix_.begin(), template_prefix_.end());
  std::vector<Segment> segs;
  split_added(text, false, &segs);
  for (const Segment& seg : segs) {
    if (seg.added_id >= 0) {
      ids.push_back(seg.added_id);
      continue;
    }
    const std::string_view part = text.substr(seg.start, seg.end - seg.start);
    if (!normalizer_) {
      encode_text(part, &ids);
      continue;
    }
    const std::string norm = normalize(*normalizer_, part);
    std::vector<Segment> inner;
    split_added(norm, true, &inner);
    for (const Segment& s2 : inner) {
      if (s2.added_id >= 0) ids.push_back(s2.added_id);
      else encode_text(std::string_view(norm).substr(s2.start, s2.end - s2.start), &ids);
    }
  }
  if (add_special_tokens) ids.insert(ids.end(), template_suffix_.begin(), template_suffix_.end());
  return ids;
}

// Pre-tokenizes normalized text and runs BPE on each piece.
void Tokenizer::encode_text(std::string_view s, std::vector<int32_t>* out) const {
  if (s.empty()) return;
  std::vector<std::string_view> pieces{s};
  PieceArena arena;
  if (pre_tokenizer_) pre_tokenize(*pre_tokenizer_, &pieces, &arena);
  for (std::string_view p : pieces) bpe(p, out);
}

void Tokenizer::bpe(std::string_view piece, std::vector<int32_t>* out) const {
  if (piece.size() == 1) {
    const int32_t id = byte_id_[static_cast<unsigned char>(piece[0])];
    if (id >= 0) out->push_back(id);
    return;
  }
  if (ignore_merges_) {
    const auto it = bytes_to_id_.find(std::string(piece));
    if (it != bytes_to_id_.end()) {
      out->push_back(it->second);
      return;
    }
  }
  const bool cacheable = piece.size() <= kCacheMaxWord;
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_->mu);
    const auto it = cache_->map.find(std::string(piece));
    if (it != cache_->map.end()) {
      out->insert(out->end(), it->second.begin(), it->second.end());
      return;
    }
  }
  const size_t before = out->size();
  merge_word(piece, out);
  if (cacheable) {
    std::lock_guard<std::mutex> lock(cache_->mu);
    if (cache_->map.size() < kCacheCapacity)
      cache_->map.emplace(std::string(piece),
                          std::vector<int32_t>(out->begin() + before, out->end()));
  }
}

// HF's Word::merge_all: a min-heap of candidate merges keyed by (rank, position); a popped
// candidate whose symbols changed since it was pushed is stale and skipped.
void Tokenizer::merge_word(std::string_view piece, std::vector<int32_t>* out) const {
  struct Symbol {
    int32_t id, prev, next;
    bool alive;
  };
  struct Candidate {
    int32_t rank, pos, new_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::vector<Symbol> sym;
  sym.reserve(piece.size());
  for (unsigned char c : piece) {
    const int32_t id = byte_id_[c];
    if (id < 0) continue;  // no unk token in byte-level BPE: HF drops the byte too
    const int32_t n = static_cast<int32_t>(sym.size());
    sym.push_back({id, n - 1, n + 1, true});
  }
  if (sym.empty()) return;
  sym.back().next = -1;
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> heap;
  const auto push_pair = [&](int32_t pos) {
    const int32_t nx = sym[pos].next;
    if (nx < 0) return;
    const uint64_t key = (static_cast<uint64_t>(sym[pos].id) << 32) | static_cast<uint32_t>(sym[nx].id);
    const auto it = merge_map_.find(key);
    if (it != merge_map_.end()) heap.push({it->second.rank, pos, it->second.new_id});
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(sym.size()); ++i) push_pair(i);
  while (!heap.empty()) {
    const Candidate c = heap.top();
    heap.pop();
    Symbol& left = sym[c.pos];
    if (!left.alive || left.next < 0) continue;
    Symbol& right = sym[left.next];
    const uint64_t key = (static_cast<uint64_t>(left.id) << 32) | static_cast<uint32_t>(right.id);
    const auto it = merge_map_.find(key);
    if (it == merge_map_.end() || it->second.new_id != c.new_id) continue;  // stale
    left.id = c.new_id;
    right.alive = false;
    left.next = right.next;
    if (left.next >= 0) sym[left.next].prev = c.pos;
    if (left.prev >= 0) push_pair(left.prev);
    push_pair(c.pos);
  }
  for (int32_t i = 0; i >= 0; i = sym[i].next) out->push_back(sym[i].id);
}

std::string Tokenizer::decode(std::span<const int32_t> ids, bool skip_special_tokens) const {
  std::string out;
  for (int32_t id : ids) {
    if (id < 0 || id >= vocab_size())
      throw InputError(fmt::format("decode: token id {} out of range [0, {})", id, vocab_size()));
    if (skip_special_tokens && is_special(id)) continue;
    out += decoded_[id];
  }
  return out;
}

}  // namespace r1::data
