// Batched KV-cached generation (rl/generate.h).
#include "rl/generate.h"

#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <optional>

#include "engine/autograd.h"
#include "engine/determinism.h"
#include "engine/log.h"
#include "engine/nvtx.h"
#include "engine/ops.h"
#include "engine/step_graph.h"

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

// Rows of the decode step in a graph-safe form (DecodeMode kStatic / kGraphs): every step
// reads its rows from one persistent device buffer, padded to a power of two; padding rows
// decode scratch sequences nobody reads, padding row r at position r % L of scratch sequence
// r / L (L = scratch_len(): one block or fewer), so no two rows write one cache slot (the
// CUDA cache write refuses that). A batch size's
// graph is captured after its first (eager) step and replayed from then on.
class StaticDecode {
 public:
  // The padded capacity for max_rows live rows, and the scratch sequences it needs.
  static int64_t capacity(int64_t max_rows) {
    int64_t cap = 1;
    while (cap < max_rows) cap *= 2;
    return cap;
  }
  static int64_t scratch_len(const CausalLM& model) {
    return std::min(PagedKvCache::kBlockSize, model.max_positions());
  }
  static int64_t scratch_sequences(const CausalLM& model, int64_t max_rows) {
    return (capacity(max_rows) + scratch_len(model) - 1) / scratch_len(model);
  }

  // scratch: scratch_sequences() sequences of scratch_len() tokens each, reserved.
  // prep: the model's prepare_decode() of this call (may be null), kept alive here.
  StaticDecode(CausalLM& model, PagedKvCache& cache, const GenerationConfig& cfg, Device dev,
               int64_t max_rows, std::vector<int64_t> scratch, bool graphs,
               std::shared_ptr<const DecodePrep> prep)
      : model_(model), cache_(cache), cfg_(cfg), dev_(dev), cap_(capacity(max_rows)),
        scratch_len_(scratch_len(model)), scratch_(std::move(scratch)), graphs_(graphs),
        prep_(std::move(prep)) {
    in_ = Tensor::empty({kFields, cap_}, DType::I64, dev);
    host_.assign(static_cast<size_t>(kFields * cap_), 0);
  }

  // Row r: token ids[r] of cache sequence seq[r] at position pos[r] (reserved), then the next
  // token sampled with stream streams[r] at position pos[r] + 1.
  void run(const std::vector<int64_t>& ids, const std::vector<int64_t>& seq,
           const std::vector<int64_t>& pos, const std::vector<int64_t>& streams,
           std::vector<int64_t>* tokens, std::vector<double>* logprobs) {
    const int64_t n = static_cast<int64_t>(ids.size());
    R1_CHECK(n >= 1 && n <= cap_, "generate: {} decode rows for a capacity of {}", n, cap_);
    int64_t b = 1;
    while (b < n) b *= 2;
    for (int64_t r = 0; r < cap_; ++r) {
      const bool live = r < n;
      host_[0 * cap_ + r] = live ? ids[r] : 0;
      host_[1 * cap_ + r] = live ? seq[r] : scratch_[r / scratch_len_];
      host_[2 * cap_ + r] = live ? pos[r] : r % scratch_len_;
      host_[3 * cap_ + r] = live ? streams[r] : 0;
      host_[4 * cap_ + r] = live ? pos[r] + 1 : r % scratch_len_ + 1;
    }
    copy_bytes(in_.data_ptr(), dev_, host_.data(), Device::cpu(),
               host_.size() * sizeof(int64_t));
    cache_.block_table();  // rewritten in place here: never inside a capture
    Bucket& bk = buckets_[b];
    Tensor tok, lp;
    if (bk.graph.captured()) {
      bk.graph.replay();
      ++replayed_;
      tok = bk.tok;
      lp = bk.lp;
    } else {
      step(b, &tok, &lp);  // this step's results, eagerly
      if (graphs_) {
        // The next step of this size replays what this one ran. The capture records, it does
        // not run: bk.tok and bk.lp hold nothing until the first replay.
        // The graphs run one at a time: they share one memory pool (the first graph's).
        // A capture that fails (the runtime cleans up after it) leaves this generation on the
        // static step, which computes the same, once warned: graphs are a speed-up only.
        try {
          bk.graph.capture(dev_, [&] { step(b, &bk.tok, &bk.lp); }, first_graph_);
          if (!first_graph_) first_graph_ = &bk.graph;
          ++captured_;
        } catch (const Error& e) {
          log_warn("generate: decode-step graph capture failed, this generation goes on "
                   "without graphs (static step): {}", e.what());
          graphs_ = false;
          ++capture_failures_;
          bk.tok = Tensor();  // what a failed capture left there was never computed
          bk.lp = Tensor();
        }
      }
    }
    const std::vector<int64_t> t = tok.to_int_vector();
    tokens->assign(t.begin(), t.begin() + n);
    const Tensor lp64 = lp.to(DType::F64).to(Device::cpu());
    const double* d = static_cast<const double*>(lp64.data_ptr());
    logprobs->assign(d, d + n);
  }

