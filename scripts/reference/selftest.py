#!/usr/bin/env python3
"""Checks of the PyTorch reference models (deepseek_v3.py, dense.py) against things they do
not share code with: literal transcriptions of DeepSeek-V3's inference/model.py
(precompute_freqs_cis, apply_rotary_emb, the softmax scale, Gate.forward) and of HF's RoPE
forms, finite differences in float64, the absorbed MLA form, causality and packing, and
safetensors / command-line round trips. Prints PASS/FAIL per check; exit 1 on any failure.

usage: selftest.py [--threads N]
"""
import math
import os
import subprocess
import sys
import tempfile
import traceback
import types

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import deepseek_v3 as ref  # noqa: E402
import dense  # noqa: E402
from deepseek_v3 import np, torch, nn, F, safetensors_np  # noqa: E402

sys.path.insert(0, os.path.join(ref._REPO, "tests", "torch_ref"))
import ops_ref  # noqa: E402  (the op-level reference of tests/test_torch_parity.cc)


# ---- literal transcriptions of deepseek-ai/DeepSeek-V3 inference/model.py ------------------
# Kept as written there (only `args` fields and the dtype are parameters), so a difference
# from the reference shows up here rather than being copied into it.
def ds_precompute_freqs_cis(args, dtype=torch.float32) -> torch.Tensor:
    dim = args.qk_rope_head_dim
    seqlen = args.max_seq_len
    beta_fast = args.beta_fast
    beta_slow = args.beta_slow
    base = args.rope_theta
    factor = args.rope_factor

    def find_correction_dim(num_rotations, dim, base, max_seq_len):
        return dim * math.log(max_seq_len / (num_rotations * 2 * math.pi)) / (2 * math.log(base))

    def find_correction_range(low_rot, high_rot, dim, base, max_seq_len):
        low = math.floor(find_correction_dim(low_rot, dim, base, max_seq_len))
        high = math.ceil(find_correction_dim(high_rot, dim, base, max_seq_len))
        return max(low, 0), min(high, dim - 1)

    def linear_ramp_factor(min, max, dim):
        if min == max:
            max += 0.001
        linear_func = (torch.arange(dim, dtype=dtype) - min) / (max - min)
        ramp_func = torch.clamp(linear_func, 0, 1)
        return ramp_func

    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=dtype) / dim))
    if seqlen > args.original_seq_len:
        low, high = find_correction_range(beta_fast, beta_slow, dim, base, args.original_seq_len)
        smooth = 1 - linear_ramp_factor(low, high, dim // 2)
        freqs = freqs / factor * (1 - smooth) + freqs * smooth

    t = torch.arange(seqlen, dtype=dtype)
    freqs = torch.outer(t, freqs)
    freqs_cis = torch.polar(torch.ones_like(freqs), freqs)
    return freqs_cis


def ds_apply_rotary_emb(x: torch.Tensor, freqs_cis: torch.Tensor) -> torch.Tensor:
    dtype = x.dtype
    x = torch.view_as_complex(x.double().view(*x.shape[:-1], -1, 2))  # (.float() there)
    freqs_cis = freqs_cis.view(1, x.size(1), 1, x.size(-1))
    y = torch.view_as_real(x * freqs_cis).flatten(3)
    return y.to(dtype)


def ds_softmax_scale(args):  # MLA.__init__
    qk_head_dim = args.qk_nope_head_dim + args.qk_rope_head_dim
    softmax_scale = qk_head_dim ** -0.5
    if args.max_seq_len > args.original_seq_len:
        mscale = 0.1 * args.mscale * math.log(args.rope_factor) + 1.0
        softmax_scale = softmax_scale * mscale * mscale
    return softmax_scale


class DsGate(nn.Module):
    # DeepSeek creates self.bias only when dim == 7168; here it is given, as noaux_tc has it.
    def __init__(self, args, weight, bias):
        super().__init__()
        self.dim = args.dim
        self.topk = args.n_activated_experts
        self.n_groups = args.n_expert_groups
        self.topk_groups = args.n_limited_groups
        self.score_func = args.score_func
        self.route_scale = args.route_scale
        self.weight = nn.Parameter(weight)
        self.bias = nn.Parameter(bias) if bias is not None else None
        self.fill = args.fill  # float("-inf") in DeepSeek; 0.0 to mimic HF's masked_fill

    def forward(self, x: torch.Tensor):
        scores = F.linear(x, self.weight)
        if self.score_func == "softmax":
            scores = scores.softmax(dim=-1, dtype=torch.float32)
        else:
            scores = scores.sigmoid()
        original_scores = scores
        if self.bias is not None:
            scores = scores + self.bias
        if self.n_groups > 1:
            scores = scores.view(x.size(0), self.n_groups, -1)
            if self.bias is None:
                group_scores = scores.amax(dim=-1)
            else:
                group_scores = scores.topk(2, dim=-1)[0].sum(dim=-1)
            indices = group_scores.topk(self.topk_groups, dim=-1)[1]
            mask = scores.new_ones(x.size(0), self.n_groups, dtype=bool).scatter_(1, indices, False)
            scores = scores.masked_fill_(mask.unsqueeze(-1), self.fill).flatten(1)
        indices = torch.topk(scores, self.topk, dim=-1)[1]
        weights = original_scores.gather(1, indices)
        if self.score_func == "sigmoid":
            weights /= weights.sum(dim=-1, keepdim=True)
        weights *= self.route_scale
        return weights.type_as(x), indices


# ---- HF's RoPE forms (transformers modeling_deepseek_v3 / modeling_llama) --------------------
def hf_rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def hf_deepseek_rope(q, cos, sin):  # q (b, h, s, d); cos/sin (s, d) = cat(freqs, freqs)
    b, h, s, d = q.shape
    q = q.view(b, h, s, d // 2, 2).transpose(4, 3).reshape(b, h, s, d)
    return (q * cos) + (hf_rotate_half(q) * sin)


# ---- configs ---------------------------------------------------------------------------------
def v3_cfg(**kw):
    c = {"vocab_size": 40, "hidden_size": 16, "intermediate_size": 24, "moe_intermediate_size": 8,
         "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 2,
         "n_shared_experts": 1, "n_routed_experts": 8, "num_experts_per_tok": 2, "n_group": 2,
         "topk_group": 1, "first_k_dense_replace": 1, "routed_scaling_factor": 2.5,
         "norm_topk_prob": True, "q_lora_rank": 12, "kv_lora_rank": 8, "qk_nope_head_dim": 4,
         "qk_rope_head_dim": 4, "v_head_dim": 6, "rope_theta": 100.0, "rms_norm_eps": 1e-6,
         "rope_scaling": {"type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8,
                          "beta_fast": 32, "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 0.7},
         "max_position_embeddings": 64, "initializer_range": 0.2, "tie_word_embeddings": False,
         "architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3"}
    c.update(kw)
    return c


def dense_cfg(**kw):
    c = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "vocab_size": 40,
         "hidden_size": 16, "intermediate_size": 24, "num_hidden_layers": 2,
         "num_attention_heads": 4, "num_key_value_heads": 2, "rope_theta": 100.0,
         "rms_norm_eps": 1e-6, "initializer_range": 0.2, "tie_word_embeddings": True}
    c.update(kw)
    return c


# Both q variants, YaRN on and off, n_group 1 and > 1, shared experts 0..2; dense students.
V3_CASES = {
    "v3 q_lora yarn groups2": v3_cfg(),
    "v3 q_proj no-yarn group1": v3_cfg(q_lora_rank=None, rope_scaling=None, n_group=1,
                                       topk_group=1, n_routed_experts=4, n_shared_experts=2),
    "v3 q_lora0 yarn groups4 noshared": v3_cfg(q_lora_rank=0, n_routed_experts=16, n_group=4,
                                               topk_group=2, num_experts_per_tok=3,
                                               n_shared_experts=0, num_hidden_layers=3),
    "v3 no-norm-topk": v3_cfg(norm_topk_prob=False, num_experts_per_tok=1, first_k_dense_replace=0),
}
DENSE_CASES = {
    "qwen2 tied gqa": dense_cfg(),
    "llama bias untied": dense_cfg(model_type="llama", architectures=["LlamaForCausalLM"],
                                   attention_bias=True, mlp_bias=True, tie_word_embeddings=False,
                                   num_key_value_heads=4, head_dim=6),
}


def make(cfg, seed=0, dtype=torch.float64, noise=0.1):
    build = dense.build if cfg.get("model_type") in ("qwen2", "llama") else ref.build
    m = build(cfg).to(dtype)
    ref.init_weights(m, seed, noise)
    return m


def rel(a, b):
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    return ((a - b).abs().max() / b.abs().max().clamp_min(1e-300)).item()


# ---- checks: each returns a list of failure strings ----------------------------------------
def check_yarn():
    fails = []
    cases = [  # dim, theta, factor, orig, beta_fast, beta_slow, mscale_all_dim, positions
        (64, 10000.0, 40.0, 4096, 32, 1, 1.0, 4200),     # DeepSeek-V3
        (8, 10000.0, 4.0, 256, 32, 1, 1.0, 300),         # configs/tiny.json
        (32, 10000.0, 4.0, 1024, 32, 1, 1.0, 1100),      # configs/small.json
        (16, 500.0, 8.0, 5, 32, 1, 0.7, 40),             # low == high: the 0.001 guard
        (16, 10.0, 2.0, 1000, 64, 2, 0.0, 1100),         # high clamped to dim - 1
        (4, 100.0, 4.0, 8, 32, 1, 0.7, 16),              # the gradient-check config
    ]
    for dim, theta, factor, orig, bf, bs, msad, n in cases:
        yarn = {"factor": factor, "original_max_position_embeddings": orig, "beta_fast": bf,
                "beta_slow": bs, "mscale": 1.0, "mscale_all_dim": msad}
        args = types.SimpleNamespace(qk_rope_head_dim=dim, max_seq_len=n, beta_fast=bf,
                                     beta_slow=bs, rope_theta=theta, rope_factor=factor,
                                     original_seq_len=orig, qk_nope_head_dim=8, mscale=msad)
        assert n > orig  # so DeepSeek's code takes the YaRN branch
        ours = ref.rope_inv_freq(dim, theta, yarn)
        pos = torch.arange(n)[None]
        cos, sin = ref.rope_cos_sin(pos, ours, torch.float64)
        for dt, tol_f, tol_cs in ((torch.float64, 1e-14, 1e-9), (torch.float32, 2e-6, 1e-3)):
            fc = ds_precompute_freqs_cis(args, dt)
            ds_freqs = fc[1].angle() if n > 1 else None  # position 1: the frequencies
            e_f = rel(ours.to(dt).double(), ds_freqs.double())
            e_cs = max((cos[0, :, 0] - fc.real.double()).abs().max().item(),
                       (sin[0, :, 0] - fc.imag.double()).abs().max().item())
            if e_f > tol_f or e_cs > tol_cs * max(1.0, n / 1000):
                fails.append(f"dim {dim} factor {factor} orig {orig} {dt}: freqs rel {e_f:.2e}, "
                             f"cos/sin abs {e_cs:.2e}")
        p = {"dim": dim, "theta": theta, "yarn_factor": factor, "beta_fast": bf,
             "beta_slow": bs, "original_max_position_embeddings": orig}
        e_ops = rel(ours, ops_ref.rope_freqs(p))
        if e_ops > 1e-15:
            fails.append(f"dim {dim}: tests/torch_ref/ops_ref.rope_freqs differs by {e_ops:.2e}")
        # The model's softmax scale against MLA.__init__ (args.mscale there = mscale_all_dim).
        c = ref.v3_config(v3_cfg(qk_rope_head_dim=dim, qk_nope_head_dim=8, rope_scaling={
            "type": "yarn", **{k: v for k, v in yarn.items()}}))
        ours_scale = ref.MLA(c).softmax_scale
        if abs(ours_scale / ds_softmax_scale(args) - 1) > 1e-15:
            fails.append(f"dim {dim}: softmax scale {ours_scale} vs DeepSeek "
                         f"{ds_softmax_scale(args)}")
    # YaRN off: plain RoPE frequencies and scale (nope+rope)^-0.5.
    c = ref.v3_config(v3_cfg(rope_scaling=None))
    if ref.MLA(c).softmax_scale != 8 ** -0.5:
        fails.append("softmax scale without YaRN")
    if rel(ref.rope_inv_freq(8, 1e4), 1e4 ** (-torch.arange(0, 8, 2).double() / 8)) > 1e-15:
        fails.append("plain RoPE frequencies")
    # YaRN applies at every position: a short sequence sees the blended frequencies too.
    m = make(v3_cfg())
    if rel(m.inv_freq, ref.rope_inv_freq(4, 100.0, ref.yarn_params(m.config))) > 0 or \
            rel(m.inv_freq, ref.rope_inv_freq(4, 100.0)) < 1e-3:
        fails.append("model does not use the YaRN frequencies")
    return fails


def check_rope_layout():
    fails = []
    g = torch.Generator().manual_seed(1)
    B, T, H, D = 2, 7, 3, 8
    x = torch.randn(B, T, H, D, generator=g, dtype=torch.float64)
    y = torch.randn(B, T, H, D, generator=g, dtype=torch.float64)
    yarn = {"factor": 4.0, "original_max_position_embeddings": 4, "beta_fast": 32,
            "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0}
    inv = ref.rope_inv_freq(D, 100.0, yarn)
    pos = torch.arange(T)[None].expand(B, T)
    cos, sin = ref.rope_cos_sin(pos, inv, torch.float64)
    ours = ref.rope_interleaved(x, cos, sin)
    angles = torch.outer(torch.arange(T).double(), inv)
    ds = ds_apply_rotary_emb(x, torch.polar(torch.ones_like(angles), angles))
    if rel(ours, ds) > 1e-14:
        fails.append(f"interleaved RoPE vs DeepSeek apply_rotary_emb: {rel(ours, ds):.2e}")
    # HF's DeepseekV3 form permutes to halves then rotates: same values, de-interleaved order,
    # so the same attention scores.
    emb = torch.cat([angles, angles], -1)
    hf = hf_deepseek_rope(x.transpose(1, 2), emb.cos(), emb.sin()).transpose(1, 2)
    if rel(torch.cat([ours[..., 0::2], ours[..., 1::2]], -1), hf) > 1e-14:
        fails.append("interleaved RoPE vs HF DeepseekV3 permuted form")
    # Llama/Qwen: x * cos + rotate_half(x) * sin with cos = cat(freqs, freqs).
    inv = ref.rope_inv_freq(D, 100.0)
    cos, sin = ref.rope_cos_sin(pos, inv, torch.float64)
    emb = torch.outer(torch.arange(T).double(), inv).repeat(1, 2)[None, :, None]
    hf = x * emb.cos() + hf_rotate_half(x) * emb.sin()
    if rel(ref.rope_half(x, cos, sin), hf) > 1e-14:
        fails.append("half-split RoPE vs HF Llama form")
    # Relative position: <R(p)x, R(p+d)y> depends on d only.
    d0 = (ref.rope_interleaved(x, cos[:, :1], sin[:, :1]) * ref.rope_interleaved(
        y, cos[:, 3:4], sin[:, 3:4])).sum(-1)
    d1 = (ref.rope_interleaved(x, cos[:, 2:3], sin[:, 2:3]) * ref.rope_interleaved(
        y, cos[:, 5:6], sin[:, 5:6])).sum(-1)
    if rel(d0, d1) > 1e-12:
        fails.append("interleaved RoPE is not relative")
    return fails


def gate_case(E, n_group, topk_group, k, N=64, bias_shift=0.0, seed=0, D=16):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    w = torch.randn(E, D, generator=g, dtype=torch.float64) * 0.3
    bias = torch.randn(E, generator=g, dtype=torch.float64) * 0.1 + bias_shift
    c = ref.v3_config(v3_cfg(hidden_size=D, n_routed_experts=E, n_group=n_group,
                             topk_group=topk_group, num_experts_per_tok=k))
    gate = ref.Gate(c).double()
    with torch.no_grad():
        gate.weight.copy_(w)
        gate.e_score_correction_bias.copy_(bias)
    ours_w, ours_i, _ = gate(x)
    results = {}
    for fill in (float("-inf"), 0.0):
        args = types.SimpleNamespace(dim=D, n_activated_experts=k, n_expert_groups=n_group,
                                     n_limited_groups=topk_group, score_func="sigmoid",
                                     route_scale=2.5, fill=fill)
        with torch.no_grad():
            results[fill] = DsGate(args, w.clone(), bias.clone())(x)
    return (ours_w, ours_i), results


def same_routing(a, b):
    (wa, ia), (wb, ib) = a, b
    ia, oa = ia.sort(-1)
    ib, ob = ib.sort(-1)
    return torch.equal(ia, ib) and rel(wa.gather(1, oa), wb.gather(1, ob)) < 1e-14


def check_gate():
    fails = []
    for E, ng, tg, k in ((8, 1, 1, 2), (8, 2, 1, 2), (16, 4, 2, 4), (32, 8, 3, 6), (16, 4, 4, 3)):
        for seed in range(3):
            ours, ds = gate_case(E, ng, tg, k, seed=seed)
            if not same_routing(ours, ds[float("-inf")]):
                fails.append(f"E {E} groups {ng}/{tg} top {k} seed {seed}: differs from Gate")
    # All biased scores negative: a 0.0 fill (HF) would pick experts of dropped groups.
    ours, ds = gate_case(16, 4, 1, 3, bias_shift=-2.0)
    if not same_routing(ours, ds[float("-inf")]):
        fails.append("negative biases: differs from DeepSeek's -inf masking")
    if same_routing(ours, ds[0.0]):
        fails.append("negative biases: the case does not separate -inf from 0.0 masking")
    # The bias only chooses: with the same choice, the weights do not depend on it.
    c = ref.v3_config(v3_cfg())
    gate = ref.Gate(c).double()
    x = torch.randn(32, 16, dtype=torch.float64, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        gate.weight.normal_(generator=torch.Generator().manual_seed(6))
        w0, i0, _ = gate(x)
        gate.e_score_correction_bias.fill_(0.37)  # a uniform shift changes no choice
        w1, i1, _ = gate(x)
    if not (torch.equal(i0, i1) and rel(w1, w0) == 0):
        fails.append("a uniform bias shift changed the routing or its weights")
    if rel(w0.sum(-1), torch.full((32,), 2.5, dtype=torch.float64)) > 1e-14:
        fails.append("normalized weights do not sum to routed_scaling_factor")
    return fails


def loss_fn(model, ids, G, pos=None, seg=None):
    return (model(ids, pos, seg) * G).sum()


def routing_of(model):
    r = model.routing() if hasattr(model, "routing") else {}
    return [v[0].sort(-1).values.clone() for v in r.values()]


def same_choice(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))


def check_gradients():
    fails = []
    eps = 1e-6
    for name, cfg in {**V3_CASES, **DENSE_CASES}.items():
        m = make(cfg, seed=3)
        g = torch.Generator().manual_seed(4)
        B, T = 2, 9
        ids = torch.randint(0, cfg["vocab_size"], (B, T), generator=g)
        seg = torch.tensor([[0] * 4 + [1] * 5, [0] * 9])
        G = torch.randn(B, T, cfg["vocab_size"], generator=g, dtype=torch.float64)
        m.zero_grad(set_to_none=True)
        loss_fn(m, ids, G, seg=seg).backward()
        route0 = routing_of(m)
        margins = [v[1].min().item() for v in m.routing().values()] if hasattr(m, "routing") else []
        worst = (0.0, "")
        state = m.state_dict(keep_vars=True)
        with torch.no_grad():
            for pname, t in state.items():
                d = torch.randn(t.shape, generator=g, dtype=torch.float64)
                an = (t.grad * d).sum().item() if t.grad is not None else 0.0
                t.add_(eps * d)
                lp = loss_fn(m, ids, G, seg=seg).item()
                moved = not same_choice(routing_of(m), route0)
                t.sub_(2 * eps * d)
                lm = loss_fn(m, ids, G, seg=seg).item()
                moved = moved or not same_choice(routing_of(m), route0)
                t.add_(eps * d)
                fd = (lp - lm) / (2 * eps)
                err = abs(fd - an) / max(1.0, abs(an))
                if moved:
                    fails.append(f"{name}: {pname}: the step moved the routing")
                if err > worst[0]:
                    worst = (err, f"{pname} (fd {fd:.6e}, autograd {an:.6e})")
                if err > 1e-6:
                    fails.append(f"{name}: {pname}: fd {fd:.8e} autograd {an:.8e}")
                if pname.endswith("e_score_correction_bias") and abs(fd) > 1e-9:
                    fails.append(f"{name}: the router bias changes the loss (fd {fd:.2e})")
        margin = f", routing margin {min(margins):.1e}" if margins else ""
        print(f"    {name}: {len(state)} tensors{margin}, worst {worst[0]:.1e} at {worst[1]}")
    return fails


def ds_transformer_logits(sd, c, tokens, attn_impl):
    """DeepSeek's Transformer.forward (inference/model.py) for all positions, its MLA in the
    "naive" or "absorb" branch, MoE and MLP as written there, on the HF-named weights `sd`
    (wq = q_proj, wq_a/q_norm/wq_b = q_a_proj/q_a_layernorm/q_b_proj, wkv_a = kv_a_proj_with_mqa,
    kv_norm = kv_a_layernorm, wkv_b = kv_b_proj, wo = o_proj, w1/w3/w2 = gate/up/down_proj)."""
    W = lambda n: sd[n]
    eps = c["rms_norm_eps"]
    rms = lambda x, w: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w
    mlp = lambda x, p: F.linear(F.silu(F.linear(x, W(p + "gate_proj.weight"))) *
                                F.linear(x, W(p + "up_proj.weight")), W(p + "down_proj.weight"))
    rs = c.get("rope_scaling") or {}
    seqlen = tokens.size(1)
    orig = rs.get("original_max_position_embeddings", 0)
    args = types.SimpleNamespace(  # max_seq_len past orig when yarn is on: the YaRN branch
        qk_rope_head_dim=c["qk_rope_head_dim"], qk_nope_head_dim=c["qk_nope_head_dim"],
        max_seq_len=max(seqlen, orig + 1) if rs else seqlen,
        original_seq_len=orig if rs else 1 << 30,
        beta_fast=rs.get("beta_fast", 32), beta_slow=rs.get("beta_slow", 1),
        rope_theta=c["rope_theta"], rope_factor=rs.get("factor", 1.0),
        mscale=rs.get("mscale_all_dim", 0.0))
    freqs_cis = ds_precompute_freqs_cis(args, torch.float64)[:seqlen]
    softmax_scale = ds_softmax_scale(args)
    nope, rope = c["qk_nope_head_dim"], c["qk_rope_head_dim"]
    vd, H = c["v_head_dim"], c["num_attention_heads"]
    mask = torch.full((seqlen, seqlen), float("-inf")).triu_(1)

    def mla(x, p):
        bsz, seqlen, _ = x.size()
        if not c["q_lora_rank"]:
            q = F.linear(x, W(p + "q_proj.weight"))
        else:
            q = F.linear(rms(F.linear(x, W(p + "q_a_proj.weight")), W(p + "q_a_layernorm.weight")),
                         W(p + "q_b_proj.weight"))
        q = q.view(bsz, seqlen, H, nope + rope)
        q_nope, q_pe = torch.split(q, [nope, rope], dim=-1)
        q_pe = ds_apply_rotary_emb(q_pe, freqs_cis)
        kv = F.linear(x, W(p + "kv_a_proj_with_mqa.weight"))
        kv, k_pe = torch.split(kv, [c["kv_lora_rank"], rope], dim=-1)
        k_pe = ds_apply_rotary_emb(k_pe.unsqueeze(2), freqs_cis)
        kv_norm = lambda t: rms(t, W(p + "kv_a_layernorm.weight"))
        wkv_b = W(p + "kv_b_proj.weight").view(H, -1, c["kv_lora_rank"])
        if attn_impl == "naive":
            q = torch.cat([q_nope, q_pe], dim=-1)
            kv = F.linear(kv_norm(kv), W(p + "kv_b_proj.weight"))
            kv = kv.view(bsz, seqlen, H, nope + vd)
            k_nope, v = torch.split(kv, [nope, vd], dim=-1)
            k = torch.cat([k_nope, k_pe.expand(-1, -1, H, -1)], dim=-1)
            scores = torch.einsum("bshd,bthd->bsht", q, k) * softmax_scale
        else:
            q_nope = torch.einsum("bshd,hdc->bshc", q_nope, wkv_b[:, :nope])
            kv_cache, pe_cache = kv_norm(kv), k_pe.squeeze(2)
            scores = (torch.einsum("bshc,btc->bsht", q_nope, kv_cache) +
                      torch.einsum("bshr,btr->bsht", q_pe, pe_cache)) * softmax_scale
        scores += mask.unsqueeze(1)
        scores = scores.softmax(dim=-1).type_as(x)
        if attn_impl == "naive":
            x = torch.einsum("bsht,bthd->bshd", scores, v)
        else:
            x = torch.einsum("bsht,btc->bshc", scores, kv_cache)
            x = torch.einsum("bshc,hdc->bshd", x, wkv_b[:, -vd:])
        return F.linear(x.flatten(2), W(p + "o_proj.weight"))

    def moe(x, p):
        shape = x.size()
        x = x.view(-1, c["hidden_size"])
        gargs = types.SimpleNamespace(
            dim=c["hidden_size"], n_activated_experts=c["num_experts_per_tok"],
            n_expert_groups=c["n_group"], n_limited_groups=c["topk_group"],
            score_func="sigmoid", route_scale=c["routed_scaling_factor"], fill=float("-inf"))
        gate = DsGate(gargs, W(p + "gate.weight"), W(p + "gate.e_score_correction_bias"))
        weights, indices = gate(x)
        y = torch.zeros_like(x)
        counts = torch.bincount(indices.flatten(), minlength=c["n_routed_experts"]).tolist()
        for i in range(c["n_routed_experts"]):
            if counts[i] == 0:
                continue
            idx, top = torch.where(indices == i)
            y[idx] += mlp(x[idx], f"{p}experts.{i}.") * weights[idx, top, None]
        z = mlp(x, p + "shared_experts.") if c["n_shared_experts"] else 0
        return (y + z).view(shape)

    h = F.embedding(tokens, W("model.embed_tokens.weight"))
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = h + mla(rms(h, W(p + "input_layernorm.weight")), p + "self_attn.")
        ffn = mlp if i < c["first_k_dense_replace"] else moe
        h = h + ffn(rms(h, W(p + "post_attention_layernorm.weight")), p + "mlp.")
    return F.linear(rms(h, W("model.norm.weight")), W("lm_head.weight"))


def hf_dense_logits(sd, c, ids):
    """HF LlamaModel/Qwen2Model's forward as transformers writes it: (b, h, s, d) layout,
    rotate_half RoPE with cos = cat(freqs, freqs), repeat_kv, additive causal mask."""
    W = lambda n: sd.get(n)
    rms = lambda x, w: w * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + c["rms_norm_eps"]))
    lin = lambda x, n: F.linear(x, W(n + ".weight"), W(n + ".bias"))
    H, KV = c["num_attention_heads"], c.get("num_key_value_heads") or c["num_attention_heads"]
    hd = c.get("head_dim") or c["hidden_size"] // H
    bsz, q_len = ids.shape
    inv_freq = 1.0 / (c["rope_theta"] ** (torch.arange(0, hd, 2, dtype=torch.int64).double() / hd))
    freqs = torch.outer(torch.arange(q_len).double(), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    cos, sin = emb.cos()[None, None], emb.sin()[None, None]
    causal = torch.full((q_len, q_len), float("-inf")).triu(1)

    def repeat_kv(x, n_rep):
        b, kvh, s, d = x.shape
        return x[:, :, None].expand(b, kvh, n_rep, s, d).reshape(b, kvh * n_rep, s, d)

    h = F.embedding(ids, W("model.embed_tokens.weight"))
    for i in range(c["num_hidden_layers"]):
        p = f"model.layers.{i}."
        x = rms(h, W(p + "input_layernorm.weight"))
        q = lin(x, p + "self_attn.q_proj").view(bsz, q_len, H, hd).transpose(1, 2)
        k = lin(x, p + "self_attn.k_proj").view(bsz, q_len, KV, hd).transpose(1, 2)
        v = lin(x, p + "self_attn.v_proj").view(bsz, q_len, KV, hd).transpose(1, 2)
        q, k = q * cos + hf_rotate_half(q) * sin, k * cos + hf_rotate_half(k) * sin
        k, v = repeat_kv(k, H // KV), repeat_kv(v, H // KV)
        a = torch.softmax(q @ k.transpose(2, 3) / math.sqrt(hd) + causal, dim=-1)
        o = (a @ v).transpose(1, 2).reshape(bsz, q_len, H * hd)
        h = h + lin(o, p + "self_attn.o_proj")
        x = rms(h, W(p + "post_attention_layernorm.weight"))
        h = h + lin(F.silu(lin(x, p + "mlp.gate_proj")) * lin(x, p + "mlp.up_proj"),
                    p + "mlp.down_proj")
    head = "model.embed_tokens.weight" if c.get("tie_word_embeddings") else "lm_head.weight"
    return F.linear(rms(h, W("model.norm.weight")), W(head))


def check_whole_model():
    fails = []
    for name, cfg in {**V3_CASES, **DENSE_CASES}.items():
        m = make(cfg, seed=8)
        sd = {k: v.detach() for k, v in m.state_dict().items()}
        ids = torch.randint(0, cfg["vocab_size"], (2, 13),
                            generator=torch.Generator().manual_seed(9))
        with torch.no_grad():
            ours = m(ids)
            if "n_routed_experts" not in cfg:
                refs = {"HF": hf_dense_logits(sd, cfg, ids)}
            elif not cfg["norm_topk_prob"]:  # DeepSeek's Gate always normalizes sigmoid weights
                continue
            else:
                refs = {f"DeepSeek {impl}": ds_transformer_logits(sd, cfg, ids, impl)
                        for impl in ("naive", "absorb")}
        for rname, r in refs.items():
            e = rel(ours, r)
            print(f"    {name} vs {rname}: {e:.1e}")
            if e > 1e-12:
                fails.append(f"{name}: logits vs {rname} transcription {e:.2e}")
    return fails


def check_causal_packing():
    fails = []
    for name, cfg in {**V3_CASES, **DENSE_CASES}.items():
        m = make(cfg, seed=11)
        g = torch.Generator().manual_seed(12)
        V = cfg["vocab_size"]
        a = torch.randint(0, V, (1, 5), generator=g)
        b = torch.randint(0, V, (1, 7), generator=g)
        with torch.no_grad():
            la, lb = m(a), m(b)
            packed = m(torch.cat([a, b], 1), segment_ids=torch.tensor([[3] * 5 + [7] * 7]))
            e = max(rel(packed[:, :5], la), rel(packed[:, 5:], lb))
            if e > 1e-12:
                fails.append(f"{name}: packed vs separate {e:.2e}")
            ab = torch.cat([a, b], 1)
            ab2 = ab.clone()
            ab2[:, 6:] = (ab2[:, 6:] + 1) % V
            l1, l2 = m(ab), m(ab2)
            # (not bitwise: an expert's GEMM sees a different number of rows)
            if rel(l1[:, :6], l2[:, :6]) > 1e-13 or rel(l1[:, 6:], l2[:, 6:]) < 1e-6:
                fails.append(f"{name}: not causal")
            # Explicit positions equal to the defaults give the same logits; shifted ones not.
            pos = ref.default_positions(1, 12)
            # (a uniform shift would change nothing: RoPE is relative)
            if not torch.equal(m(ab, pos), l1) or rel(m(ab, pos * 2), l1) < 1e-6:
                fails.append(f"{name}: position_ids ignored or misread")
    return fails


def write_bf16_file(path, name, bits):
    import json
    import struct
    hdr = json.dumps({name: {"dtype": "BF16", "shape": list(bits.shape),
                             "data_offsets": [0, bits.nbytes]}}).encode()
    hdr += b" " * ((8 - len(hdr) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hdr)) + hdr + bits.astype("<u2").tobytes())


def check_safetensors(tmp):
    fails = []
    for name, cfg in {**V3_CASES, **DENSE_CASES}.items():
        for dtype in (torch.float32, torch.float64):
            m = make(cfg, seed=13, dtype=dtype)
            p1, p2 = os.path.join(tmp, "a.safetensors"), os.path.join(tmp, "b.safetensors")
            ref.save_weights(m, p1)
            arrays, dtypes, meta = safetensors_np.read(p1)
            sd = m.state_dict()
            if set(arrays) != set(sd):
                fails.append(f"{name}: saved names differ: {set(arrays) ^ set(sd)}")
                continue
            for k, v in sd.items():
                if arrays[k].dtype != v.numpy().dtype or not np.array_equal(
                        arrays[k].view(np.uint8), v.numpy().view(np.uint8)):
                    fails.append(f"{name} {dtype}: {k} not bit-exact in the file")
            m2 = make(cfg, seed=99, dtype=dtype)
            ref.load_weights(m2, p1)
            for k, v in m2.state_dict().items():
                if not np.array_equal(v.numpy().view(np.uint8), sd[k].numpy().view(np.uint8)):
                    fails.append(f"{name} {dtype}: {k} not bit-exact after load")
            ref.save_weights(m2, p2)
            if open(p1, "rb").read() != open(p2, "rb").read():
                fails.append(f"{name} {dtype}: save -> load -> save changed the file")
    # Loader rules: MTP layers ignored, unknown or missing names are errors, bf16 widened.
    cfg = V3_CASES["v3 q_lora yarn groups2"]
    m = make(cfg, seed=14, dtype=torch.float32)
    sd = {k: v.numpy() for k, v in m.state_dict().items()}
    p = os.path.join(tmp, "c.safetensors")
    zeros = np.zeros((2, 2), np.float32)
    safetensors_np.write(p, {**sd, "model.layers.2.eh_proj.weight": zeros,  # MTP (2 layers)
                             "model.layers.0.self_attn.rotary_emb.inv_freq": zeros[0]})
    ref.load_weights(make(cfg, dtype=torch.float32), p)
    for bad, what in (({**sd, "model.extra.weight": np.zeros(1, np.float32)}, "unexpected"),
                      ({k: v for k, v in sd.items() if "o_proj" not in k}, "missing")):
        safetensors_np.write(p, bad)
        try:
            ref.load_weights(make(cfg, dtype=torch.float32), p)
            fails.append(f"a {what} tensor loaded without error")
        except ValueError:
            pass
    bits = np.random.default_rng(0).integers(0, 1 << 16, size=(3, 5), dtype=np.uint16)
    bits[(bits & 0x7F80) == 0x7F80] = 0x3F80  # no inf/nan
    write_bf16_file(p, "x", bits)
    a, dt, _ = safetensors_np.read(p)
    want = (bits.astype(np.uint32) << 16).view(np.float32)
    got = ref._to_float(a["x"], dt["x"])
    if not np.array_equal(got.view(np.uint32), want.view(np.uint32)):
        fails.append("bf16 widening")
    if got[0, 0] != float(torch.from_numpy(bits[:1, :1].astype(np.int16)).view(torch.bfloat16)
                          .float()[0, 0]):
        fails.append("bf16 widening disagrees with torch.bfloat16")
    return fails


def check_cli(tmp):
    fails = []
    import json
    for script, cfg in (("deepseek_v3.py", V3_CASES["v3 q_lora yarn groups2"]),
                        ("dense.py", DENSE_CASES["qwen2 tied gqa"])):
        cp, wp = os.path.join(tmp, "config.json"), os.path.join(tmp, "w.safetensors")
        ip = os.path.join(tmp, "ids.npy")
        o1, o2 = os.path.join(tmp, "o1.safetensors"), os.path.join(tmp, "o2.safetensors")
        with open(cp, "w") as f:
            json.dump(cfg, f)
        ids = np.random.default_rng(1).integers(0, cfg["vocab_size"], (2, 6)).astype(np.int32)
        np.save(ip, ids)
        exe = [sys.executable, os.path.join(HERE, script), "--config", cp]
        runs = [exe + ["--init", "21", "--init-noise", "0.1", "--save", wp, "--ids", ip,
                       "--out", o1, "--backward", "--g-seed", "5"],
                exe + ["--weights", wp, "--ids", ip, "--out", o2, "--backward", "--g-seed", "5"]]
        for r in runs:
            res = subprocess.run(r, capture_output=True, text=True)
            if res.returncode:
                fails.append(f"{script}: exit {res.returncode}: {res.stderr[-400:]}")
                return fails
        out1, _, _ = safetensors_np.read(o1)
        out2, _, _ = safetensors_np.read(o2)
        if set(out1) != set(out2) or any(not np.array_equal(out1[k], out2[k]) for k in out1):
            fails.append(f"{script}: --init and --weights runs differ")
        m = make(cfg, seed=21, dtype=torch.float32, noise=0.1)
        G = torch.from_numpy(out1["grad_logits"])
        m.zero_grad(set_to_none=True)
        logits = m(torch.from_numpy(ids).long())
        (logits * G).sum().backward()
        if rel(out1["logits"], logits.detach()) > 1e-6:
            fails.append(f"{script}: CLI logits differ from the in-process model")
        sd = m.state_dict(keep_vars=True)
        want = {f"grad.{k}" for k in sd}
        have = {k for k in out1 if k.startswith("grad.")}
        if want != have:
            fails.append(f"{script}: grad names {sorted(want ^ have)[:4]}")
        for k, t in sd.items():
            gk = t.grad if t.grad is not None else torch.zeros_like(t)
            if f"grad.{k}" in out1 and rel(out1[f"grad.{k}"], gk) > 1e-5:
                fails.append(f"{script}: grad.{k} differs")
        if script == "deepseek_v3.py":
            rk = "routing.model.layers.1.mlp"
            if rk not in out1 or out1[rk].shape != (2, 6, 2) or \
                    out1["routing_margin.model.layers.1.mlp"].shape != (2, 6):
                fails.append("routing outputs missing or misshapen")
    return fails


def main():
    threads = int(sys.argv[sys.argv.index("--threads") + 1]) if "--threads" in sys.argv else 1
    torch.set_num_threads(threads)
    failed = 0
    with tempfile.TemporaryDirectory() as tmp:
        checks = [("yarn frequencies and softmax scale vs DeepSeek", check_yarn),
                  ("rope layouts vs DeepSeek and HF", check_rope_layout),
                  ("gate vs DeepSeek Gate.forward", check_gate),
                  ("gradients vs finite differences (float64)", check_gradients),
                  ("whole model vs DeepSeek (naive, absorb) / HF", check_whole_model),
                  ("causality and packed segments", check_causal_packing),
                  ("safetensors round trip", lambda: check_safetensors(tmp)),
                  ("command line", lambda: check_cli(tmp))]
        for name, fn in checks:
            try:
                fails = fn()
            except Exception:
                fails = [traceback.format_exc()]
            print(f"{'PASS' if not fails else 'FAIL'} {name}")
            for f in fails[:20]:
                print(f"    {f}")
            failed += bool(fails)
    print("selftest:", "all passed" if not failed else f"{failed} check(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
