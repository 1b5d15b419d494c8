"""PyTorch (CPU, float32) reference for tests/test_torch_parity.cc.

usage: ops_ref.py SPEC.json IN.safetensors OUT.safetensors

SPEC: {"cases": [{"name", "op", "params": {...}, "n_in", "n_out"}]}. IN holds, per case,
"<case>/in/<k>" (float32 or int) and "<case>/gout/<j>". For each case this computes the
op's outputs and the gradients of sum_j sum(out_j * gout_j) with respect to the float
inputs, and writes "<case>/out/<j>" and "<case>/grad/<k>". A case that fails here gets its
error as OUT metadata "error/<case>" instead, so one bad case does not hide the others.
Exit code 3: torch or numpy cannot be imported.
"""
import json
import math
import os
import sys
import traceback

try:
    import numpy  # noqa: F401  (safetensors_np needs it)
    import torch
    import torch.nn.functional as F
except ImportError as e:  # the C++ test turns this into "run scripts/setup.sh"
    print(f"cannot import torch/numpy ({e}) with {sys.executable}", file=sys.stderr)
    sys.exit(3)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_np  # noqa: E402


# ---- RoPE with YaRN, after deepseek-ai/DeepSeek-V3 inference/model.py ------------------
# precompute_freqs_cis / apply_rotary_emb, with two deliberate differences: the table is
# computed in float64 (the reference should carry no rounding of its own), and YaRN applies
# whenever the config has factor != 1, not only when max_seq_len > original_seq_len
# (DESIGN.md: "YaRN on for every position whenever the config has it"). As in DeepSeek,
# cos/sin are not multiplied by any mscale: that factor goes into the softmax scale.
def find_correction_dim(num_rotations, dim, base, max_seq_len):
    return dim * math.log(max_seq_len / (num_rotations * 2 * math.pi)) / (2 * math.log(base))


def find_correction_range(low_rot, high_rot, dim, base, max_seq_len):
    low = math.floor(find_correction_dim(low_rot, dim, base, max_seq_len))
    high = math.ceil(find_correction_dim(high_rot, dim, base, max_seq_len))
    return max(low, 0), min(high, dim - 1)


def linear_ramp_factor(lo, hi, n):
    if lo == hi:
        hi += 0.001
    return torch.clamp((torch.arange(n, dtype=torch.float64) - lo) / (hi - lo), 0, 1)


def rope_freqs(p):
    dim, base, factor = p["dim"], p["theta"], p["yarn_factor"]
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    if factor != 1.0:
        low, high = find_correction_range(p["beta_fast"], p["beta_slow"], dim, base,
                                          p["original_max_position_embeddings"])
        smooth = 1 - linear_ramp_factor(low, high, dim // 2)
        freqs = freqs / factor * (1 - smooth) + freqs * smooth
    return freqs  # (dim/2,)


def rope(x, positions, p):
    # x (B, T, H, D), positions (B, T) or (T) -> (B, T, H, D)
    angles = positions.to(torch.float64)[..., None] * rope_freqs(p)  # (.., T, D/2)
    if angles.dim() == 2:
        angles = angles[None]
    angles = angles[:, :, None, :]  # (B or 1, T, 1, D/2)
    if p["interleaved"]:  # DeepSeek: complex pairs (2i, 2i+1)
        freqs_cis = torch.polar(torch.ones_like(angles), angles).to(torch.complex64)
        xc = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(xc * freqs_cis).flatten(3)
    cos, sin = angles.cos().float(), angles.sin().float()  # Llama/Qwen: halves
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)


def rmsnorm(x, w, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def reduce(fn, x, p):
    return fn(x) if p.get("dim") is None else fn(x, p["dim"], keepdim=p["keepdim"])


def matmul(a, b, p):
    if p["trans_a"]:
        a = a.transpose(-1, -2)
    if p["trans_b"]:
        b = b.transpose(-1, -2)
    return torch.matmul(a, b)


OPS = {
    "matmul": lambda x, p: [matmul(x[0], x[1], p)],
    "linear": lambda x, p: [F.linear(x[0], x[1], x[2] if len(x) > 2 else None)],
    "add": lambda x, p: [x[0] + x[1]],
    "sub": lambda x, p: [x[0] - x[1]],
    "mul": lambda x, p: [x[0] * x[1]],
    "div": lambda x, p: [x[0] / x[1]],
    "scale": lambda x, p: [x[0] * p["s"]],
    "add_scalar": lambda x, p: [x[0] + p["s"]],
    "sum": lambda x, p: [reduce(torch.sum, x[0], p)],
    "mean": lambda x, p: [reduce(torch.mean, x[0], p)],
    "max": lambda x, p: [torch.max(x[0], p["dim"], keepdim=p["keepdim"]).values],
    "concat": lambda x, p: [torch.cat(x, p["dim"])],
    "split": lambda x, p: list(torch.split(x[0], p["sizes"], p["dim"])),
    "gather": lambda x, p: [torch.gather(x[0], p["dim"], x[1].long())],
    "index_select": lambda x, p: [torch.index_select(x[0], p["dim"], x[1].long())],
    "embedding": lambda x, p: [F.embedding(x[0].long(), x[1])],
    "rmsnorm": lambda x, p: [rmsnorm(x[0], x[1], p["eps"])],
    "swiglu": lambda x, p: [F.silu(x[0]) * x[1]],
    "softmax": lambda x, p: [torch.softmax(x[0], -1)],
    "log_softmax": lambda x, p: [torch.log_softmax(x[0], -1)],
    "cross_entropy": lambda x, p: [F.cross_entropy(x[0], x[1].long(),
                                                   ignore_index=p["ignore_index"])],
    "rope": lambda x, p: [rope(x[0], x[1], p)],
}


def run_case(case, arrays):
    name, p = case["name"], case["params"]
    ins = [torch.from_numpy(arrays[f"{name}/in/{k}"]) for k in range(case["n_in"])]
    for t in ins:
        if t.is_floating_point():
            t.requires_grad_(True)
    outs = OPS[case["op"]](ins, p)
    if len(outs) != case["n_out"]:
        raise ValueError(f"torch gives {len(outs)} outputs, r1 {case['n_out']}")
    gouts = [torch.from_numpy(arrays[f"{name}/gout/{j}"]) for j in range(len(outs))]
    loss = sum((o * g).sum() for o, g in zip(outs, gouts))
    floats = [t for t in ins if t.is_floating_point()]
    grads = torch.autograd.grad(loss, floats, allow_unused=True)
    result = {f"{name}/out/{j}": o.detach().numpy() for j, o in enumerate(outs)}
    gi = iter(grads)
    for k, t in enumerate(ins):
        if t.is_floating_point():
            g = next(gi)
            g = torch.zeros_like(t) if g is None else g
            result[f"{name}/grad/{k}"] = g.numpy()
    return result


def main():
    spec_path, in_path, out_path = sys.argv[1:4]
    torch.set_num_threads(1)
    with open(spec_path) as f:
        spec = json.load(f)
    arrays, _, _ = safetensors_np.read(in_path)
    results, errors = {}, {}
    for case in spec["cases"]:
        try:
            results.update(run_case(case, arrays))
        except Exception:  # reported per case by the C++ side
            errors[f"error/{case['name']}"] = traceback.format_exc(limit=3).replace("\n", " | ")
    safetensors_np.write(out_path, results, errors)


if __name__ == "__main__":
    main()
