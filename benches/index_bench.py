"""tvck index benchmark: over a tree of 20,000+ checkpoints (benches/make_index_tree.py),
side by side in one run: the first `tvck index` against `tvck scan --hash` of the same
tree, a re-index of the unchanged tree against the first index, and `ls` / `select` over
the index. Prints a Markdown table (paste it into docs/benchmarks.md). Run through
scripts/bench-index.

Targets (issue 16): first index <= scan --hash + 10%; re-index of the unchanged tree
<= 5% of the first index; ls and select <= 50 ms.

TVCK_BENCH_INDEX_SHAPE picks the tree: `small` (the default: 20,000 small epoch_N.pt of
about 2 kB in runs of 25, and 200 copies of the sample checkpoints, the worst case for
the re-index ratio, since a first index reads 2 kB where a re-index stats the same file)
or `real` (20,200 copies of the sample checkpoints, 0.4 to 1.1 MB each as a TernaryVAE
checkpoint is, in folders of 25: about 12 GB, bench-data/index-tree-real).
"""
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TVCK = os.path.join(ROOT, "target", "release", "tvck")
SHAPE = os.environ.get("TVCK_BENCH_INDEX_SHAPE", "small")
if SHAPE == "real":
    TREE = os.path.join(ROOT, "bench-data", "index-tree-real")
    N_SMALL, N_COPIES, PER_FOLDER = 0, int(os.environ.get("TVCK_BENCH_INDEX_FILES", "20200")), 25
elif SHAPE == "small":
    TREE = os.path.join(ROOT, "bench-data", "index-tree")
    N_SMALL, N_COPIES, PER_FOLDER = int(os.environ.get("TVCK_BENCH_INDEX_FILES", "20000")), 200, 1
else:
    sys.exit(f"TVCK_BENCH_INDEX_SHAPE: `small` or `real`, not {SHAPE!r}")


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


CPU = {}  # command (as text) -> CPU seconds (user + sys) of its runs


def once(cmd, env=None):
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env)
    dt = time.perf_counter() - t
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode not in (0, 1):
        sys.exit(f"{' '.join(cmd)}: exit {p.returncode}\n{p.stderr}")
    key = " ".join(cmd[:2])
    CPU.setdefault(key, []).append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return dt


def median(cmd, repeat, env=None):
    return statistics.median(once(cmd, env) for _ in range(repeat))


def cpu(cmd):
    """Median CPU seconds of the runs of `cmd` (by its first two words)."""
    return statistics.median(CPU[" ".join(cmd[:2])])


