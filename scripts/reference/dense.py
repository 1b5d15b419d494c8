#!/usr/bin/env python3
"""Dense Llama/Qwen2-style student in plain torch.nn: the independent reference for r1's
distillation students.

GQA attention with RoPE in the Llama convention (pair i is (i, i + head_dim/2)), SwiGLU MLP,
RMSNorm, pre-norm residual blocks, HF parameter names (LlamaForCausalLM / Qwen2ForCausalLM).
Biases follow HF: Qwen2 always has q/k/v biases and none on o_proj; Llama's attention_bias
puts a bias on q/k/v/o alike, mlp_bias on the three MLP projections. tie_word_embeddings
uses embed_tokens as the LM head. rope_scaling must be null (llama3/yarn scaling are not
implemented here). Shares RMSNorm, RoPE, attention, checkpoint I/O and the command line with
deepseek_v3.py (same flags: run with --help).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import deepseek_v3 as ref  # noqa: E402  (exits 3 itself when torch/numpy are missing)
from deepseek_v3 import nn  # noqa: E402

# HF Qwen2Config / LlamaConfig defaults where they agree; vocab and sizes have no sane shared
# default, so a config must give them.
DENSE_DEFAULTS = {
    "hidden_act": "silu", "initializer_range": 0.02, "rms_norm_eps": 1e-6,
    "tie_word_embeddings": False, "rope_theta": 10000.0, "rope_scaling": None,
    "attention_bias": False, "mlp_bias": False, "head_dim": None, "num_key_value_heads": None,
    "use_sliding_window": False,
}
REQUIRED = ("model_type", "vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers",
            "num_attention_heads")


def dense_config(d):
    missing = [k for k in REQUIRED if k not in d]
    if missing:
        raise ValueError(f"config: missing {missing}")
    c = ref.Config(d, DENSE_DEFAULTS)
    if c.num_key_value_heads is None:
        c.num_key_value_heads = c.num_attention_heads
    if c.head_dim is None:
        c.head_dim = c.hidden_size // c.num_attention_heads
    qwen2 = c.model_type == "qwen2"
    c.qkv_bias, c.o_bias = (True, False) if qwen2 else (c.attention_bias, c.attention_bias)
    bad = []
    if c.model_type not in ("qwen2", "llama"):
        bad.append(f"model_type {c.model_type!r} (qwen2 or llama)")
    if c.hidden_act != "silu":
        bad.append(f"hidden_act {c.hidden_act!r} (silu only)")
    if c.rope_scaling:
        bad.append(f"rope_scaling {c.rope_scaling} (only null is implemented)")
    if c.use_sliding_window:
        bad.append("use_sliding_window true (not implemented)")
    if c.num_attention_heads % c.num_key_value_heads:
        bad.append("num_attention_heads not a multiple of num_key_value_heads")
    if c.head_dim % 2:
        bad.append(f"head_dim {c.head_dim} is odd")
    if bad:
        raise ValueError("config: " + "; ".join(bad))
    return c


class Attention(nn.Module):
    """Grouped-query attention: query head h reads key/value head h // (H / KV)."""

    def __init__(self, c):
        super().__init__()
        self.H, self.KV, self.hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
        D = c.hidden_size
        self.q_proj = nn.Linear(D, self.H * self.hd, bias=c.qkv_bias)
        self.k_proj = nn.Linear(D, self.KV * self.hd, bias=c.qkv_bias)
        self.v_proj = nn.Linear(D, self.KV * self.hd, bias=c.qkv_bias)
        self.o_proj = nn.Linear(self.H * self.hd, D, bias=c.o_bias)

    # x (B, T, D), cos/sin (B, T, 1, hd/2), mask (B, 1, T, T) -> (B, T, D)
    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        q = ref.rope_half(self.q_proj(x).view(B, T, self.H, self.hd), cos, sin)
        k = ref.rope_half(self.k_proj(x).view(B, T, self.KV, self.hd), cos, sin)
        v = self.v_proj(x).view(B, T, self.KV, self.hd)
        rep = self.H // self.KV
        k, v = k.repeat_interleave(rep, 2), v.repeat_interleave(rep, 2)
        o = ref.attention(q, k, v, mask, self.hd ** -0.5)
        return self.o_proj(o.reshape(B, T, self.H * self.hd))


class DecoderLayer(nn.Module):
    def __init__(self, c, i):
        super().__init__()
        self.self_attn = Attention(c)
        self.mlp = ref.MLP(c.hidden_size, c.intermediate_size, bias=c.mlp_bias)
        self.input_layernorm = ref.RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = ref.RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, x, cos, sin, mask):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return h + self.mlp(self.post_attention_layernorm(h))


class DenseForCausalLM(ref.CausalLM):
    def __init__(self, c):
        super().__init__(c, DecoderLayer, c.head_dim, None)


def build(cfg_dict):
    return DenseForCausalLM(dense_config(cfg_dict))


if __name__ == "__main__":
    sys.exit(ref.run_cli(build, description=__doc__.split("\n\n")[0]))
