"""Monitoring overhead benchmark: one training epoch of the trainer benchmark's config
(benches/train_bench.yaml, the v5.12.4 production model) in a tvck built without the
monitoring hook (TVCK_BASE: this source with benches/no_monitor.patch applied, built by
scripts/bench-monitor) and in this tvck (TVCK_BIN) with every
part of the hook on (the alert rules with their defaults, run.json, alerts.jsonl, the
frozen parts' SHA-256 in every line, `--tensorboard`), on the CPU, side by side.

Each binary's epoch time is (t(K epochs) - t(1 epoch)) / (K - 1) over whole runs, which
cancels start-up, loading and the final evaluation, in wall time and in the process's CPU
time (user + sys; with 1 thread the steadier figure on a shared machine). Each repeat runs both binaries back
to back (alternating which goes first); the ratio monitored / base of a repeat shares
the machine's load, and the median and range of the ratios over the repeats are printed
as one Markdown table row. Not a test: numbers depend on the machine.

    scripts/bench-monitor      (builds both, then runs this)
"""

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BASE = os.environ["TVCK_BASE"]
TVCK = os.environ.get("TVCK_BIN", os.path.join(ROOT, "target", "release", "tvck"))
CONFIG = os.path.join(ROOT, "benches", "train_bench.yaml")
K = int(os.environ.get("TVCK_BENCH_EPOCHS", "6"))
REPEATS = int(os.environ.get("TVCK_BENCH_REPEATS", "5"))
THREADS = os.environ.get("TVCK_BENCH_THREADS", "2")


def run(binary, epochs, extra):
    """Wall and CPU (user + sys of the process) seconds of one whole training run."""
    env = dict(os.environ, OMP_NUM_THREADS=THREADS)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(
            [binary, "train", "--config", CONFIG, "--epochs", str(epochs), "--out", out] + extra,
            env=env, stdout=subprocess.DEVNULL,
        )
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        if p.returncode != 0:
            raise SystemExit(f"{binary} train exited {p.returncode}")
        info = {}
        if os.path.exists(os.path.join(out, "run.json")):
            with open(os.path.join(out, "run.json")) as f:
                info = json.load(f)
        return wall, ru.ru_utime + ru.ru_stime, info


def epoch(binary, extra):
    """Per-epoch wall and CPU seconds, and run.json of the K-epoch run."""
    (wk, ck, info), (w1, c1, _) = run(binary, K, extra), run(binary, 1, extra)
    return (wk - w1) / (K - 1), (ck - c1) / (K - 1), info


def row(what, base, mon):
    ratios = [m / b for b, m in zip(base, mon)]
    med = statistics.median(ratios)
    return (f"| one epoch ({what}), {THREADS} threads, monitoring on (rules, run.json, "
            f"alerts.jsonl, frozen_sha256, --tensorboard) vs the same source without the hook | "
            f"base {statistics.median(base):.3f} s, monitored {statistics.median(mon):.3f} s | "
            f"ratio {med:.3f} (range {min(ratios):.3f}–{max(ratios):.3f} over {REPEATS} "
            f"side-by-side repeats; target ≤ 1.02: {'met' if med <= 1.02 else 'not met'}) |")


def main():
    t = {("base", k): [] for k in ("wall", "cpu")} | {("mon", k): [] for k in ("wall", "cpu")}
    # The trainer's own timing of its monitoring (run.json): epoch / (epoch - monitoring).
    timed, share = [], []
    for r in range(REPEATS):
        order = [("base", BASE, []), ("mon", TVCK, ["--tensorboard"])]
        if r % 2:
            order.reverse()
        for name, b, extra in order:
            wall, cpu, info = epoch(b, extra)
            t[(name, "wall")].append(wall)
            t[(name, "cpu")].append(cpu)
            if name == "mon":
                e, m = info["epoch_seconds"], info["monitor_seconds"]
                share.append(m)
                timed.append(e / (e - m))
        print(f"repeat {r + 1}: wall base {t[('base', 'wall')][-1]:.3f} s, monitored "
              f"{t[('mon', 'wall')][-1]:.3f} s; CPU base {t[('base', 'cpu')][-1]:.3f} s, "
              f"monitored {t[('mon', 'cpu')][-1]:.3f} s", file=sys.stderr)
    print(f"load average after: {os.getloadavg()[0]:.2f}", file=sys.stderr)
    for k in ("wall", "cpu"):
        print(row("wall time" if k == "wall" else "CPU time", t[("base", k)], t[("mon", k)]))
    med = statistics.median(timed)
    print(f"| monitoring's own time in each epoch, timed by the trainer (run.json "
          f"`monitor_seconds`), {THREADS} threads, --tensorboard | "
          f"{1000 * statistics.median(share):.2f} ms per epoch (range "
          f"{1000 * min(share):.2f}–{1000 * max(share):.2f}) | ratio epoch / (epoch − monitoring) "
          f"{med:.4f} (range {min(timed):.4f}–{max(timed):.4f} over {REPEATS} runs of {K} epochs; "
          f"target ≤ 1.02: {'met' if med <= 1.02 else 'not met'}) |")


if __name__ == "__main__":
    main()
