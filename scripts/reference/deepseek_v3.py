#!/usr/bin/env python3
"""DeepSeek-V3 (MLA + MoE) in plain torch.nn: the independent reference for r1's model.

Written from the DeepSeek-V3 paper and the meanings of HF config.json fields, following the
semantics of DeepSeek's inference/model.py where it differs from the easy guess
(../shared/DESIGN.md, "Model"):
  - softmax scale = (qk_nope_head_dim + qk_rope_head_dim)^-0.5 * mscale^2,
    mscale = 0.1 * mscale_all_dim * ln(factor) + 1 whenever rope_scaling is yarn, and the
    YaRN frequencies apply at every position (not only past original_max_position_embeddings);
    cos/sin are not scaled;
  - RoPE rotates interleaved pairs (2i, 2i+1) of q_pe and k_pe;
  - router: sigmoid scores; e_score_correction_bias is added only to choose experts; group
    score = sum of the top-2 biased scores of the group; dropped groups are masked with -inf;
    weights = unbiased scores of the chosen experts, normalized to sum 1 (norm_topk_prob),
    times routed_scaling_factor; shared experts are added unweighted;
  - checkpoint layers at index >= num_hidden_layers (the MTP module) are ignored.
Parameter names are those of HF's DeepseekV3ForCausalLM. Experts run on the tokens routed to
them (gather / index_add): correctness over speed.

The module also holds what dense.py shares: RMSNorm, the RoPE tables, masked attention,
checkpoint I/O, and the command line (run with --help).
"""
import argparse
import json
import math
import os
import sys

try:
    import numpy as np
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except ImportError as e:  # same convention as tests/torch_ref/ops_ref.py
    print(f"cannot import torch/numpy ({e}) with {sys.executable}", file=sys.stderr)
    sys.exit(3)

_REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(_REPO, "tests", "torch_ref"))
import safetensors_np  # noqa: E402  (the project's numpy safetensors reader/writer)


# ---- config ---------------------------------------------------------------------------------
# HF DeepseekV3Config defaults, used for fields a config.json leaves out (as HF would).
V3_DEFAULTS = {
    "vocab_size": 129280, "hidden_size": 7168, "intermediate_size": 18432,
    "moe_intermediate_size": 2048, "num_hidden_layers": 61, "num_attention_heads": 128,
    "num_key_value_heads": 128, "n_shared_experts": 1, "n_routed_experts": 256,
    "routed_scaling_factor": 2.5, "kv_lora_rank": 512, "q_lora_rank": 1536,
    "qk_rope_head_dim": 64, "v_head_dim": 128, "qk_nope_head_dim": 128,
    "topk_method": "noaux_tc", "n_group": 8, "topk_group": 4, "num_experts_per_tok": 8,
    "moe_layer_freq": 1, "first_k_dense_replace": 3, "norm_topk_prob": True,
    "scoring_func": "sigmoid", "hidden_act": "silu", "max_position_embeddings": 4096,
    "initializer_range": 0.02, "rms_norm_eps": 1e-6, "tie_word_embeddings": False,
    "rope_theta": 10000.0, "rope_scaling": None, "attention_bias": False,
}


class Config:
    """A config.json as attributes, defaults filled in from `defaults`."""

    def __init__(self, d, defaults):
        self.raw = dict(d)
        for k, v in {**defaults, **d}.items():
            setattr(self, k, v)

    def get(self, k, default=None):
        return getattr(self, k, default)


def read_json(path):
    with open(path) as f:
        return json.load(f)


def yarn_params(cfg):
    """rope_scaling as a dict with every YaRN field, or None when it is not yarn."""
    rs = cfg.get("rope_scaling")
    if not rs:
        return None
    kind = rs.get("rope_type", rs.get("type"))
    if kind != "yarn":
        raise NotImplementedError(f"rope_scaling type {kind!r}: only yarn is implemented")
    return {"factor": float(rs["factor"]),
            "original_max_position_embeddings": int(rs["original_max_position_embeddings"]),
            "beta_fast": float(rs.get("beta_fast", 32)), "beta_slow": float(rs.get("beta_slow", 1)),
            "mscale": float(rs.get("mscale", 1)),
            "mscale_all_dim": float(rs.get("mscale_all_dim", 0))}


