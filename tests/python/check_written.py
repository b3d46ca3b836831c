"""Check with real PyTorch / safetensors that files tvck wrote load and hold what tvck
meant to write. Used by tests/it/writer_roundtrip.rs (pytorch_loads_what_tvck_writes).

usage: check_written.py DIR        (DIR holds the files and manifest.json)

manifest.json:
  {"pt": {file: {"expected": CANON, "archive": name, "zip64": bool}},
   "safetensors": {file: {"tensors": {name: TENSOR}, "metadata": {str: str}}}}

CANON is the canonical JSON form of a value, computed here from what
torch.load(weights_only=True) returns and in the Rust test from tvck's value tree:
  None -> null, bool -> true/false, int -> {"int": "<decimal>"},
  float -> {"float": "<16 hex digits of the IEEE bits>"}, str -> {"str": s},
  bytes -> {"bytes": hex}, complex -> {"complex": [bits, bits]},
  list/tuple -> {"list"/"tuple": [...]}, dict -> {"dict": [[k, v], ...], "ordered": bool},
  torch dtype -> {"dtype": "torch.float32"}, tensor -> {"tensor": TENSOR}
TENSOR = {"dtype": "float32", "shape": [...], "sha256": <of the logical bytes:
  row-major, little-endian>, "requires_grad": bool}

Besides values, every .pt is checked with Python's zipfile (CRC-32s, stored entries,
64-byte aligned data, torch's entry order), and every .safetensors file whose metadata
has at most one key (so the reference's HashMap order cannot vary) is compared byte for
byte with what safetensors.torch.save_file writes for the same tensors.

Exits 1 listing every difference.
"""
import collections
import hashlib
import json
import os
import struct
import sys
import tempfile
import zipfile

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

directory = sys.argv[1]
with open(os.path.join(directory, "manifest.json")) as f:
    manifest = json.load(f)
problems = []


def fbits(x):
    return struct.pack(">d", x).hex()


def tensor(t):
    requires_grad = bool(t.requires_grad)
    t = t.detach().cpu().contiguous()
    raw = t.reshape(-1).view(torch.uint8).numpy().tobytes()
    if sys.byteorder == "big":
        raise SystemExit("check_written.py assumes a little-endian machine")
    return {
        "dtype": str(t.dtype).removeprefix("torch."),
        "shape": list(t.shape),
        "sha256": hashlib.sha256(raw).hexdigest(),
        "requires_grad": requires_grad,
    }


def canon(x):
    if x is None:
        return None
    if isinstance(x, bool):
        return x
    if isinstance(x, int):
        return {"int": str(x)}
    if isinstance(x, float):
        return {"float": fbits(x)}
    if isinstance(x, complex):
        return {"complex": [fbits(x.real), fbits(x.imag)]}
    if isinstance(x, str):
        return {"str": x}
    if isinstance(x, (bytes, bytearray)):
        return {"bytes": bytes(x).hex()}
    if isinstance(x, torch.Tensor):
        return {"tensor": tensor(x)}
    if isinstance(x, torch.dtype):
        return {"dtype": str(x)}
    if isinstance(x, list):
        return {"list": [canon(i) for i in x]}
    if isinstance(x, tuple):
        return {"tuple": [canon(i) for i in x]}
    if isinstance(x, dict):
        return {
            "dict": [[canon(k), canon(v)] for k, v in x.items()],
            "ordered": isinstance(x, collections.OrderedDict),
        }
    raise TypeError(f"unexpected {type(x).__module__}.{type(x).__name__}")


