// Datasets: JSONL records (prompts, SFT samples, preference pairs), a deterministic shuffled
// stream with a resumable cursor, and packing of tokenized examples into fixed-length rows
// with loss masks. A malformed line is an r1::InputError "file:line: problem".
#pragma once
#include <nlohmann/json.hpp>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "data/tasks/task.h"

namespace r1::data {

// {"prompt", "answer", "task", "meta"}: a verifiable question for RL.
struct PromptRecord {
  std::string prompt, answer, task;
  nlohmann::json meta = nlohmann::json::object();
};
// {"prompt", "completion"}: supervised fine-tuning.
struct SftSample {
  std::string prompt, completion;
};
// {"prompt", "chosen", "rejected"}: a preference pair (reward model).
struct PreferencePair {
  std::string prompt, chosen, rejected;
};

std::vector<PromptRecord> read_prompts(const std::string& path);
std::vector<SftSample> read_sft(const std::string& path);
std::vector<PreferencePair> read_preferences(const std::string& path);
void write_prompts(const std::string& path, const std::vector<PromptRecord>& records);
void write_sft(const std::string& path, const std::vector<SftSample>& samples);
void write_preferences(const std::string& path, const std::vector<PreferencePair>& pairs);
// Any JSONL: one object per non-empty line; `fn(object, line_number)`.
void read_jsonl(const std::string& path,
                const std::function<void(const nlohmann::json&, size_t)>& fn);
// Writes objects one per line to path, atomically (engine/atomic_file.h); each sequence of a
// string's bytes that is not UTF-8 is written as U+FFFD.
void write_jsonl(const std::string& path, const std::vector<nlohmann::json>& rows);

// A task instance as a prompt record (meta keeps what the verifier needs) and back.
PromptRecord to_prompt_record(const TaskInstance& inst, const std::string& prompt_text);
bool verify_record(const PromptRecord& rec, std::string_view answer);

// Where a stream stands: epoch and position in that epoch's permutation.
struct DataCursor {
  uint64_t seed = 0, epoch = 0, index = 0;
  nlohmann::json to_json() const;
  static DataCursor from_json(const nlohmann::json& j);  // InputError on a bad object
  bool operator==(const DataCursor&) const = default;
};

// The permutation of 0..n-1 for (seed, epoch): Fisher-Yates on a splitmix64 stream.
std::vector<size_t> shuffled_order(size_t n, uint64_t seed, uint64_t epoch);

// Endless epochs over n items, each in its own shuffled order; resumes from a cursor.
class ShuffledStream {
 public:
  ShuffledStream(size_t n, DataCursor start);
  size_t next();  // an item index
  const DataCursor& cursor() const { return cur_; }

 private:
  size_t n_;
  DataCursor cur_;
  std::vector<size_t> order_;
};

// Rows of seq_len tokens. For position i: tokens[i]; loss_mask[i] = 1 when tokens[i] is a
// target the loss counts (predicted from the earlier tokens of its own document; the first
// token of a document never is); segment[i] = 1.. per document in the row, 0 for padding;
// position[i] = position inside its document.
struct PackedBatch {
  int64_t rows = 0, seq_len = 0;
  std::vector<int32_t> tokens, position, segment;
  std::vector<uint8_t> loss_mask;
};

// First-fit in order: an example that does not fit the rest of the current row starts a new
// row; one longer than seq_len is truncated (counted in `truncated`).
class Packer {
 public:
  Packer(int64_t seq_len, int32_t pad_id);
  // tokens and mask (1 = train on this token) of one example, same length.
  void add(const std::vector<int32_t>& tokens, const std::vector<uint8_t>& mask);
  PackedBatch finish();  // pads the last row; the packer is empty afterwards
  int64_t truncated() const { return truncated_; }

 private:
  void new_row();
  int64_t seq_len_;
  int32_t pad_id_;
  PackedBatch batch_;
  int64_t used_ = 0;  // tokens used in the current row
  int32_t next_segment_ = 1;
  int64_t truncated_ = 0;
};

}  // namespace r1::data