def v3_config(d):
    c = Config(d, V3_DEFAULTS)
    if c.q_lora_rank == 0:  # DESIGN.md: 0 means no q compression, as null does in HF
        c.q_lora_rank = None
    bad = []
    if c.hidden_act != "silu":
        bad.append(f"hidden_act {c.hidden_act!r} (silu only)")
    if c.attention_bias:
        bad.append("attention_bias true (MLA has no biases)")
    if c.qk_rope_head_dim % 2:
        bad.append(f"qk_rope_head_dim {c.qk_rope_head_dim} is odd")
    if c.n_routed_experts:
        if c.scoring_func != "sigmoid" or c.topk_method != "noaux_tc":
            bad.append(f"router {c.scoring_func}/{c.topk_method} (sigmoid/noaux_tc only)")
        if c.n_routed_experts % c.n_group:
            bad.append(f"n_routed_experts {c.n_routed_experts} not a multiple of "
                       f"n_group {c.n_group}")
        elif c.n_group > 1 and c.n_routed_experts // c.n_group < 2:
            bad.append("fewer than 2 experts per group (group score sums the top 2)")
        if not 1 <= c.topk_group <= c.n_group:
            bad.append(f"topk_group {c.topk_group} outside [1, n_group {c.n_group}]")
        if c.num_experts_per_tok > c.topk_group * (c.n_routed_experts // c.n_group):
            bad.append("num_experts_per_tok exceeds the experts in topk_group groups")
    if bad:
        raise ValueError("config: " + "; ".join(bad))
    yarn_params(c)  # validates rope_scaling
    return c


# ---- shared blocks --------------------------------------------------------------------------
class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    # x (..., dim) -> (..., dim)
    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


class MLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, dim, inter, bias=False):
        super().__init__()
        self.gate_proj = nn.Linear(dim, inter, bias=bias)
        self.up_proj = nn.Linear(dim, inter, bias=bias)
        self.down_proj = nn.Linear(inter, dim, bias=bias)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


def find_correction_dim(num_rotations, dim, base, orig_max_pos):
    # The pair index whose frequency turns num_rotations times over the original context.
    return dim * math.log(orig_max_pos / (num_rotations * 2 * math.pi)) / (2 * math.log(base))


def rope_inv_freq(dim, theta, yarn=None):
    """Per-pair inverse frequencies (dim/2,) float64, YaRN-blended when yarn is given:
    pairs below `low` keep their frequency, those above `high` are divided by factor, with a
    linear ramp between (DeepSeek's find_correction_range / linear_ramp_factor)."""
    freqs = 1.0 / theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    if yarn is None:
        return freqs
    orig = yarn["original_max_position_embeddings"]
    low = max(math.floor(find_correction_dim(yarn["beta_fast"], dim, theta, orig)), 0)
    high = min(math.ceil(find_correction_dim(yarn["beta_slow"], dim, theta, orig)), dim - 1)
    if low == high:
        high += 0.001  # DeepSeek's guard against 0/0
    ramp = torch.clamp((torch.arange(dim // 2, dtype=torch.float64) - low) / (high - low), 0, 1)
    return freqs / yarn["factor"] * ramp + freqs * (1 - ramp)


def yarn_mscale(factor, mscale):
    return 1.0 if factor <= 1.0 else 0.1 * mscale * math.log(factor) + 1.0


# positions (B, T) int64, inv_freq (D/2,) f64 -> cos, sin (B, T, 1, D/2) in dtype
def rope_cos_sin(positions, inv_freq, dtype):
    angles = positions.to(torch.float64)[..., None] * inv_freq  # angles formed in f64
    return angles.cos().to(dtype)[:, :, None], angles.sin().to(dtype)[:, :, None]


# x (B, T, H, D): rotate the interleaved pairs (2i, 2i+1) by the angles of pair i.
def rope_interleaved(x, cos, sin):
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1).flatten(-2)


# x (B, T, H, D): Llama/Qwen convention, pair i is (i, i + D/2).
def rope_half(x, cos, sin):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], -1)


