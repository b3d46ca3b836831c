"""Measure what `tvck convert --fit` wrote against its source, with the PyTorch reference
(eval_reference.py's modules and metrics; no tvck code). tests/it/train_cli.rs runs it.

    python check_fit.py SOURCE SOURCE_SPEC_JSON OUTPUT OUTPUT_SPEC_JSON

The specs are those `tvck eval --json` prints (eval_reference.py's SPEC_JSON). Prints one
JSON object:
  covered: {source, output}        operations reconstructed exactly (of 19,683)
  same_set: bool                   the same operations, one by one
  radius: {A: {max, mean}, B: …}   |Δ Poincaré radius| over all operations (when both
                                   models have a projection; else null)
  delta: {hierarchy_a: |Δ|, …}     of the metrics the fit's tolerances bound (same)
"""
import json
import sys

import numpy as np
import torch

import eval_reference as ref  # noqa: E402 (this script's folder is on sys.path)

BOUNDED = ("hierarchy_a", "hierarchy_b", "richness_a", "richness_b", "dist_corr_a", "dist_corr_b", "Q")


def main():
    src_path, src_spec, out_path, out_spec = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], json.loads(sys.argv[4])
    torch.set_grad_enabled(False)
    src = ref.load_model(src_path, src_spec)
    out = ref.load_model(out_path, out_spec)
    s, o = ref.per_operation(src, src_spec), ref.per_operation(out, out_spec)
    res = {
        "covered": {"source": int(s["ok"].sum()), "output": int(o["ok"].sum())},
        "same_set": bool(np.array_equal(s["ok"], o["ok"])),
        "radius": None,
        "delta": {},
    }
    if "r_A" in s and "r_A" in o:
        res["radius"] = {
            side: {"max": float(np.abs(o[k] - s[k]).max()), "mean": float(np.abs(o[k] - s[k]).mean())}
            for side, k in (("A", "r_A"), ("B", "r_B"))
        }
        ms, mo = ref.metrics(src, src_spec), ref.metrics(out, out_spec)
        res["delta"] = {k: abs(mo[k] - ms[k]) for k in BOUNDED}
    print(json.dumps(res))


if __name__ == "__main__":
    main()