def count(d):
    return sum(1 for _, _, names in os.walk(d) for n in names if n.endswith(".pt"))


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    if not os.environ.get("TVCK_BENCH_NO_BUILD"):  # set it to time an existing release build
        run(["cargo", "build", "--release", "--bin", "tvck"], cwd=ROOT)
    if count(TREE) != N_SMALL + N_COPIES:
        shutil.rmtree(TREE, ignore_errors=True)
        print(run([sys.executable, os.path.join(ROOT, "benches", "make_index_tree.py"),
                   os.path.join(ROOT, "checkpoints"), TREE, str(N_SMALL), str(N_COPIES),
                   str(PER_FOLDER)]).stdout.strip())
    files = count(TREE)
    tree_mb = sum(os.path.getsize(os.path.join(b, n)) for b, _, ns in os.walk(TREE) for n in ns) / 1e6
    for base, _, names in os.walk(TREE):  # warm the page cache: every run reads from memory
        for n in names:
            with open(os.path.join(base, n), "rb") as fh:
                fh.read()
    work = tempfile.mkdtemp(prefix="tvck-index-bench-")
    env = dict(os.environ, TVCK_INDEX=os.path.join(work, "unused.sqlite"))
    config = os.path.join(work, "production.yaml")
    run([TVCK, "init", "--template", "production", "--checkpoint-root", TREE, "-o", config],
        cwd=work, env=env)
    rows = {}
    # Side by side, alternating, three rounds: scan --hash, then a first index into a
    # fresh file.
    scans, firsts = [], []
    for r in range(3):
        scans.append(once([TVCK, "scan", TREE, "--hash", "--json"], env))
        idx = os.path.join(work, f"first-{r}.sqlite")
        firsts.append(once([TVCK, "index", "--index", idx, TREE, "--json"], env))
    t_scan, t_first = statistics.median(scans), statistics.median(firsts)
    idx = os.path.join(work, "first-0.sqlite")
    c_scan, c_first = cpu([TVCK, "scan"]), cpu([TVCK, "index"])
    CPU.clear()
    t_re = median([TVCK, "index", "--index", idx, TREE, "--json"], 5, env)
    c_re = cpu([TVCK, "index"])
    ls_where = [TVCK, "ls", TREE, "--index", idx, "--where", "version == v5_12_4 and coverage >= 0.99",
                "--json"]
    ls_sort = [TVCK, "ls", TREE, "--index", idx, "--sort", "Q", "--limit", "10", "--json"]
    select = [TVCK, "select", "--for", config, TREE, "--index", idx, "--json"]
    t_ls_where = median(ls_where, 7, env)
    c_ls_where = cpu(ls_where)
    CPU.clear()
    t_ls_sort = median(ls_sort, 7, env)
    c_ls_sort = cpu(ls_sort)
    t_select = median(select, 7, env)
    c_select = cpu(select)
    CPU.clear()
    select_top = select + ["--limit", "10"]
    t_select_top = median(select_top, 7, env)
    c_select_top = cpu(select_top)
    sel = json.loads(run(select, env=env).stdout)
    from_index = sel["from_index"]
    ranked = sel["ranked"]
    size_mb = os.path.getsize(idx) / 1e6
    shutil.rmtree(work, ignore_errors=True)

    def verdict(ok):
        return "met" if ok else "NOT met"

    load = os.getloadavg()[0]
    lines = [
        f"Machine: {cpu_name()}, {os.cpu_count()} cores, load average {load:.1f} during the run. "
        f"Date: {datetime.date.today()}.",
        f"Tree ({SHAPE}): {files} files ({N_SMALL} small epoch_N.pt in runs of 25, {N_COPIES} copies of the "
        f"sample checkpoints), {tree_mb:.0f} MB, page cache warm; index file {size_mb:.1f} MB. "
        "Times: wall (CPU = user + sys).",
        "",
        "| measurement | time | target |",
        "|---|---|---|",
        f"| `tvck scan --hash` (median of 3, alternating with the next row) | {t_scan:.2f} s ({c_scan:.2f} s) | reference |",
        f"| first `tvck index` into a fresh file (median of 3) | {t_first:.2f} s ({c_first:.2f} s) = "
        f"{t_first / t_scan:.2f}× scan --hash (CPU {c_first / c_scan:.2f}×) | ≤ 1.10×: {verdict(t_first <= 1.10 * t_scan)} |",
        f"| re-index of the unchanged tree (median of 5) | {t_re * 1000:.0f} ms ({c_re * 1000:.0f} ms) = "
        f"{100 * t_re / t_first:.1f}% of the first (CPU {100 * c_re / c_first:.1f}%) | ≤ 5%: {verdict(t_re <= 0.05 * t_first)} |",
        f"| `tvck ls --where 'version == v5_12_4 and coverage >= 0.99'` (median of 7) | {t_ls_where * 1000:.0f} ms "
        f"({c_ls_where * 1000:.0f} ms) | ≤ 50 ms: {verdict(t_ls_where <= 0.05)} |",
        f"| `tvck ls --sort Q --limit 10` (median of 7) | {t_ls_sort * 1000:.0f} ms ({c_ls_sort * 1000:.0f} ms) "
        f"| ≤ 50 ms: {verdict(t_ls_sort <= 0.05)} |",
        f"| `tvck select --for production.yaml` (median of 7; from the index: {'yes' if from_index else 'NO'}; {ranked} candidates listed) "
        f"| {t_select * 1000:.0f} ms ({c_select * 1000:.0f} ms) | ≤ 50 ms: {verdict(t_select <= 0.05)} |",
        f"| `tvck select --for production.yaml --limit 10` (the same ranking, 10 candidates listed; median of 7) "
        f"| {t_select_top * 1000:.0f} ms ({c_select_top * 1000:.0f} ms) | ≤ 50 ms: {verdict(t_select_top <= 0.05)} |",
    ]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
