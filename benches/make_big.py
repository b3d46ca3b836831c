"""A large training checkpoint for the memory benchmark (scripts/bench-memory).

Usage: make_big.py OUT.pt

A torch.save zip of a model state of 4 float32 tensors of 8M elements (128 MiB) and an
Adam-like optimizer state twice that size (256 MiB): 384 MiB in all.
"""

import sys

import torch

g = torch.Generator().manual_seed(1)
state = {f"layer{i}.weight": torch.randn(1 << 23, generator=g) for i in range(4)}
optim = {"state": {i: {"exp_avg": torch.randn(1 << 23, generator=g),
                       "exp_avg_sq": torch.rand(1 << 23, generator=g)} for i in range(4)},
         "param_groups": [{"lr": 1e-3, "params": [0, 1, 2, 3]}]}
torch.save({"epoch": 1, "model_state_dict": state, "optimizer_state_dict": optim}, sys.argv[1])
