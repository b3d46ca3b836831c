"""Trainer benchmark: one training epoch in `tvck train` (release build, libtorch) and in
the PyTorch peer benches/train_peer.py (the same objective, batches, optimizer and
homeostasis in plain PyTorch, started from the same checkpoint and config), on the CPU,
side by side. Writes the results into docs/benchmarks.md (its trainer section).
Run through scripts/bench-train. Not a test: numbers depend on the machine.

tvck's epoch time is (t(K epochs) - t(1 epoch)) / (K - 1) over whole runs, which cancels
start-up, loading and the final evaluation; the peer times its epochs directly (the
first, warm-up epoch left out). Each repeat runs both back to back; the ratio's median
and range over the repeats are reported.
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
TVCK = os.environ.get("TVCK_BIN", os.path.join(ROOT, "target", "release", "tvck"))
CONFIG = os.path.join(ROOT, "benches", "train_bench.yaml")
CKPT = os.path.join(ROOT, "checkpoints", "v5_12_4", "best_Q.pt")
K = int(os.environ.get("TVCK_BENCH_EPOCHS", "6"))
REPEATS = int(os.environ.get("TVCK_BENCH_REPEATS", "3"))
MARKER = "<!-- trainer benchmark (scripts/bench-train) -->"


def tvck_run(epochs, env, out):
    t0 = time.perf_counter()
    subprocess.run(
        [TVCK, "train", "--config", CONFIG, "--epochs", str(epochs), "--out", out],
        check=True, env=env, stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - t0


def config_json(out, path):
    """The config as `tvck train` read it (the `config` dict of its latest.pt), as JSON
    for the peer: both sides train exactly one config."""
    import torch

    cfg = torch.load(os.path.join(out, "latest.pt"), map_location="cpu", weights_only=True)["config"]
    with open(path, "w") as fh:
        json.dump(cfg, fh)


def side_by_side(threads, cfg):
    """One repeat: tvck's epoch ((t(K) - t(1)) / (K - 1)) and the peer's (median of its
    epochs after the first), measured back to back."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        t = (tvck_run(K, env, b) - tvck_run(1, env, a)) / (K - 1)
    out = subprocess.run(
        [sys.executable, os.path.join(ROOT, "benches", "train_peer.py"), "--checkpoint", CKPT,
         "--config", cfg, "--epochs", str(K)],
        check=True, env=env, capture_output=True, text=True,
    )
    p = statistics.median(json.loads(out.stdout)["epochs"][1:])
    return t, p


def main():
    cores = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, OMP_NUM_THREADS="1")
        tvck_run(1, env, tmp)
        cfg = os.path.join(tmp, "config.json")
        config_json(tmp, cfg)
        for threads in sorted({min(cores, 2), 1}, reverse=True):
            reps = [side_by_side(threads, cfg) for _ in range(REPEATS)]
            ratios = sorted(t / p for t, p in reps)
            t = statistics.median(r[0] for r in reps)
            p = statistics.median(r[1] for r in reps)
            ratio = statistics.median(ratios)
            verdict = "met" if ratio <= 0.67 else "NOT met"
            rows.append(
                f"| one epoch, {threads} thread{'s' if threads > 1 else ''} | tvck {t:.3f} s, PyTorch {p:.3f} s "
                f"| ratio {ratio:.2f} (range {ratios[0]:.2f}–{ratios[-1]:.2f} over {REPEATS} side-by-side repeats; "
                f"target ≤ 0.67: {verdict}) |"
            )
            print(rows[-1], flush=True)
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    section = [
        MARKER,
        "## Trainer",
        "",
        "Produced by `scripts/bench-train` (benches/train_bench.py): one training epoch of the",
        "v5.12.4 production model (benches/train_bench.yaml, from v5_12_4/best_Q.pt: upstream's",
        "stratified batches of 512, 39 per epoch, every loss with the geodesic on, the whole",
        "model in train mode with dropout, encoder_A and decoder_A run per batch for the",
        "coverage loss, RiemannianAdam over proj_A, proj_B, controller and encoder_B, clipping",
        "over every gradient including decoder_A's accumulated one) in `tvck train` and in the",
        "PyTorch peer benches/train_peer.py (the same training in plain PyTorch, the objective",
        "checked by tests/it/train_cli.rs `trajectory_agrees_with_the_pytorch_peer`), on the CPU.",
        "Each repeat measures tvck and then the peer back to back, so the ratio of one repeat",
        "shares the machine's load; the table gives the median and the range of the ratios.",
        "",
        f"Machine: {cpu}, {cores} cores. Date: {time.strftime('%Y-%m-%d')}.",
        "",
        "| measurement | result | target / comparison |",
        "|---|---|---|",
        *rows,
        "",
        "Besides calling libtorch without Python in between, tvck saves work the peer repeats:",
        "the per-embedding losses run on z_A and z_B stacked (one set of kernels for both); one",
        "flat Adam update per parameter group; gradients from autograd.grad (nothing to zero;",
        "decoder_A's gradient accumulated into one buffer); a dropout mask from 16-bit uniforms",
        "(four per 64-bit draw) instead of one 64-bit draw per element; freed activation buffers",
        "kept in the heap (no page faults per batch). A frozen Frozen-style encoder_A (no",
        "dropout) is computed once per run; the production model's improved encoder_A has",
        "dropout in train mode, so both sides run it per batch.",
        "",
    ]
    doc = os.path.join(ROOT, "docs", "benchmarks.md")
    with open(doc) as fh:
        text = fh.read()
    head, _, rest = text.partition(MARKER)
    # Keep the sections after this one (each starts with its own <!-- marker -->).
    tail = rest[rest.find("<!--", 1):] if "<!--" in rest[1:] else ""
    with open(doc, "w") as fh:
        fh.write(head.rstrip("\n") + "\n\n" + "\n".join(section))
        if tail:
            fh.write("\n" + tail)
    print("\n".join(section))


if __name__ == "__main__":
    main()
