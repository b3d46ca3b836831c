"""PyTorch reference for `tvck eval` (tests/it/train_cli.rs runs it).

Builds the TernaryVAE modules in PyTorch from domain.md (the same layout parameters tvck
inferred, given as JSON on the command line), loads the checkpoint's model state with
load_state_dict(strict=True), runs all 19,683 operations in eval mode and prints the
metrics as JSON, computed the way domain.md §6 defines them:

    python eval_reference.py CHECKPOINT SPEC_JSON

SPEC_JSON: {"version": "v5_11", "params": {...LayoutParams...}, "max_radius": 0.95,
"curvature": 1.0, "learnable_curvature": false}. No tvck code is used.
"""

import json
import math
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

N_OPS = 19683
DIST_STRIDE = 40
ARTANH_MAX = 1.0 - 1e-5


def frozen_encoder(L):
    m = nn.Module()
    m.encoder = nn.Sequential(
        nn.Linear(9, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU()
    )
    m.fc_mu = nn.Linear(64, L)
    m.fc_logvar = nn.Linear(64, L)
    return m


def improved_encoder(L, p=0.1):
    m = nn.Module()
    layers = []
    for i, o in [(9, 256), (256, 128), (128, 64)]:
        layers += [nn.Linear(i, o), nn.LayerNorm(o), nn.SiLU(), nn.Dropout(p)]
    m.encoder = nn.Sequential(*layers)
    m.fc_mu = nn.Linear(64, L)
    m.fc_logvar = nn.Linear(64, L)
    return m


def frozen_decoder(L):
    m = nn.Module()
    m.decoder = nn.Sequential(nn.Linear(L, 32), nn.ReLU(), nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 27))
    return m


def improved_decoder(L, p=0.1):
    m = nn.Module()
    m.decoder = nn.Sequential(
        nn.Linear(L, 32), nn.LayerNorm(32), nn.SiLU(), nn.Dropout(p),
        nn.Linear(32, 64), nn.LayerNorm(64), nn.SiLU(), nn.Dropout(p),
        nn.Linear(64, 27),
    )
    return m


