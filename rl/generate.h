// Batched KV-cached generation (DESIGN.md "Generation"): prefill every prompt once into the
// paged cache, fork it into its G samples (they share the prompt's full blocks), then decode
// all live samples one token per step until a stop token or the length limit. Sampling is
// the engine's sample_tokens (temperature, top-k, top-p) keyed by (seed, stream, position):
// a sample's stream id is fixed by its prompt and its index, so, with every product batch
// invariant (BatchInvariantScope, on for the whole call), a sample does not depend on which
// other samples share its batch.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

#include "engine/kernels.h"
#include "model/causal_lm.h"

namespace r1::rl {

// How the decode steps run (docs/cuda.md "Decode"):
//  kEager:  one forward_cached per step over the live samples, the MoE routed on the host.
//  kStatic: the step a CUDA graph can hold, run eagerly: the batch padded to a power of two
//           (padding rows decode a scratch sequence), the block table at a fixed address,
//           MoE routed on the device (CachedForwardOptions), no host reads inside the step.
//           The same samples as kEager, bit for bit (tests/rl/test_generate.cc).
//  kGraphs: kStatic's step recorded once per batch size (engine/step_graph.h) and replayed.
//  kAuto:   kGraphs where the model's device has graphs (CUDA, R1_CUDA_GRAPHS not 0) and
//           they have been validated on a GPU (kDecodeGraphsValidated in generate.cc; not yet),
//           else kEager.
enum class DecodeMode { kAuto, kEager, kStatic, kGraphs };
const char* decode_mode_name(DecodeMode m);
// "auto", "eager", "static", "graphs"; InputError naming `where` otherwise.
DecodeMode decode_mode_from_name(const std::string& name, const std::string& where);

struct GenerationConfig {
  int64_t max_new_tokens = 128;
  DecodeMode decode = DecodeMode::kAuto;
  SamplingParams sampling;           // temperature 0 = greedy
  std::vector<int32_t> stop_tokens;  // a sampled stop token ends its sample (and is kept)
  uint64_t seed = 0;
};

struct Sample {
  int64_t prompt = 0;              // index into the prompts
  uint64_t stream = 0;             // the sampler's sequence key: stream_base + prompt * G + g
  std::vector<int32_t> tokens;     // the completion (the stop token last, if one was drawn)
  std::vector<float> logprobs;     // per token, under the tempered softmax before top-k/top-p
  bool truncated = false;          // max_new_tokens reached without a stop token
};

struct GenerationStats {
  int64_t prompt_tokens = 0, generated_tokens = 0, decode_steps = 0, peak_blocks = 0;
  double prefill_s = 0, decode_s = 0;
  DecodeMode decode = DecodeMode::kEager;  // the mode that ran (kAuto resolved)
  int64_t graphs_captured = 0;             // kGraphs: one per batch size used
  int64_t graphs_replayed = 0;             // kGraphs: decode steps that were a replay
  // kGraphs: captures that failed (warned; the generation went on with the static step)
  int64_t graph_capture_failures = 0;
};

// prompts: token ids (each non-empty, prompt + max_new_tokens within the model's positions);
// returns prompts.size() * samples_per_prompt samples, prompt-major.
std::vector<Sample> generate(CausalLM& model, const std::vector<std::vector<int32_t>>& prompts,
                             int64_t samples_per_prompt, const GenerationConfig& cfg,
                             uint64_t stream_base = 0, GenerationStats* stats = nullptr);

}  // namespace r1::rl
