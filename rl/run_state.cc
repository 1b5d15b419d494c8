// Training checkpoints with resume (rl/run_state.h).
#include "rl/run_state.h"

#include <filesystem>
#include <fstream>

#include "engine/atomic_file.h"
#include "engine/error.h"
#include "engine/safetensors.h"

namespace r1::rl {
namespace fs = std::filesystem;

void save_run_checkpoint(const std::string& dir, const ModelConfig& cfg, const ParamMap& params,
                         const AdamW* opt, const nlohmann::json& state,
                         const std::string& tokenizer_json, const ParamMap& extra) {
  const std::string tmp = dir + ".tmp", old = dir + ".old";
  fs::remove_all(tmp);
  save_checkpoint(tmp, cfg, params);  // config.json + model.safetensors, fsync'd
  if (!tokenizer_json.empty()) write_file_atomic(tmp + "/tokenizer.json", tokenizer_json);
  if (opt != nullptr) {
    std::vector<std::pair<std::string, Tensor>> t;
    AdamW& o = const_cast<AdamW&>(*opt);
    for (size_t i = 0; i < o.params().size(); ++i) {
      const Tensor& p = o.params()[i];
      for (Tensor* m : {&o.exp_avg()[i], &o.exp_avg_sq()[i]})  // created lazily by step()
        if (!m->defined()) *m = Tensor::zeros(p.shape(), p.dtype(), p.device());
      t.emplace_back(fmt::format("exp_avg.{}", i), o.exp_avg()[i]);
      t.emplace_back(fmt::format("exp_avg_sq.{}", i), o.exp_avg_sq()[i]);
    }
    save_safetensors(tmp + "/trainer_state.safetensors", t);
  }
  if (!extra.empty()) {
    std::vector<std::pair<std::string, Tensor>> t(extra.begin(), extra.end());
    save_safetensors(tmp + "/trainer_extra.safetensors", t);
  }
  nlohmann::json st = state;
  st["optimizer_step"] = opt != nullptr ? opt->step_count() : 0;
  write_file_atomic(tmp + "/trainer_state.json", st.dump(1) + "\n");
  // Swap: dir -> dir.old, tmp -> dir, drop dir.old. A kill in between leaves dir.old, which
  // resolve_run_checkpoint() finds.
  fs::remove_all(old);
  if (fs::exists(dir)) fs::rename(dir, old);
  fs::rename(tmp, dir);
  fs::remove_all(old);
}

std::string resolve_run_checkpoint(const std::string& dir) {
  if (fs::exists(dir + "/trainer_state.json")) return dir;
  if (fs::exists(dir + ".old/trainer_state.json")) return dir + ".old";
  return "";
}

bool has_run_checkpoint(const std::string& dir) { return !resolve_run_checkpoint(dir).empty(); }

nlohmann::json load_run_checkpoint(const std::string& dir_in, const ModelConfig& cfg,
                                   ParamMap& params, AdamW* opt) {
  const std::string dir = resolve_run_checkpoint(dir_in);
  R1_INPUT_CHECK(!dir.empty(), "{}: no checkpoint (trainer_state.json missing)", dir_in);
  const ParamMap loaded = load_checkpoint(dir, cfg, params.begin()->second.dtype(),
                                          params.begin()->second.device());
  for (auto& [name, t] : params) {
    const auto it = loaded.find(name);
    R1_INPUT_CHECK(it != loaded.end(), "{}: parameter {} missing", dir, name);
    t.detach().copy_(it->second);
  }
  nlohmann::json state;
  {
    const std::string path = dir + "/trainer_state.json";
    std::ifstream f(path);
    try {
      state = nlohmann::json::parse(f);
    } catch (const nlohmann::json::exception& e) {
      throw InputError(fmt::format("{}: not valid JSON ({})", path, e.what()));
    }
    R1_INPUT_CHECK(state.is_object(), "{}: expected a JSON object", path);
  }
  if (opt != nullptr && fs::exists(dir + "/trainer_state.safetensors")) {
    const SafetensorsFile f = SafetensorsFile::open(dir + "/trainer_state.safetensors");
    for (size_t i = 0; i < opt->params().size(); ++i) {
      Tensor m = f.get(fmt::format("exp_avg.{}", i)), v = f.get(fmt::format("exp_avg_sq.{}", i));
      const Tensor& p = opt->params()[i];
      for (Tensor* t : {&opt->exp_avg()[i], &opt->exp_avg_sq()[i]})  // AdamW creates them lazily
        if (!t->defined()) *t = Tensor::zeros(p.shape(), p.dtype(), p.device());
      R1_INPUT_CHECK(m.shape() == opt->exp_avg()[i].shape() &&
                         v.shape() == opt->exp_avg_sq()[i].shape(),
                     "{}/trainer_state.safetensors: moment {} has the wrong shape", dir, i);
      opt->exp_avg()[i].copy_(m);
      opt->exp_avg_sq()[i].copy_(v);
    }
    R1_INPUT_CHECK(state.contains("optimizer_step") && state["optimizer_step"].is_number_integer(),
                   "{}/trainer_state.json: optimizer_step missing", dir);
    opt->set_step_count(state["optimizer_step"].get<int64_t>());
  }
  return state;
}

void truncate_metrics(const std::string& path, int64_t step) {
  std::ifstream f(path);
  if (!f.good()) return;
  std::string kept, line;
  while (std::getline(f, line)) {
    if (line.empty()) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception&) {
      break;  // a line cut by the kill: it and anything after it go
    }
    if (j.contains("step") && j["step"].is_number_integer() && j["step"].get<int64_t>() > step) break;
    kept += line + "\n";
  }
  write_file_atomic(path, kept);
}

void load_run_extra(const std::string& dir_in, ParamMap& extra) {
  const std::string dir = resolve_run_checkpoint(dir_in);
  R1_INPUT_CHECK(!dir.empty(), "{}: no checkpoint (trainer_state.json missing)", dir_in);
  const SafetensorsFile f = SafetensorsFile::open(dir + "/trainer_extra.safetensors");
  for (auto& [name, t] : extra) {
    const Tensor v = f.get(name);
    R1_INPUT_CHECK(v.shape() == t.shape(), "{}/trainer_extra.safetensors: {} has the wrong shape",
                   dir, name);
    t.detach().copy_(v);
  }
}

}  // namespace r1::rl
