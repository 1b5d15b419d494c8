// Batched KV-cached generation (rl/generate.h).
#include "rl/generate.h"

#include <algorithm>
#include <chrono>

#include "engine/autograd.h"
#include "engine/determinism.h"
#include "engine/nvtx.h"
#include "engine/ops.h"

namespace r1::rl {
namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Samples one token per row of hidden (n, D): logits through the LM head, then the sampler.
void sample_rows(CausalLM& model, const Tensor& hidden, const std::vector<int64_t>& streams,
                 const std::vector<int64_t>& positions, const GenerationConfig& cfg,
                 std::vector<int64_t>* tokens, std::vector<double>* logprobs) {
  const Tensor logits = linear(hidden, model.lm_head()).contiguous();
  const int64_t n = logits.size(0);
  const Device dev = logits.device();
  const Tensor seq = Tensor::from_vector(streams, {n}).to(dev);
  const Tensor pos = Tensor::from_vector(positions, {n}).to(dev);
  Tensor tok = Tensor::empty({n}, DType::I64, dev);
  Tensor lp = Tensor::empty({n}, stat_dtype(logits.dtype()), dev);
  kernels::sample_tokens()(dev, logits, seq, pos, cfg.seed, cfg.sampling, tok, lp);
  *tokens = tok.to_int_vector();
  const Tensor lp64 = lp.to(DType::F64).to(Device::cpu());
  const double* d = static_cast<const double*>(lp64.data_ptr());
  logprobs->assign(d, d + n);
}

}  // namespace

std::vector<Sample> generate(CausalLM& model, const std::vector<std::vector<int32_t>>& prompts,
                             int64_t samples_per_prompt, const GenerationConfig& cfg,
                             uint64_t stream_base, GenerationStats* stats) {
  R1_NVTX_RANGE("generate");
  R1_CHECK(samples_per_prompt >= 1 && cfg.max_new_tokens >= 1,
           "generate: samples_per_prompt {} and max_new_tokens {} must be >= 1",
           samples_per_prompt, cfg.max_new_tokens);
  NoGrad no_grad;
  BatchInvariantScope invariant;
  const auto t0 = std::chrono::steady_clock::now();
  const int64_t P = static_cast<int64_t>(prompts.size()), G = samples_per_prompt;
  const int64_t bs = PagedKvCache::kBlockSize;
  int64_t blocks = 0, prompt_tokens = 0;
  for (const auto& p : prompts) {
    R1_CHECK(!p.empty(), "generate: an empty prompt");
    const int64_t len = static_cast<int64_t>(p.size());
    R1_CHECK(len + cfg.max_new_tokens <= model.max_positions(),
             "generate: prompt of {} tokens + {} new exceeds the model's {} positions", len,
             cfg.max_new_tokens, model.max_positions());
    prompt_tokens += len;
    blocks += (len + bs - 1) / bs + G * ((len + cfg.max_new_tokens + bs - 1) / bs);
  }
  PagedKvCache cache = model.make_cache(std::max<int64_t>(blocks, 1));

  // Prefill: every prompt token in one call; the last row of each prompt gives its logits.
  std::vector<int64_t> ids, seq, pos, last_rows, parents;
  for (int64_t i = 0; i < P; ++i) {
    const int64_t s = cache.add_sequence();
    parents.push_back(s);
    const int64_t len = static_cast<int64_t>(prompts[i].size());
    cache.extend(s, len);
    for (int64_t t = 0; t < len; ++t) {
      ids.push_back(prompts[i][t]);
      seq.push_back(s);
      pos.push_back(t);
    }
    last_rows.push_back(static_cast<int64_t>(ids.size()) - 1);
  }
  const int64_t n_ids = static_cast<int64_t>(ids.size());
  Tensor hidden = model.forward_cached(Tensor::from_vector(ids, {n_ids}),
                                       Tensor::from_vector(seq, {n_ids}),
                                       Tensor::from_vector(pos, {n_ids}), cache);
  const Device dev = hidden.device();

  // Fork each prompt into its G samples; the first token of sample (i, g) comes from prompt
  // i's last row.
  std::vector<Sample> out(static_cast<size_t>(P * G));
  std::vector<int64_t> live, cache_seq(static_cast<size_t>(P * G)), rows, streams, positions;
  for (int64_t i = 0; i < P; ++i) {
    for (int64_t g = 0; g < G; ++g) {
      const int64_t k = i * G + g;
      out[k].prompt = i;
      out[k].stream = stream_base + static_cast<uint64_t>(k);
      cache_seq[k] = cache.fork(parents[i]);
      live.push_back(k);
      rows.push_back(last_rows[i]);
      streams.push_back(static_cast<int64_t>(out[k].stream));
      positions.push_back(static_cast<int64_t>(prompts[i].size()));
    }
    cache.release(parents[i]);
  }
  hidden = index_select(hidden, 0, Tensor::from_vector(rows, {static_cast<int64_t>(rows.size())}).to(dev));
  const double prefill_s = seconds_since(t0);
  int64_t steps = 0, generated = 0, peak = cache.blocks_in_use();
  std::vector<int64_t> tok;
  std::vector<double> lp;
  while (true) {
    sample_rows(model, hidden, streams, positions, cfg, &tok, &lp);
    std::vector<int64_t> next_live, next_ids, next_seq, next_pos, next_streams;
    for (size_t r = 0; r < live.size(); ++r) {
      Sample& s = out[live[r]];
      const int32_t t = static_cast<int32_t>(tok[r]);
      s.tokens.push_back(t);
      s.logprobs.push_back(static_cast<float>(lp[r]));
      ++generated;
      const bool stop =
          std::find(cfg.stop_tokens.begin(), cfg.stop_tokens.end(), t) != cfg.stop_tokens.end();
      if (stop) {
        cache.release(cache_seq[live[r]]);
        continue;
      }
      if (static_cast<int64_t>(s.tokens.size()) >= cfg.max_new_tokens) {
        s.truncated = true;
        cache.release(cache_seq[live[r]]);
        continue;
      }
      const int64_t cs = cache_seq[live[r]];
      const int64_t p = cache.extend(cs, 1);  // the sampled token's position
      next_live.push_back(live[r]);
      next_ids.push_back(t);
      next_seq.push_back(cs);
      next_pos.push_back(p);
      next_streams.push_back(static_cast<int64_t>(s.stream));
    }
    if (next_live.empty()) break;
    peak = std::max(peak, cache.blocks_in_use());
    const int64_t n = static_cast<int64_t>(next_live.size());
    hidden = model.forward_cached(Tensor::from_vector(next_ids, {n}),
                                  Tensor::from_vector(next_seq, {n}),
                                  Tensor::from_vector(next_pos, {n}), cache);
    live = std::move(next_live);
    streams = std::move(next_streams);
    positions.resize(static_cast<size_t>(n));
    for (int64_t r = 0; r < n; ++r) positions[r] = next_pos[r] + 1;
    ++steps;
  }
  if (stats) {
    stats->prompt_tokens = prompt_tokens;
    stats->generated_tokens = generated;
    stats->decode_steps = steps;
    stats->peak_blocks = peak;
    stats->prefill_s = prefill_s;
    stats->decode_s = seconds_since(t0) - prefill_s;
  }
  return out;
}

}  // namespace r1::rl