  int64_t captured() const { return captured_; }
  int64_t replayed() const { return replayed_; }
  int64_t capture_failures() const { return capture_failures_; }

 private:
  static constexpr int64_t kFields = 5;  // ids, seq, pos, sampling stream, sampling position
  struct Bucket {
    StepGraph graph;
    Tensor tok, lp;
  };

  Tensor field(int64_t f, int64_t b) const { return in_.narrow(0, f, 1).view({cap_}).narrow(0, 0, b); }

  // The step a graph holds: every input read from in_, nothing read back.
  void step(int64_t b, Tensor* tok, Tensor* lp) {
    NoHostReads no_reads;  // on the CPU too: what passes here would capture on a GPU
    CachedForwardOptions opt;
    opt.trusted_positions = true;  // generate checked prompt + max_new_tokens on the host
    opt.device_routing = true;
    opt.prep = prep_.get();
    const Tensor hidden = model_.forward_cached(field(0, b), field(1, b), field(2, b), cache_, opt);
    const Tensor logits = linear(hidden, model_.lm_head()).contiguous();
    *tok = Tensor::empty({b}, DType::I64, dev_);
    *lp = Tensor::empty({b}, stat_dtype(logits.dtype()), dev_);
    kernels::sample_tokens()(dev_, logits, field(3, b), field(4, b), cfg_.seed, cfg_.sampling,
                             *tok, *lp);
  }

  CausalLM& model_;
  PagedKvCache& cache_;
  const GenerationConfig& cfg_;
  Device dev_;
  int64_t cap_, scratch_len_, captured_ = 0, replayed_ = 0, capture_failures_ = 0;
  std::vector<int64_t> scratch_;
  bool graphs_;
  Tensor in_;
  std::vector<int64_t> host_;
  // Its tensors' addresses are in the graphs: declared before buckets_, destroyed after.
  std::shared_ptr<const DecodePrep> prep_;
  std::map<int64_t, Bucket> buckets_;
  const StepGraph* first_graph_ = nullptr;  // in buckets_ (std::map: a stable address)
};

}  // namespace

// kAuto picks CUDA graphs only once they have passed on a GPU (DecodeGraphsCuda.MatchEager,
// CudaGraph.* in tests/test_cuda_runtime.cc): until then a GPU run decodes eagerly unless
// asked for kGraphs. Written without a GPU; flip after the first GPU check passes.
constexpr bool kDecodeGraphsValidated = false;

const char* decode_mode_name(DecodeMode m) {
  switch (m) {
    case DecodeMode::kAuto: return "auto";
    case DecodeMode::kEager: return "eager";
    case DecodeMode::kStatic: return "static";
    case DecodeMode::kGraphs: return "graphs";
  }
  return "?";
}

