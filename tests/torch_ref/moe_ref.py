"""PyTorch reference of the DeepSeek-V3 router for tests/test_moe_route.cc.

usage: moe_ref.py SPEC.json IN.safetensors OUT.safetensors

SPEC: {"cases": [{"name", "n_group", "topk_group", "top_k", "norm_topk_prob",
"routed_scaling_factor"}]}. IN holds "<case>/logits" (N, E) float32 and "<case>/bias" (E)
float32. OUT gets "<case>/indices" (N, top_k) i64, "<case>/weights" (N, top_k) f32,
"<case>/load" (E) i64, and "<case>/hf_indices": the experts HF transformers' 0.0 fill of the
dropped groups would choose (the test asserts that its masking case tells them apart).
Exit code 3: torch or numpy cannot be imported.
"""
import json
import os
import sys

try:
    import numpy  # noqa: F401  (safetensors_np needs it)
    import torch
except ImportError as e:  # the C++ test turns this into a skip naming the interpreter
    print(f"cannot import torch/numpy ({e}) with {sys.executable}", file=sys.stderr)
    sys.exit(3)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_np  # noqa: E402


def gate_forward(scores_logits, bias, n_groups, topk_groups, topk, norm, route_scale,
                 fill=float("-inf")):
    """deepseek-ai/DeepSeek-V3 inference/model.py Gate.forward, score_func "sigmoid", from
    the gate's logits (its `linear(x, self.weight)`). One deliberate difference: the sigmoid
    is formed in float64 and rounded to float32 (the r1 kernel contract, engine/kernels_moe.h),
    so that two float32 exp implementations cannot decide a near-tie differently. `fill` is
    DeepSeek's -inf; 0.0 gives HF transformers' variant."""
    x = scores_logits
    scores = (1.0 / (1.0 + torch.exp(-x.double()))).float()
    original_scores = scores
    scores = scores + bias
    if n_groups > 1:
        scores = scores.view(x.size(0), n_groups, -1)
        group_scores = scores.topk(2, dim=-1)[0].sum(dim=-1)
        indices = group_scores.topk(topk_groups, dim=-1)[1]
        mask = scores.new_ones(x.size(0), n_groups, dtype=torch.bool).scatter_(1, indices, False)
        scores = scores.masked_fill_(mask.unsqueeze(-1), fill).flatten(1)
    indices = torch.topk(scores, topk, dim=-1)[1]
    weights = original_scores.gather(1, indices)
    if norm:  # DeepSeek-V3 always normalizes sigmoid scores; norm_topk_prob = false skips it
        weights /= weights.sum(dim=-1, keepdim=True)
    weights *= route_scale
    return weights, indices


def main():
    spec_path, in_path, out_path = sys.argv[1:4]
    torch.set_num_threads(1)
    with open(spec_path) as f:
        spec = json.load(f)
    arrays, _, _ = safetensors_np.read(in_path)
    out = {}
    for c in spec["cases"]:
        name = c["name"]
        logits = torch.from_numpy(arrays[f"{name}/logits"].copy())
        bias = torch.from_numpy(arrays[f"{name}/bias"].copy())
        args = (c["n_group"], c["topk_group"], c["top_k"], c["norm_topk_prob"],
                c["routed_scaling_factor"])
        weights, indices = gate_forward(logits, bias, *args)
        _, hf_indices = gate_forward(logits, bias, *args, fill=0.0)
        load = torch.bincount(indices.flatten(), minlength=logits.size(1))
        out[f"{name}/indices"] = indices.numpy()
        out[f"{name}/weights"] = weights.numpy()
        out[f"{name}/load"] = load.numpy()
        out[f"{name}/hf_indices"] = hf_indices.numpy()
    safetensors_np.write(out_path, out)


if __name__ == "__main__":
    main()
