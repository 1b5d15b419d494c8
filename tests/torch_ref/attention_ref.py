"""PyTorch (CPU, float32) reference for the attention test of tests/test_attention.cc.

usage: attention_ref.py IN.safetensors OUT.safetensors SCALE CAUSAL THREADS

IN holds q (B, T, H, Dk), k (B, T, Hk, Dk), v (B, T, Hk, Dv), seg (B, T) int and dout
(B, T, H, Dv). The attention is built from plain torch ops (GQA by repeating each kv head
over its H / Hk query heads, a boolean mask of causality and equal segment ids, softmax);
OUT gets "out" and the gradients "dq", "dk", "dv" of sum(out * dout) from torch autograd.
Exit code 3: torch or numpy cannot be imported.
"""
import os
import sys

try:
    import numpy  # noqa: F401  (safetensors_np needs it)
    import torch
except ImportError as e:  # the C++ test skips with "run scripts/setup.sh"
    print(f"cannot import torch/numpy ({e}) with {sys.executable}", file=sys.stderr)
    sys.exit(3)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_np  # noqa: E402


def attention(q, k, v, seg, scale, causal):
    # q (B, T, H, Dk), k (B, T, Hk, Dk), v (B, T, Hk, Dv), seg (B, T) -> (B, T, H, Dv)
    group = q.shape[2] // k.shape[2]
    k = k.repeat_interleave(group, dim=2)  # query head h reads kv head h // group
    v = v.repeat_interleave(group, dim=2)
    s = torch.einsum("bthd,bshd->bhts", q, k) * scale
    T = q.shape[1]
    mask = seg[:, None, :, None] == seg[:, None, None, :]  # (B, 1, T, T): [t, s]
    if causal:
        mask = mask & torch.ones(T, T, dtype=torch.bool).tril()
    p = torch.softmax(s.masked_fill(~mask, float("-inf")), dim=-1)
    return torch.einsum("bhts,bshd->bthd", p, v)


def main():
    in_path, out_path, scale, causal, threads = sys.argv[1:6]
    torch.set_num_threads(int(threads))
    arrays, _, _ = safetensors_np.read(in_path)
    q, k, v = (torch.from_numpy(arrays[n]).requires_grad_(True) for n in ("q", "k", "v"))
    seg = torch.from_numpy(arrays["seg"]).long()
    out = attention(q, k, v, seg, float(scale), causal == "1")
    dq, dk, dv = torch.autograd.grad((out * torch.from_numpy(arrays["dout"])).sum(), (q, k, v))
    safetensors_np.write(out_path, {"out": out.detach().numpy(), "dq": dq.numpy(),
                                    "dk": dk.numpy(), "dv": dv.numpy()}, {})


if __name__ == "__main__":
    main()
