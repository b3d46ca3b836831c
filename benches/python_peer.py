"""The Python peer of `tvck scan`: torch.load every checkpoint under a folder and read
its tensors' names and shapes. Timed as a whole, import of torch included.

usage: python_peer.py DIR
"""
import time

t0 = time.perf_counter()
import glob  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import torch  # noqa: E402

t_import = time.perf_counter() - t0
files = sorted(glob.glob(os.path.join(sys.argv[1], "**", "*.pt"), recursive=True))
n_tensors = 0
for f in files:
    obj = torch.load(f, map_location="cpu", weights_only=False)
    state = obj
    for k in ("model_state_dict", "model_state", "model"):
        if isinstance(obj, dict) and k in obj:
            state = obj[k]
            break
    n_tensors += sum(1 for v in state.values() if isinstance(v, torch.Tensor))
print(f"{len(files)} files {n_tensors} tensors import {t_import:.3f}s total {time.perf_counter() - t0:.3f}s")