def attention_mask(B, T, segment_ids=None):
    """(B, 1, T, T) bool: query t sees key s iff s <= t and both are in the same segment."""
    m = torch.ones(T, T, dtype=torch.bool).tril()[None, None].expand(B, 1, T, T)
    if segment_ids is not None:
        m = m & (segment_ids[:, None, :, None] == segment_ids[:, None, None, :])
    return m


def default_positions(B, T, segment_ids=None):
    """(B, T) int64: 0..T-1, or with segments the count of earlier tokens of the same segment
    in the row (each packed sequence starts again at 0)."""
    if segment_ids is None:
        return torch.arange(T)[None].expand(B, T).contiguous()
    same = segment_ids[:, :, None] == segment_ids[:, None, :]
    earlier = torch.ones(T, T, dtype=torch.bool).tril(-1)[None]
    return (same & earlier).sum(-1).to(torch.int64)


# q, k (B, T, H, Dk), v (B, T, H, Dv), mask (B, 1, T, T) bool -> (B, T, H, Dv)
def attention(q, k, v, mask, scale):
    s = torch.einsum("bthd,bshd->bhts", q, k) * scale
    p = torch.softmax(s.masked_fill(~mask, float("-inf")), -1)
    return torch.einsum("bhts,bshd->bthd", p, v)


# ---- DeepSeek-V3 blocks ---------------------------------------------------------------------
class MLA(nn.Module):
    """Multi-head latent attention in its expanded (training) form."""

    def __init__(self, c):
        super().__init__()
        self.H, self.nope, self.rope, self.vdim = (c.num_attention_heads, c.qk_nope_head_dim,
                                                   c.qk_rope_head_dim, c.v_head_dim)
        self.kv_lora_rank = c.kv_lora_rank
        qk = self.nope + self.rope
        D, H = c.hidden_size, self.H
        if c.q_lora_rank is None:
            self.q_proj = nn.Linear(D, H * qk, bias=False)
        else:
            self.q_a_proj = nn.Linear(D, c.q_lora_rank, bias=False)
            self.q_a_layernorm = RMSNorm(c.q_lora_rank, c.rms_norm_eps)
            self.q_b_proj = nn.Linear(c.q_lora_rank, H * qk, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(D, c.kv_lora_rank + self.rope, bias=False)
        self.kv_a_layernorm = RMSNorm(c.kv_lora_rank, c.rms_norm_eps)
        self.kv_b_proj = nn.Linear(c.kv_lora_rank, H * (self.nope + self.vdim), bias=False)
        self.o_proj = nn.Linear(H * self.vdim, D, bias=False)
        yarn = yarn_params(c)
        self.softmax_scale = qk ** -0.5
        if yarn is not None:
            m = yarn_mscale(yarn["factor"], yarn["mscale_all_dim"])
            self.softmax_scale *= m * m

    def q(self, x):
        if hasattr(self, "q_proj"):
            return self.q_proj(x)
        return self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x)))

    # x (B, T, D), cos/sin (B, T, 1, rope/2), mask (B, 1, T, T) -> (B, T, D)
    def forward(self, x, cos, sin, mask):
        B, T, _ = x.shape
        H = self.H
        q_nope, q_pe = self.q(x).view(B, T, H, -1).split([self.nope, self.rope], -1)
        c, k_pe = self.kv_a_proj_with_mqa(x).split([self.kv_lora_rank, self.rope], -1)
        kv = self.kv_b_proj(self.kv_a_layernorm(c)).view(B, T, H, self.nope + self.vdim)
        k_nope, v = kv.split([self.nope, self.vdim], -1)
        q_pe = rope_interleaved(q_pe, cos, sin)
        k_pe = rope_interleaved(k_pe.view(B, T, 1, self.rope), cos, sin)  # one key, all heads
        q = torch.cat([q_nope, q_pe], -1)
        k = torch.cat([k_nope, k_pe.expand(B, T, H, self.rope)], -1)
        o = attention(q, k, v, mask, self.softmax_scale)
        return self.o_proj(o.reshape(B, T, H * self.vdim))


