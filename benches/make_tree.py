"""Generate a benchmark tree of checkpoints in the upstream layouts with real PyTorch.

usage: make_tree.py SAMPLES_DIR OUT_DIR [N_FILES]

Each file is a sample checkpoint (round robin over checkpoints/) with its weights
perturbed, saved as <run>/{best,latest,best_Q}.pt; every 40th file is an exact copy of
the one before it so duplicate detection has work to do.
"""
import glob
import os
import sys

import torch

samples_dir, out, n = sys.argv[1], sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else 320
samples = sorted(p for p in glob.glob(os.path.join(samples_dir, "*", "*.pt")) if "exports" not in p)
loaded = [torch.load(p, weights_only=False) for p in samples]
torch.manual_seed(0)
names = ["best.pt", "latest.pt", "best_Q.pt"]
prev = None
for i in range(n):
    run = os.path.join(out, f"run_{i // 3:03d}")
    os.makedirs(run, exist_ok=True)
    path = os.path.join(run, names[i % 3])
    if i % 40 == 39 and prev is not None:
        obj = prev
    else:
        obj = dict(loaded[i % len(loaded)])
        key = next(k for k in ("model_state_dict", "model_state", "model") if k in obj)
        obj[key] = {k: (v + 0.01 * torch.randn_like(v)) if v.is_floating_point() else v for k, v in obj[key].items()}
        obj["epoch"] = i
    torch.save(obj, path)
    prev = obj
total = sum(os.path.getsize(p) for p in glob.glob(os.path.join(out, "*", "*.pt")))
print(f"{n} files, {total / 1e6:.1f} MB in {out}")
