// GRPO on a DeepSeek-V3 policy (rl/grpo.h).
#include "rl/grpo.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <map>

#include "data/templates.h"
#include "engine/autograd.h"
#include "engine/determinism.h"
#include "engine/nvtx.h"
#include "engine/ops.h"
#include "engine/ops_logprob.h"

namespace r1::rl {
namespace {

using nlohmann::json;

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

uint64_t mix(uint64_t a, uint64_t b) {
  uint64_t z = a + 0x9E3779B97F4A7C15ull * (b + 1);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

template <class T>
void read_key(const json& j, const char* key, T* v, const std::string& where) {
  if (!j.contains(key)) return;
  try {
    *v = j.at(key).get<T>();
  } catch (const json::exception&) {
    throw InputError(fmt::format("{}: field '{}' has the wrong type ({})", where, key, j.at(key).dump()));
  }
}

std::vector<double> to_f64(const Tensor& t) {
  const Tensor c = t.detach().to(DType::F64).to(Device::cpu()).contiguous();
  const double* d = static_cast<const double*>(c.data_ptr());
  return std::vector<double>(d, d + c.numel());
}

}  // namespace

GrpoConfig GrpoConfig::from_json(const json& j, const std::string& where) {
  R1_INPUT_CHECK(j.is_object(), "{}: expected a JSON object", where);
  static const std::set<std::string> known = {
      "max_steps", "questions_per_step", "num_generations", "max_completion_length",
      "temperature", "top_p", "top_k", "decode", "learning_rate", "weight_decay", "max_grad_norm",
      "adam_beta2", "warmup_steps", "beta", "epsilon", "epsilon_high", "num_iterations",
      "ref_model_sync_steps", "scale_rewards", "loss_type", "importance_sampling_level",
      "mask_truncated_completions", "drop_zero_variance_groups", "micro_batch_sequences",
      "logprob_check_steps",
      "save_steps", "seed", "reward_weights", "tasks", "min_difficulty", "max_difficulty",
      "chinese_share", "prompt_template", "comment"};
  for (const auto& [k, v] : j.items())
    R1_INPUT_CHECK(known.count(k), "{}: unknown field '{}'", where, k);
  GrpoConfig c;
  read_key(j, "max_steps", &c.max_steps, where);
  read_key(j, "questions_per_step", &c.questions_per_step, where);
  read_key(j, "num_generations", &c.num_generations, where);
  read_key(j, "max_completion_length", &c.max_completion_length, where);
  read_key(j, "temperature", &c.temperature, where);
  read_key(j, "top_p", &c.top_p, where);
  read_key(j, "top_k", &c.top_k, where);
  read_key(j, "decode", &c.decode, where);
  read_key(j, "learning_rate", &c.learning_rate, where);
  read_key(j, "weight_decay", &c.weight_decay, where);
  read_key(j, "max_grad_norm", &c.max_grad_norm, where);
  read_key(j, "adam_beta2", &c.adam_beta2, where);
  read_key(j, "warmup_steps", &c.warmup_steps, where);
  read_key(j, "beta", &c.beta, where);
  read_key(j, "epsilon", &c.epsilon, where);
  read_key(j, "epsilon_high", &c.epsilon_high, where);
  read_key(j, "num_iterations", &c.num_iterations, where);
  read_key(j, "ref_model_sync_steps", &c.ref_model_sync_steps, where);
  read_key(j, "scale_rewards", &c.scale_rewards, where);
  read_key(j, "loss_type", &c.loss_type, where);
  read_key(j, "importance_sampling_level", &c.importance_sampling_level, where);
  read_key(j, "mask_truncated_completions", &c.mask_truncated_completions, where);
  read_key(j, "drop_zero_variance_groups", &c.drop_zero_variance_groups, where);
  read_key(j, "micro_batch_sequences", &c.micro_batch_sequences, where);
  read_key(j, "logprob_check_steps", &c.logprob_check_steps, where);
  read_key(j, "save_steps", &c.save_steps, where);
  read_key(j, "seed", &c.seed, where);
  read_key(j, "tasks", &c.tasks, where);
  read_key(j, "min_difficulty", &c.min_difficulty, where);
  read_key(j, "max_difficulty", &c.max_difficulty, where);
  read_key(j, "chinese_share", &c.chinese_share, where);
  read_key(j, "prompt_template", &c.prompt_template, where);
  if (j.contains("reward_weights")) {
    try {
      c.rewards = RewardWeights::from_json(j.at("reward_weights"));
    } catch (const InputError& e) {
      throw InputError(fmt::format("{}: reward_weights: {}", where, e.what()));
    }
  }
  c.validate(where);
  return c;
}

json GrpoConfig::to_json() const {
  return {{"max_steps", max_steps}, {"questions_per_step", questions_per_step},
          {"num_generations", num_generations}, {"max_completion_length", max_completion_length},
          {"temperature", temperature}, {"top_p", top_p}, {"top_k", top_k},
          {"decode", decode}, {"learning_rate", learning_rate}, {"weight_decay", weight_decay},
          {"max_grad_norm", max_grad_norm}, {"adam_beta2", adam_beta2},
          {"warmup_steps", warmup_steps}, {"beta", beta}, {"epsilon", epsilon},
          {"epsilon_high", epsilon_high}, {"num_iterations", num_iterations},
          {"ref_model_sync_steps", ref_model_sync_steps}, {"scale_rewards", scale_rewards},
          {"loss_type", loss_type}, {"importance_sampling_level", importance_sampling_level},
          {"mask_truncated_completions", mask_truncated_completions},
          {"drop_zero_variance_groups", drop_zero_variance_groups},
          {"micro_batch_sequences", micro_batch_sequences},
          {"logprob_check_steps", logprob_check_steps}, {"save_steps", save_steps},
          {"seed", seed}, {"reward_weights", rewards.to_json()}, {"tasks", tasks},
          {"min_difficulty", min_difficulty}, {"max_difficulty", max_difficulty},
          {"chinese_share", chinese_share}, {"prompt_template", prompt_template}};
}

void GrpoConfig::validate(const std::string& where) const {
  auto positive = [&](int64_t v, const char* k) {
    R1_INPUT_CHECK(v > 0, "{}: {} must be > 0, got {}", where, k, v);
  };
  positive(max_steps, "max_steps");
  positive(questions_per_step, "questions_per_step");
  positive(num_generations, "num_generations");
  positive(max_completion_length, "max_completion_length");
  positive(num_iterations, "num_iterations");
  positive(micro_batch_sequences, "micro_batch_sequences");
  positive(logprob_check_steps, "logprob_check_steps");
  positive(save_steps, "save_steps");
  R1_INPUT_CHECK(temperature > 0 && std::isfinite(temperature), "{}: temperature must be > 0", where);
  R1_INPUT_CHECK(top_p > 0 && top_p <= 1, "{}: top_p must be in (0, 1]", where);
  R1_INPUT_CHECK(top_k >= 0, "{}: top_k must be >= 0", where);
  decode_mode_from_name(decode, where);
  R1_INPUT_CHECK(learning_rate > 0 && std::isfinite(learning_rate), "{}: learning_rate must be > 0", where);
  R1_INPUT_CHECK(beta >= 0 && std::isfinite(beta), "{}: beta must be >= 0", where);
  R1_INPUT_CHECK(epsilon >= 0 && epsilon <= 1, "{}: epsilon must be in [0, 1]", where);
  R1_INPUT_CHECK(ref_model_sync_steps >= 0 && warmup_steps >= 0, "{}: ref_model_sync_steps and warmup_steps must be >= 0", where);
  reward_scale_from_name(scale_rewards);
  grpo_loss_type_from_name(loss_type);
  importance_level_from_name(importance_sampling_level);
  R1_INPUT_CHECK(!tasks.empty(), "{}: tasks is empty", where);
  for (const std::string& t : tasks) data::find_task(t);
  R1_INPUT_CHECK(min_difficulty >= 1 && max_difficulty <= 5 && min_difficulty <= max_difficulty,
                 "{}: difficulty {}..{} not within 1..5", where, min_difficulty, max_difficulty);
  R1_INPUT_CHECK(chinese_share >= 0 && chinese_share <= 1, "{}: chinese_share must be in [0, 1]", where);
  R1_INPUT_CHECK(prompt_template == "r1_zero" || prompt_template == "r1_zero_short",
                 "{}: prompt_template '{}': r1_zero or r1_zero_short", where, prompt_template);
  rewards.validate();
}

std::string render_prompt(const std::string& prompt_template, const std::string& question) {
  return prompt_template == "r1_zero" ? data::r1_zero_prompt(question)
                                      : data::r1_zero_prompt_short(question);
}

QuestionStream::QuestionStream(const GrpoConfig& cfg, std::set<std::string> exclude)
    : cfg_(cfg), exclude_(std::move(exclude)) {}

data::PromptRecord QuestionStream::next() {
  for (;;) {
    const uint64_t i = index_++;
    data::TaskRng rng(mix(cfg_.seed, i));
    const std::string& task = cfg_.tasks[i % cfg_.tasks.size()];
    const int d = static_cast<int>(rng.uniform(cfg_.min_difficulty, cfg_.max_difficulty));
    const bool zh = static_cast<double>(rng.next() >> 11) * 0x1.0p-53 < cfg_.chinese_share;
    const data::TaskInstance inst =
        data::generate_task(task, rng.next(), d, zh ? data::Lang::Zh : data::Lang::En);
    if (exclude_.count(inst.prompt)) continue;
    return data::to_prompt_record(inst, inst.prompt);
  }
}

TokenLogprobs completion_logprobs(DeepseekV3& model, const std::vector<std::vector<int32_t>>& prompts,
                                  const std::vector<std::vector<int32_t>>& completions,
                                  double temperature, int32_t pad_id, bool share_prompts) {
  R1_NVTX_RANGE("completion_logprobs");
  R1_CHECK(prompts.size() == completions.size() && !prompts.empty(),
           "completion_logprobs: {} prompts for {} completions", prompts.size(), completions.size());
  const int64_t B = static_cast<int64_t>(prompts.size());
  for (int64_t b = 0; b < B; ++b)
    R1_CHECK(!prompts[b].empty(), "completion_logprobs: empty prompt {}", b);
  // Sequence b is prompt + completion without its last token; completion token k is
  // predicted by the row at position P - 1 + k.
  std::vector<int64_t> rows, targets;
  Tensor hidden;  // (rows, hidden)
  if (share_prompts) {
    std::vector<std::vector<int32_t>> rests(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b)
      if (!completions[b].empty()) rests[b].assign(completions[b].begin(), completions[b].end() - 1);
    const DeepseekV3::SharedPrefixBatch sb = DeepseekV3::share_prefixes(prompts, rests);
    for (int64_t b = 0; b < B; ++b) {
      const int64_t P = static_cast<int64_t>(prompts[b].size());
      for (size_t k = 0; k < completions[b].size(); ++k) {
        rows.push_back(sb.expand[b * sb.T + P - 1 + static_cast<int64_t>(k)]);
        targets.push_back(completions[b][k]);
      }
    }
    hidden = model.forward_shared(sb);
  } else {
    int64_t T = 1;
    for (int64_t b = 0; b < B; ++b)
      T = std::max<int64_t>(T, static_cast<int64_t>(prompts[b].size() + completions[b].size()) - 1);
    std::vector<int64_t> ids(static_cast<size_t>(B * T), pad_id);
    for (int64_t b = 0; b < B; ++b) {
      const auto& p = prompts[b];
      const auto& c = completions[b];
      const int64_t P = static_cast<int64_t>(p.size()), C = static_cast<int64_t>(c.size());
      for (int64_t t = 0; t < P + C - 1; ++t) ids[b * T + t] = t < P ? p[t] : c[t - P];
      for (int64_t k = 0; k < C; ++k) {
        rows.push_back(b * T + P - 1 + k);
        targets.push_back(c[k]);
      }
    }
    hidden = model.forward(Tensor::from_vector(ids, {B, T}), Tensor(), Tensor(), false, 0.0)
                 .hidden.view({B * T, model.config().hidden_size});
  }
  const int64_t N = static_cast<int64_t>(rows.size());
  const Device dev = hidden.device();
  const Tensor h = index_select(hidden, 0, Tensor::from_vector(rows, {N}).to(dev));
  return token_logprobs(h, model.lm_head(), Tensor::from_vector(targets, {N}).to(dev), temperature);
}

GrpoTrainer::GrpoTrainer(GrpoConfig cfg, DeepseekV3& policy, const data::Tokenizer& tok,
                         std::set<std::string> exclude)
    : cfg_(std::move(cfg)),
      policy_(policy),
      tok_(tok),
      questions_(cfg_, std::move(exclude)),
      trainable_(policy.trainable()),
      opt_(trainable_, {.lr = cfg_.learning_rate, .beta2 = cfg_.adam_beta2,
                        .weight_decay = cfg_.weight_decay}) {
  cfg_.validate("GrpoConfig");
  R1_INPUT_CHECK(!trainable_.empty(), "GrpoTrainer: the policy has no parameter requiring grad");
  const auto eos = tok.token_to_id(data::kEos), pad = tok.token_to_id(data::kPad);
  R1_INPUT_CHECK(eos && pad, "tokenizer: needs the special tokens {} and {}", data::kEos, data::kPad);
  eos_ = *eos;
  pad_ = *pad;
  if (cfg_.beta > 0)
    for (const auto& [name, t] : policy_.params()) ref_params_.emplace(name, t.detach().clone());
}

json GrpoTrainer::state(int64_t step) const {
  return {{"step", step}, {"stage", "grpo"}, {"question_index", questions_.position()},
          {"config", cfg_.to_json()}};
}

void GrpoTrainer::restore(const json& st) {
  R1_INPUT_CHECK(st.contains("question_index") && st["question_index"].is_number_unsigned(),
                 "trainer_state.json: question_index missing");
  questions_.seek(st["question_index"].get<uint64_t>());
}

json GrpoTrainer::step(int64_t step) {
  R1_NVTX_RANGE("grpo_step");
  const auto t_step = std::chrono::steady_clock::now();
  const int64_t Q = cfg_.questions_per_step, G = cfg_.num_generations;

  // ---- rollout ------------------------------------------------------------------------
  std::vector<data::PromptRecord> qs;
  std::vector<std::vector<int32_t>> prompts;
  for (int64_t i = 0; i < Q; ++i) {
    qs.push_back(questions_.next());
    prompts.push_back(tok_.encode(render_prompt(cfg_.prompt_template, qs.back().prompt), true));
  }
  GenerationConfig gc;
  gc.max_new_tokens = cfg_.max_completion_length;
  gc.sampling.temperature = static_cast<float>(cfg_.temperature);
  gc.sampling.top_p = static_cast<float>(cfg_.top_p);
  gc.sampling.top_k = cfg_.top_k;
  gc.decode = decode_mode_from_name(cfg_.decode, "grpo config");
  gc.stop_tokens = {eos_};
  gc.seed = mix(cfg_.seed, static_cast<uint64_t>(step));
  GenerationStats gs;
  const std::vector<Sample> samples = generate(policy_, prompts, G, gc, 0, &gs);
  const double rollout_s = seconds_since(t_step);

  // ---- rewards and advantages ---------------------------------------------------------
  const int64_t S = Q * G;
  std::vector<double> total(S);
  double acc = 0, fmt_r = 0, lang = 0, len = 0, truncated = 0, acc_reward = 0;
  std::vector<std::vector<int32_t>> completions(S), full_prompts(S);
  std::map<std::string, std::pair<double, double>> by_task;  // task -> (correct, samples)
  for (int64_t k = 0; k < S; ++k) {
    const Sample& s = samples[k];
    completions[k] = s.tokens;
    full_prompts[k] = prompts[s.prompt];
    std::vector<int32_t> text_ids = s.tokens;
    if (!text_ids.empty() && text_ids.back() == eos_) text_ids.pop_back();
    const std::string text = tok_.decode(text_ids);
    const RewardBreakdown r = reward_fn_ ? reward_fn_(qs[s.prompt], text)
                                         : score_completion(qs[s.prompt], text, cfg_.rewards,
                                                            CompletionStyle::R1Zero);
    total[k] = r.total;
    acc += r.accuracy;
    auto& bt = by_task[qs[s.prompt].task];
    bt.first += r.accuracy;
    bt.second += 1;
    acc_reward += r.accuracy * cfg_.rewards.accuracy;
    fmt_r += r.format;
    lang += r.language;
    len += static_cast<double>(s.tokens.size());
    truncated += s.truncated ? 1 : 0;
  }
  const std::vector<double> adv = group_advantages(total, G, reward_scale_from_name(cfg_.scale_rewards));
  std::vector<int64_t> kept;
  int64_t zero_var_groups = 0;
  for (int64_t q = 0; q < Q; ++q) {
    bool all_equal = true;
    for (int64_t g = 1; g < G; ++g) all_equal &= total[q * G + g] == total[q * G];
    zero_var_groups += all_equal;
    if (all_equal && cfg_.drop_zero_variance_groups) continue;
    for (int64_t g = 0; g < G; ++g) kept.push_back(q * G + g);
  }

  // ---- scoring: the old policy's (and the reference's) logprobs of the rollout batch ------
  const auto t_score = std::chrono::steady_clock::now();
  BatchInvariantScope invariant;
  std::vector<int64_t> offset(S + 1, 0);
  for (int64_t k = 0; k < S; ++k) offset[k + 1] = offset[k] + static_cast<int64_t>(completions[k].size());
  std::vector<double> old_lp, ref_lp;
  // On-policy (one inner update, no reference): the old logprobs are the update's own forward,
  // detached; the scoring pass runs only to check that they are the same bits.
  const bool on_policy = cfg_.num_iterations == 1 && cfg_.beta <= 0;
  const bool score_pass = !on_policy || step == 1 || step % cfg_.logprob_check_steps == 0;
  if (score_pass) {
    NoGrad ng;
    const TokenLogprobs tl = completion_logprobs(policy_, full_prompts, completions, cfg_.temperature, pad_);
    old_lp = to_f64(tl.logp);
    if (cfg_.beta > 0) {
      DeepseekV3 ref(policy_.config(), ref_params_, policy_.max_positions());
      ref_lp = to_f64(completion_logprobs(ref, full_prompts, completions, cfg_.temperature, pad_).logp);
    }
  }
  const double score_s = seconds_since(t_score);

  // ---- updates -------------------------------------------------------------------------
  const auto t_update = std::chrono::steady_clock::now();
  GrpoObjectiveOptions oo;
  oo.epsilon_low = cfg_.epsilon;
  oo.epsilon_high = cfg_.epsilon_high < 0 ? cfg_.epsilon : cfg_.epsilon_high;
  oo.beta = cfg_.beta;
  oo.loss_type = grpo_loss_type_from_name(cfg_.loss_type);
  oo.level = importance_level_from_name(cfg_.importance_sampling_level);
  oo.max_completion_length = cfg_.max_completion_length;
  const bool token_mean = oo.loss_type == GrpoLossType::Bnpo || oo.loss_type == GrpoLossType::Dapo;
  auto counts = [&](int64_t k) {
    return cfg_.mask_truncated_completions && samples[k].truncated ? int64_t{0}
                                                                   : static_cast<int64_t>(completions[k].size());
  };
  int64_t kept_tokens = 0;
  for (int64_t k : kept) kept_tokens += counts(k);
  const double lr = cfg_.warmup_steps > 0 && step <= cfg_.warmup_steps
                        ? cfg_.learning_rate * static_cast<double>(step) / static_cast<double>(cfg_.warmup_steps)
                        : cfg_.learning_rate;
  opt_.config().lr = lr;
  // sampler_gap and entropy: over the trained sequences' tokens, from the first update forward.
  double mismatch = 0, kl = 0, clip_low = 0, clip_high = 0, ratio = 0, grad_norm_v = 0, loss_sum = 0;
  double sampler_gap = 0, ent = 0;
  int64_t ent_tokens = 0;
  int64_t train_tokens = 0;
  const int64_t K = static_cast<int64_t>(kept.size());
  if (K > 0) {
    for (int64_t it = 0; it < cfg_.num_iterations; ++it) {
      for (int64_t m0 = 0; m0 < K; m0 += cfg_.micro_batch_sequences) {
        const int64_t m1 = std::min(K, m0 + cfg_.micro_batch_sequences), Sm = m1 - m0;
        std::vector<std::vector<int32_t>> mp, mc;
        std::vector<double> mold, mref, madv, mmask, msampler;
        std::vector<int64_t> mseq;
        int64_t mtok = 0;
        for (int64_t i = m0; i < m1; ++i) {
          const int64_t k = kept[i];
          mp.push_back(full_prompts[k]);
          mc.push_back(completions[k]);
          madv.push_back(adv[k]);
          const bool on = counts(k) > 0;
          for (int64_t t = offset[k]; t < offset[k + 1]; ++t) {
            if (score_pass) mold.push_back(old_lp[t]);
            msampler.push_back(samples[k].logprobs[t - offset[k]]);
            if (cfg_.beta > 0) mref.push_back(ref_lp[t]);
            mseq.push_back(i - m0);
            mmask.push_back(on ? 1.0 : 0.0);
            mtok += on;
          }
        }
        const TokenLogprobs tl = completion_logprobs(policy_, mp, mc, cfg_.temperature, pad_);
        const DType dt = tl.logp.dtype();
        const Device dev = tl.logp.device();
        const int64_t Tm = tl.logp.size(0);
        if (it == 0) {
          const std::vector<double> now = to_f64(tl.logp);
          if (score_pass)
            for (int64_t t = 0; t < Tm; ++t) mismatch = std::max(mismatch, std::abs(now[t] - mold[t]));
          else
            mold = now;
          for (int64_t t = 0; t < Tm; ++t) sampler_gap = std::max(sampler_gap, std::abs(msampler[t] - now[t]));
          for (double e : to_f64(tl.entropy)) ent += e;
          ent_tokens += Tm;
        }
        oo.num_sequences = Sm;
        const GrpoObjective obj = grpo_objective(
            tl.logp, Tensor::from_vector(mold, {Tm}).to(dt).to(dev),
            cfg_.beta > 0 ? Tensor::from_vector(mref, {Tm}).to(dt).to(dev) : Tensor(),
            Tensor::from_vector(madv, {Sm}).to(dt).to(dev), Tensor::from_vector(mseq, {Tm}).to(dev),
            Tensor::from_vector(mmask, {Tm}).to(dt).to(dev), oo);
        // The micro-batch's share of the whole batch's loss under the aggregation.
        const double w = token_mean ? static_cast<double>(mtok) / std::max<double>(1.0, static_cast<double>(kept_tokens))
                                    : static_cast<double>(Sm) / static_cast<double>(K);
        backward(scale(obj.loss, w));
        if (it == 0) {
          loss_sum += w * obj.loss.item();
          const double tw = static_cast<double>(mtok) / std::max<double>(1.0, static_cast<double>(kept_tokens));
          kl += tw * obj.kl_mean;
          clip_low += tw * obj.clip_low_frac;
          clip_high += tw * obj.clip_high_frac;
          ratio += tw * obj.ratio_mean;
        }
        train_tokens += Tm;
      }
      grad_norm_v = clip_grad_norm(trainable_, cfg_.max_grad_norm);
      opt_.step();
      opt_.zero_grad();
    }
  }
  const double update_s = seconds_since(t_update);
  if (cfg_.beta > 0 && cfg_.ref_model_sync_steps > 0 && step % cfg_.ref_model_sync_steps == 0)
    for (auto& [name, t] : ref_params_) t.copy_(policy_.params().at(name).detach());

  const double n = static_cast<double>(S);
  const double step_s = seconds_since(t_step);
  json per_task;
  for (const auto& [task, v] : by_task) per_task["accuracy_" + task] = v.first / v.second;
  json out = {{"step", step},
          {"reward", [&] { double s = 0; for (double r : total) s += r; return s / n; }()},
          {"reward_accuracy", acc_reward / n},
          {"reward_format", fmt_r * cfg_.rewards.format / n},
          {"reward_language", lang * cfg_.rewards.language / n},
          {"accuracy", acc / n},
          {"format_rate", fmt_r / n},
          {"language_consistency", lang / n},
          {"response_length", len / n},
          {"truncated_share", truncated / n},
          {"zero_variance_groups", static_cast<double>(zero_var_groups) / static_cast<double>(Q)},
          {"loss", loss_sum},
          {"kl", kl},
          {"clip_low_frac", clip_low},
          {"clip_high_frac", clip_high},
          {"ratio_mean", ratio},
          {"entropy", ent_tokens == 0 ? 0.0 : ent / static_cast<double>(ent_tokens)},
          {"grad_norm", grad_norm_v},
          {"lr", lr},
          {"logprob_mismatch_max", score_pass && K > 0 ? json(mismatch) : json(nullptr)},
          {"sampler_logprob_gap_max", sampler_gap},
          {"trained_sequences", K},
          {"rollout_tokens_per_s", static_cast<double>(gs.generated_tokens) / std::max(1e-9, rollout_s)},
          {"train_tokens_per_s", static_cast<double>(train_tokens) / std::max(1e-9, update_s)},
          {"rollout_s", rollout_s},
          {"score_s", score_s},
          {"update_s", update_s},
          {"step_time_s", step_s}};
  out.update(per_task);
  return out;
}

}  // namespace r1::rl