DecodeMode decode_mode_from_name(const std::string& name, const std::string& where) {
  for (DecodeMode m : {DecodeMode::kAuto, DecodeMode::kEager, DecodeMode::kStatic,
                       DecodeMode::kGraphs})
    if (name == decode_mode_name(m)) return m;
  throw InputError(fmt::format("{}: decode mode '{}': auto, eager, static or graphs", where, name));
}

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
  const Device dev = model.lm_head().device();
  DecodeMode mode = cfg.decode;
  if (mode == DecodeMode::kAuto)
    mode = kDecodeGraphsValidated && StepGraph::supported(dev) ? DecodeMode::kGraphs
                                                               : DecodeMode::kEager;
  R1_INPUT_CHECK(mode != DecodeMode::kGraphs || StepGraph::supported(dev),
                 "generate: decode mode graphs on {}, which has none (or R1_CUDA_GRAPHS=0)",
                 dev.str());
  const bool fixed = mode != DecodeMode::kEager;
  // fixed: the padding rows' scratch sequences, one block each.
  const int64_t n_scratch = fixed ? StaticDecode::scratch_sequences(model, P * G) : 0;
  PagedKvCache cache = model.make_cache(std::max<int64_t>(blocks + n_scratch, 1));
  if (fixed) {
    int64_t max_blocks = 1;
    for (const auto& p : prompts)
      max_blocks = std::max(max_blocks, (static_cast<int64_t>(p.size()) + cfg.max_new_tokens +
                                         bs - 1) / bs);
    cache.fix_table(P + P * G + n_scratch, max_blocks);
  }

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
  // What the model prepares once for this call's forwards (fp8 DeepSeek-V3: its experts'
  // weights stacked and quantized, run as grouped GEMMs: contiguous layout for the prefill
  // and eager steps, masked for the static ones; the same bits per row either way).
  const std::shared_ptr<const DecodePrep> prep = model.prepare_decode();
  CachedForwardOptions eager_opt;
  eager_opt.prep = prep.get();
  Tensor hidden = model.forward_cached(Tensor::from_vector(ids, {n_ids}),
                                       Tensor::from_vector(seq, {n_ids}),
                                       Tensor::from_vector(pos, {n_ids}), cache, eager_opt);

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
  std::optional<StaticDecode> fixed_step;
  if (fixed) {
    std::vector<int64_t> scratch;
    for (int64_t k = 0; k < n_scratch; ++k) {
      scratch.push_back(cache.add_sequence());
      cache.extend(scratch.back(), StaticDecode::scratch_len(model));
    }
    fixed_step.emplace(model, cache, cfg, dev, P * G, std::move(scratch),
                       mode == DecodeMode::kGraphs, prep);
  }
  const double prefill_s = seconds_since(t0);
  int64_t steps = 0, generated = 0, peak = cache.blocks_in_use();
  std::vector<int64_t> tok;
  std::vector<double> lp;
  sample_rows(model, hidden, streams, positions, cfg, &tok, &lp);  // the first tokens
  while (true) {
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
    if (fixed_step) {
      fixed_step->run(next_ids, next_seq, next_pos, next_streams, &tok, &lp);
    } else {
      hidden = model.forward_cached(Tensor::from_vector(next_ids, {n}),
                                    Tensor::from_vector(next_seq, {n}),
                                    Tensor::from_vector(next_pos, {n}), cache, eager_opt);
      positions.resize(static_cast<size_t>(n));
      for (int64_t r = 0; r < n; ++r) positions[r] = next_pos[r] + 1;
      sample_rows(model, hidden, next_streams, positions, cfg, &tok, &lp);
    }
    live = std::move(next_live);
    ++steps;
  }
  if (stats) {
    stats->prompt_tokens = prompt_tokens;
    stats->generated_tokens = generated;
    stats->decode_steps = steps;
    stats->peak_blocks = peak;
    stats->prefill_s = prefill_s;
    stats->decode_s = seconds_since(t0) - prefill_s;
    stats->decode = mode;
    stats->graphs_captured = fixed_step ? fixed_step->captured() : 0;
    stats->graphs_replayed = fixed_step ? fixed_step->replayed() : 0;
    stats->graph_capture_failures = fixed_step ? fixed_step->capture_failures() : 0;
  }
  return out;
}

}  // namespace r1::rl