class Gate(nn.Module):
    """The noaux_tc router. e_score_correction_bias is a buffer: it steers the choice only and
    gets no gradient (the engine updates it from expert load)."""

    def __init__(self, c):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(c.n_routed_experts, c.hidden_size))
        self.register_buffer("e_score_correction_bias", torch.zeros(c.n_routed_experts))
        self.top_k, self.n_group, self.topk_group = (c.num_experts_per_tok, c.n_group,
                                                     c.topk_group)
        self.norm_topk_prob, self.scale = c.norm_topk_prob, c.routed_scaling_factor

    # x (N, D) -> weights (N, k), indices (N, k) int64, margin (N,)
    def forward(self, x):
        return route(F.linear(x, self.weight), self.e_score_correction_bias, self.n_group,
                     self.topk_group, self.top_k, self.norm_topk_prob, self.scale)


def route(logits, bias, n_group, topk_group, top_k, norm_topk_prob, scale):
    """logits (N, E) -> weights (N, k), indices (N, k), margin (N,): the smallest gap between
    a chosen and a rejected candidate (kept groups' scores, then biased expert scores), so a
    caller can tell a near-tie that rounding could flip."""
    scores = torch.sigmoid(logits)
    choice = (scores + bias).detach()
    N, E = choice.shape
    margin = torch.full((N,), float("inf"), dtype=choice.dtype)
    if n_group > 1:
        grouped = choice.view(N, n_group, E // n_group)
        group_scores = grouped.topk(2, -1).values.sum(-1)  # (N, n_group)
        if topk_group < n_group:
            top = group_scores.topk(topk_group + 1, -1).values
            margin = torch.minimum(margin, top[:, -2] - top[:, -1])
        kept = group_scores.topk(topk_group, -1).indices
        dropped = torch.ones(N, n_group, dtype=torch.bool).scatter(1, kept, False)
        choice = grouped.masked_fill(dropped[..., None], float("-inf")).flatten(1)
    if top_k < E:
        top = choice.topk(top_k + 1, -1).values
        # inf when the best rejected candidate is in a dropped group
        margin = torch.minimum(margin, top[:, -2] - top[:, -1])
    idx = choice.topk(top_k, -1).indices
    w = scores.gather(1, idx)
    if norm_topk_prob:
        w = w / w.sum(-1, keepdim=True)
    return w * scale, idx, margin


class MoE(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.gate = Gate(c)
        self.experts = nn.ModuleList(MLP(c.hidden_size, c.moe_intermediate_size)
                                     for _ in range(c.n_routed_experts))
        if c.n_shared_experts:
            self.shared_experts = MLP(c.hidden_size, c.moe_intermediate_size * c.n_shared_experts)
        self.last_routing = None  # (indices (N, k), margin (N,)) of the last forward

    # x (B, T, D) -> (B, T, D)
    def forward(self, x):
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        w, idx, margin = self.gate(x)
        self.last_routing = (idx, margin)
        y = torch.zeros_like(x)
        for e, expert in enumerate(self.experts):
            tok, slot = (idx == e).nonzero(as_tuple=True)
            if tok.numel():
                y = y.index_add(0, tok, expert(x[tok]) * w[tok, slot, None])
        if hasattr(self, "shared_experts"):
            y = y + self.shared_experts(x)  # unweighted
        return y.view(shape)


class DecoderLayer(nn.Module):
    def __init__(self, c, i):
        super().__init__()
        self.self_attn = MLA(c)
        moe = c.n_routed_experts and i >= c.first_k_dense_replace and i % c.moe_layer_freq == 0
        self.mlp = MoE(c) if moe else MLP(c.hidden_size, c.intermediate_size)
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps)

    def forward(self, x, cos, sin, mask):
        h = x + self.self_attn(self.input_layernorm(x), cos, sin, mask)
        return h + self.mlp(self.post_attention_layernorm(h))


class Backbone(nn.Module):
    def __init__(self, c, layer):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        self.layers = nn.ModuleList(layer(c, i) for i in range(c.num_hidden_layers))
        self.norm = RMSNorm(c.hidden_size, c.rms_norm_eps)


class CausalLM(nn.Module):
    """Embedding, decoder layers, final norm, LM head (tied or not); subclasses give the layer
    type (whose attention applies its own RoPE convention) and the rotary dim."""

    def __init__(self, c, layer, rope_dim, yarn):
        super().__init__()
        self.config = c
        self.model = Backbone(c, layer)
        if not c.tie_word_embeddings:
            self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False)
        # A plain attribute, not a buffer: Module.to(float32) must not round it.
        self.inv_freq = rope_inv_freq(rope_dim, float(c.rope_theta), yarn)

    def lm_weight(self):
        return self.model.embed_tokens.weight if self.config.tie_word_embeddings \
            else self.lm_head.weight

    # input_ids (B, T) int64, position_ids (B, T) int64, segment_ids (B, T) int -> logits (B, T, V)
    def forward(self, input_ids, position_ids=None, segment_ids=None):
        B, T = input_ids.shape
        if position_ids is None:
            position_ids = default_positions(B, T, segment_ids)
        dtype = self.model.embed_tokens.weight.dtype
        cos, sin = rope_cos_sin(position_ids, self.inv_freq, dtype)
        mask = attention_mask(B, T, segment_ids)
        h = self.model.embed_tokens(input_ids)
        for layer in self.model.layers:
            h = layer(h, cos, sin, mask)
        return F.linear(self.model.norm(h), self.lm_weight())

    def routing(self):
        """{layer prefix: (indices (N, k), margin (N,))} of the last forward's MoE layers."""
        return {f"model.layers.{i}.mlp": l.mlp.last_routing
                for i, l in enumerate(self.model.layers) if isinstance(l.mlp, MoE)}


