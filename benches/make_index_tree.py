"""Generate the index benchmark tree: many small checkpoints saved by real PyTorch, plus
real TernaryVAE checkpoints (copies of checkpoints/) for `select` to rank.

usage: make_index_tree.py SAMPLES_DIR OUT_DIR [N_SMALL] [N_COPIES] [COPIES_PER_FOLDER]

The small files are what a long training campaign leaves: run folders of epoch_N.pt,
each a dict with a small model state (four float32 tensors, about 2 kB), `epoch` and
upstream's `metrics` (coverage, hierarchy_B, Q). Every 50th small file repeats the one
before it (duplicate weights). The copies are the sample checkpoints (v5.5, v5.11,
v5.12.4...) round robin, each file its own inode, so the index and `select` see
TernaryVAE layouts too. COPIES_PER_FOLDER (default 1) groups the copies in folders of
that many, as a training campaign's run folders do (the tree of real-sized checkpoints,
benches/index_bench.py with TVCK_BENCH_INDEX_SHAPE=real, is 0 small files and 20,200
copies in folders of 25).
"""
import glob
import os
import shutil
import sys

import torch

samples_dir, out = sys.argv[1], sys.argv[2]
n_small = int(sys.argv[3]) if len(sys.argv) > 3 else 20000
n_copies = int(sys.argv[4]) if len(sys.argv) > 4 else 200
per_folder = int(sys.argv[5]) if len(sys.argv) > 5 else 1
samples = sorted(p for p in glob.glob(os.path.join(samples_dir, "*", "*.pt")) if "exports" not in p)
torch.manual_seed(0)
per_run = 25
prev = None
for i in range(n_small):
    run = os.path.join(out, "small", f"run_{i // per_run:04d}")
    os.makedirs(run, exist_ok=True)
    e = i % per_run
    if i % 50 == 49 and prev is not None:
        state = prev
    else:
        state = {
            "encoder.0.weight": torch.randn(16, 9),
            "encoder.0.bias": torch.randn(16),
            "fc_mu.weight": torch.randn(4, 16),
            "fc_mu.bias": torch.randn(4),
        }
    prev = state
    obj = {
        "epoch": e,
        "model_state_dict": state,
        "metrics": {
            "coverage": float(0.9 + 0.1 * torch.rand(()).item()),
            "hierarchy_B": float(-torch.rand(()).item()),
            "Q": float(2 * torch.rand(()).item()),
        },
    }
    torch.save(obj, os.path.join(run, f"epoch_{e}.pt"))
for i in range(n_copies):
    src = samples[i % len(samples)]
    run = os.path.join(out, "real", f"run_{i // per_folder:04d}" if per_folder > 1 else f"run_{i:03d}")
    os.makedirs(run, exist_ok=True)
    name = os.path.basename(src) if per_folder == 1 else f"{i % per_folder:02d}_{os.path.basename(src)}"
    shutil.copy(src, os.path.join(run, name))
files = [p for p in glob.glob(os.path.join(out, "**", "*.pt"), recursive=True)]
total = sum(os.path.getsize(p) for p in files)
print(f"{len(files)} files, {total / 1e6:.1f} MB in {out}")