def projection(L, H, n_layers, dropout, curvature):
    m = nn.Module()
    m.manifold = nn.Module()
    m.manifold.isp_c = nn.Parameter(torch.tensor(math.log(math.expm1(curvature))))
    d = [nn.Linear(L, H), nn.LayerNorm(H), nn.SiLU()] + ([nn.Dropout(0.1)] if dropout else [])
    for _ in range(n_layers - 1):
        d += [nn.Linear(H, H), nn.LayerNorm(H), nn.SiLU()] + ([nn.Dropout(0.1)] if dropout else [])
    d += [nn.Linear(H, L)]
    m.direction_net = nn.Sequential(*d)
    R = max(32, H // 2)
    r = [nn.Linear(L, R), nn.SiLU()] + ([nn.Dropout(0.1)] if dropout else [])
    for _ in range(n_layers - 1):
        r += [nn.Linear(R, R), nn.SiLU()] + ([nn.Dropout(0.1)] if dropout else [])
    r += [nn.Linear(R, 1), nn.Sigmoid()]
    m.radius_net = nn.Sequential(*r)
    return m


def controller():
    m = nn.Module()
    m.net = nn.Sequential(nn.Linear(8, 32), nn.LayerNorm(32), nn.SiLU(), nn.Linear(32, 32), nn.SiLU(), nn.Linear(32, 6))
    return m


def encode(enc, x, improved):
    h = enc.encoder(x)
    return enc.fc_mu(h), enc.fc_logvar(h)


def project(p, z, max_radius):
    direction = F.normalize(z + p.direction_net(z), dim=-1)
    return direction * (p.radius_net(z) * max_radius)


def rankdata(x):
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    xs = x[order]
    i = 0
    while i < len(x):
        j = i
        while j + 1 < len(x) and xs[j + 1] == xs[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    return ranks


def spearman(a, b):
    ra, rb = rankdata(np.asarray(a, dtype=np.float64)), rankdata(np.asarray(b, dtype=np.float64))
    ra -= ra.mean()
    rb -= rb.mean()
    den = math.sqrt((ra * ra).sum() * (rb * rb).sum())
    return 0.0 if den == 0 else float((ra * rb).sum() / den)


def valuation(i):
    if i == 0:
        return 9
    k = 0
    while i % 3 == 0 and k < 9:
        i //= 3
        k += 1
    return k


def metrics(model, spec):
    """domain.md §6's metrics of `model` (built as load_model() builds it) over all 19,683
    operations in eval mode, z = mu; the model's train/eval mode is restored."""
    return _eval_mode(model, lambda: _metrics(per_operation_outputs(model, spec)))


def per_operation(model, spec):
    """Per operation, in eval mode (z = mu): `ok` (reconstructed exactly, bool [N]) and,
    with a projection, the Poincaré radii `r_A`, `r_B` (float64 [N])."""
    o = _eval_mode(model, lambda: per_operation_outputs(model, spec))
    return {k: o[k] for k in ("ok", "r_A", "r_B") if k in o}


def _eval_mode(model, f):
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = f()
    model.train(was_training)
    return out


def per_operation_outputs(model, spec):
    p = spec["params"]
    improved_enc = p["encoder"] == "improved"
    has_proj = p["hidden_dim"] > 0
    idx = torch.arange(N_OPS)
    x = torch.stack([((idx // 3**d) % 3) - 1 for d in range(9)], dim=1).float()
    mu_a, logvar_a = encode(model.encoder_A, x, improved_enc)
    if improved_enc:
        logvar_a = logvar_a.clamp(-10, 2)
    logits = model.decoder_A.decoder(mu_a).view(-1, 9, 3)
    pred = logits.argmax(-1) - 1
    out = {"ok": (pred == x.long()).all(-1).numpy()}
    if has_proj:
        mu_b, _ = encode(model.encoder_B, x, improved_enc)
        if p["dual_projection"]:
            pa, pb, pc = model.projection.proj_A, model.projection.proj_B, model.projection.proj_A
        else:
            pa = pb = pc = model.projection
        za = project(pa, mu_a, spec["max_radius"])
        zb = project(pb, mu_b, spec["max_radius"])
        if spec["learnable_curvature"]:
            c = F.softplus(pc.manifold.isp_c)
        else:
            c = torch.tensor(float(spec["curvature"]))
        sc = c.sqrt()

        def radius(z):
            n = z.norm(dim=-1)
            return ((n * sc).clamp(0.0, ARTANH_MAX).atanh() * 2.0 / sc).double().numpy()

        out.update(z_A=za, z_B=zb, r_A=radius(za), r_B=radius(zb))
    return out


def _metrics(o):
    covered = int(o["ok"].sum())
    out = {"covered": covered, "coverage": covered / N_OPS}
    if "r_A" in o:
        za, zb, ra, rb = o["z_A"], o["z_B"], o["r_A"], o["r_B"]
        v = np.array([valuation(i) for i in range(N_OPS)])

        def richness(r):
            return float(np.mean([r[v == l].var() for l in range(10) if (v == l).any()]))

        def dist_corr(z):
            zs = z.double().numpy()[::DIST_STRIDE]
            vs = v[::DIST_STRIDE]
            iu = np.triu_indices(len(zs), k=1)
            d = np.sqrt(((zs[:, None, :] - zs[None, :, :]) ** 2).sum(-1))[iu]
            dv = np.abs(vs[:, None] - vs[None, :])[iu].astype(np.float64)
            return spearman(d, dv)

        hb = spearman(v, rb)
        dcb = dist_corr(zb)
        out.update(
            hierarchy_a=spearman(v, ra),
            hierarchy_b=hb,
            richness_a=richness(ra),
            richness_b=richness(rb),
            dist_corr_a=dist_corr(za),
            dist_corr_b=dcb,
            r_v0=float(rb[v == 0].mean()),
            r_v9=float(rb[v == 9].mean()),
            mean_radius=float(rb.mean()),
            std_radius=float(rb.std()),
            Q=dcb + 1.5 * abs(hb),
        )
    return out


def load_model(ckpt_path, spec):
    """The model of `spec` with the checkpoint's model state loaded strictly (a v5.5
    model: encoder_A and decoder_A only)."""
    p = spec["params"]
    L = p["latent_dim"]
    # The fixtures store metrics as numpy scalars: allow exactly those reconstructors.
    safe = [np._core.multiarray.scalar, np.dtype] + [type(np.dtype(t)) for t in ("f8", "f4", "i8", "i4", "b1")]
    with torch.serialization.safe_globals(safe):
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True)
    state = ckpt
    for key in ("model_state_dict", "model_state", "model"):
        if isinstance(ckpt, dict) and key in ckpt and isinstance(ckpt[key], dict):
            state = ckpt[key]
            break
    improved_enc = p["encoder"] == "improved"
    improved_dec = p["decoder"] == "improved"
    model = nn.Module()
    model.encoder_A = improved_encoder(L) if improved_enc else frozen_encoder(L)
    model.decoder_A = improved_decoder(L) if improved_dec else frozen_decoder(L)
    has_proj = p["hidden_dim"] > 0
    if has_proj:
        model.encoder_B = improved_encoder(L) if improved_enc else frozen_encoder(L)
        assert not p["share_direction"], "share_direction is not modelled by this reference"
        mk = lambda: projection(L, p["hidden_dim"], p["projection_layers"], p["projection_dropout"], spec["curvature"])
        if p["dual_projection"]:
            model.projection = nn.Module()
            model.projection.proj_A = mk()
            model.projection.proj_B = mk()
        else:
            model.projection = mk()
        if p["controller"]:
            model.controller = controller()
        model.load_state_dict(state, strict=True)
    else:
        # v5.5: only encoder_A and decoder_A are needed for coverage; load them strictly.
        sub = {k: v for k, v in state.items() if k.startswith(("encoder_A.", "decoder_A."))}
        model.load_state_dict(sub, strict=True)
    return model


def main():
    ckpt_path, spec = sys.argv[1], json.loads(sys.argv[2])
    torch.set_grad_enabled(False)
    print(json.dumps(metrics(load_model(ckpt_path, spec), spec)))


if __name__ == "__main__":
    main()