class DeepseekV3ForCausalLM(CausalLM):
    def __init__(self, c):
        super().__init__(c, DecoderLayer, c.qk_rope_head_dim, yarn_params(c))


def build(cfg_dict):
    return DeepseekV3ForCausalLM(v3_config(cfg_dict))


# ---- weights --------------------------------------------------------------------------------
def _to_float(a, st_dtype):
    if st_dtype == "BF16":  # numpy has no bfloat16: widen the raw bits
        return (a.astype(np.uint32) << 16).view(np.float32)
    if st_dtype in ("F32", "F64", "F16"):
        return a
    raise ValueError(f"tensor dtype {st_dtype} is not a float format this reference loads")


def init_weights(model, seed, noise=0.0):
    """HF-style init: matrices N(0, initializer_range), norms 1, biases 0; noise > 0 adds
    noise * N(0, 1) to norms, linear biases and e_score_correction_bias, so a test sees
    them matter."""
    g = torch.Generator().manual_seed(seed)
    std = float(model.config.get("initializer_range", 0.02))
    with torch.no_grad():
        for name, t in model.state_dict(keep_vars=True).items():
            r = torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype)
            if t.dim() >= 2:
                t.copy_(r * std)
            elif "norm" in name:
                t.copy_(1 + noise * r)
            else:
                t.copy_(noise * r)


def load_weights(model, path):
    """Loads an HF safetensors file by name, every tensor converted to the model's dtype.
    Layers >= num_hidden_layers (MTP) and rotary inv_freq entries are ignored; a missing or
    unexpected name, or a wrong shape, is an error."""
    arrays, dtypes, _ = safetensors_np.read(path)
    n_layers = model.config.num_hidden_layers
    state = model.state_dict(keep_vars=True)
    tied = model.config.tie_word_embeddings
    extra = []
    for name, a in arrays.items():
        parts = name.split(".")
        if name.endswith("rotary_emb.inv_freq") or (
                parts[:2] == ["model", "layers"] and int(parts[2]) >= n_layers):
            continue
        if tied and name == "lm_head.weight":
            if "model.embed_tokens.weight" in arrays and not np.array_equal(
                    a, arrays["model.embed_tokens.weight"]):
                raise ValueError(f"{path}: tied lm_head.weight differs from embed_tokens")
            continue
        if name not in state:
            extra.append(name)
            continue
        t = state[name]
        if tuple(a.shape) != tuple(t.shape):
            raise ValueError(f"{path}: {name} has shape {a.shape}, "
                             f"the config says {tuple(t.shape)}")
        with torch.no_grad():
            t.copy_(torch.from_numpy(np.ascontiguousarray(_to_float(a, dtypes[name]))))
    missing = [n for n in state if n not in arrays]
    if extra or missing:
        raise ValueError(f"{path}: unexpected {extra[:8]}, missing {missing[:8]}")


