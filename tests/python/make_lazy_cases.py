"""Write large checkpoints of every layout tvck reads lazily, and tar checkpoints with
long member names, with what torch 2.13 (and Python's tarfile) read from them.

Usage: make_lazy_cases.py OUT_DIR [MIB]

* big.safetensors (safetensors.torch.save_file), big_legacy.pt (torch.save with
  _use_new_zipfile_serialization=False), big_tar.pt (the pre-1.0 tar layout, built as
  make_legacy_tar.py builds it) and big_zip.pt (torch.save): the same state dict of
  about MIB MiB (default 24), under `model_state_dict` (the safetensors file holds the
  bare state dict).
* long_gnu_tar.pt and long_pax_tar.pt: make_legacy_tar.py's checkpoint plus a member
  whose name is longer than the 100 bytes of a tar header, written by tarfile as a GNU
  long name (`././@LongLink`) and as a PAX `path` record.
* renamed_tar.pt: the same checkpoint whose `storages` and `tensors` members get their
  names from PAX `path` records and `pickle` from a GNU long name, while their own
  headers say `decoy-…`: torch.load reads it (by the long names), a reader that ignores
  extended headers finds no checkpoint members at all.

Every file is loaded with torch.load(weights_only=False) (safetensors: load_file).
OUT_DIR/manifest.json: {file: {"tensors": {path: sha256 of the row-major little-endian
bytes as torch loads them}, "names": tarfile.getnames() (tar files), "size": bytes}}.
tests/it/lazy_reads.rs runs tvck on them.
"""

import collections
import hashlib
import io
import json
import os
import sys
import tarfile

import torch
from safetensors.torch import load_file, save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_legacy_tar as lt  # noqa: E402


def sha(t):
    b = t.detach().contiguous().numpy()
    return hashlib.sha256(b.astype(b.dtype.newbyteorder("<")).tobytes()).hexdigest()


