"""Monitoring overhead benchmark: one training epoch of the trainer benchmark's config
(benches/train_bench.yaml, the v5.12.4 production model) in a tvck built without the
monitoring hook (TVCK_BASE: this source with benches/no_monitor.patch applied, built by
scripts/bench-monitor) and in this tvck (TVCK_BIN) with every
part of the hook on (the alert rules with their defaults, run.json, alerts.jsonl, the
frozen parts' SHA-256 in every line, `--tensorboard`), on the CPU, side by side.

Each binary's epoch time is (t(K epochs) - t(1 epoch)) / (K - 1) over whole runs, which
cancels start-up, loading and the final evaluation. Each repeat runs both binaries back
to back (alternating which goes first); the ratio monitored / base of a repeat shares
the machine's load, and the median and range of the ratios over the repeats are printed
as one Markdown table row. Not a test: numbers depend on the machine.

    scripts/bench-monitor      (builds both, then runs this)
"""

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
    env = dict(os.environ, OMP_NUM_THREADS=THREADS)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        subprocess.run(
            [binary, "train", "--config", CONFIG, "--epochs", str(epochs), "--out", out] + extra,
            check=True, env=env, stdout=subprocess.DEVNULL,
        )
        return time.perf_counter() - t0


def epoch(binary, extra):
    return (run(binary, K, extra) - run(binary, 1, extra)) / (K - 1)


def main():
    ratios, base_t, mon_t = [], [], []
    for r in range(REPEATS):
        order = [("base", BASE, []), ("mon", TVCK, ["--tensorboard"])]
        if r % 2:
            order.reverse()
        t = {name: epoch(b, extra) for name, b, extra in order}
        base_t.append(t["base"])
        mon_t.append(t["mon"])
        ratios.append(t["mon"] / t["base"])
        print(f"repeat {r + 1}: base {t['base']:.3f} s, monitored {t['mon']:.3f} s, "
              f"ratio {ratios[-1]:.3f}", file=sys.stderr)
    med = statistics.median(ratios)
    print(f"| one epoch, {THREADS} threads, monitoring on (rules, run.json, alerts.jsonl, "
          f"frozen_sha256, --tensorboard) vs the same source without the hook | "
          f"base {statistics.median(base_t):.3f} s, monitored {statistics.median(mon_t):.3f} s | "
          f"ratio {med:.3f} (range {min(ratios):.3f}–{max(ratios):.3f} over {REPEATS} "
          f"side-by-side repeats; target ≤ 1.02: {'met' if med <= 1.02 else 'not met'}) |")


if __name__ == "__main__":
    main()
