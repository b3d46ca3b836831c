"""Independent PyTorch implementation of the training losses of docs/training.md §2, for
the cross-check of `tvck eval --losses` (tests/train_cli.rs runs it).

Builds the model with eval_reference.py's builders (domain.md), loads the checkpoint
strictly, runs all 19,683 operations as one batch in deterministic mode (eval mode,
z = mu) and computes every term from training.md's text, with the loss settings of the
config (upstream defaults where a key is absent). No tvck code is used.

    python loss_reference.py CHECKPOINT LOSS_JSON SPEC_JSON EPOCH SEEDS

LOSS_JSON: the config's raw `loss:` block as JSON (the test converts the YAML).
SPEC_JSON: the `spec` object of `tvck eval --json` (layout parameters, max radius).
SEEDS: comma-separated torch seeds for the random pairs. Prints JSON: the deterministic
terms, and for radial, rank and geodesic the value per seed (A+B, before outer weights).
"""

import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
import eval_reference as ref  # noqa: E402

N = 19683
EPS_ARTANH = 1e-7


def load_model(path, spec):
    p = spec["params"]
    L = p["latent_dim"]
    improved = p["encoder"] == "improved"
    m = torch.nn.Module()
    m.encoder_A = ref.improved_encoder(L) if improved else ref.frozen_encoder(L)
    m.encoder_B = ref.improved_encoder(L) if improved else ref.frozen_encoder(L)
    m.decoder_A = ref.improved_decoder(L) if p["decoder"] == "improved" else ref.frozen_decoder(L)
    mk = lambda: ref.projection(L, p["hidden_dim"], p["projection_layers"], p["projection_dropout"], 1.0)
    if p["dual_projection"]:
        m.projection = torch.nn.Module()
        m.projection.proj_A = mk()
        m.projection.proj_B = mk()
    else:
        m.projection = mk()
    if p["controller"]:
        m.controller = ref.controller()
    safe = [np._core.multiarray.scalar, np.dtype] + [type(np.dtype(t)) for t in ("f8", "f4", "i8", "i4", "b1")]
    with torch.serialization.safe_globals(safe):
        ck = torch.load(path, map_location="cpu", weights_only=True)
    state = ck
    for key in ("model_state_dict", "model_state", "model"):
        if isinstance(ck, dict) and key in ck and isinstance(ck[key], dict):
            state = ck[key]
            break
    m.load_state_dict(state, strict=True)
    m.eval()
    return m


def dist0(z):
    """Poincaré radius with c = 1.0: 2·artanh(‖z‖), argument clamped to 1 − 1e-7."""
    return 2.0 * torch.atanh(z.norm(dim=-1).clamp(-1 + EPS_ARTANH, 1 - EPS_ARTANH))


def mobius_add(x, y, c):
    xy = (x * y).sum(-1, keepdim=True)
    x2 = (x * x).sum(-1, keepdim=True)
    y2 = (y * y).sum(-1, keepdim=True)
    num = (1 + 2 * c * xy + c * y2) * x + (1 - c * x2) * y
    den = 1 + 2 * c * xy + c**2 * x2 * y2
    return num / den.clamp_min(1e-15)


def dist(x, y, c):
    sc = math.sqrt(c)
    n = mobius_add(-x, y, c).norm(dim=-1)
    return 2.0 / sc * torch.atanh((sc * n).clamp(-1 + EPS_ARTANH, 1 - EPS_ARTANH))


def logmap0(z, c):
    sc = math.sqrt(c)
    n = z.norm(dim=-1, keepdim=True).clamp_min(1e-15)
    return torch.atanh((sc * n).clamp(-1 + EPS_ARTANH, 1 - EPS_ARTANH)) / (sc * n) * z


def draw_pairs(B, n):
    i = torch.randint(0, B, (n,))
    j = torch.randint(0, B, (n,))
    j = torch.where(i == j, (j + 1) % B, j)
    return i, j


