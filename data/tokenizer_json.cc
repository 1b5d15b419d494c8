// tokenizer.json: loading (HF layout, merges as "a b" strings or as pairs) and saving.
#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "data/tokenizer.h"
#include "engine/error.h"

namespace r1::data {

using nlohmann::json;

namespace {

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  R1_INPUT_CHECK(f.good(), "{}: cannot open tokenizer file", path);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

bool is_type(const json& j, const char* type) {
  return j.is_object() && j.contains("type") && j["type"] == type;
}

// Collects the BOS/EOS ids around $A from a TemplateProcessing (possibly inside a Sequence).
void parse_post_processor(const json& j, const std::string& where, std::vector<int32_t>* prefix,
                          std::vector<int32_t>* suffix) {
  if (j.is_null() || is_type(j, "ByteLevel")) return;  // ByteLevel only trims offsets
  if (is_type(j, "Sequence")) {
    for (const auto& p : j.at("processors")) parse_post_processor(p, where, prefix, suffix);
    return;
  }
  if (!is_type(j, "TemplateProcessing"))
    throw InputError(fmt::format("{}: unsupported post_processor type {}", where,
                                 j.value("type", json()).dump()));
  const json& specials = j.at("special_tokens");
  bool seen_sequence = false;
  for (const auto& item : j.at("single")) {
    if (item.contains("Sequence")) {
      seen_sequence = true;
      continue;
    }
    const std::string name = item.at("SpecialToken").at("id");
    R1_INPUT_CHECK(specials.contains(name),
                   "{}: TemplateProcessing names special token \"{}\" it does not define",
                   where, name);
    auto& dst = seen_sequence ? *suffix : *prefix;
    for (const auto& id : specials[name].at("ids")) dst.push_back(id.get<int32_t>());
  }
}

void check_decoder(const json& j, const std::string& where) {
  if (j.is_null() || is_type(j, "ByteLevel")) return;
  if (is_type(j, "Sequence")) {
    for (const auto& d : j.at("decoders")) check_decoder(d, where);
    return;
  }
  throw InputError(fmt::format("{}: unsupported decoder type {} (byte-level BPE only)", where,
                               j.value("type", json()).dump()));
}

// HF ByteLevel decoder: a token spelt in the byte-level alphabet gives those bytes; any other
// token (an added token such as "<｜begin▁of▁sentence｜>") gives its own UTF-8 bytes.
std::string decoded_bytes(const std::string& spelling) {
  std::string bytes;
  return byte_level_to_bytes(spelling, &bytes) ? bytes : spelling;
}

std::pair<std::string, std::string> merge_parts(const json& m, const std::string& where) {
  if (m.is_string()) {
    const std::string s = m;
    const size_t sp = s.find(' ');
    R1_INPUT_CHECK(sp != std::string::npos && s.find(' ', sp + 1) == std::string::npos,
                   "{}: merge \"{}\" is not two tokens separated by one space", where, s);
    return {s.substr(0, sp), s.substr(sp + 1)};
  }
  R1_INPUT_CHECK(m.is_array() && m.size() == 2 && m[0].is_string() && m[1].is_string(),
                 "{}: merge {} is neither \"a b\" nor [a, b]", where, m.dump());
  return {m[0], m[1]};
}

}  // namespace

Tokenizer Tokenizer::from_file(const std::string& path) {
  const std::string text = read_file(path);
  json j;
  try {
    j = json::parse(text);
  } catch (const json::parse_error& e) {
    throw InputError(fmt::format("{}: bad JSON: {}", path, e.what()));
  }
  return from_json(j, path);
}

Tokenizer Tokenizer::from_json(const json& j, const std::string& where) {
  try {
    R1_INPUT_CHECK(j.is_object() && j.contains("model"), "{}: no \"model\" object", where);
    const json& model = j["model"];
    R1_INPUT_CHECK(model.value("type", std::string("BPE")) == "BPE",
                   "{}: unsupported model type {} (BPE only)", where, model["type"].dump());
    for (const char* k : {"continuing_subword_prefix", "end_of_word_suffix"})
      R1_INPUT_CHECK(!model.contains(k) || model[k].is_null() || model[k] == "",
                     "{}: BPE {} is not supported", where, k);
    R1_INPUT_CHECK(!model.value("byte_fallback", false), "{}: byte_fallback BPE is not supported",
                   where);
    Tokenizer t;
    t.ignore_merges_ = model.value("ignore_merges", false);
    const json& vocab = model.at("vocab");
    R1_INPUT_CHECK(vocab.is_object(), "{}: model.vocab is not an object", where);
    int32_t n = 0;
    for (const auto& [tok, id] : vocab.items()) n = std::max(n, id.get<int32_t>() + 1);
    const json& added = j.contains("added_tokens") ? j["added_tokens"] : json::array();
    for (const auto& a : added) n = std::max(n, a.at("id").get<int32_t>() + 1);
    t.tokens_.assign(n, "");
    t.decoded_.assign(n, "");
    t.special_.assign(n, false);
    t.in_model_.assign(n, false);
    std::fill(std::begin(t.byte_id_), std::end(t.byte_id_), -1);
    for (const auto& [tok, idj] : vocab.items()) {
      const int32_t id = idj.get<int32_t>();
      R1_INPUT_CHECK(id >= 0, "{}: negative id for token \"{}\"", where, tok);
      t.tokens_[id] = tok;
      t.in_model_[id] = true;
      t.spelling_to_id_[tok] = id;
      std::string bytes;
      if (byte_level_to_bytes(tok, &bytes)) {
        t.bytes_to_id_[bytes] = id;
        if (bytes.size() == 1) t.byte_id_[static_cast<unsigned char>(bytes[0])] = id;
      }
      t.decoded_[id] = decoded_bytes(tok);
    }
    for (const auto& a : added) {
      AddedToken at;
      at.id = a.at("id");
      at.content = a.at("content");
      at.special = a.value("special", false);
      at.lstrip = a.value("lstrip", false);
      at.rstrip = a.value("rstrip", false);
      at.single_word = a.value("single_word", false);
      at.normalized = a.value("normalized", !at.special);
      R1_INPUT_CHECK(at.id >= 0 && !at.content.empty(), "{}: bad added token {}", where, a.dump());
      t.tokens_[at.id] = at.content;
      t.spelling_to_id_[at.content] = at.id;
      t.decoded_[at.id] = decoded_bytes(at.content);
      t.special_[at.id] = at.special;
      t.added_.push_back(at);
    }
    t.build_added_index();
    const json& merges = model.at("merges");
    t.merges_.reserve(merges.size());
    for (const auto& m : merges) {
      const auto [a, b] = merge_parts(m, where);
      const auto ia = t.spelling_to_id_.find(a), ib = t.spelling_to_id_.find(b),
                 ic = t.spelling_to_id_.find(a + b);
      R1_INPUT_CHECK(ia != t.spelling_to_id_.end() && ib != t.spelling_to_id_.end() &&
                         ic != t.spelling_to_id_.end(),
                     "{}: merge \"{} {}\" uses a token not in the vocabulary", where, a, b);
      const uint64_t key = (static_cast<uint64_t>(ia->second) << 32) | static_cast<uint32_t>(ib->second);
      t.merge_map_[key] = {static_cast<int32_t>(t.merges_.size()), ic->second};
      t.merges_.emplace_back(ia->second, ib->second);
    }
    t.normalizer_json_ = j.value("normalizer", json());
    t.pre_tokenizer_json_ = j.value("pre_tokenizer", json());
    t.post_processor_json_ = j.value("post_processor", json());
    t.decoder_json_ = j.value("decoder", json());
    if (!t.normalizer_json_.is_null()) t.normalizer_ = normalizer_from_json(t.normalizer_json_, where);
    if (!t.pre_tokenizer_json_.is_null())
      t.pre_tokenizer_ = pre_tokenizer_from_json(t.pre_tokenizer_json_, where);
    R1_INPUT_CHECK(t.pre_tokenizer_ && has_byte_level(*t.pre_tokenizer_),
                   "{}: no ByteLevel pre-tokenizer (only byte-level BPE is supported)", where);
    parse_post_processor(t.post_processor_json_, where, &t.template_prefix_, &t.template_suffix_);
    check_decoder(t.decoder_json_, where);
    return t;
  } catch (const json::exception& e) {  // a missing field or a wrong type
    throw InputError(fmt::format("{}: malformed tokenizer.json: {}", where, e.what()));
  }
}

std::string Tokenizer::to_json_string() const {
  // Written by hand rather than through an ordered json object: the vocabulary must come out
  // in id order, and ordered_json inserts in quadratic time.
  json added = json::array();
  for (const auto& a : added_)
    added.push_back({{"id", a.id}, {"content", a.content}, {"single_word", a.single_word},
                     {"lstrip", a.lstrip}, {"rstrip", a.rstrip}, {"normalized", a.normalized},
                     {"special", a.special}});
  std::string s = "{\n  \"version\": \"1.0\",\n  \"truncation\": null,\n  \"padding\": null,\n";
  s += "  \"added_tokens\": " + added.dump() + ",\n";
  s += "  \"normalizer\": " + normalizer_json_.dump() + ",\n";
  s += "  \"pre_tokenizer\": " + pre_tokenizer_json_.dump() + ",\n";
  s += "  \"post_processor\": " + post_processor_json_.dump() + ",\n";
  s += "  \"decoder\": " + decoder_json_.dump() + ",\n";
  s += "  \"model\": {\"type\": \"BPE\", \"dropout\": null, \"unk_token\": null, "
       "\"continuing_subword_prefix\": null, \"end_of_word_suffix\": null, \"fuse_unk\": false, "
       "\"byte_fallback\": false, \"ignore_merges\": ";
  s += ignore_merges_ ? "true" : "false";
  s += ",\n    \"vocab\": {";
  bool first = true;
  for (size_t id = 0; id < tokens_.size(); ++id) {
    if (!in_model_[id]) continue;  // holes, and added tokens beyond the model's vocabulary
    s += first ? "\n      " : ",\n      ";
    s += json(tokens_[id]).dump() + ": " + std::to_string(id);
    first = false;
  }
  s += "\n    },\n    \"merges\": [";
  for (size_t r = 0; r < merges_.size(); ++r) {
    s += r == 0 ? "\n      " : ",\n      ";
    s += json::array({tokens_[merges_[r].first], tokens_[merges_[r].second]}).dump();
  }
  s += "\n    ]\n  }\n}\n";
  return s;
}

void Tokenizer::save(const std::string& path) const {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    R1_INPUT_CHECK(f.good(), "{}: cannot write tokenizer file", tmp);
    f << to_json_string();
    R1_INPUT_CHECK(f.good(), "{}: write failed", tmp);
  }
  std::filesystem::rename(tmp, path);
}

}  // namespace r1::data
