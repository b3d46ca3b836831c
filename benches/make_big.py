"""A large training checkpoint for the memory benchmark (scripts/bench-memory).

Usage: make_big.py OUT [zip|legacy|safetensors|tar]

A model state of 4 float32 tensors of 8M elements (128 MiB) and an Adam-like optimizer
state twice that size (256 MiB): 384 MiB in all, written as a torch.save zip (the
default), a legacy pickle stream (`_use_new_zipfile_serialization=False`), a safetensors
file (every tensor by a flat name: `layer0.weight`, `optimizer.0.exp_avg`, …) or a
pre-1.0 tar checkpoint (tests/python/make_legacy_tar.py's layout).
"""

import collections
import os
import sys

import torch

g = torch.Generator().manual_seed(1)
state = {f"layer{i}.weight": torch.randn(1 << 23, generator=g) for i in range(4)}
optim = {"state": {i: {"exp_avg": torch.randn(1 << 23, generator=g),
                       "exp_avg_sq": torch.rand(1 << 23, generator=g)} for i in range(4)},
         "param_groups": [{"lr": 1e-3, "params": [0, 1, 2, 3]}]}
out = sys.argv[1]
kind = sys.argv[2] if len(sys.argv) > 2 else "zip"
obj = {"epoch": 1, "model_state_dict": state, "optimizer_state_dict": optim}
if kind == "zip":
    torch.save(obj, out)
elif kind == "legacy":
    torch.save(obj, out, _use_new_zipfile_serialization=False)
elif kind == "safetensors":
    from safetensors.torch import save_file

    flat = dict(state)
    for i, s in optim["state"].items():
        for k, t in s.items():
            flat[f"optimizer.{i}.{k}"] = t
    save_file(flat, out)
elif kind == "tar":
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..",
                                    "tests", "python"))
    import make_legacy_tar as lt

    storages, tensors = {}, {}

    def ref(t):
        key = len(storages) + 1
        storages[key] = (torch.FloatStorage, t.reshape(-1))
        tensors[1000 + key] = (key, tuple(t.shape), tuple(t.stride()), 0)
        return lt.Ref(1000 + key)

    tree = {"epoch": 1,
            "model_state_dict": collections.OrderedDict((k, ref(t)) for k, t in state.items()),
            "optimizer_state_dict": {
                "state": {i: {k: ref(t) for k, t in s.items()} for i, s in optim["state"].items()},
                "param_groups": optim["param_groups"]}}
    lt.write_members(out, storages, [], tensors, tree)
else:
    sys.exit(f"unknown kind {kind}")
