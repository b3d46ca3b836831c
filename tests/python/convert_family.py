"""Property test of the migration specs over whole layout families (tests/it/convert_cli.rs runs it).

Usage: convert_family.py TVCK_BINARY WORK_DIR

Generates source layouts across the architecture catalog's parameter ranges (a fixed list
plus dimensions drawn with a fixed seed):
  * v5.11 / PartialFreeze: projection_layers 1..4 x dropout or not x single / dual / dual
    with a shared direction x controller or not;
  * v5.12 - v5.12.3: several latent / hidden dims;
  * v5.5: with and without the StateNet.
For each, builds the source model with the PyTorch builders of eval_reference.py (random
weights), saves it with torch.save in the upstream dict form, runs
`tvck convert --to v5_12_4` (`--to v5_11` for v5.5; also the v5.5 -> v5.12.4 chain) and then:
  * the dry run's plan is the real run's plan;
  * torch.load(weights_only=True) loads the output, and the target model built by the same
    builders loads its model state with load_state_dict(strict=True);
  * every tensor the plan copies (through every step) is torch.equal to its source tensor,
    and every constant initialisation holds its values;
  * where the conversion can keep a projection's function (2 source layers, no shared
    direction), proj_A / proj_B compute what the source projection computes (eval mode);
  * a source with more than 2 projection layers gets the warning that blocks are dropped.
Prints one line per case and exits non-zero on the first failure.
"""
import json
import os
import random
import subprocess
import sys

import torch
import torch.nn as nn

from eval_reference import (  # noqa: E402 (this script's folder is on sys.path)
    controller,
    frozen_decoder,
    frozen_encoder,
    improved_decoder,
    improved_encoder,
    project,
    projection,
)
from check_converted import has_numpy, model_state  # noqa: E402

SEED = 51211
DIMS = [(16, 64), (8, 32), (5, 100), (16, 128), (3, 48), (12, 70)]


def fail(msg):
    print("FAIL " + msg)
    sys.exit(1)


def proj_b_radius(L, H, dropout):
    """DualHyperbolicProjection's radius-only proj_B (share_direction): one block."""
    R = max(32, H // 2)
    return nn.Sequential(
        *([nn.Linear(L, R), nn.SiLU()] + ([nn.Dropout(0.1)] if dropout else []) + [nn.Linear(R, 1), nn.Sigmoid()])
    )


def family_model(p):
    """A TernaryVAEV5_11-family model for layout parameters `p` (docs/domain.md §3)."""
    L, H = p["latent_dim"], p["hidden_dim"]
    enc = improved_encoder if p["encoder"] == "improved" else frozen_encoder
    dec = improved_decoder if p["decoder"] == "improved" else frozen_decoder
    m = nn.Module()
    m.encoder_A = enc(L)
    m.encoder_B = enc(L)
    m.decoder_A = dec(L)

    def mk():
        return projection(L, H, p["projection_layers"], p["projection_dropout"], 1.0)

    if p["dual_projection"]:
        m.projection = nn.Module()
        m.projection.proj_A = mk()
        if p["share_direction"]:
            m.projection.proj_B_radius = proj_b_radius(L, H, p["projection_dropout"])
        else:
            m.projection.proj_B = mk()
    else:
        m.projection = mk()
    if p["controller"]:
        m.controller = controller()
    return m


def residual_block():
    return nn.Sequential(nn.Linear(128, 128), nn.ReLU(), nn.Linear(128, 128))


def v5_5_model(L, state_net):
    """DualNeuralVAEV5 (docs/domain.md §3), in state_dict order."""
    m = nn.Module()
    m.register_buffer("grad_norm_A_ema", torch.tensor(1.5))
    m.register_buffer("grad_norm_B_ema", torch.tensor(0.5))
    m.encoder_A = frozen_encoder(L)
    m.decoder_A = frozen_decoder(L)
    m.encoder_B = frozen_encoder(L)
    m.decoder_B = nn.Module()
    m.decoder_B.fc_in = nn.Linear(L, 128)
    m.decoder_B.residual1 = nn.Module()
    m.decoder_B.residual1.block = residual_block()
    m.decoder_B.residual2 = nn.Module()
    m.decoder_B.residual2.block = residual_block()
    m.decoder_B.fc_out = nn.Linear(128, 27)
    if state_net:
        m.state_net = nn.Module()
        m.state_net.encoder = nn.Sequential(nn.Linear(9, 32), nn.LayerNorm(32), nn.ReLU(), nn.Linear(32, 8))
        m.state_net.decoder = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 4))
    return m


