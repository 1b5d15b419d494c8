#!/usr/bin/python3
"""PyTorch eager twin of bench/bench_rl.cc: the two halves of a GRPO step on a configs/
preset with the reference model (scripts/reference/deepseek_v3.py), randomly initialized,
at a given thread count.

  sampling: Q=16 prompts of 40 random tokens, G=8 samples each, exactly 64 new tokens per
    sample, torch.multinomial on softmax(logits / T), T = 1. The reference has no KV cache,
    so the cached decode is written here on top of its modules, in MLA's expanded form: per
    layer the keys [k_nope, k_pe] (B, H, L, nope + rope) and values (B, H, L, v) of every
    position so far; prefill the Q prompts once, repeat each prompt's cache G times (the
    fork), then decode one token per sample per step. Before timing, the cached logits are
    checked against the full forward (model(ids)) of the sampled sequences.
  training: one GRPO update on 128 sequences of 40 prompt + 64 completion tokens: the
    padded-batch forward (B, 103), the LM head on the 64 rows per sequence that predict the
    completion tokens (TRL's logits_to_keep), log_softmax + gather, the clipped GRPO loss
    (loss_type grpo: per-sequence token mean, then the mean over sequences; random
    advantages, old_logp = logp.detach()), backward, torch.optim.AdamW step.

Prints one JSON line: {"impl": "torch", "threads", "sampling": {...}, "training": {...}}.
Usage: /usr/bin/python3 scripts/bench_rl_torch.py --threads N [--config C] [--seconds 3]
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))
import deepseek_v3 as ref  # noqa: E402

# The fixed work (bench/bench_rl.cc has the same numbers).
QUESTIONS, SAMPLES_PER_QUESTION, PROMPT_LEN, NEW_TOKENS = 16, 8, 40, 64
TEMPERATURE = 1.0
# GrpoConfig's defaults: the trainer's AdamW and clip range.
LEARNING_RATE, ADAM_BETA2, EPSILON = 1e-3, 0.99, 0.2
CACHE_TOLERANCE = 1e-5  # max |cached logit - full-forward logit|


# ---- cached decoding (expanded MLA) ---------------------------------------------------------
# x (B, T, D) at positions start..start+T-1, cos/sin (B, T, 1, rope/2), k_cache
# (B, H, L, nope + rope), v_cache (B, H, L, v) -> (B, T, D); writes rows start..start+T-1.
# Head-major cache: each (b, h) slice of keys 0..end is a contiguous matrix, so the products
# read views, with no copy of the cache per step (the reference's attention() einsum over
# (B, S, H, D) copies it every step). A decode step (T = 1) uses broadcast multiply + sum:
# measured 1.7-2x faster than matmul's bmm of 512 (1 x 24) @ (24 x 72) products here.
def mla_cached(attn, x, cos, sin, k_cache, v_cache, start):
    B, T, _ = x.shape
    H, nope = attn.H, attn.nope
    q_nope, q_pe = attn.q(x).view(B, T, H, -1).split([nope, attn.rope], -1)
    c, k_pe = attn.kv_a_proj_with_mqa(x).split([attn.kv_lora_rank, attn.rope], -1)
    kv = attn.kv_b_proj(attn.kv_a_layernorm(c)).view(B, T, H, nope + attn.vdim)
    k_nope, v = kv.split([nope, attn.vdim], -1)
    q_pe = ref.rope_interleaved(q_pe, cos, sin)
    k_pe = ref.rope_interleaved(k_pe.view(B, T, 1, attn.rope), cos, sin)
    end = start + T
    k_cache[:, :, start:end, :nope] = k_nope.transpose(1, 2)
    k_cache[:, :, start:end, nope:] = k_pe.transpose(1, 2)  # one RoPE key for every head
    v_cache[:, :, start:end] = v.transpose(1, 2)
    q = torch.cat([q_nope, q_pe], -1).transpose(1, 2)  # (B, H, T, nope + rope)
    k, v = k_cache[:, :, :end], v_cache[:, :, :end]
    if T == 1:
        p = torch.softmax((q * k).sum(-1) * attn.softmax_scale, -1)  # (B, H, end)
        o = (p[..., None] * v).sum(-2, keepdim=True)  # (B, H, 1, v)
    else:  # query start + t sees keys 0..start + t
        s = torch.matmul(q, k.transpose(-1, -2)) * attn.softmax_scale
        s = s.masked_fill(~torch.ones(T, end, dtype=torch.bool).tril(start), float("-inf"))
        o = torch.matmul(torch.softmax(s, -1), v)  # (B, H, T, v)
    return attn.o_proj(o.transpose(1, 2).reshape(B, T, H * attn.vdim))


# ids (B, T) at positions start..start+T-1 -> hidden (B, T, D) after the final norm.
def forward_cached(model, ids, start, caches):
    B, T = ids.shape
    pos = torch.arange(start, start + T)[None].expand(B, T)
    cos, sin = ref.rope_cos_sin(pos, model.inv_freq, model.model.embed_tokens.weight.dtype)
    h = model.model.embed_tokens(ids)
    for layer, (kc, vc) in zip(model.model.layers, caches):
        h = h + mla_cached(layer.self_attn, layer.input_layernorm(h), cos, sin, kc, vc, start)
        h = h + layer.mlp(layer.post_attention_layernorm(h))
    return model.model.norm(h)


# prompts (Q, P) -> tokens (Q*G, new), logprobs (Q*G, new), and the logits of every step
# (Q*G, new, V) when keep_logits. Samples are prompt-major, as rl::generate's.
def generate(model, prompts, G, new, gen, keep_logits=False):
    c = model.config
    Q, P = prompts.shape
    L, H = P + new, c.num_attention_heads
    qk = c.qk_nope_head_dim + c.qk_rope_head_dim
    caches = [(torch.zeros(Q, H, L, qk), torch.zeros(Q, H, L, c.v_head_dim))
              for _ in model.model.layers]
    w = model.lm_weight()
    with torch.inference_mode():
        h = forward_cached(model, prompts, 0, caches)[:, -1].repeat_interleave(G, 0)
        caches = [(k.repeat_interleave(G, 0), v.repeat_interleave(G, 0)) for k, v in caches]
        toks, lps, kept = [], [], []
        for step in range(new):
            logits = F.linear(h, w) / TEMPERATURE  # (Q*G, V)
            tok = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)  # (Q*G, 1)
            lps.append(torch.log_softmax(logits, -1).gather(1, tok))
            toks.append(tok)
            if keep_logits:
                kept.append(logits)
            if step + 1 < new:  # the last token is sampled, never fed
                h = forward_cached(model, tok, P + step, caches)[:, -1]
    out = torch.cat(toks, 1), torch.cat(lps, 1)
    return out + (torch.stack(kept, 1),) if keep_logits else out


def check_cache(model, prompts, gen):
    """Max |cached logit - full-forward logit| over every sampled position of 2 prompts x 2
    samples; the full forward sees prompt + completion at once (no cache)."""
    tok, _, logits = generate(model, prompts[:2], 2, NEW_TOKENS, gen, keep_logits=True)
    full_ids = torch.cat([prompts[:2].repeat_interleave(2, 0), tok], 1)
    with torch.no_grad():
        full = model(full_ids[:, :-1])[:, PROMPT_LEN - 1:]  # the rows that predict tok
    return (full / TEMPERATURE - logits).abs().max().item()


# ---- the GRPO update ------------------------------------------------------------------------
# ids (B, T) -> hidden (B, T, D) after the final norm: CausalLM.forward without the LM head.
def hidden_states(model, ids):
    B, T = ids.shape
    cos, sin = ref.rope_cos_sin(ref.default_positions(B, T), model.inv_freq,
                                model.model.embed_tokens.weight.dtype)
    mask = ref.attention_mask(B, T)
    h = model.model.embed_tokens(ids)
    for layer in model.model.layers:
        h = layer(h, cos, sin, mask)
    return model.model.norm(h)


def grpo_update(model, opt, ids, completions, advantages):
    """ids (B, P + C - 1), completions (B, C), advantages (B,) -> loss (a float)."""
    h = hidden_states(model, ids)[:, PROMPT_LEN - 1:]  # (B, C, D): rows predicting completions
    logits = F.linear(h, model.lm_weight()) / TEMPERATURE
    logp = torch.log_softmax(logits, -1).gather(-1, completions[..., None]).squeeze(-1)
    ratio = torch.exp(logp - logp.detach())  # old_logp = logp.detach()
    a = advantages[:, None]
    per_token = -torch.min(ratio * a, torch.clamp(ratio, 1 - EPSILON, 1 + EPSILON) * a)
    loss = per_token.mean(-1).mean()  # every token counts (mask of ones): grpo aggregation
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return loss.item()


def timed(fn, seconds):
    """(wall seconds, CPU seconds) per call of fn and the calls timed, after one warm-up call:
    at least `seconds` and 3 calls. The CPU time (the process's) is what a shared machine's
    other jobs disturb least."""
    fn()
    n, t0, c0 = 0, time.perf_counter(), time.process_time()
    while True:
        fn()
        n += 1
        if time.perf_counter() - t0 >= seconds and n >= 3:
            return (time.perf_counter() - t0) / n, (time.process_time() - c0) / n, n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "..",
                                                     "configs", "tiny.json"))
    ap.add_argument("--seconds", type=float, default=3.0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = ref.read_json(a.config)
    model = ref.build(cfg)
    ref.init_weights(model, 1)
    V = cfg["vocab_size"]
    g = torch.Generator().manual_seed(2)
    prompts = torch.randint(0, V, (QUESTIONS, PROMPT_LEN), generator=g)
    completions = torch.randint(0, V, (QUESTIONS * SAMPLES_PER_QUESTION, NEW_TOKENS), generator=g)
    advantages = torch.randn(QUESTIONS * SAMPLES_PER_QUESTION, generator=g)

    err = check_cache(model, prompts, torch.Generator().manual_seed(3))
    if not err <= CACHE_TOLERANCE:
        sys.exit(f"cached decode differs from the full forward: max |dlogit| {err:.3g}")
    sample_gen = torch.Generator().manual_seed(5)
    sample_s, sample_cpu, sample_n = timed(
        lambda: generate(model, prompts, SAMPLES_PER_QUESTION, NEW_TOKENS, sample_gen), a.seconds)
    generated = QUESTIONS * SAMPLES_PER_QUESTION * NEW_TOKENS

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=LEARNING_RATE, betas=(0.9, ADAM_BETA2), weight_decay=0.0)
    ids = torch.cat([prompts.repeat_interleave(SAMPLES_PER_QUESTION, 0), completions], 1)[:, :-1]
    loss = []
    train_s, train_cpu, train_n = timed(
        lambda: loss.append(grpo_update(model, opt, ids, completions, advantages)), a.seconds)
    print(json.dumps(dict(
        impl="torch", torch=torch.__version__, threads=a.threads,
        config=os.path.basename(a.config),
        sampling=dict(ms=sample_s * 1e3, cpu_ms=sample_cpu * 1e3,
                      generated_tokens_per_s=generated / sample_s, iterations=sample_n,
                      cache_max_abs_logit_diff=err),
        training=dict(ms=train_s * 1e3, cpu_ms=train_cpu * 1e3,
                      trained_tokens_per_s=completions.numel() / train_s,
                      total_tokens_per_s=ids.numel() / train_s, iterations=train_n,
                      loss=loss[-1]))))


if __name__ == "__main__":
    main()
