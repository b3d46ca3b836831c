"""tvck benchmark: `scan` with and without hashing over a generated tree, next to the
machine's sha2 single-core speed and a Python peer that torch.loads every file.
Writes the results table to docs/benchmarks.md. Run through scripts/bench.

Targets (issue 3): scan --hash >= 80% of sha2 single-core x cores (hashing is the only
cost); scan without hashing >= 2,000 files/s; peak memory bounded by the largest file,
not by the tree.
"""
import datetime
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA = os.path.join(ROOT, "bench-data")
TREE = os.path.join(DATA, "tree")
QUARTER = os.path.join(DATA, "tree-quarter")
TVCK = os.path.join(ROOT, "target", "release", "tvck")
SHA = os.path.join(ROOT, "target", "release", "examples", "sha_speed")
N_FILES = int(os.environ.get("TVCK_BENCH_FILES", "320"))


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def timed(cmd, repeat, env=None):
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def peak_rss_mb(cmd):
    out = subprocess.run(["/usr/bin/time", "-f", "%M"] + cmd, stdout=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
    return int(out.stderr.strip().splitlines()[-1]) / 1024


def tree_files(d):
    out = []
    for base, _, names in os.walk(d):
        out += [os.path.join(base, n) for n in names if n.endswith(".pt")]
    return sorted(out)


def main():
    run(["cargo", "build", "--release", "--bin", "tvck", "--example", "sha_speed"], cwd=ROOT)
    if len(tree_files(TREE)) != N_FILES:
        shutil.rmtree(TREE, ignore_errors=True)
        print(run([sys.executable, os.path.join(ROOT, "benches", "make_tree.py"),
                   os.path.join(ROOT, "checkpoints"), TREE, str(N_FILES)]).stdout.strip())
    files = tree_files(TREE)
    if not os.path.isdir(QUARTER):
        for f in files[: len(files) // 4]:
            dst = os.path.join(QUARTER, os.path.relpath(f, TREE))
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            shutil.copy(f, dst)
    total = sum(os.path.getsize(f) for f in files)
    largest = max(os.path.getsize(f) for f in files)
    for f in files:  # warm the page cache: every tool reads from memory
        with open(f, "rb") as fh:
            fh.read()
    cores = os.cpu_count()
    sha_mbs = float(run([SHA, "256"]).stdout.strip())
    many_mbs, engine = run([SHA, "256", "--many"]).stdout.split()
    many_mbs = float(many_mbs)

    t_scan = timed([TVCK, "scan", TREE, "--json"], 7)
    t_hash = timed([TVCK, "scan", TREE, "--hash", "--json"], 7)
    t_hash1 = timed([TVCK, "scan", TREE, "--hash", "--json", "-j", "1"], 5)
    sha2_only = dict(os.environ, TVCK_HASH_ENGINE="sha2")
    t_hash_sha2 = timed([TVCK, "scan", TREE, "--hash", "--json"], 7, env=sha2_only)
    t_py = timed([sys.executable, os.path.join(ROOT, "benches", "python_peer.py"), TREE], 3)
    py_detail = run([sys.executable, os.path.join(ROOT, "benches", "python_peer.py"), TREE]).stdout.strip()
    rss_full = peak_rss_mb([TVCK, "scan", TREE, "--hash", "--json"])
    rss_quarter = peak_rss_mb([TVCK, "scan", QUARTER, "--hash", "--json"])

    files_per_s = len(files) / t_scan
    hash_mbs = total / 1e6 / t_hash
    hash1_mbs = total / 1e6 / t_hash1
    hash_sha2_mbs = total / 1e6 / t_hash_sha2
    target_hash = 0.8 * sha_mbs * cores
    rows = [
        ("sha2 crate, 1 core (examples/sha_speed)", f"{sha_mbs:,.0f} MB/s", "reference"),
        (f"tvck's SHA-256 engine `{engine}`, 1 core, 16 messages (`sha_speed --many`)", f"{many_mbs:,.0f} MB/s",
         f"{many_mbs / sha_mbs:.2f}× sha2 1-core"),
        (f"`tvck scan` ({len(files)} files, {total / 1e6:.0f} MB)", f"{t_scan:.3f} s = {files_per_s:,.0f} files/s",
         f"≥ 2,000 files/s: {'met' if files_per_s >= 2000 else 'NOT met'}"),
        (f"`tvck scan --hash`, {cores} threads", f"{t_hash:.3f} s = {hash_mbs:,.0f} MB/s",
         f"≥ 80% of sha2 × {cores} = {target_hash:,.0f} MB/s: {hash_mbs / (sha_mbs * cores):.0%} of it, "
         f"{'met' if hash_mbs >= target_hash else 'NOT met'}"),
        ("`tvck scan --hash -j 1`", f"{t_hash1:.3f} s = {hash1_mbs:,.0f} MB/s", f"{hash1_mbs / sha_mbs:.0%} of sha2 1-core"),
        (f"`tvck scan --hash`, {cores} threads, `TVCK_HASH_ENGINE=sha2`", f"{t_hash_sha2:.3f} s = {hash_sha2_mbs:,.0f} MB/s",
         f"{hash_sha2_mbs / (sha_mbs * cores):.0%} of sha2 × {cores} (one message at a time)"),
        ("Python peer (torch.load each file)", f"{t_py:.3f} s ({py_detail.split(' import ')[1].split(' total')[0]} importing torch)",
         f"`scan` is {t_py / t_scan:,.0f}× faster, `scan --hash` {t_py / t_hash:,.0f}× faster"),
        ("peak RSS, `scan --hash` whole tree", f"{rss_full:.1f} MB", f"largest file {largest / 1e6:.1f} MB, tree {total / 1e6:.0f} MB"),
        ("peak RSS, `scan --hash` quarter tree", f"{rss_quarter:.1f} MB",
         f"whole/quarter = {rss_full / rss_quarter:.2f} (bounded: {'yes' if rss_full < 1.5 * rss_quarter else 'NO'})"),
    ]
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(l.split(":", 1)[1].strip() for l in fh if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    lines = [
        "# Benchmarks",
        "",
        "Produced by `scripts/bench` (benches/run.py); numbers from one run on one machine, so",
        "compare the ratios, which are measured side by side, rather than absolute times.",
        "Files are in the page cache for every tool (a warm-up read precedes the runs); times",
        "are medians of repeated runs.",
        "",
        f"Machine: {cpu}, {cores} cores. Date: {datetime.date.today().isoformat()}.",
        "",
        "| measurement | result | target / comparison |",
        "|---|---|---|",
    ] + [f"| {a} | {b} | {c} |" for a, b, c in rows] + [
        "",
        "The tree is made by benches/make_tree.py: the sample checkpoints' layouts with perturbed",
        "weights, saved by real PyTorch, every 40th file a duplicate.",
        "",
        "How `scan --hash` gets there (perf, 2026-11-30, over this tree):",
        "",
        "- SHA-256 is sequential within a message: one tensor cannot hash faster than one core",
        "  (SHA-NI, the sha2 crate). But a tree is thousands of independent tensors, so tvck hashes",
        "  16 at a time, one per 32-bit lane of the AVX-512 registers (src/fingerprint/many.rs; the",
        "  sha2 crate where the CPU lacks AVX-512, or with `TVCK_HASH_ENGINE=sha2`). That is the",
        "  engine row above. To give it 16 tensors of similar size, each worker hashes a few files",
        "  at a time (`scan::BATCH_FILES`): a file of this tree has two large tensors and many small",
        "  ones. Larger batches fill the lanes better but cost fresh memory pages, which are dear",
        "  here (about 2–3 µs each to fault, zero and free); 4 files was the fastest.",
        "- A `torch.save` zip is read sparsely (src/format/sparse.rs): the directory, data.pkl and",
        "  the small entries first, then only the storages the fingerprint hashes; the optimizer",
        "  state (34 of the 202 MB here; as much as the model again, or twice it, in a training",
        "  checkpoint with Adam) is never read. Unread bytes are refused, never handed out.",
        "- What is left besides hashing: the kernel's copy out of the page cache, about 0.15 ms",
        "  per MB (mapping the files instead costs as much, in page-table work and TLB",
        "  shootdowns), parsing (about 14 ms for the 320 pickles), and allocation.",
        "",
        "Without AVX-512 (or with `TVCK_HASH_ENGINE=sha2`) the hashing itself cannot get",
        "faster than sha2 on each core, and the run stays near the `TVCK_HASH_ENGINE=sha2` row,",
        "short of the 80% target: with 168 of the 202 MB hashed at one core's sha2 speed, the",
        "copy out of the page cache and the parsing alone take more than the 20% left.",
        "",
        "Also kept from earlier rounds: zip local headers read only for the tensors that are",
        "read, mimalloc with transparent huge pages off outside the trainer.",
        "",
        "Tried and dropped: MAP_POPULATE and MADV_POPULATE_WRITE (no gain), mapping files instead",
        "of reading them (no gain with either engine), software prefetching while hashing mapped",
        "pages (slower).",
        "",
    ]
    doc = os.path.join(ROOT, "docs", "benchmarks.md")
    # Keep the sections other scripts write: memory (scripts/bench-memory), trainer
    # (scripts/bench-train), convert --fit (scripts/bench-fit), the index
    # (scripts/bench-index): everything from the first of them on.
    starts = ["## Memory (peak RSS)", "<!-- trainer benchmark (scripts/bench-train) -->"]
    tail = ""
    if os.path.exists(doc):
        with open(doc) as fh:
            old = fh.read()
        found = [old.index(m) for m in starts if m in old]
        if found:
            tail = "\n" + old[min(found):]
    with open(doc, "w") as fh:
        fh.write("\n".join(lines) + tail)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
