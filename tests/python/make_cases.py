"""Write checkpoints with real PyTorch that exercise every reader case, plus a manifest
of what PyTorch itself says they hold. Used by tests/it/pytorch_crosscheck.rs.

usage: make_cases.py OUT_DIR

manifest.json: {file: {"tensors": {path: {"dtype", "shape", "sha256"}}, "values": {dotted path: number}}}
Tensor paths join dict keys / list indices with '.', like tvck. sha256 is over the
tensor's logical bytes: contiguous, row-major, little-endian.
"""
import collections
import hashlib
import json
import os
import sys

import numpy as np
import torch

torch.manual_seed(0)
out = sys.argv[1]
os.makedirs(out, exist_ok=True)
manifest = {}


def logical_bytes(t):
    t = t.detach().contiguous().cpu()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().astype("<i2").tobytes()
    if t.dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
        return t.view(torch.uint8).numpy().tobytes()
    a = t.numpy()
    return a.astype(a.dtype.newbyteorder("<")).tobytes()


DTYPE_NAMES = {
    torch.float64: "float64", torch.float32: "float32", torch.float16: "float16",
    torch.bfloat16: "bfloat16", torch.int64: "int64", torch.int32: "int32",
    torch.int16: "int16", torch.int8: "int8", torch.uint8: "uint8", torch.bool: "bool",
    torch.complex64: "complex64", torch.complex128: "complex128",
    torch.float8_e4m3fn: "float8_e4m3fn", torch.float8_e5m2: "float8_e5m2",
}


def walk(obj, prefix, tensors, values):
    if isinstance(obj, torch.Tensor):
        if prefix not in tensors:
            tensors[prefix] = {
                "dtype": DTYPE_NAMES[obj.dtype],
                "shape": list(obj.shape),
                "sha256": hashlib.sha256(logical_bytes(obj)).hexdigest(),
                "contiguous": obj.is_contiguous(),
            }
    elif isinstance(obj, dict):
        for k, v in obj.items():
            walk(v, f"{prefix}.{k}" if prefix else str(k), tensors, values)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            walk(v, f"{prefix}.{i}" if prefix else str(i), tensors, values)
    elif isinstance(obj, (bool, np.bool_)):
        values[prefix] = bool(obj)
    elif isinstance(obj, (float, np.floating)):
        if np.isfinite(obj):  # JSON has no inf/NaN; the Rust test checks those itself
            values[prefix] = float(obj)
    elif isinstance(obj, (int, np.integer)):
        # Beyond 64 bits JSON readers fall back to floats: keep the digits as text.
        values[prefix] = int(obj) if -2**63 <= obj < 2**63 else {"bigint": str(obj)}
    elif isinstance(obj, str):
        values[prefix] = obj


def save(name, obj, **kw):
    path = os.path.join(out, name)
    torch.save(obj, path, **kw)
    tensors, values = {}, {}
    walk(obj, "", tensors, values)
    manifest[name] = {"tensors": tensors, "values": values}


# Every dtype, contiguous.
dtypes = {}
for dt in DTYPE_NAMES:
    if dt.is_floating_point or dt.is_complex:
        t = torch.randn(3, 5).to(dt)
    elif dt == torch.bool:
        t = torch.rand(3, 5) > 0.5
    else:
        t = torch.randint(-100 if dt != torch.uint8 else 0, 100, (3, 5)).to(dt)
    dtypes[DTYPE_NAMES[dt]] = t
dtypes["scalar"] = torch.tensor(0.5413)
dtypes["empty"] = torch.zeros(0, 4)
save("dtypes.pt", dtypes)
save("dtypes_legacy.pt", dtypes, _use_new_zipfile_serialization=False)

# Views: transposed, sliced (storage offset), expanded (stride 0), shared storage.
base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
views = collections.OrderedDict()
views["base"] = base
views["transposed"] = base.t()
views["sliced"] = base[1:3, 2:5]
views["row"] = base[2]
views["expanded"] = torch.arange(3.0).unsqueeze(0).expand(4, 3)
views["stepped"] = base[:, ::2]
views["bf16_t"] = torch.randn(5, 7).to(torch.bfloat16).t()
save("views.pt", views)
save("views_legacy.pt", views, _use_new_zipfile_serialization=False)

# A training-checkpoint shape: nested dicts, parameters, optimizer state, numpy scalars.
model = torch.nn.Sequential(torch.nn.Linear(9, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 3))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
model(torch.randn(4, 9)).sum().backward()
opt.step()
ckpt = {
    "epoch": 7,
    "model_state_dict": model.state_dict(),
    "optimizer_state_dict": opt.state_dict(),
    "metrics": {
        "coverage": np.float64(0.99),
        "hierarchy": np.float32(-0.75),
        "count": np.int64(12),
        "ok": np.bool_(True),
        "Q": 1.25,
    },
    "params": list(model.parameters()),
    "history": [0.1, 0.2, float("inf")],
    "config": {"model": {"name": "TernaryVAEV5_11", "latent_dim": 16}, "note": "héllo ✓"},
    "big": 2**70,
    "blob": b"\x00\x01binary",
}
save("training.pt", ckpt)
save("training_legacy.pt", ckpt, _use_new_zipfile_serialization=False)
save("training_proto4.pt", ckpt, pickle_protocol=4)

# The same weights as safetensors.
try:
    from safetensors.torch import save_file

    sd = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(sd, os.path.join(out, "weights.safetensors"), metadata={"epoch": "7"})
    tensors = {}
    walk(sd, "", tensors, {})
    manifest["weights.safetensors"] = {"tensors": tensors, "values": {}}
except ImportError:
    pass

with open(os.path.join(out, "manifest.json"), "w") as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
print(f"wrote {len(manifest)} files to {out}")
