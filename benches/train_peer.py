"""PyTorch peer of `tvck train`: the same training, written in plain PyTorch.

Used by the trainer benchmark (benches/train_bench.py, scripts/bench-train: equal work
per epoch) and by the trajectory test (tests/it/train_cli.rs
`trajectory_agrees_with_the_pytorch_peer`). It implements what `tvck train` implements
(docs/training.md, with tvck's choices of docs/training-differences.md), with one
definition of each piece shared with the cross-check references:

* model: tests/python/eval_reference.py's builders (torch.nn modules from domain.md), the
  starting weights loaded strictly from the frozen checkpoint (its whole model state, as
  `tvck train` loads a v5.12.4 checkpoint), dropout p from the config;
* forward: the whole model in train mode (dropout also in the frozen encoder_A and in
  decoder_A), z = mu + eps·exp(logvar/2), encoder_A under no_grad while frozen, coverage
  logits = decoder_A(log_map_zero(z_A_hyp)) with c = softplus(proj_A.isp_c) as a number;
* losses: tests/python/loss_reference.py's functions (training.md §2), the outer weights
  and phase of training.md §2, the richness baseline ‖z_B_hyp‖ of the starting model;
* batches: upstream's stratified sampler (training.md §3), all batches of an epoch drawn
  before the first step;
* optimizer: torch.optim.Adam(weight_decay) with upstream's groups (proj_A, proj_B,
  controller, encoder_A when unfrozen, encoder_B when unfrozen; lr scales of option_c).
  On Euclidean parameters geoopt's RiemannianAdam is exactly this update (coupled L2
  g + wd·p, the same moments and bias corrections; training.md §4); riemannian.enabled
  false → AdamW. zero_grad on the optimizer's parameters only, clip_grad_norm_ over
  model.parameters(): decoder_A (in no group) accumulates its gradient and is clipped,
  stale gradients of parts homeostasis froze are kept and clipped;
* the configured learning-rate schedule (as tvck), restarted when homeostasis rebuilds
  the optimizer;
* evaluation (eval_every, and the last epoch): eval_reference.metrics, domain.md §6's
  deterministic metrics, which tvck records; homeostasis (training.md §5 with tvck's
  settings, a port of src/train/homeostasis.rs) and the best / early-stop counters.

    python benches/train_peer.py --checkpoint CKPT --config CONFIG.json --epochs N
        [--seed S] [--metrics OUT.jsonl]

CONFIG.json: the training config (the YAML as JSON). OUT.jsonl: one line per epoch like
tvck's metrics.jsonl (line 0 the starting model). Prints JSON: the wall time of each
epoch's training (batches and steps, no evaluation) and the thread count.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "python"))
import eval_reference as ref  # noqa: E402
import loss_reference as lref  # noqa: E402

N = 19683


# ---------------------------------------------------------------- model


def layout_of(state):
    """The layout parameters of a model state (the shapes and Sequential indices)."""
    dual = "projection.proj_A.manifold.isp_c" in state
    proj = "projection.proj_A" if dual else "projection"
    d0 = state[f"{proj}.direction_net.0.weight"]
    # direction_net: blocks of Linear, LayerNorm, SiLU (+ Dropout), then the output Linear
    lin = sorted(
        int(k.split(".")[-2])
        for k in state
        if k.startswith(f"{proj}.direction_net.") and k.endswith(".weight") and state[k].dim() == 2
    )
    block = lin[1] - lin[0]
    return {
        "latent_dim": d0.shape[1],
        "hidden_dim": d0.shape[0],
        "encoder": "improved" if "encoder_A.encoder.1.weight" in state else "frozen",
        "decoder": "improved" if "decoder_A.decoder.8.weight" in state else "frozen",
        "projection_layers": len(lin) - 1,
        "projection_dropout": block == 4,
        "dual_projection": dual,
        "controller": any(k.startswith("controller.") for k in state),
        "share_direction": False,
    }


def load_state(path):
    safe = [np._core.multiarray.scalar, np.dtype] + [type(np.dtype(t)) for t in ("f8", "f4", "i8", "i4", "b1")]
    with torch.serialization.safe_globals(safe):
        ck = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("model_state_dict", "model_state", "model"):
        if isinstance(ck, dict) and isinstance(ck.get(key), dict):
            return ck[key]
    return ck


def build(cfg, ckpt):
    mc = cfg.get("model") or {}
    state = load_state(ckpt)
    p = layout_of(state)
    spec = {
        "params": p,
        "max_radius": mc.get("max_radius", 0.95),
        "curvature": mc.get("curvature", 1.0),
        "learnable_curvature": mc.get("learnable_curvature", False),
    }
    m = lref.load_model(ckpt, spec)
    for part, key in (("encoder_A", "encoder_dropout"), ("encoder_B", "encoder_dropout"), ("decoder_A", "decoder_dropout"), ("projection", "projection_dropout")):
        for mod in getattr(m, part).modules():
            if isinstance(mod, torch.nn.Dropout):
                mod.p = float(mc.get(key, 0.1))
    return m, spec


def encode(enc, x, improved, lv_min, lv_max):
    h = enc.encoder(x)
    mu, lv = enc.fc_mu(h), enc.fc_logvar(h)
    return mu, (lv.clamp(lv_min, lv_max) if improved else lv)


class Forward:
    def __init__(self, m, spec, cfg):
        mc = cfg.get("model") or {}
        self.m = m
        self.improved = spec["params"]["encoder"] == "improved"
        self.lv = (mc.get("logvar_min", -10.0), mc.get("logvar_max", 2.0))
        self.max_r = spec["max_radius"]
        dual = spec["params"]["dual_projection"]
        self.pa = m.projection.proj_A if dual else m.projection
        self.pb = m.projection.proj_B if dual else m.projection

    def embed(self, x, frozen_a, frozen_b):
        """(z_A_hyp, z_B_hyp): z sampled; encoder_A / encoder_B under no_grad when frozen."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen_a):
            mu_a, lv_a = encode(self.m.encoder_A, x, self.improved, *self.lv)
            z_a = mu_a + torch.randn_like(mu_a) * torch.exp(0.5 * lv_a)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not frozen_b):
            mu_b, lv_b = encode(self.m.encoder_B, x, self.improved, *self.lv)
            z_b = mu_b + torch.randn_like(mu_b) * torch.exp(0.5 * lv_b)
        return ref.project(self.pa, z_a, self.max_r), ref.project(self.pb, z_b, self.max_r)

    def coverage_logits(self, za):
        c = float(F.softplus(self.pa.manifold.isp_c.detach()))
        return self.m.decoder_A.decoder(lref.logmap0(za, c)).view(-1, 9, 3)


