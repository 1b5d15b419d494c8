"""PyTorch (CPU, float64) reference of the fused GRPO loss for tests/test_grpo_objective.cc.

usage: grpo_ref.py SPEC.json IN.safetensors OUT.safetensors

Unfused, the way a PyTorch trainer computes it: full logits h @ w^T / temperature ->
log_softmax -> gather at the sampled tokens -> the flat (T) logps laid out as TRL's padded
(B, L) completions (sequence s holds its tokens in token order; the rest is padding with
mask 0) -> the loss of TRL's GRPOTrainer._compute_loss -> autograd for dh and dw.

SPEC: {"cases": [{"name", "S", "temperature", "epsilon_low", "epsilon_high", "beta",
"loss_type" ("grpo", "bnpo", "dr_grpo", "dapo"), "level" ("token", "sequence"),
"max_completion_length"}]}. IN holds, per case, "<case>/h" (T, D), "<case>/w" (V, D),
"<case>/tokens" (T) int, "<case>/old" (T), "<case>/ref" (T, when beta > 0), "<case>/adv" (S),
"<case>/seq" (T) int, "<case>/mask" (T) float or u8. Inputs of any float dtype are widened to
float64: the reference carries no rounding of its own. OUT gets "<case>/loss" (),
"<case>/logp" (T), "<case>/dh", "<case>/dw" and "<case>/metrics" (4): kl mean, low clip,
high clip and ratio mean over the mask = 1 tokens (r1 weighs them by token at both levels;
TRL averages over sequences at the sequence level). A failing case gets its error as OUT
metadata "error/<case>". Exit code 3: torch or numpy cannot be imported.
"""
import json
import os
import sys
import traceback

try:
    import numpy as np
    import torch
except ImportError as e:  # the C++ test turns this into "run scripts/setup.sh"
    print(f"cannot import torch/numpy ({e}) with {sys.executable}", file=sys.stderr)
    sys.exit(3)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_np  # noqa: E402


def padded_layout(seq, S):
    """(B, L) gather indices into the flat tokens and the validity of each slot."""
    rows = [np.nonzero(seq == s)[0] for s in range(S)]
    L = max(1, max(len(r) for r in rows))
    idx = np.zeros((S, L), dtype=np.int64)
    valid = np.zeros((S, L), dtype=np.float64)
    for s, r in enumerate(rows):
        idx[s, : len(r)] = r
        valid[s, : len(r)] = 1.0
    return torch.from_numpy(idx), torch.from_numpy(valid)


def trl_loss(per_token_logps, old_per_token_logps, ref_per_token_logps, advantages,
             completion_mask, c):
    """TRL GRPOTrainer._compute_loss on (B, L) tensors (no delta, no entropy mask)."""
    eps_low, eps_high, beta = c["epsilon_low"], c["epsilon_high"], c["beta"]
    if beta != 0.0:
        d = ref_per_token_logps - per_token_logps
        per_token_kl = torch.exp(d) - d - 1
    log_ratio = per_token_logps - old_per_token_logps
    if c["level"] == "token":
        log_importance_weights = log_ratio
    else:
        log_importance_weights = ((log_ratio * completion_mask).sum(-1)
                                  / completion_mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    coef_1 = torch.exp(log_importance_weights)
    coef_2 = torch.clamp(coef_1, 1 - eps_low, 1 + eps_high)
    per_token_loss1 = coef_1 * advantages.unsqueeze(1)
    per_token_loss2 = coef_2 * advantages.unsqueeze(1)
    per_token_loss = -torch.min(per_token_loss1, per_token_loss2)
    if beta != 0.0:
        per_token_loss = per_token_loss + beta * per_token_kl
    if c["loss_type"] == "grpo":
        loss = ((per_token_loss * completion_mask).sum(-1)
                / completion_mask.sum(-1).clamp(min=1.0)).mean()
    elif c["loss_type"] == "bnpo":
        loss = (per_token_loss * completion_mask).sum() / completion_mask.sum().clamp(min=1.0)
    elif c["loss_type"] == "dr_grpo":
        loss = ((per_token_loss * completion_mask).sum()
                / (per_token_loss.size(0) * c["max_completion_length"]))
    elif c["loss_type"] == "dapo":  # num_items_in_batch: this batch's tokens, one process
        loss = (per_token_loss * completion_mask).sum() / completion_mask.sum().clamp(min=1.0)
    else:
        raise ValueError(f"unknown loss_type {c['loss_type']}")

    # Metrics, token-weighted over the mask = 1 tokens at both levels.
    count = completion_mask.sum().clamp(min=1.0)

    def masked_mean(x):
        return (x.expand_as(completion_mask) * completion_mask).sum() / count

    with torch.no_grad():
        kl = masked_mean(per_token_kl) if beta != 0.0 else torch.zeros((), dtype=loss.dtype)
        low = masked_mean(((coef_1 < 1 - eps_low) & (advantages.unsqueeze(1) < 0)).double())
        high = masked_mean(((coef_1 > 1 + eps_high) & (advantages.unsqueeze(1) > 0)).double())
        ratio = masked_mean(coef_1)
    return loss, torch.stack([kl, low, high, ratio])


def run_case(c, arrays):
    name = c["name"]

    def get(key):
        return torch.from_numpy(np.asarray(arrays[f"{name}/{key}"]))

    h = get("h").double().requires_grad_()
    w = get("w").double().requires_grad_()
    tokens = get("tokens").long()
    seq = arrays[f"{name}/seq"].astype(np.int64)
    S = c["S"]
    logits = (h @ w.T) / c["temperature"]
    logp = torch.log_softmax(logits, dim=-1).gather(1, tokens[:, None])[:, 0]  # (T)
    idx, valid = padded_layout(seq, S)
    completion_mask = get("mask").double()[idx] * valid
    ref = get("ref").double()[idx] if c["beta"] != 0.0 else None
    loss, metrics = trl_loss(logp[idx], get("old").double()[idx], ref, get("adv").double(),
                             completion_mask, c)
    loss.backward()
    return {f"{name}/loss": loss.detach().numpy(), f"{name}/logp": logp.detach().numpy(),
            f"{name}/dh": h.grad.numpy(), f"{name}/dw": w.grad.numpy(),
            f"{name}/metrics": metrics.numpy()}


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    arrays, _, _ = safetensors_np.read(sys.argv[2])
    out, errors = {}, {}
    for c in spec["cases"]:
        try:
            out.update(run_case(c, arrays))
        except Exception:  # noqa: BLE001  (reported per case to the C++ side)
            errors[f"error/{c['name']}"] = traceback.format_exc()
    safetensors_np.write(sys.argv[3], out, errors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
