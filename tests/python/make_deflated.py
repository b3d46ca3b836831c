"""Write torch checkpoints whose storages are deflate-compressed, and what torch reads
from them.

Usage: make_deflated.py OUT_DIR

torch.save stores every entry uncompressed; torch.load reads deflated entries as well
(its zip reader inflates them), so a checkpoint re-zipped with compression is a real
checkpoint to torch. Each file is written by torch.save, then its zip is rewritten with
Python's zipfile, deflating every `data/N` storage entry (the other entries stay stored).

* `deflated.pt`: a training checkpoint (model state with float32, float64, float16 and
  int64 tensors, a transposed view, an optimizer state); loaded back with
  torch.load(weights_only=True) and compared with what was saved.
* `deflate_bomb.pt`: one float32 tensor of zeros whose storage inflates to 320 MiB from
  a file of about 300 KiB (torch.load inflates all of it into memory; checked here).

OUT_DIR/manifest.json gives, for each file, its size, each storage entry's declared
inflated size, and for `deflated.pt` the SHA-256 of every tensor's row-major
little-endian bytes as torch loads it (key: the tensor's path, dict keys joined by `.`).
tests/it/deflate_budget.rs runs tvck on them.
"""

import hashlib
import io
import json
import os
import sys
import zipfile

import torch

BOMB_BYTES = 320 << 20


def deflate_storages(raw, level):
    src = zipfile.ZipFile(io.BytesIO(raw))
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as z:
        for info in src.infolist():
            data = src.read(info.filename)
            storage = "/data/" in info.filename
            zi = zipfile.ZipInfo(info.filename, date_time=(2020, 1, 1, 0, 0, 0))
            zi.compress_type = zipfile.ZIP_DEFLATED if storage else zipfile.ZIP_STORED
            z.writestr(zi, data, compresslevel=level if storage else None)
    return out.getvalue()


def entries(path):
    with zipfile.ZipFile(path) as z:
        return {
            i.filename: {"compressed": i.compress_size, "inflated": i.file_size,
                         "deflated": i.compress_type == zipfile.ZIP_DEFLATED}
            for i in z.infolist()
        }


def tensor_hashes(obj, prefix=""):
    out = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(tensor_hashes(v, f"{prefix}{k}."))
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(tensor_hashes(v, f"{prefix}{i}."))
    elif isinstance(obj, torch.Tensor):
        b = obj.detach().contiguous().numpy().astype(obj.numpy().dtype.newbyteorder("<")).tobytes()
        out[prefix[:-1]] = hashlib.sha256(b).hexdigest()
    return out


def checkpoint():
    g = torch.Generator().manual_seed(13)
    w = torch.randn(16, 9, generator=g)
    state = {
        "encoder.0.weight": w,
        "encoder.0.bias": torch.randn(16, generator=g),
        "decoder.weight_t": torch.randn(9, 16, generator=g).t(),  # a strided view
        "proj.weight": torch.randn(4, 4, generator=g, dtype=torch.float64),
        "half.weight": torch.randn(8, generator=g).half(),
        "counts": torch.arange(27, dtype=torch.int64),
    }
    optim = {"state": {0: {"exp_avg": torch.randn(16, 9, generator=g)}},
             "param_groups": [{"lr": 0.001, "params": [0]}]}
    return {"epoch": 7, "model_state_dict": state, "optimizer_state_dict": optim}


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    manifest = {}

    ckpt = checkpoint()
    b = io.BytesIO()
    torch.save(ckpt, b)
    path = os.path.join(out, "deflated.pt")
    with open(path, "wb") as f:
        f.write(deflate_storages(b.getvalue(), 6))
    back = torch.load(path, weights_only=True)
    for k, v in ckpt["model_state_dict"].items():
        assert torch.equal(back["model_state_dict"][k], v), k
    ents = entries(path)
    assert any(e["deflated"] for e in ents.values())
    manifest["deflated.pt"] = {"size": os.path.getsize(path), "entries": ents,
                               "tensors": tensor_hashes(back)}

    b = io.BytesIO()
    torch.save({"model_state_dict": {"w": torch.zeros(BOMB_BYTES // 4)}}, b)
    path = os.path.join(out, "deflate_bomb.pt")
    with open(path, "wb") as f:
        f.write(deflate_storages(b.getvalue(), 1))
    del b
    back = torch.load(path, weights_only=True)
    assert back["model_state_dict"]["w"].numel() * 4 == BOMB_BYTES
    del back
    manifest["deflate_bomb.pt"] = {"size": os.path.getsize(path), "entries": entries(path)}
    assert manifest["deflate_bomb.pt"]["size"] < 2 << 20

    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
