"""A tiny numpy reader/writer of the safetensors format (no `safetensors` package needed).

Layout: 8-byte little-endian header length N, N bytes of JSON
{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {str: str}},
then the data buffer (offsets relative to its start, row-major little-endian tensors).
numpy has no bfloat16 or fp8: those come back as raw uint16 / uint8 arrays, and `read`
returns their safetensors dtype names beside the arrays so a caller can convert them.
"""
import json
import os
import struct

import numpy as np

_NP = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"), "F8_E4M3": np.dtype("u1"), "F8_E5M2": np.dtype("u1"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
_FROM_NP = {np.dtype("<f8"): "F64", np.dtype("<f4"): "F32", np.dtype("<f2"): "F16",
            np.dtype("<i8"): "I64", np.dtype("<i4"): "I32", np.dtype("u1"): "U8",
            np.dtype("?"): "BOOL"}


def read(path):
    """Returns ({name: ndarray}, {name: safetensors dtype}, metadata)."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: shorter than 8 bytes")
    (n,) = struct.unpack("<Q", raw[:8])
    if n > len(raw) - 8:
        raise ValueError(f"{path}: header length {n} beyond the file")
    header = json.loads(raw[8:8 + n])
    data = memoryview(raw)[8 + n:]
    meta = header.pop("__metadata__", {})
    arrays, dtypes = {}, {}
    for name, e in header.items():
        dt = _NP[e["dtype"]]
        b, end = e["data_offsets"]
        shape = tuple(e["shape"])
        if end - b != int(np.prod(shape, dtype=np.int64)) * dt.itemsize or end > len(data):
            raise ValueError(f"{path}: tensor {name}: bad data_offsets {b, end}")
        arrays[name] = np.frombuffer(data[b:end], dtype=dt).reshape(shape).copy()
        dtypes[name] = e["dtype"]
    return arrays, dtypes, meta


def write(path, arrays, metadata=None):
    """arrays: {name: ndarray} (f64/f32/f16/i64/i32/u8/bool). Written atomically."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, off = [], 0
    # Wider elements first, as the HF writer orders them, so every offset stays aligned.
    items = sorted(arrays.items(), key=lambda kv: -np.asarray(kv[1]).dtype.itemsize)
    for name, a in items:
        a = np.asarray(a)
        if not a.flags.c_contiguous:  # (not ascontiguousarray: it turns 0-d into 1-d)
            a = a.copy(order="C")
        a = a.astype(a.dtype.newbyteorder("<"), copy=False)
        blob = a.tobytes()
        header[name] = {"dtype": _FROM_NP[a.dtype], "shape": list(a.shape),
                        "data_offsets": [off, off + len(blob)]}
        blobs.append(blob)
        off += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * ((8 - len(text) % 8) % 8)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for blob in blobs:
            f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