def diff(a, b, path="<root>"):
    """First difference between expected `a` and loaded `b`, or None."""
    if type(a) is not type(b):
        return f"{path}: expected {json.dumps(a)[:200]}, got {json.dumps(b)[:200]}"
    if isinstance(a, dict):
        if set(a) != set(b):
            return f"{path}: keys {sorted(a)} vs {sorted(b)}"
        for k in a:
            d = diff(a[k], b[k], f"{path}.{k}")
            if d:
                return d
        return None
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: {len(a)} items expected, got {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            d = diff(x, y, f"{path}[{i}]")
            if d:
                return d
        return None
    return None if a == b else f"{path}: expected {a!r}, got {b!r}"


def check_zip(name, info):
    path = os.path.join(directory, name)
    with zipfile.ZipFile(path) as z:
        bad = z.testzip()
        if bad is not None:
            problems.append(f"{name}: zipfile reports a bad CRC in {bad}")
        infos = z.infolist()
        arch = info["archive"]
        names = [i.filename for i in infos]
        n_data = sum(1 for n in names if n.startswith(f"{arch}/data/"))
        want = [f"{arch}/{n}" for n in ("data.pkl", ".format_version", ".storage_alignment", "byteorder")]
        want += [f"{arch}/data/{k}" for k in range(n_data)]
        want += [f"{arch}/version", f"{arch}/.data/serialization_id"]
        if names != want:
            problems.append(f"{name}: entries {names[:8]}… differ from torch's order {want[:8]}…")
        with open(path, "rb") as raw:
            for i in infos:
                if i.compress_type != zipfile.ZIP_STORED:
                    problems.append(f"{name}: {i.filename} is compressed")
                raw.seek(i.header_offset)
                head = raw.read(30)
                if head[:4] != b"PK\x03\x04":
                    problems.append(f"{name}: no local header for {i.filename}")
                    continue
                nlen, elen = struct.unpack("<HH", head[26:30])
                data = i.header_offset + 30 + nlen + elen
                if data % 64:
                    problems.append(f"{name}: {i.filename} data at {data}, not 64-aligned")
        if z.read(f"{arch}/byteorder") != b"little" or z.read(f"{arch}/version") != b"3\n":
            problems.append(f"{name}: bad byteorder/version records")


def unpadded(b):
    """(header without trailing spaces, data) of a safetensors file."""
    (n,) = struct.unpack("<Q", b[:8])
    return b[8 : 8 + n].rstrip(b" "), b[8 + n :]


repadded = 0
checked = 0
for name, info in sorted(manifest["pt"].items()):
    check_zip(name, info)
    try:
        obj = torch.load(os.path.join(directory, name), weights_only=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - report every failure
        problems.append(f"{name}: torch.load(weights_only=True) failed: {type(e).__name__}: {e}")
        continue
    try:
        got = canon(obj)
    except TypeError as e:
        problems.append(f"{name}: {e}")
        continue
    d = diff(info["expected"], got)
    if d:
        problems.append(f"{name}: {d}")
    checked += 1

for name, info in sorted(manifest["safetensors"].items()):
    path = os.path.join(directory, name)
    try:
        tensors = load_file(path)
        with safe_open(path, framework="pt") as f:
            metadata = f.metadata() or {}
    except Exception as e:  # noqa: BLE001
        problems.append(f"{name}: safetensors could not load it: {type(e).__name__}: {e}")
        continue
    got = {k: tensor(v) for k, v in tensors.items()}
    d = diff(info["tensors"], got)
    if d:
        problems.append(f"{name}: {d}")
    if metadata != info["metadata"]:
        problems.append(f"{name}: metadata {metadata} != {info['metadata']}")
    if len(metadata) <= 1:
        with tempfile.TemporaryDirectory() as tmp:
            ref = os.path.join(tmp, "ref.safetensors")
            save_file(tensors, ref, metadata=metadata or None)
            with open(ref, "rb") as a, open(path, "rb") as b:
                theirs, ours = a.read(), b.read()
            if theirs != ours and unpadded(theirs) == unpadded(ours) and ours[0] == 0x88:
                # tvck adds 8 spaces where the reference's header length would start with
                # 0x80 (a pickle's first byte); nothing else may differ.
                repadded += 1
            elif theirs != ours:
                problems.append(f"{name}: bytes differ from safetensors.torch.save_file's")
    checked += 1

if problems:
    print(f"{len(problems)} problem(s):")
    for p in problems:
        print("  " + p)
    sys.exit(1)
print(f"all ok: {len(manifest['pt'])} .pt files loaded with torch.load(weights_only=True), "
      f"{len(manifest['safetensors'])} .safetensors files with safetensors.torch.load_file "
      f"(torch {torch.__version__}); {repadded} safetensors header(s) re-padded, "
      f"the other {len(manifest['safetensors']) - repadded} byte-identical to save_file's "
      f"where comparable")
