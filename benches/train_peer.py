"""PyTorch peer of `tvck train` for the trainer benchmark (scripts/bench-train).

The same model (built as tests/python/eval_reference.py builds it from domain.md), the
same losses as src/train/losses.rs (training.md), the same optimizer (torch.optim.AdamW
with the per-part groups, clip_grad_norm_) and the same batches (all 19,683 operations,
shuffled, batch_size from the config) on the CPU. Prints JSON: the median wall time of
one training epoch.

    python benches/train_peer.py CHECKPOINT EPOCHS
"""

import json
import math
import os
import statistics
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
import eval_reference as ref  # noqa: E402

N = 19683
INNER, OUTER = 0.08, 0.90
BATCH, LR, WD, MAX_NORM = 512, 8e-4, 1e-4, 1.0
ARTANH_MAX = 1.0 - 1e-5


def build(path):
    m = torch.nn.Module()
    L = 16
    m.encoder_A = ref.improved_encoder(L)
    m.encoder_B = ref.improved_encoder(L)
    m.decoder_A = ref.improved_decoder(L)
    m.projection = torch.nn.Module()
    m.projection.proj_A = ref.projection(L, 64, 2, True, 1.0)
    m.projection.proj_B = ref.projection(L, 64, 2, True, 1.0)
    m.controller = ref.controller()
    safe = [np._core.multiarray.scalar, np.dtype] + [type(np.dtype(t)) for t in ("f8", "f4", "i8", "i4", "b1")]
    with torch.serialization.safe_globals(safe):
        ck = torch.load(path, map_location="cpu", weights_only=True)
    m.load_state_dict(ck["model_state_dict"], strict=True)
    return m


def radius(z, c):
    sc = c.sqrt()
    return (z.norm(dim=-1) * sc).clamp(0.0, ARTANH_MAX).atanh() * 2.0 / sc


def poincare_distance(x, y, c):
    mx = -x
    xy = (mx * y).sum(-1, keepdim=True)
    x2 = (mx * mx).sum(-1, keepdim=True)
    y2 = (y * y).sum(-1, keepdim=True)
    num = (1 + 2 * c * xy + c * y2) * mx + (1 - c * x2) * y
    den = 1 + 2 * c * xy + c * c * x2 * y2
    m = num / den.clamp_min(1e-15)
    sc = c.sqrt()
    return (m.norm(dim=-1) * sc).clamp(0.0, ARTANH_MAX).atanh() * 2.0 / sc


def level_stats(r, onehot):
    counts = onehot.sum(0)
    means = (onehot * r.unsqueeze(1)).sum(0) / counts.clamp_min(1.0)
    return counts, means


def level_variance(r, onehot):
    counts, means = level_stats(r, onehot)
    centred = r.unsqueeze(1) - means.unsqueeze(0)
    return (onehot * centred * centred).sum(0) / (counts - 1).clamp_min(1.0), counts


def radial(r, v, targets):
    vf = v.float()
    w = (vf * 0.4).exp() + 1
    primary = (w * (r - targets[v]) ** 2).mean()
    n = r.shape[0]
    i, j = torch.randint(n, (min(n, 1000),)), torch.randint(n, (min(n, 1000),))
    vi, vj = vf[i], vf[j]
    mask = (vi > vj).float()
    step = (OUTER - INNER) / 9
    viol = ((vi - vj) * (step * 0.5) - (r[j] - r[i])).relu() * mask
    return primary + 0.5 * viol.sum() / mask.sum().clamp_min(1.0)


def rank(r, v):
    n = r.shape[0]
    i, j = torch.randint(n, (2000,)), torch.randint(n, (2000,))
    dv = v[i].float() - v[j].float()
    p = (-dv.sign() * (r[j] - r[i]) / 0.1).sigmoid()
    w = dv.abs()
    return (w * p).sum() / w.sum().clamp_min(1e-8)


def geodesic(z, idx, c, vals):
    n = z.shape[0]
    i, j = torch.randint(n, (2000,)), torch.randint(n, (2000,))
    diff = (idx[i] - idx[j]).abs()
    target = (-vals[diff].float() / 3.0).exp() * 3.0
    return F.smooth_l1_loss(poincare_distance(z[i], z[j], c), target)


