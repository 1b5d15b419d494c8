#!/usr/bin/python3
"""PyTorch eager twin of bench/bench_train_step.cc: the same stack, sizes, init and AdamW.

Prints one JSON line: {"impl": "torch", "threads", "step_ms", "tokens_per_s", sizes...}.
Usage: /usr/bin/python3 scripts/bench_train_step_torch.py --threads N [--dim 256 ...]
"""
import argparse
import json
import time

import torch
import torch.nn.functional as F

NORM_EPS = 1e-6
INIT_STD = 0.02


def rmsnorm(x, w):
    # x (..., D), w (D): torch 1.13 has no F.rms_norm.
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + NORM_EPS) * w


def make_params(a):
    def p(*shape):
        return (torch.randn(*shape) * INIT_STD).requires_grad_()

    def ones(d):
        return torch.ones(d).requires_grad_()

    layers = [dict(norm1=ones(a.dim), w_qkv=p(3 * a.dim, a.dim), w_o=p(a.dim, 3 * a.dim),
                   norm2=ones(a.dim), w_gate=p(a.hidden, a.dim), w_up=p(a.hidden, a.dim),
                   w_down=p(a.dim, a.hidden)) for _ in range(a.layers)]
    return dict(embed=p(a.vocab, a.dim), final_norm=ones(a.dim), lm_head=p(a.vocab, a.dim),
                layers=layers)


def forward(m, ids, targets):
    # ids, targets (B, T) int64 -> scalar loss
    x = F.embedding(ids, m["embed"])
    for l in m["layers"]:
        x = x + F.linear(F.linear(rmsnorm(x, l["norm1"]), l["w_qkv"]), l["w_o"])
        h = rmsnorm(x, l["norm2"])
        x = x + F.linear(F.silu(F.linear(h, l["w_gate"])) * F.linear(h, l["w_up"]), l["w_down"])
    logits = F.linear(rmsnorm(x, m["final_norm"]), m["lm_head"])
    return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.view(-1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, required=True)
    for name, default in [("dim", 256), ("hidden", 768), ("vocab", 2048), ("layers", 4),
                          ("batch", 8), ("seq", 128), ("steps", 20), ("warmup", 3)]:
        ap.add_argument("--" + name, type=int, default=default)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    m = make_params(a)
    params = [m["embed"], m["final_norm"], m["lm_head"]] + [t for l in m["layers"]
                                                              for t in l.values()]
    # Same hyperparameters as r1::AdamWConfig's defaults.
    opt = torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
    ids = torch.randint(0, a.vocab, (a.batch, a.seq))
    targets = torch.randint(0, a.vocab, (a.batch, a.seq))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = forward(m, ids, targets)
        loss.backward()
        opt.step()
        return loss.item()

    for _ in range(a.warmup):
        step()
    times = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        loss = step()
        times.append(time.perf_counter() - t0)
    step_s = sum(times) / len(times)
    print(json.dumps(dict(impl="torch", torch=torch.__version__, threads=a.threads,
                          step_ms=step_s * 1e3, tokens_per_s=a.batch * a.seq / step_s,
                          loss=loss, dim=a.dim, hidden=a.hidden, vocab=a.vocab,
                          layers=a.layers, batch=a.batch, seq=a.seq, steps=a.steps)))


if __name__ == "__main__":
    main()
