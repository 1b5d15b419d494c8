#!/usr/bin/python3
"""PyTorch eager twin of bench/bench_model_step.cc: one training step (forward,
cross-entropy, backward, AdamW) of a configs/ preset with the reference models of
scripts/reference, at a given thread count.

Prints one JSON line: {"impl": "torch", "threads", "step_ms", "tokens_per_s", ...}.
Usage: /usr/bin/python3 scripts/bench_model_step_torch.py --threads N [--config C]
                                                          [--batch 8] [--seq 64]
"""
import argparse
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "reference"))
import deepseek_v3  # noqa: E402
import dense  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--config", default=os.path.join(os.path.dirname(__file__), "..",
                                                     "configs", "tiny.json"))
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=2.0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    cfg = deepseek_v3.read_json(a.config)
    mod = deepseek_v3 if cfg.get("model_type", "").startswith("deepseek") else dense
    model = mod.build(cfg)
    deepseek_v3.init_weights(model, 1)  # HF-style, for either family (state_dict based)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    g = torch.Generator().manual_seed(2)
    V = cfg["vocab_size"]
    ids = torch.randint(0, V, (a.batch, a.seq), generator=g)
    targets = torch.randint(0, V, (a.batch * a.seq,), generator=g)

    def step():
        logits = model(ids)
        loss = F.cross_entropy(logits.reshape(-1, V), targets)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    step()  # warm-up
    n, t0 = 0, time.perf_counter()
    while True:
        loss = step()
        n += 1
        if time.perf_counter() - t0 >= a.seconds and n >= 3:
            break
    ms = (time.perf_counter() - t0) / n * 1e3
    print(json.dumps(dict(impl="torch", threads=a.threads, step_ms=ms,
                          tokens_per_s=a.batch * a.seq / ms * 1e3, loss=loss,
                          config=os.path.basename(a.config))))


if __name__ == "__main__":
    main()