def zero(r, zv, targets):
    val = F.smooth_l1_loss(r, targets[zv])
    zf = zv.float()
    dz, dr = zf - zf.mean(), r - r.mean()
    corr = (dz * dr).mean() / (((dz * dz).mean() * (dr * dr).mean()).sqrt() + 1e-8)
    return 0.5 * val + 0.3 * (corr + 0.3) ** 2


def rich(rb, v, logits, tgt, targets, var_orig):
    onehot = F.one_hot(v, 10).float()
    counts, means = level_stats(rb, onehot)
    present = (counts > 0).float()
    hierarchy = (((means - targets) ** 2) * present).sum() / present.sum().clamp_min(1.0)
    coverage = F.cross_entropy(logits.view(-1, 3), tgt.view(-1))
    var_new, _ = level_variance(rb, onehot)
    has = (counts >= 2).float()
    richness = (((0.5 - var_new / var_orig.clamp_min(1e-12)).relu() ** 2) * has).sum() / has.sum().clamp_min(1.0)
    levels = [l for l in range(10) if counts[l] > 0]
    lo, hi = torch.tensor(levels[:-1]), torch.tensor(levels[1:])
    separation = (means[hi] - means[lo] + 0.01).relu().sum()
    return 5.0 * hierarchy + 1.0 * coverage + 2.5 * richness + 3.0 * separation


def main():
    path, epochs = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(0)
    m = build(path)
    idx_all = torch.arange(N)
    X = torch.stack([((idx_all // 3**d) % 3) - 1 for d in range(9)], dim=1).float()
    T = X.long() + 1
    V = torch.tensor([ref.valuation(i) for i in range(N)])
    ZV = torch.tensor([next((d for d in range(9) if ((i // 3**d) % 3) - 1 != 0), 9) for i in range(N)])
    targets = torch.tensor([OUTER - (l / 9) * (OUTER - INNER) for l in range(10)])
    for p in list(m.encoder_A.parameters()) + list(m.decoder_A.parameters()):
        p.requires_grad_(False)
    m.eval()
    with torch.no_grad():
        zb = ref.project(m.projection.proj_B, m.encoder_B.fc_mu(m.encoder_B.encoder(X)), 0.95)
        c0 = F.softplus(m.projection.proj_A.manifold.isp_c)
        var_orig, _ = level_variance(radius(zb, c0), F.one_hot(V, 10).float())
    groups = [
        {"params": list(m.projection.parameters()) + list(m.controller.parameters()), "lr": LR},
        {"params": list(m.encoder_B.parameters()), "lr": LR * 0.1},
    ]
    opt = torch.optim.AdamW(groups, lr=LR, weight_decay=WD)
    params = [p for g in groups for p in g["params"]]
    m.encoder_B.train()
    m.projection.train()
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        perm = torch.randperm(N)
        for s in range(0, N, BATCH):
            idx = perm[s : s + BATCH]
            x, v, tgt, zv = X[idx], V[idx], T[idx], ZV[idx]
            mu_a, lv_a = ref.encode(m.encoder_A, x, True)
            mu_b, lv_b = ref.encode(m.encoder_B, x, True)
            lv_a, lv_b = lv_a.clamp(-10, 2), lv_b.clamp(-10, 2)
            logits = m.decoder_A.decoder(mu_a).view(-1, 9, 3)
            z_a = mu_a + torch.randn_like(mu_a) * (lv_a * 0.5).exp()
            z_b = mu_b + torch.randn_like(mu_b) * (lv_b * 0.5).exp()
            za = ref.project(m.projection.proj_A, z_a, 0.95)
            zb = ref.project(m.projection.proj_B, z_b, 0.95)
            c = F.softplus(m.projection.proj_A.manifold.isp_c)
            ra, rb = radius(za, c), radius(zb, c)
            loss = rich(rb, v, logits, tgt, targets, var_orig)
            loss = loss + 1.0 * (radial(ra, v, targets) + radial(rb, v, targets))
            loss = loss + 0.5 * (rank(ra, v) + rank(rb, v))
            loss = loss + 1.0 * (zero(ra, zv, targets) + zero(rb, zv, targets))
            loss = loss + 0.3 * (geodesic(za, idx, c, V) + geodesic(zb, idx, c, V))
            opt.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, MAX_NORM)
            opt.step()
        times.append(time.perf_counter() - t0)
    print(json.dumps({"epoch_s": statistics.median(times), "epochs": times, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