# ---------------------------------------------------------------- data


class Data:
    def __init__(self):
        idx = torch.arange(N)
        digits = torch.stack([((idx // 3**d) % 3) - 1 for d in range(9)], dim=1)
        self.x = digits.float()
        self.targets = digits + 1
        self.v = torch.tensor([ref.valuation(i) for i in range(N)])
        zero = digits == 0
        # leading zero digits (the zero valuation) and the count of zero digits
        self.zv = torch.cumprod(zero.long(), dim=1).sum(1)
        self.zc = zero.sum(1).float()
        # levels in first-appearance order over 0.. (9, 0, 1, …, 8), their members
        order = []
        for l in self.v.tolist():
            if l not in order:
                order.append(l)
        self.levels = [(l, (self.v == l).nonzero().squeeze(1)) for l in order]
        self.n_low = int((self.v < 4).sum())

    def epoch(self, B, high_ratio):
        """create_stratified_indices (training.md §3): ⌈N/B⌉ batches drawn up front."""
        h = int(B * high_ratio)
        draws = [(mem, max(1, h // 6)) for l, mem in self.levels if l >= 4]
        draws += [(mem, max(1, int((B - h) * len(mem) / self.n_low))) for l, mem in self.levels if l < 4]
        out = []
        for _ in range((N + B - 1) // B):
            parts = [mem[torch.randint(0, len(mem), (k,))] for mem, k in draws]
            b = torch.cat(parts)
            if len(b) > B:
                b = b[torch.randperm(len(b))[:B]]
            elif len(b) < B:
                b = torch.cat([b, torch.randint(0, N, (B - len(b),))])
            out.append(b)
        return out


# ---------------------------------------------------------------- losses


class Losses:
    """training.md §2 with the config's settings (a section absent: that term off;
    `enabled: false` turns off rank, geodesic and zero_structure)."""

    def __init__(self, loss_cfg):
        lc = loss_cfg or {}
        on = lambda k: lc.get(k) is not None and lc[k].get("enabled", True) is not False
        rad = lc.get("radial") or {}
        self.inner, self.outer = rad.get("inner_radius", 0.08), rad.get("outer_radius", 0.90)
        self.t = lref.targets_of(self.inner, self.outer)
        self.rich = lc.get("rich_hierarchy")
        self.radial = lc.get("radial")
        self.rank = lc["rank"] if on("rank") else None
        self.geo = lc["geodesic"] if on("geodesic") else None
        self.zero = lc["zero_structure"] if on("zero_structure") else None
        self.phase_start = (lc.get("geodesic") or {}).get("phase_start_epoch", 50)

    def weights(self, epoch):
        p2 = epoch >= self.phase_start
        return {
            "phase": 2 if p2 else 1,
            "radial": 0.0 if self.radial is None else self.radial.get("radial_weight", 1.0) * (0.5 if p2 else 1.0),
            "rank": 0.0 if self.rank is None else self.rank.get("weight", 0.5),
            "zero": 0.0 if self.zero is None else self.zero.get("valuation_weight", 0.5),
            "geo": self.geo.get("weight", 0.3) if (self.geo is not None and p2) else 0.0,
        }

    def total(self, fw, za, zb, b, data, orig, epoch):
        """The batch's total loss and its parts (as tvck's metrics.jsonl names them)."""
        w = self.weights(epoch)
        t, v = self.t, data.v[b]
        ra, rb = lref.dist0(za), lref.dist0(zb)
        parts, vals = [], {}
        if self.rich is not None:
            tot, h, c, r, s = lref.rich_hierarchy(rb, v, fw.coverage_logits(za), data.targets[b], orig[b], t, self.rich)
            parts.append(tot)
            vals.update(rich=tot, rich_hierarchy=h, rich_coverage=c, rich_richness=r, rich_separation=s)
        if self.radial is not None:
            mw = self.radial.get("margin_weight", 0.5)
            l = lref.radial(ra, v, t, self.inner, self.outer, mw) + lref.radial(rb, v, t, self.inner, self.outer, mw)
            parts.append(w["radial"] * l)
            vals["radial"] = l
        if self.rank is not None:
            tau, n = self.rank.get("temperature", 0.1), self.rank.get("n_pairs", 2000)
            l = lref.rank(ra, v, tau, n) + lref.rank(rb, v, tau, n)
            parts.append(w["rank"] * l)
            vals["rank"] = l
        if self.zero is not None:
            vw, sw = self.zero.get("valuation_weight", 0.5), self.zero.get("sparsity_weight", 0.3)
            zv, zc = data.zv[b], data.zc[b]
            l = lref.zero_structure(ra, zv, zc, t, vw, sw) + lref.zero_structure(rb, zv, zc, t, vw, sw)
            parts.append(w["zero"] * l)
            vals["zero_structure"] = l
        if self.geo is not None and w["phase"] == 2:
            g = self.geo
            args = (b, data.v, g.get("curvature", 1.0), g.get("max_target_distance", 3.0), g.get("n_pairs", 2000))
            l = lref.geodesic(za, *args) + lref.geodesic(zb, *args)
            parts.append(w["geo"] * l)
            vals["geodesic"] = l
        total = sum(parts[1:], parts[0])
        vals["total"] = total
        return total, vals


# ---------------------------------------------------------------- schedule, homeostasis


def schedule(sc, epochs):
    """The configured schedule as tvck reads it (lr factor of a 0-based epoch)."""
    sc = sc or {}
    kind = sc.get("type")
    eta = sc.get("eta_min", 0.0)
    if kind in ("cosine", "cosine_annealing", "CosineAnnealingLR"):
        t_max = max(1, sc.get("T_max", epochs))
        return lambda base, e: eta + (base - eta) * (1 + math.cos(math.pi * e / t_max)) / 2
    if kind in ("cosine_warmup_restart", "cosine_warm_restarts", "CosineAnnealingWarmRestarts"):
        t0, tm = max(1, sc.get("T_0", 10)), max(1, sc.get("T_mult", 1))

        def warm(base, e):
            t_cur, t_i = e, t0
            while t_cur >= t_i:
                t_cur, t_i = t_cur - t_i, t_i * tm
            return eta + (base - eta) * (1 + math.cos(math.pi * t_cur / t_i)) / 2

        return warm
    if kind in (None, "none", "constant"):
        return lambda base, e: base
    raise SystemExit(f"train_peer.py: scheduler type {kind!r} is not modelled")


class Homeostasis:
    """src/train/homeostasis.rs (training.md §5 with tvck's settings), in Python."""

    def __init__(self, hc):
        g = lambda k, d: hc.get(k, d)
        self.enabled = g("enabled", True)
        self.freeze_thr = g("coverage_freeze_threshold", 0.995)
        self.unfreeze_thr = g("coverage_unfreeze_threshold", 1.0)
        self.floor = g("coverage_floor", 0.95)
        self.warmup = g("warmup_epochs", 5)
        self.hyst = g("hysteresis_epochs", 3)
        self.annealing = g("enable_annealing", True)
        self.step = g("annealing_step", 0.003)
        self.thr = g("hierarchy_plateau_threshold", 0.001)
        self.patience = g("hierarchy_plateau_patience", 5)
        self.ceiling = g("hierarchy_patience_ceiling", 15)
        self.enc_a, self.enc_b = True, False  # frozen flags
        self.cov, self.ha, self.hb = [], [], []
        self.last_a = self.last_b = -self.hyst
        self.stall_a = self.plateau_b = 0
        self.q_start_a, self.q_start_b = None, 0.0
        self.q = 0.0

    @staticmethod
    def push(w, x):
        w.append(x)
        del w[:-5]

    @staticmethod
    def verdict(q_start, q):
        dq = 0.0 if q_start is None else q - q_start
        return dq, (True if dq > 0 else (False if dq < -0.05 else None))

    def update(self, e, cov, ha, hb, dc):
        events = []
        q = dc + 1.5 * abs(ha)
        self.q = q
        self.push(self.cov, cov)
        self.push(self.ha, ha)
        self.push(self.hb, hb)
        if not self.enabled or e < self.warmup:
            return events
        if e - self.last_a >= self.hyst:
            if not self.enc_a and cov < self.freeze_thr:
                self.enc_a, self.last_a = True, e
                events.append(("freeze", "encoder_A"))
                dq, relax = self.verdict(self.q_start_a, q)
                if self.annealing and relax is not None:
                    d = -self.step if relax else self.step
                    f = self.freeze_thr + d
                    if f >= self.floor:
                        self.freeze_thr = f
                        self.unfreeze_thr = max(self.unfreeze_thr + d, f + 0.005)
                        events.append(("anneal", "encoder_A"))
            elif self.enc_a and cov >= self.unfreeze_thr and len(self.ha) == 5:
                self.stall_a = self.stall_a + 1 if abs(self.ha[-1]) - abs(self.ha[0]) < self.thr else 0
                if self.stall_a >= 5:
                    self.enc_a, self.last_a, self.q_start_a = False, e, q
                    events.append(("unfreeze", "encoder_A"))
        n = len(self.hb)
        if e - self.last_b >= self.hyst and n >= 2:
            first, prev, last = self.hb[0], self.hb[-2], self.hb[-1]
            if not self.enc_b:
                self.plateau_b = self.plateau_b + 1 if abs(last) - abs(first) < self.thr else 0
                if self.plateau_b >= self.patience:
                    self.enc_b, self.last_b = True, e
                    events.append(("freeze", "encoder_B"))
                    dq, relax = self.verdict(self.q_start_b, q)
                    if self.annealing and relax is not None:
                        new = self.patience + 1 if relax else self.patience - 1
                        if (relax and new <= self.ceiling) or (not relax and new >= 5):
                            self.patience = new
                            events.append(("anneal", "encoder_B"))
            elif abs(last) < abs(prev) - 0.01:
                self.enc_b, self.plateau_b, self.last_b, self.q_start_b = False, 0, e, q
                events.append(("unfreeze", "encoder_B"))
        return events


# ---------------------------------------------------------------- training


class Trainer:
    def __init__(self, m, spec, cfg, epochs):
        t = cfg.get("training") or {}
        self.m, self.spec, self.cfg = m, spec, cfg
        self.fw = Forward(m, spec, cfg)
        self.data = Data()
        self.losses = Losses(cfg.get("loss"))
        self.epochs = epochs
        self.B = max(1, min(N, t.get("batch_size", 512)))
        self.high = min(1.0, max(0.0, t.get("high_v_budget_ratio", 0.25)))
        self.base_lr = t.get("lr", 1e-3)
        self.wd = t.get("weight_decay", 1e-4)
        self.max_norm = t.get("max_grad_norm", 1.0)
        self.eval_every = max(1, t.get("eval_every", 5))
        self.min_epochs, self.patience = t.get("min_epochs", 40), t.get("patience", 25)
        self.lr_of = schedule(t.get("scheduler"), epochs)
        self.origin = 0
        oc = cfg.get("option_c") or {}
        self.scale = {"encoder_A": oc.get("encoder_a_lr_scale", 0.05), "encoder_B": oc.get("encoder_b_lr_scale", 0.1)}
        riem = cfg.get("riemannian") or {}
        if riem.get("enabled", True) and riem.get("optimizer", "adam") != "adam":
            raise SystemExit("train_peer.py: riemannian.optimizer other than adam")
        self.adam = torch.optim.Adam if riem.get("enabled", True) else torch.optim.AdamW
        name = (cfg.get("model") or {}).get("name", "")
        if "PartialFreeze" not in name:
            raise SystemExit(f"train_peer.py models TernaryVAEV5_11_PartialFreeze, not {name!r}")
        self.homeo = Homeostasis(cfg.get("homeostasis") or {})
        self.frozen_a, self.frozen_b = True, False
        # The richness baseline: ‖z_B_hyp‖ of the starting model, eval mode, z sampled.
        m.eval()
        with torch.no_grad():
            self.orig = torch.cat([self.fw.embed(self.data.x[s : s + 4096], True, True)[1].norm(dim=-1) for s in range(0, N, 4096)])
        m.train()
        self.rebuild()

    def parts(self):
        m = self.m
        if self.spec["params"]["dual_projection"]:
            proj = [("proj_A", m.projection.proj_A), ("proj_B", m.projection.proj_B)]
        else:
            proj = [("projection", m.projection)]
        ctrl = [("controller", m.controller)] if self.spec["params"]["controller"] else []
        return proj + ctrl + [("encoder_A", m.encoder_A), ("encoder_B", m.encoder_B)]

    def rebuild(self):
        """Upstream's get_param_groups for the freeze state, a fresh optimizer."""
        frozen = {"encoder_A": self.frozen_a, "encoder_B": self.frozen_b}
        groups = []
        for name, mod in self.parts():
            trainable = not frozen.get(name, False)
            for p in mod.parameters():
                p.requires_grad_(trainable)
            if trainable:
                lr = self.base_lr * self.scale.get(name, 1.0)
                groups.append({"params": list(mod.parameters()), "lr": lr, "name": name, "scale": self.scale.get(name, 1.0)})
        # decoder_A: in no group, still given the coverage gradient (accumulating).
        for p in self.m.decoder_A.parameters():
            p.requires_grad_(self.losses.rich is not None)
        self.opt = self.adam(groups, lr=self.base_lr, weight_decay=self.wd)

    def epoch(self, e0):
        lr = self.lr_of(self.base_lr, e0 - self.origin)
        for g in self.opt.param_groups:
            g["lr"] = lr * g["scale"]
        params = list(self.m.parameters())
        sums, n = {}, 0
        for b in self.data.epoch(self.B, self.high):
            za, zb = self.fw.embed(self.data.x[b], self.frozen_a, self.frozen_b)
            loss, vals = self.losses.total(self.fw, za, zb, b, self.data, self.orig, e0)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, self.max_norm) if self.max_norm > 0 else torch.tensor(0.0)
            self.opt.step()
            for k, x in vals.items():
                sums[k] = sums.get(k, 0.0) + x.detach()
            n += 1
        return lr, {k: float(x) / n for k, x in sums.items()}, float(norm)

    def run(self, out):
        best_q, best_h, without = 0.0, 0.0, 0
        m0 = ref.metrics(self.m, self.spec)
        freeze = lambda: {"encoder_a": self.frozen_a, "encoder_b": self.frozen_b, "controller": False}
        lines = [{"epoch": 0, "lr": None, "loss": None, "grad_norm": None, "metrics": m0, "freeze": freeze(), "events": []}]
        times = []
        for epoch in range(1, self.epochs + 1):
            e0 = epoch - 1
            t0 = time.perf_counter()
            lr, losses, norm = self.epoch(e0)
            times.append(time.perf_counter() - t0)
            metrics, events, stop = None, [], False
            if e0 % self.eval_every == 0 or epoch == self.epochs:
                metrics = ref.metrics(self.m, self.spec)
                h = self.homeo
                events = h.update(e0, metrics["coverage"], metrics["hierarchy_a"], metrics["hierarchy_b"], metrics["dist_corr_b"])
                if (h.enc_a, h.enc_b) != (self.frozen_a, self.frozen_b):
                    self.frozen_a, self.frozen_b = h.enc_a, h.enc_b
                    self.rebuild()
                    self.origin = e0 + 1
                improved = False
                if metrics["Q"] > best_q:
                    best_q, improved = metrics["Q"], True
                if metrics["hierarchy_b"] < best_h and metrics["coverage"] > 0.99:
                    best_h, improved = metrics["hierarchy_b"], True
                without = 0 if improved else without + 1
                stop = e0 >= self.min_epochs and without >= self.patience
            lines.append({
                "epoch": epoch, "lr": lr, "loss": losses, "grad_norm": norm, "metrics": metrics,
                "freeze": freeze(), "events": [{"kind": k, "component": c} for k, c in events],
            })
            if stop:
                break
        if out:
            with open(out, "w") as fh:
                for l in lines:
                    fh.write(json.dumps(l) + "\n")
        return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--config", required=True, help="the training config as JSON")
    ap.add_argument("--epochs", type=int)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--metrics", help="write metrics.jsonl here")
    a = ap.parse_args()
    with open(a.config) as fh:
        cfg = json.load(fh)
    epochs = a.epochs if a.epochs is not None else (cfg.get("training") or {}).get("epochs", 100)
    torch.manual_seed(a.seed)
    np.random.seed(a.seed)
    m, spec = build(cfg, a.checkpoint)
    times = Trainer(m, spec, cfg, epochs).run(a.metrics)
    print(json.dumps({"epochs": times, "threads": torch.get_num_threads()}))


if __name__ == "__main__":
    main()
