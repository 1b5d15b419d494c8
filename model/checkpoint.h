// Hugging Face checkpoints: the parameters a ModelConfig implies, under the exact tensor names
// of DeepseekV3ForCausalLM / DeepseekV2ForCausalLM / Qwen2ForCausalLM / LlamaForCausalLM, read
// from model.safetensors or a sharded model.safetensors.index.json, and written back.
//
// Loading is strict: a tensor the model needs that is missing, a shape that differs, a dtype
// the engine cannot read, or a tensor the model does not know ends with one InputError naming
// the tensor and the file. Two exceptions, both DeepSeek's released format: tensors of layers
// at index >= num_hidden_layers (the MTP module) are skipped, and an e4m3 weight with a
// "<name>_scale_inv" companion (one f32 per 128x128 block, weight = q * scale_inv) is
// dequantized on load. Per-tensor dtypes are honoured (an f32 bias in a bf16 file).
#pragma once
#include <map>
#include <string>
#include <vector>

#include "engine/tensor.h"
#include "model/config.h"

namespace r1 {

struct ParamSpec {
  std::string name;  // HF name, e.g. "model.layers.3.mlp.experts.7.down_proj.weight"
  Shape shape;
};

// Every parameter of the model (embedding, layers in order, final norm, lm_head unless tied),
// in a fixed order; sum of numels == c.num_parameters().
std::vector<ParamSpec> parameter_specs(const ModelConfig& c);

using ParamMap = std::map<std::string, Tensor>;

// dir/model.safetensors or dir/model.safetensors.index.json (+ shards) -> every parameter of
// parameter_specs(c), converted to `dtype` on `dev`.
ParamMap load_checkpoint(const std::string& dir, const ModelConfig& c, DType dtype = DType::F32,
                         Device dev = Device::cpu());

// Writes dir/config.json and dir/model.safetensors (every parameter of parameter_specs(c),
// stored as `dtype`) into a temp directory beside dir, fsync'd, then swapped in by rename: a
// reader sees the old checkpoint or the new one, never a mix. With max_shard_bytes > 0 and more
// bytes than that, the tensors go into model-0000i-of-0000n.safetensors shards with a
// model.safetensors.index.json, as HF writes them. InputError if a parameter is missing or
// misshapen.
void save_checkpoint(const std::string& dir, const ModelConfig& c, const ParamMap& params,
                     DType dtype = DType::F32, int64_t max_shard_bytes = 0);

}  // namespace r1