def save_weights(model, path):
    """Writes every state_dict tensor (fp32, or fp64 for a float64 model) under its HF name."""
    safetensors_np.write(path, {k: v.detach().numpy() for k, v in model.state_dict().items()},
                         {"format": "pt"})


# ---- command line ---------------------------------------------------------------------------
def read_inputs(args):
    """input_ids (B, T), position_ids or None, segment_ids or None, G or None, from .npy
    files or one safetensors file holding input_ids / position_ids / segment_ids / grad_logits."""
    if args.ids.endswith(".safetensors"):
        a, _, _ = safetensors_np.read(args.ids)
        ids, pos, seg, g = (a.get(k) for k in ("input_ids", "position_ids", "segment_ids",
                                                "grad_logits"))
    else:
        ids = np.load(args.ids)
        pos, seg, g = (np.load(p) if p else None
                       for p in (args.positions, args.segments, args.grad_logits))
    if ids.ndim == 1:
        ids, pos, seg, g = (None if x is None else x[None] for x in (ids, pos, seg, g))
    to_long = lambda x: None if x is None else torch.from_numpy(x.astype(np.int64))
    return to_long(ids), to_long(pos), to_long(seg), g


def run_cli(build_fn, argv=None, description=None):
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", required=True, help="HF config.json")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--weights", help="model.safetensors to load")
    src.add_argument("--init", type=int, metavar="SEED", help="random init instead")
    p.add_argument("--init-noise", type=float, default=0.0,
                   help="with --init: noise on norms, biases and e_score_correction_bias")
    p.add_argument("--save", help="write the (loaded or initialized) weights here")
    p.add_argument("--ids", help="input_ids .npy (B, T) or (T), or an inputs .safetensors")
    p.add_argument("--positions", help="position_ids .npy (default 0.. per segment)")
    p.add_argument("--segments", help="segment_ids .npy for packed sequences")
    p.add_argument("--grad-logits", help="G .npy (B, T, V) for --backward")
    p.add_argument("--g-seed", type=int, default=0, help="seed of a random G if none given")
    p.add_argument("--out", help="output .safetensors (logits, grads, routing)")
    p.add_argument("--backward", action="store_true",
                   help="also write grad.<param> of sum(G * logits) for every parameter")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    model = build_fn(read_json(args.config)).to(dtype)
    if args.weights:
        load_weights(model, args.weights)
    else:
        init_weights(model, args.init, args.init_noise)
    if args.save:
        save_weights(model, args.save)
    if not args.ids:
        return 0
    if not args.out:
        p.error("--ids needs --out")
    ids, pos, seg, g = read_inputs(args)
    model.zero_grad(set_to_none=True)
    with torch.set_grad_enabled(args.backward):
        logits = model(ids, pos, seg)
    out = {"logits": logits.detach().numpy()}
    for prefix, (idx, margin) in getattr(model, "routing", lambda: {})().items():
        out[f"routing.{prefix}"] = idx.sort(-1).values.view(*ids.shape, -1).numpy().astype(np.int32)
        out[f"routing_margin.{prefix}"] = margin.view(ids.shape).numpy().astype(np.float32)
    if args.backward:
        if g is None:
            gen = torch.Generator().manual_seed(args.g_seed)
            g = torch.randn(logits.shape, generator=gen, dtype=torch.float64).numpy()
        G = torch.from_numpy(np.asarray(g)).to(dtype)
        if G.shape != logits.shape:
            raise ValueError(f"G has shape {tuple(G.shape)}, logits {tuple(logits.shape)}")
        (logits * G).sum().backward()
        out["grad_logits"] = G.numpy()
        for name, t in model.state_dict(keep_vars=True).items():
            if t.grad is not None:
                out[f"grad.{name}"] = t.grad.numpy()
            else:  # an expert no token chose, or the router bias (no gradient by design)
                out[f"grad.{name}"] = torch.zeros_like(t).detach().numpy()
    safetensors_np.write(args.out, out, {"format": "pt"})
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(build, description=__doc__.split("\n\n")[0]))