def randomise(model, gen):
    """Random values everywhere (LayerNorms too), so copies and inits are told apart."""
    with torch.no_grad():
        for t in list(model.parameters()) + list(model.buffers()):
            t.copy_(torch.randn(t.shape, generator=gen) * 0.3)
        for mod in model.modules():
            if hasattr(mod, "manifold"):
                mod.manifold.isp_c.fill_(0.5413248546129181 + 0.1 * float(torch.randn(1, generator=gen)))


def v5_11_params(L, H, layers, dropout, kind, ctrl):
    return {
        "latent_dim": L,
        "hidden_dim": H,
        "projection_layers": layers,
        "projection_dropout": dropout,
        "dual_projection": kind != "single",
        "share_direction": kind == "shared",
        "controller": ctrl,
        "encoder": "frozen",
        "decoder": "frozen",
    }


V5_12_4 = dict(projection_layers=2, projection_dropout=True, dual_projection=True, share_direction=False,
               controller=True, encoder="improved", decoder="improved")
V5_11 = dict(hidden_dim=64, projection_layers=1, projection_dropout=False, dual_projection=False,
             share_direction=False, controller=False, encoder="frozen", decoder="frozen")


def cases():
    rng = random.Random(SEED)
    out = []
    n = 0
    for layers in (1, 2, 3, 4):
        for dropout in (False, True):
            for kind in ("single", "dual", "shared"):
                for ctrl in (False, True):
                    L, H = DIMS[n % len(DIMS)] if n < len(DIMS) else rng.choice(DIMS)
                    n += 1
                    p = v5_11_params(L, H, layers, dropout, kind, ctrl)
                    # Half the files say PartialFreeze in their config; shared-direction ones
                    # carry no config (upstream configs have no key for it).
                    name = "TernaryVAEV5_11_PartialFreeze" if n % 2 else "TernaryVAEV5_11"
                    config = None if kind == "shared" else {
                        "model": {
                            "name": name,
                            "latent_dim": L,
                            "hidden_dim": H,
                            "projection_layers": layers,
                            "projection_dropout": 0.1 if dropout else 0.0,
                            "use_dual_projection": kind != "single",
                            "use_controller": ctrl,
                        }
                    }
                    key = rng.choice(["model_state_dict", "model_state"])
                    out.append({"name": f"v5_11-{layers}L-{'drop' if dropout else 'nodrop'}-{kind}-"
                                        f"{'ctrl' if ctrl else 'noctrl'}-L{L}H{H}",
                                "family": "v5_11", "params": p, "config": config, "key": key, "to": "v5_12_4"})
    for L, H in [(16, 64), (8, 32), (5, 100), (16, 128)]:
        p = v5_11_params(L, H, 2, True, "dual", True)
        config = {"model": {"name": "TernaryVAEV5_12", "latent_dim": L, "hidden_dim": H,
                            "encoder_type": "frozen", "decoder_type": "frozen"}}
        out.append({"name": f"v5_12-L{L}H{H}", "family": "v5_12", "params": p, "config": config,
                    "key": "model_state_dict", "to": "v5_12_4"})
    for L, state_net in [(16, True), (16, False), (8, True), (5, False)]:
        for to in ("v5_11", "v5_12_4"):
            out.append({"name": f"v5_5-{'statenet' if state_net else 'nostatenet'}-L{L}-to-{to}",
                        "family": "v5_5", "latent_dim": L, "state_net": state_net, "key": "model", "to": to,
                        "config": None})
    return out


def tvck(binary, *args):
    r = subprocess.run([binary, *args], capture_output=True, text=True)
    return r.returncode, r.stdout, r.stderr


def trace(plan):
    """Where each final key comes from: follow same-value rows back through the steps."""
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
    return origin


