"""Check what `tvck convert` wrote, with real PyTorch.

Usage: check_converted.py CASES.json

CASES.json is a list of {"source": path, "output": path, "plan": <the plan JSON of
`tvck convert --json`>}. For each case:
  * torch.load(output, weights_only=True) loads a .pt output (safetensors.torch.load_file a
    .safetensors one);
  * a v5.12.4 nn.Module built to docs/domain.md (or the v5.11 one for --to v5_11) loads the
    model state with load_state_dict(strict=True);
  * every tensor the plan copies (copy / rename / duplicate, through every step) is
    torch.equal to its source tensor (read with torch.load from the source file);
  * every constant initialisation (ones, zeros, identity) holds those values;
  * the migration record names the specs, and metrics hold no numpy scalars.
Prints one line per case and exits non-zero on the first failure.
"""
import json
import sys

import torch
import torch.nn as nn
from safetensors.torch import load_file


# The modules as the eval reference builds them from domain.md (this script's folder is
# on sys.path when it runs).
from eval_reference import (  # noqa: E402
    controller,
    frozen_decoder,
    frozen_encoder,
    improved_decoder,
    improved_encoder,
    projection,
)


def V5_12_4(latent=16, hidden=64):
    m = nn.Module()
    m.encoder_A = improved_encoder(latent)
    m.encoder_B = improved_encoder(latent)
    m.decoder_A = improved_decoder(latent)
    m.projection = nn.Module()
    m.projection.proj_A = projection(latent, hidden, 2, True, 1.0)
    m.projection.proj_B = projection(latent, hidden, 2, True, 1.0)
    m.controller = controller()
    return m


def V5_11(latent=16, hidden=64):
    m = nn.Module()
    m.encoder_A = frozen_encoder(latent)
    m.encoder_B = frozen_encoder(latent)
    m.decoder_A = frozen_decoder(latent)
    m.projection = projection(latent, hidden, 1, False, 1.0)
    return m


MODEL_KEYS = ("model_state_dict", "model_state", "model")


def model_state(obj):
    if isinstance(obj, dict):
        for k in MODEL_KEYS:
            if k in obj and isinstance(obj[k], dict):
                return obj[k]
    return obj


def has_numpy(v):
    if type(v).__module__ == "numpy":
        return True
    if isinstance(v, dict):
        return any(has_numpy(x) for x in v.values())
    if isinstance(v, (list, tuple)):
        return any(has_numpy(x) for x in v)
    return False


def fail(msg):
    print("FAIL " + msg)
    sys.exit(1)


def check(case):
    src_path, out_path, plan = case["source"], case["output"], case["plan"]
    if out_path.endswith(".safetensors"):
        state = load_file(out_path)
        top = None
    else:
        top = torch.load(out_path, weights_only=True)
        state = model_state(top)
    target = plan["target_version"]
    model = {"v5_12_4": V5_12_4, "v5_11": V5_11}[target]()
    model.load_state_dict(state, strict=True)

    source = model_state(torch.load(src_path, weights_only=False))
    # Where each final key comes from: follow same-value rows back through the steps.
    origin = None
    for step in plan["steps"]:
        new = {}
        for row in step["rows"]:
            if "to" not in row:
                continue
            to_key = row["to"][0]
            if row["op"] in ("copy", "rename", "duplicate"):
                src_key = row["from"][0]
                new[to_key] = ("copy", src_key) if origin is None else origin[src_key]
            elif row["op"] == "init":
                new[to_key] = ("init", row.get("detail", ""))
            else:
                new[to_key] = ("other", None)
        origin = new
    copied = inits = 0
    for key, (kind, what) in origin.items():
        t = state[key]
        if kind == "copy":
            if not torch.equal(t, source[what]):
                fail(f"{out_path}: {key} differs from source {what}")
            copied += 1
        elif what in ("ones", "zeros", "identity"):
            want = {"ones": torch.ones_like(t), "zeros": torch.zeros_like(t),
                    "identity": torch.eye(*t.shape) if t.dim() == 2 else None}[what]
            if want is None or not torch.equal(t, want):
                fail(f"{out_path}: {key} is not {what}")
            inits += 1
    if top is not None and plan.get("model_state_key"):
        rec = top.get("migration")
        if not rec or [s["name"] for s in rec["specs"]] != [s["spec"] for s in plan["steps"]]:
            fail(f"{out_path}: migration record {rec!r}")
        if has_numpy(top):
            fail(f"{out_path}: numpy scalars left")
        if "optimizer_state_dict" in top or "optimizer" in top:
            fail(f"{out_path}: optimizer state kept")
    print(f"ok {out_path}: strict load into {target}, {copied} copied tensors equal, {inits} constant inits")


def main():
    cases = json.load(open(sys.argv[1]))
    if not cases:
        fail("no cases")
    for c in cases:
        check(c)


if __name__ == "__main__":
    main()
