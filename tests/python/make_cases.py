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
    if t.is_quantized:
        # tvck reads a quantized tensor as its stored integers.
        return t.int_repr().contiguous().numpy().tobytes()
    if t.dtype in RAW_DTYPES:
        # No numpy type: the bytes as they are (this machine is little-endian).
        return t.reshape(-1).view(torch.uint8).numpy().tobytes()
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
# The dtypes torch 2.13 saves through _rebuild_tensor_v3 (no legacy storage class), beyond
# the ones above: unsigned ints, complex32, the other float8s, packed float4, bit containers.
MORE_DTYPES = {
    torch.uint16: "uint16", torch.uint32: "uint32", torch.uint64: "uint64",
    torch.complex32: "complex32", torch.float8_e4m3fnuz: "float8_e4m3fnuz",
    torch.float8_e5m2fnuz: "float8_e5m2fnuz", torch.float8_e8m0fnu: "float8_e8m0fnu",
    torch.float4_e2m1fn_x2: "float4_e2m1fn_x2", torch.bits8: "bits8", torch.bits16: "bits16",
    torch.bits1x8: "bits1x8", torch.bits2x4: "bits2x4", torch.bits4x2: "bits4x2",
}
RAW_DTYPES = set(MORE_DTYPES) - {torch.uint16, torch.uint32, torch.uint64}
QUANTIZED = {torch.qint8: "qint8", torch.quint8: "quint8", torch.qint32: "qint32"}
DTYPE_NAMES.update(MORE_DTYPES)
DTYPE_NAMES.update(QUANTIZED)


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
for dt in [d for d in DTYPE_NAMES if d not in MORE_DTYPES and d not in QUANTIZED]:
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

# The other dtypes, made from random bytes (most have no arithmetic on the CPU).
more = {}
for dt, name in MORE_DTYPES.items():
    raw = torch.randint(0, 256, (3, 5 * dt.itemsize), dtype=torch.uint8)
    more[name] = raw.view(dt)
save("dtypes_more.pt", more)
save("dtypes_more_legacy.pt", more, _use_new_zipfile_serialization=False)

# Quantized tensors (per-tensor; per-channel ones are in layouts.pt), read as their integers.
quantized = {
    "quint8": torch.quantize_per_tensor(torch.randn(3, 4), 0.1, 10, torch.quint8),
    "qint8": torch.quantize_per_tensor(torch.randn(3, 4), 0.05, 0, torch.qint8),
    "qint32": torch.quantize_per_tensor(torch.randn(2, 2), 0.5, 0, torch.qint32),
}
save("quantized.pt", quantized)
save("quantized_legacy.pt", quantized, _use_new_zipfile_serialization=False)

# Layouts tvck reads as their parts, with a note naming the rebuild function it did not
# interpret (layouts.json: for each file, the tensors it must read and the notes it must
# give; the reader test checks that none is reported unsafe).
dense = torch.randn(4, 6)
dense[dense < 0.3] = 0
layouts = {}


def layout_case(name, obj, notes, tensors, **kw):
    torch.save(obj, os.path.join(out, name), **kw)
    found = {}
    for path, t in tensors.items():
        found[path] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape),
                       "sha256": hashlib.sha256(logical_bytes(t)).hexdigest()}
    layouts[name] = {"notes": notes, "tensors": found}


coo = dense.to_sparse().coalesce()
layout_case("sparse_coo.pt", {"coo": coo}, ["torch._utils._rebuild_sparse_tensor"],
            {"coo.1.0": coo.indices(), "coo.1.1": coo.values()})
layout_case("sparse_coo_legacy.pt", {"coo": coo}, ["torch._utils._rebuild_sparse_tensor"],
            {"coo.1.0": coo.indices(), "coo.1.1": coo.values()},
            _use_new_zipfile_serialization=False)
for kind, conv in [("csr", dense.to_sparse_csr()), ("csc", dense.to_sparse_csc()),
                   ("bsr", dense.to_sparse_bsr((2, 2))), ("bsc", dense.to_sparse_bsc((2, 2)))]:
    if kind in ("csr", "bsr"):
        parts = [conv.crow_indices(), conv.col_indices(), conv.values()]
    else:
        parts = [conv.ccol_indices(), conv.row_indices(), conv.values()]
    layout_case(f"sparse_{kind}.pt", {kind: conv}, ["torch._utils._rebuild_sparse_tensor"],
                {f"{kind}.1.{i}": p for i, p in enumerate(parts)})
nt = torch.nested.nested_tensor([torch.randn(2, 3), torch.randn(4, 3)])
# The buffer of a contiguous nested tensor: its components, flattened, one after another.
layout_case("nested.pt", {"nt": nt}, ["torch._utils._rebuild_nested_tensor"],
            {"nt.0": torch.cat([x.reshape(-1) for x in nt.unbind()])})
layout_case("meta.pt", {"m": torch.empty(3, 3, device="meta")},
            ["torch._utils._rebuild_meta_tensor_no_storage"], {})
per_channel = torch.quantize_per_channel(torch.randn(3, 4), torch.tensor([0.1, 0.2, 0.3]),
                                         torch.tensor([0, 1, 2]), 0, torch.qint8)
layout_case("quantized_per_channel.pt", {"qc": per_channel}, [], {"qc": per_channel})
param = torch.nn.Parameter(torch.randn(2, 3))
frozen = torch.nn.Parameter(torch.randn(2), requires_grad=False)
layout_case("parameters.pt", {"p": param, "frozen": frozen}, [], {"p": param, "frozen": frozen})
with open(os.path.join(out, "layouts.json"), "w") as f:
    json.dump(layouts, f, indent=1, sort_keys=True)

# The globals torch.load(weights_only=True) accepts: tvck must accept each one too.
from torch._weights_only_unpickler import _get_allowed_globals

with open(os.path.join(out, "weights_only_globals.json"), "w") as f:
    json.dump(sorted(_get_allowed_globals()), f, indent=1)

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