def main():
    ckpt, loss, spec, epoch, seeds = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    seeds = [int(s) for s in seeds.split(",") if s]
    loss = loss or {}
    rad_c = loss.get("radial") or {}
    inner, outer = rad_c.get("inner_radius", 0.08), rad_c.get("outer_radius", 0.90)
    torch.set_grad_enabled(False)
    m = load_model(ckpt, spec)
    idx = torch.arange(N)
    digits = torch.stack([((idx // 3**d) % 3) - 1 for d in range(9)], dim=1)
    x = digits.float()
    v = torch.tensor([ref.valuation(i) for i in range(N)])
    # leading zero digits (zero valuation) and the total count of zero digits
    zv = torch.tensor([next((d for d in range(9) if digits[i, d] != 0), 9) for i in range(N)])
    zc = (digits == 0).sum(1).float()
    mu_a = m.encoder_A.fc_mu(m.encoder_A.encoder(x))
    mu_b = m.encoder_B.fc_mu(m.encoder_B.encoder(x))
    mr = spec["max_radius"]
    if spec["params"]["dual_projection"]:
        pa, pb = m.projection.proj_A, m.projection.proj_B
    else:
        pa = pb = m.projection
    za = ref.project(pa, mu_a, mr)
    zb = ref.project(pb, mu_b, mr)
    c_log = float(F.softplus(pa.manifold.isp_c))

    def target(level):
        return (outer - (level.double() / 9.0) * (outer - inner)).float()

    out = {}
    # rich_hierarchy on z_B
    rich_c = loss.get("rich_hierarchy")
    if rich_c is not None:
        r = dist0(zb)
        levels = sorted(set(v.tolist()))
        means = {l: r[v == l].mean() for l in levels}
        hierarchy = sum((means[l] - target(torch.tensor(l))) ** 2 for l in levels) / len(levels)
        logits = m.decoder_A.decoder(logmap0(za, c_log)).view(-1, 3)
        coverage = F.cross_entropy(logits, (digits + 1).view(-1))
        orig = zb.norm(dim=-1)
        mrr = rich_c.get("min_richness_ratio", 0.5)
        richness = 0.0
        for l in levels:
            sel = v == l
            if sel.sum() >= 2:
                ratio = r[sel].var(unbiased=True) / (orig[sel].var(unbiased=True) + 1e-8)
                if ratio < mrr:
                    richness = richness + (mrr - ratio) ** 2
        richness = richness / len(levels)
        separation = sum(torch.relu(means[b] - means[a] + 0.01) for a, b in zip(levels, levels[1:]))
        total = (
            rich_c.get("hierarchy_weight", 5.0) * hierarchy
            + rich_c.get("coverage_weight", 1.0) * coverage
            + rich_c.get("richness_weight", 2.0) * richness
            + rich_c.get("separation_weight", 3.0) * separation
        )
        out["rich_hierarchy"] = {
            "hierarchy": float(hierarchy),
            "coverage": float(coverage),
            "richness": float(richness),
            "separation": float(separation),
            "total": float(total),
        }
    # zero_structure on z_A and z_B
    zs = loss.get("zero_structure")
    if zs is not None and zs.get("enabled", True):
        vw, sw = zs.get("valuation_weight", 0.5), zs.get("sparsity_weight", 0.3)
        total = 0.0
        for z in (za, zb):
            r = dist0(z)
            val = F.smooth_l1_loss(r, target(zv), beta=1.0)
            zn = (zc - zc.mean()) / (zc.std(unbiased=True) + 1e-8)
            rn = (r - r.mean()) / (r.std(unbiased=True) + 1e-8)
            rho = (zn * rn).mean()
            total = total + vw * val + sw * F.mse_loss(rho, torch.tensor(-0.3))
        out["zero_structure"] = float(total)
    step = (outer - inner) / 9.0
    B = N
    per_seed = []
    rk = loss.get("rank")
    geo = loss.get("geodesic")
    for seed in seeds:
        torch.manual_seed(seed)
        vals = {}
        # radial on z_A then z_B
        margin_w = rad_c.get("margin_weight", 0.5)
        tot = 0.0
        for z in (za, zb):
            r = dist0(z)
            primary = (F.mse_loss(r, target(v), reduction="none") * (1 + torch.exp(0.4 * v.float()))).mean()
            i, j = draw_pairs(B, min(1000, B * (B - 1) // 2))
            keep = v[i] > v[j]
            if keep.any():
                dv = (v[i] - v[j]).float()[keep]
                margin = torch.relu(dv * step / 2 - (r[j] - r[i])[keep]).mean()
            else:
                margin = torch.tensor(0.0)
            tot = tot + primary + margin_w * margin
        vals["radial"] = float(tot)
        if rk is not None and rk.get("enabled", True):
            tau, n = rk.get("temperature", 0.1), min(rk.get("n_pairs", 2000), B * (B - 1))
            tot = 0.0
            for z in (za, zb):
                r = dist0(z)
                i, j = draw_pairs(B, n)
                dv = (v[i] - v[j]).float()
                keep = dv != 0
                p = torch.sigmoid(-torch.sign(dv) * (r[j] - r[i]) / tau)
                tot = tot + ((dv.abs() * p)[keep].mean() if keep.any() else 0.0)
            vals["rank"] = float(tot)
        else:
            vals["rank"] = 0.0
        if geo is not None and geo.get("enabled", True):
            n = min(geo.get("n_pairs", 2000), B * (B - 1) // 2)
            c, dmax = geo.get("curvature", 1.0), geo.get("max_target_distance", 3.0)
            tot = 0.0
            for z in (za, zb):
                i, j = draw_pairs(B, n)
                diff = (idx[i] - idx[j]).abs()
                vd = torch.tensor([ref.valuation(int(d)) for d in diff]).float()
                tgt = dmax * torch.exp(-vd / 3.0)
                tot = tot + F.smooth_l1_loss(dist(z[i], z[j], c), tgt, beta=1.0)
            vals["geodesic"] = float(tot)
        else:
            vals["geodesic"] = 0.0
        per_seed.append(vals)
    out["per_seed"] = per_seed
    out["seeds"] = seeds
    out["epoch"] = epoch
    print(json.dumps(out))


if __name__ == "__main__":
    main()