def run_case(binary, work, c, gen):
    if c["family"] == "v5_5":
        L = c["latent_dim"]
        src_model = v5_5_model(L, c["state_net"])
    else:
        p = c["params"]
        L, H = p["latent_dim"], p["hidden_dim"]
        src_model = family_model(p)
    randomise(src_model, gen)
    state = src_model.state_dict()
    top = {c["key"]: state, "epoch": 7, "optimizer_state_dict": {"state": {}, "param_groups": []},
           "metrics": {"coverage": 0.99}}
    if c["config"] is not None:
        top["config"] = c["config"]
    src = os.path.join(work, c["name"] + ".pt")
    out = os.path.join(work, c["name"] + f".{c['to']}.pt")
    torch.save(top, src)

    rc, dry, err = tvck(binary, "convert", src, "--to", c["to"], "--dry-run", "--json")
    if rc != 0:
        fail(f"{c['name']}: dry run exit {rc}: {err.strip()}")
    rc, real, err = tvck(binary, "convert", src, "--to", c["to"], "-o", out, "--json")
    if rc != 0:
        fail(f"{c['name']}: convert exit {rc}: {err.strip()}")
    plan = json.loads(real)["plan"]
    if json.loads(dry)["plan"] != plan:
        fail(f"{c['name']}: the dry-run plan differs from the real run's")
    if plan["target_version"] != c["to"]:
        fail(f"{c['name']}: converted to {plan['target_version']}")
    want_source = {"v5_5": "v5_5", "v5_12": "v5_12", "v5_11": "v5_11"}[c["family"]]
    if c["config"] and c["config"]["model"]["name"] == "TernaryVAEV5_11_PartialFreeze":
        want_source = "v5_11_partial_freeze"
    if not plan["source_version"].startswith(want_source):
        fail(f"{c['name']}: read as {plan['source_version']}, built as {want_source}")

    written = torch.load(out, weights_only=True)
    got = model_state(written)
    if c["to"] == "v5_12_4":
        tp = dict(V5_12_4, latent_dim=L, hidden_dim=H if c["family"] != "v5_5" else 64)
    else:
        tp = dict(V5_11, latent_dim=L)
    target = family_model(tp)
    try:
        target.load_state_dict(got, strict=True)
    except RuntimeError as e:
        fail(f"{c['name']}: strict load into {c['to']}: {e}")

    copied = inits = 0
    for key, (kind, what) in trace(plan).items():
        t = got[key]
        if kind == "copy":
            if not torch.equal(t, state[what]):
                fail(f"{c['name']}: {key} differs from source {what}")
            copied += 1
        elif what in ("ones", "zeros", "identity"):
            want = {"ones": torch.ones_like(t), "zeros": torch.zeros_like(t),
                    "identity": torch.eye(*t.shape) if t.dim() == 2 else None}[what]
            if want is None or not torch.equal(t, want):
                fail(f"{c['name']}: {key} is not {what}")
            inits += 1
    if has_numpy(written) or "optimizer_state_dict" in written:
        fail(f"{c['name']}: numpy scalars or optimizer state left")
    if [s["name"] for s in written["migration"]["specs"]] != [s["spec"] for s in plan["steps"]]:
        fail(f"{c['name']}: migration record {written['migration']!r}")

    notes = []
    if c["family"] == "v5_11":
        p = c["params"]
        dropped = any("beyond the second are dropped" in w for w in plan["warnings"])
        if dropped != (p["projection_layers"] > 2):
            fail(f"{c['name']}: block-drop warning {dropped} for {p['projection_layers']} layers")
        if p["projection_layers"] == 2:
            # Dropout moves indices only: in eval mode each projection is unchanged (with a
            # shared direction, proj_A; proj_B gains a radius block).
            src_model.eval()
            target.eval()
            z = torch.randn(64, L, generator=gen)
            with torch.no_grad():
                for y in ("A",) if p["share_direction"] else ("A", "B"):
                    sp = getattr(src_model.projection, f"proj_{y}") if p["dual_projection"] else src_model.projection
                    tp_ = getattr(target.projection, f"proj_{y}")
                    if not torch.allclose(project(sp, z, 0.95), project(tp_, z, 0.95), atol=1e-6):
                        fail(f"{c['name']}: proj_{y} does not compute what the source projection does")
            notes.append("projections equal")
    specs = "+".join(s["spec"] for s in plan["steps"])
    print(f"ok {c['name']}: {plan['source_version']} -> {c['to']} via {specs}; strict load; "
          f"{copied} copied tensors equal, {inits} constant inits" + "".join(f"; {n}" for n in notes))
    return c


def main():
    binary, work = sys.argv[1], sys.argv[2]
    os.makedirs(work, exist_ok=True)
    torch.manual_seed(SEED)
    gen = torch.Generator().manual_seed(SEED)
    all_cases = cases()
    for c in all_cases:
        run_case(binary, work, c, gen)
    print(f"{len(all_cases)} layouts converted and loaded strictly")


if __name__ == "__main__":
    main()