def state(mib):
    """A state dict of about `mib` MiB: two large float32 matrices and small tensors."""
    g = torch.Generator().manual_seed(13)
    n = max(1, mib * (1 << 20) // 4 // 2 // 1024)
    return collections.OrderedDict([
        ("encoder.weight", torch.randn(n, 1024, generator=g)),
        ("encoder.bias", torch.randn(1024, generator=g)),
        ("decoder.weight", torch.randn(1024, n, generator=g)),
        ("decoder.scale", torch.randn(16, generator=g, dtype=torch.float64)),
        ("steps", torch.arange(10, dtype=torch.int64)),
    ])


def write_big_tar(path, sd):
    """The tar layout with one storage per tensor of `sd`."""
    types = {torch.float32: (torch.FloatStorage, torch.FloatTensor),
             torch.float64: (torch.DoubleStorage, torch.DoubleTensor),
             torch.int64: (torch.LongStorage, torch.LongTensor)}
    storages = {}
    tensors = {}
    refs = collections.OrderedDict()
    for i, (name, t) in enumerate(sd.items()):
        storages[1000 + i] = (types[t.dtype][0], t.reshape(-1))
        tensors[2000 + i] = (1000 + i, tuple(t.shape), tuple(t.stride()), 0)
        refs[name] = lt.Ref(2000 + i)
    obj = {"epoch": 3, "model_state_dict": refs}
    lt.write_members(path, storages, [], tensors, obj)


def tar_names(path):
    with tarfile.open(path, "r:") as tar:
        return tar.getnames()


def write_long_tar(path, fmt):
    """make_legacy_tar's checkpoint with one more member, named past 100 bytes."""
    long = "notes/" + "n" * 120 + "/read me.txt"
    storages, views, tensors, obj = lt.build()

    def add(tar, name, data):
        lt.member(tar, name, data)
        if name == "sys_info":
            lt.member(tar, long, b"a note, not part of the checkpoint\n")

    b = io.BytesIO()
    lt.write_members(b, storages, views, tensors, obj, add=add)
    # write_members opened the tar as PAX: rewrite its members in `fmt`.
    b.seek(0)
    with tarfile.open(fileobj=b, mode="r:") as src, tarfile.open(path, "w:", format=fmt) as dst:
        for m in src.getmembers():
            dst.addfile(m, src.extractfile(m))
    return obj


def write_renamed_tar(path):
    """`storages` and `tensors` named by PAX path records, `pickle` by a GNU long name,
    over headers named `decoy-…`."""
    storages, views, tensors, obj = lt.build()
    raw = io.BytesIO()

    def add(tar, name, data):
        # (The tar `write_members` opens is only a carrier: the members go to `raw`.)
        info = tarfile.TarInfo("decoy-" + name)
        info.size = len(data)
        info.mtime = 0
        if name in ("storages", "tensors"):
            info.pax_headers = {"path": name}
            head = info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")
        elif name == "pickle":
            head = tarfile.TarInfo._create_gnu_long_header(
                name, tarfile.GNUTYPE_LONGNAME, "utf-8", "surrogateescape")
            head += info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")
        else:
            info.name = name
            head = info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")
        raw.write(head + data + b"\0" * (-len(data) % 512))

    lt.write_members(io.BytesIO(), storages, views, tensors, obj, add=add)
    with open(path, "wb") as f:
        f.write(raw.getvalue() + b"\0" * 1024)
    return obj


def main():
    out = sys.argv[1]
    mib = int(sys.argv[2]) if len(sys.argv) > 2 else 24
    os.makedirs(out, exist_ok=True)
    manifest = {}
    sd = state(mib)
    want = {k: sha(t) for k, t in sd.items()}

    p = os.path.join(out, "big.safetensors")
    save_file(dict(sd), p)
    back = load_file(p)
    manifest["big.safetensors"] = {"tensors": {k: sha(t) for k, t in back.items()}}

    for name, kw in [("big_legacy.pt", {"_use_new_zipfile_serialization": False}),
                     ("big_zip.pt", {})]:
        p = os.path.join(out, name)
        torch.save({"epoch": 3, "model_state_dict": sd}, p, **kw)
        back = torch.load(p, weights_only=False)["model_state_dict"]
        manifest[name] = {"tensors": {f"model_state_dict.{k}": sha(t) for k, t in back.items()}}

    p = os.path.join(out, "big_tar.pt")
    write_big_tar(p, sd)
    back = torch.load(p, weights_only=False)
    assert back["epoch"] == 3
    manifest["big_tar.pt"] = {
        "tensors": {f"model_state_dict.{k}": sha(t) for k, t in back["model_state_dict"].items()},
        "names": tar_names(p),
    }
    for entry in manifest.values():
        for k, h in entry["tensors"].items():
            assert h == want[k.removeprefix("model_state_dict.")], k

    small = {}
    for name, fmt in [("long_gnu_tar.pt", tarfile.GNU_FORMAT),
                      ("long_pax_tar.pt", tarfile.PAX_FORMAT)]:
        p = os.path.join(out, name)
        write_long_tar(p, fmt)
        small[name] = p
    small["renamed_tar.pt"] = os.path.join(out, "renamed_tar.pt")
    write_renamed_tar(small["renamed_tar.pt"])
    for name, p in small.items():
        # Zero blocks after the end of the archive (tarfile stops at the first): past
        # the size tvck reads whole, so that these are read lazily too.
        with open(p, "ab") as f:
            f.write(b"\0" * (64 << 10))
        back = torch.load(p, weights_only=False)
        assert back["epoch"] == 4, name
        manifest[name] = {
            "tensors": {f"model_state_dict.{k}": sha(t)
                        for k, t in back["model_state_dict"].items()},
            "names": tar_names(p),
        }
    # The long names are what tarfile lists; the renamed members' headers are decoys.
    assert any(len(n) > 100 for n in manifest["long_gnu_tar.pt"]["names"])
    with open(small["long_gnu_tar.pt"], "rb") as f:
        assert b"././@LongLink" in f.read()
    with open(small["renamed_tar.pt"], "rb") as f:
        raw = f.read()
    assert b"decoy-storages" in raw and b"path=storages" in raw and b"././@LongLink" in raw
    assert manifest["renamed_tar.pt"]["names"] == ["sys_info", "storages", "tensors", "pickle"]

    for name, entry in manifest.items():
        entry["size"] = os.path.getsize(os.path.join(out, name))
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)


if __name__ == "__main__":
    main()
