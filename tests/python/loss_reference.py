"""Independent PyTorch implementation of the training losses of docs/training.md §2, for
the cross-check of `tvck eval --losses` (tests/it/train_cli.rs runs it).

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


def targets_of(inner, outer):
    """t(v) = outer − (v/9)(outer − inner) for v = 0..9, computed in double, float32."""
    v = torch.arange(10, dtype=torch.float64)
    return (outer - (v / 9.0) * (outer - inner)).float()


def level_mean_var(x, onehot, counts):
    """Per level (columns of onehot [B, 10]): the mean and the unbiased variance of x."""
    means = (onehot * x.unsqueeze(1)).sum(0) / counts.clamp_min(1.0)
    centred = x.unsqueeze(1) - means.unsqueeze(0)
    var = (onehot * centred * centred).sum(0) / (counts - 1.0).clamp_min(1.0)
    return means, var


# The losses of training.md §2 as functions of one batch, shared by main() (all 19,683
# operations as one batch) and the PyTorch training peer (benches/train_peer.py).
# r: Poincaré radii (c = 1.0) [B]; z: Poincaré points [B, L]; v: valuations [B] int64;
# t: targets_of(...) [10]; valuation_table: v(i) for i = 0..19,682 (v(0) = 9).


def rich_hierarchy(rb, v, logits, digit_targets, orig, t, cfg):
    """RichHierarchyLoss on z_B's radii: (total, hierarchy, coverage, richness, separation).
    logits = decoder_A(log_map_zero(z_A)) [B, 9, 3]; digit_targets = digit + 1 [B, 9];
    orig = the Euclidean norms ‖z_B_hyp‖ of the starting model, taken by batch position."""
    onehot = F.one_hot(v, 10).float()
    counts = onehot.sum(0)
    present = (counts > 0).float()
    n_levels = present.sum()
    means, var_r = level_mean_var(rb, onehot, counts)
    hierarchy = (((means - t) ** 2) * present).sum() / n_levels
    coverage = F.cross_entropy(logits.reshape(-1, 3), digit_targets.reshape(-1))
    _, var_o = level_mean_var(orig, onehot, counts)
    mrr = cfg.get("min_richness_ratio", 0.5)
    ratio = var_r / (var_o + 1e-8)
    short = (torch.relu(mrr - ratio) ** 2) * (counts >= 2).float()
    richness = short.sum() / n_levels
    # consecutive present levels in ascending v, gaps skipped
    lv = present.nonzero().squeeze(1)
    separation = torch.relu(means[lv[1:]] - means[lv[:-1]] + 0.01).sum()
    total = (
        cfg.get("hierarchy_weight", 5.0) * hierarchy
        + cfg.get("coverage_weight", 1.0) * coverage
        + cfg.get("richness_weight", 2.0) * richness
        + cfg.get("separation_weight", 3.0) * separation
    )
    return total, hierarchy, coverage, richness, separation


def radial(r, v, t, inner, outer, margin_w):
    """RadialHierarchyLoss: weighted MSE to t(v) + margin_w · mean margin violation over
    min(1000, B(B−1)/2) random pairs with v_i > v_j (0 without such a pair)."""
    B = r.shape[0]
    vf = v.float()
    primary = (F.mse_loss(r, t[v], reduction="none") * (1 + torch.exp(0.4 * vf))).mean()
    i, j = draw_pairs(B, min(1000, B * (B - 1) // 2))
    keep = (v[i] > v[j]).float()
    step = (outer - inner) / 9.0
    viol = torch.relu((vf[i] - vf[j]) * step / 2 - (r[j] - r[i])) * keep
    return primary + margin_w * viol.sum() / keep.sum().clamp_min(1.0)


def rank(r, v, tau, n_pairs):
    """GlobalRankLoss: mean over pairs with Δv ≠ 0 of |Δv|·sigmoid(−sign(Δv)(r_j − r_i)/τ)."""
    B = r.shape[0]
    i, j = draw_pairs(B, min(n_pairs, B * (B - 1)))
    dv = (v[i] - v[j]).float()
    keep = (dv != 0).float()
    p = torch.sigmoid(-torch.sign(dv) * (r[j] - r[i]) / tau)
    return (dv.abs() * p * keep).sum() / keep.sum().clamp_min(1.0)


def zero_structure(r, zv, zc, t, vw, sw):
    """CombinedZeroStructureLoss: vw·smoothL1(r, t(zv)) + sw·(ρ + 0.3)², ρ = mean(ẑc·r̂)."""
    val = F.smooth_l1_loss(r, t[zv], beta=1.0)
    zn = (zc - zc.mean()) / (zc.std(unbiased=True) + 1e-8)
    rn = (r - r.mean()) / (r.std(unbiased=True) + 1e-8)
    rho = (zn * rn).mean()
    return vw * val + sw * F.mse_loss(rho, torch.tensor(-0.3))


def geodesic(z, idx, valuation_table, c, dmax, n_pairs):
    """PAdicGeodesicLoss: smoothL1 of d_c(z_i, z_j) against dmax·exp(−v(|idx_i − idx_j|)/3)."""
    B = z.shape[0]
    i, j = draw_pairs(B, min(n_pairs, B * (B - 1) // 2))
    vd = valuation_table[(idx[i] - idx[j]).abs()].float()
    return F.smooth_l1_loss(dist(z[i], z[j], c), dmax * torch.exp(-vd / 3.0), beta=1.0)


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
    t = targets_of(inner, outer)

    out = {}
    rich_c = loss.get("rich_hierarchy")
    if rich_c is not None:
        logits = m.decoder_A.decoder(logmap0(za, c_log)).view(-1, 9, 3)
        # orig = ‖z_B_hyp‖ of the same forward
        terms = rich_hierarchy(dist0(zb), v, logits, digits + 1, zb.norm(dim=-1), t, rich_c)
        names = ("total", "hierarchy", "coverage", "richness", "separation")
        out["rich_hierarchy"] = {k: float(x) for k, x in zip(names, terms)}
    zs = loss.get("zero_structure")
    if zs is not None and zs.get("enabled", True):
        vw, sw = zs.get("valuation_weight", 0.5), zs.get("sparsity_weight", 0.3)
        out["zero_structure"] = float(sum(zero_structure(dist0(z), zv, zc, t, vw, sw) for z in (za, zb)))
    per_seed = []
    rk = loss.get("rank")
    geo = loss.get("geodesic")
    for seed in seeds:
        torch.manual_seed(seed)
        vals = {}
        # radial on z_A then z_B, then rank, then geodesic (training.md §2's order)
        margin_w = rad_c.get("margin_weight", 0.5)
        vals["radial"] = float(sum(radial(dist0(z), v, t, inner, outer, margin_w) for z in (za, zb)))
        if rk is not None and rk.get("enabled", True):
            tau, n = rk.get("temperature", 0.1), rk.get("n_pairs", 2000)
            vals["rank"] = float(sum(rank(dist0(z), v, tau, n) for z in (za, zb)))
        else:
            vals["rank"] = 0.0
        if geo is not None and geo.get("enabled", True):
            n = geo.get("n_pairs", 2000)
            c, dmax = geo.get("curvature", 1.0), geo.get("max_target_distance", 3.0)
            vals["geodesic"] = float(sum(geodesic(z, idx, v, c, dmax, n) for z in (za, zb)))
        else:
            vals["geodesic"] = 0.0
        per_seed.append(vals)
    out["per_seed"] = per_seed
    out["seeds"] = seeds
    out["epoch"] = epoch
    print(json.dumps(out))


if __name__ == "__main__":
    main()
