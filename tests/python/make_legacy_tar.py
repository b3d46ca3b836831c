"""Write a pre-1.0 (tar) torch checkpoint by hand, and what torch 2.13 reads from it.

Usage: make_legacy_tar.py OUT_DIR

torch 2.13 no longer writes this layout (torch.save writes the zip layout, or with
_use_new_zipfile_serialization=False the legacy pickle stream), but torch.load still
reads it (weights_only=False only): torch/serialization.py, `_legacy_load` →
`legacy_load`. This script builds the tar exactly as that reader expects it:

* member `storages`: pickle(count), then per storage pickle((key, location,
  storage_type)), an int64 little-endian element count and the raw little-endian
  elements (`UntypedStorage._new_with_file`); then pickle([(view key, root key,
  offset, numel), ...]).
* member `tensors`: pickle(count), then per tensor pickle((key, storage key,
  tensor_type)), int32 ndim, 4 padding bytes, ndim int64 sizes, ndim int64 strides,
  int64 storage offset.
* member `pickle`: the object, whose persistent ids are the keys (as strings) of the
  tensors.
* member `sys_info` (written by old torch, not read by 2.13).

The file is then loaded with torch.load(weights_only=False) and every tensor compared
with the one it was built from. OUT_DIR/manifest.json gives the SHA-256 of each tensor's
row-major little-endian bytes as torch loads it (key: its path, dict keys joined by
`.`). tests/it/legacy_tar.rs runs tvck on it.
"""

import collections
import hashlib
import io
import json
import os
import pickle
import struct
import sys
import tarfile

import torch


class Ref:
    """A tensor of the `tensors` member, pickled as its key."""

    def __init__(self, key):
        self.key = key


class Pickler(pickle.Pickler):
    def persistent_id(self, obj):
        return str(obj.key) if isinstance(obj, Ref) else None


def dumps(obj):
    return pickle.dumps(obj, protocol=2)


def member(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0
    tar.addfile(info, io.BytesIO(data))


def build():
    """The tensors (key → (storage key, size, stride, offset)), the storages and the object."""
    g = torch.Generator().manual_seed(5)
    w = torch.randn(6, 4, generator=g)
    storages = {  # key → (storage type, flat tensor)
        101: (torch.FloatStorage, w.reshape(-1)),
        102: (torch.FloatStorage, torch.randn(10, generator=g)),
        103: (torch.DoubleStorage, torch.randn(9, generator=g, dtype=torch.float64)),
        104: (torch.LongStorage, torch.arange(12, dtype=torch.int64)),
    }
    views = [(105, 102, 2, 6)]  # storage 105: elements 2..8 of storage 102
    tensors = {  # key → (storage key, size, stride, offset)
        201: (101, (6, 4), (4, 1), 0),     # encoder.weight
        202: (101, (4, 6), (1, 4), 0),     # its transpose, sharing the storage
        203: (102, (4,), (1,), 6),         # a slice at an offset
        204: (103, (3, 3), (3, 1), 0),     # float64
        205: (104, (3, 4), (4, 1), 0),     # int64
        206: (105, (2, 3), (3, 1), 0),     # a tensor of a storage view
    }
    state = collections.OrderedDict([
        ("encoder.weight", Ref(201)),
        ("encoder.weight_t", Ref(202)),
        ("encoder.bias", Ref(203)),
        ("proj.weight", Ref(204)),
        ("counts", Ref(205)),
        ("view.weight", Ref(206)),
    ])
    obj = {"epoch": 4, "model_state_dict": state, "note": "hand-built legacy tar"}
    return storages, views, tensors, obj


def expected(storages, views, tensors):
    flat = {k: t.clone() for k, (_, t) in storages.items()}
    for target, root, off, n in views:
        flat[target] = flat[root][off:off + n].clone()
    out = {}
    for key, (skey, size, stride, offset) in tensors.items():
        out[key] = torch.as_strided(flat[skey], size, stride, offset)
    return out


def write(path):
    storages, views, tensors, obj = build()
    write_members(path, storages, views, tensors, obj)
    return storages, views, tensors, obj


def write_members(path, storages, views, tensors, obj, add=None):
    """Write the tar checkpoint of `build()`'s shape; `add(tar, name, data)` (default:
    `member`) adds one member, so that callers can name members their own way."""
    add = add or member
    s = io.BytesIO()
    s.write(dumps(len(storages)))
    for key, (stype, t) in storages.items():
        s.write(dumps((key, "cpu", stype)))
        s.write(struct.pack("<q", t.numel()))
        s.write(t.numpy().astype(t.numpy().dtype.newbyteorder("<")).tobytes())
    s.write(dumps(views))
    t = io.BytesIO()
    t.write(dumps(len(tensors)))
    for key, (skey, size, stride, offset) in tensors.items():
        root = skey if skey in storages else next(r for v, r, _, _ in views if v == skey)
        ttype = {torch.FloatStorage: torch.FloatTensor, torch.DoubleStorage: torch.DoubleTensor,
                 torch.LongStorage: torch.LongTensor}[storages[root][0]]
        t.write(dumps((key, skey, ttype)))
        t.write(struct.pack("<i", len(size)) + b"\0" * 4)
        t.write(struct.pack(f"<{len(size)}q", *size))
        t.write(struct.pack(f"<{len(stride)}q", *stride))
        t.write(struct.pack("<q", offset))
    p = io.BytesIO()
    Pickler(p, protocol=2).dump(obj)
    where = {"name": path} if isinstance(path, str) else {"fileobj": path}
    with tarfile.open(mode="w:", format=tarfile.PAX_FORMAT, **where) as tar:
        add(tar, "sys_info", dumps({"protocol_version": 1001, "little_endian": True,
                                    "type_sizes": {"short": 2, "int": 4, "long": 4}}))
        add(tar, "storages", s.getvalue())
        add(tar, "tensors", t.getvalue())
        add(tar, "pickle", p.getvalue())


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "legacy_tar.pt")
    storages, views, tensors, obj = write(path)
    want = expected(storages, views, tensors)
    back = torch.load(path, weights_only=False)
    assert back["epoch"] == 4 and back["note"] == obj["note"]
    hashes = {}
    for name, ref in obj["model_state_dict"].items():
        got = back["model_state_dict"][name]
        assert torch.equal(got, want[ref.key]), name
        assert got.stride() == tensors[ref.key][2], name
        b = got.contiguous().numpy()
        hashes[f"model_state_dict.{name}"] = hashlib.sha256(
            b.astype(b.dtype.newbyteorder("<")).tobytes()).hexdigest()
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump({"legacy_tar.pt": {"tensors": hashes}}, f, indent=1)


if __name__ == "__main__":
    main()
