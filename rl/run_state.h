// Training checkpoints with resume (DESIGN.md "Model": checkpoints): a directory with the HF
// part (config.json, model.safetensors), the tokenizer, and the trainer's state
// (trainer_state.safetensors: AdamW moments; trainer_state.json: step, data cursor, anything
// the stage needs to continue exactly where it stopped). The directory is built beside its
// final place and swapped in by renames, so a kill at any moment leaves the previous
// checkpoint or the new one, never a mix.
#pragma once
#include <nlohmann/json.hpp>

#include <string>

#include "engine/optim.h"
#include "model/checkpoint.h"
#include "model/config.h"

namespace r1::rl {

// Writes dir (atomically, see above). opt may be null (an inference-only checkpoint);
// state is trainer_state.json's content; tokenizer_json the tokenizer file's text (may be
// empty).
// extra: more tensors the stage needs to resume (a reference model), saved to
// trainer_extra.safetensors when non-empty.
void save_run_checkpoint(const std::string& dir, const ModelConfig& cfg, const ParamMap& params,
                         const AdamW* opt, const nlohmann::json& state,
                         const std::string& tokenizer_json, const ParamMap& extra = {});
// The extra tensors into `extra` (by name, copied into the existing tensors); InputError if
// one is missing.
void load_run_extra(const std::string& dir, ParamMap& extra);

// True when dir holds a checkpoint (or only its rename predecessor dir.old survives a kill
// between the two renames: that one is used).
bool has_run_checkpoint(const std::string& dir);

// Loads the parameters into `params` (the tensors keep their identity: values are copied
// in), the optimizer moments and step into opt (if given and present), and returns
// trainer_state.json (empty object if absent). InputError naming the file otherwise.
nlohmann::json load_run_checkpoint(const std::string& dir, const ModelConfig& cfg,
                                   ParamMap& params, AdamW* opt);

// After a kill, metrics.jsonl may hold steps past the checkpoint the run resumes from: keeps
// only the records with "step" <= step (atomic rewrite), so the resumed file equals the
// uninterrupted run's. A missing file is fine.
void truncate_metrics(const std::string& path, int64_t step);

// The directory a checkpoint actually lives in (dir, or dir.old after an interrupted swap).
std::string resolve_run_checkpoint(const std::string& dir);

}  // namespace r1::rl
