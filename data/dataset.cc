#include "data/dataset.h"

#include <filesystem>
#include <fstream>

#include "engine/atomic_file.h"
#include "engine/error.h"

namespace r1::data {

using nlohmann::json;

void read_jsonl(const std::string& path, const std::function<void(const json&, size_t)>& fn) {
  std::ifstream f(path, std::ios::binary);
  R1_INPUT_CHECK(f.good(), "{}: cannot open", path);
  std::string line;
  for (size_t no = 1; std::getline(f, line); ++no) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const json::parse_error& e) {
      throw InputError(fmt::format("{}:{}: bad JSON: {}", path, no, e.what()));
    }
    R1_INPUT_CHECK(j.is_object(), "{}:{}: expected a JSON object", path, no);
    try {
      fn(j, no);
    } catch (const json::exception& e) {
      throw InputError(fmt::format("{}:{}: {}", path, no, e.what()));
    }
  }
}

void write_jsonl(const std::string& path, const std::vector<json>& rows) {
  // Model text is bytes: a sampled completion may end inside a UTF-8 sequence or hold
  // bytes that no UTF-8 has; each such sequence is written as U+FFFD (as HF's tokenizers decode
  // with errors="replace") rather than failing the write after the work is done.
  std::string text;
  for (const json& r : rows)
    text += r.dump(-1, ' ', false, json::error_handler_t::replace) + '\n';
  write_file_atomic(path, text);
}

namespace {

std::string field(const json& j, const char* key, const std::string& path, size_t no) {
  const auto it = j.find(key);
  R1_INPUT_CHECK(it != j.end() && it->is_string(), "{}:{}: field \"{}\" missing or not a string",
                 path, no, key);
  return it->get<std::string>();
}

}  // namespace

std::vector<PromptRecord> read_prompts(const std::string& path) {
  std::vector<PromptRecord> out;
  read_jsonl(path, [&](const json& j, size_t no) {
    PromptRecord r{field(j, "prompt", path, no), field(j, "answer", path, no),
                   field(j, "task", path, no), j.value("meta", json::object())};
    R1_INPUT_CHECK(r.meta.is_object(), "{}:{}: field \"meta\" is not an object", path, no);
    out.push_back(std::move(r));
  });
  return out;
}

std::vector<SftSample> read_sft(const std::string& path) {
  std::vector<SftSample> out;
  read_jsonl(path, [&](const json& j, size_t no) {
    out.push_back({field(j, "prompt", path, no), field(j, "completion", path, no)});
  });
  return out;
}

std::vector<PreferencePair> read_preferences(const std::string& path) {
  std::vector<PreferencePair> out;
  read_jsonl(path, [&](const json& j, size_t no) {
    out.push_back({field(j, "prompt", path, no), field(j, "chosen", path, no),
                   field(j, "rejected", path, no)});
  });
  return out;
}

void write_prompts(const std::string& path, const std::vector<PromptRecord>& records) {
  std::vector<json> rows;
  for (const auto& r : records)
    rows.push_back({{"prompt", r.prompt}, {"answer", r.answer}, {"task", r.task}, {"meta", r.meta}});
  write_jsonl(path, rows);
}

void write_sft(const std::string& path, const std::vector<SftSample>& samples) {
  std::vector<json> rows;
  for (const auto& s : samples) rows.push_back({{"prompt", s.prompt}, {"completion", s.completion}});
  write_jsonl(path, rows);
}

void write_preferences(const std::string& path, const std::vector<PreferencePair>& pairs) {
  std::vector<json> rows;
  for (const auto& p : pairs)
    rows.push_back({{"prompt", p.prompt}, {"chosen", p.chosen}, {"rejected", p.rejected}});
  write_jsonl(path, rows);
}

PromptRecord to_prompt_record(const TaskInstance& inst, const std::string& prompt_text) {
  return {prompt_text, inst.answer, inst.task,
          {{"difficulty", inst.difficulty}, {"lang", lang_name(inst.lang)}, {"task_meta", inst.meta}}};
}

bool verify_record(const PromptRecord& rec, std::string_view answer) {
  TaskInstance inst;
  inst.task = rec.task;
  inst.answer = rec.answer;
  inst.meta = rec.meta.value("task_meta", json::object());
  return verify_task(inst, answer);
}

json DataCursor::to_json() const { return {{"seed", seed}, {"epoch", epoch}, {"index", index}}; }

DataCursor DataCursor::from_json(const json& j) {
  try {
    return {j.at("seed").get<uint64_t>(), j.at("epoch").get<uint64_t>(), j.at("index").get<uint64_t>()};
  } catch (const json::exception& e) {
    throw InputError(fmt::format("bad data cursor {}: {}", j.dump(), e.what()));
  }
}

std::vector<size_t> shuffled_order(size_t n, uint64_t seed, uint64_t epoch) {
  std::vector<size_t> order(n);
  for (size_t i = 0; i < n; ++i) order[i] = i;
  TaskRng rng(seed * 0x100000001B3ull + epoch);
  rng.shuffle(order);
  return order;
}

ShuffledStream::ShuffledStream(size_t n, DataCursor start) : n_(n), cur_(start) {
  R1_INPUT_CHECK(n > 0, "cannot stream an empty dataset");
  R1_INPUT_CHECK(start.index <= n, "data cursor index {} is past the dataset size {}", start.index, n);
  order_ = shuffled_order(n_, cur_.seed, cur_.epoch);
}

size_t ShuffledStream::next() {
  if (cur_.index == n_) {
    ++cur_.epoch;
    cur_.index = 0;
    order_ = shuffled_order(n_, cur_.seed, cur_.epoch);
  }
  return order_[cur_.index++];
}

Packer::Packer(int64_t seq_len, int32_t pad_id) : seq_len_(seq_len), pad_id_(pad_id) {
  R1_INPUT_CHECK(seq_len > 1, "packing needs seq_len > 1, got {}", seq_len);
  batch_.seq_len = seq_len;
}

void Packer::new_row() {
  ++batch_.rows;
  const size_t n = static_cast<size_t>(batch_.rows * seq_len_);
  batch_.tokens.resize(n, pad_id_);
  batch_.position.resize(n, 0);
  batch_.segment.resize(n, 0);
  batch_.loss_mask.resize(n, 0);
  used_ = 0;
  next_segment_ = 1;
}

void Packer::add(const std::vector<int32_t>& tokens, const std::vector<uint8_t>& mask) {
  R1_CHECK(tokens.size() == mask.size(), "Packer::add: {} tokens but {} mask entries",
           tokens.size(), mask.size());
  if (tokens.empty()) return;
  int64_t len = static_cast<int64_t>(tokens.size());
  if (len > seq_len_) {
    len = seq_len_;
    ++truncated_;
  }
  if (batch_.rows == 0 || used_ + len > seq_len_) new_row();
  const int64_t base = (batch_.rows - 1) * seq_len_ + used_;
  for (int64_t i = 0; i < len; ++i) {
    batch_.tokens[base + i] = tokens[i];
    batch_.position[base + i] = static_cast<int32_t>(i);
    batch_.segment[base + i] = next_segment_;
    batch_.loss_mask[base + i] = i > 0 && mask[i] ? 1 : 0;
  }
  used_ += len;
  ++next_segment_;
}

PackedBatch Packer::finish() {
  PackedBatch out = std::move(batch_);
  batch_ = PackedBatch{};
  batch_.seq_len = seq_len_;
  used_ = 0;
  next_segment_ = 1;
  return out;
}

}  // namespace r1::data
