"""Relative RMSE of each k-quant's searched quantizer vs plain min/max rounding (same layout) on
real tensors. Usage: PYTHONPATH=. python tools/kquants_rmse.py [model] [tensor ...]"""
import os
import sys

import numpy as np

from converters.hf import Checkpoint
from lowbit import quants
from lowbit.quants import kquants

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "shared")


def main():
    model = sys.argv[1] if len(sys.argv) > 1 else "pychat-30m"
    names = sys.argv[2:] or ["token_embd.weight", "blk.3.attn_v.weight", "blk.3.ffn_up.weight", "blk.3.ffn_down.weight"]
    ck = Checkpoint(os.path.join(SHARED, "models", model))
    print("| tensor | type | rel. RMSE min/max | rel. RMSE searched | reduction |")
    print("|---|---|---|---|---|")
    for n in names:
        w = ck.tensor(n)
        for t in kquants.PARAMS:
            qt = quants.get(t)
            e = [float(np.linalg.norm(qt.dequantize(q(w), w.shape) - w) / np.linalg.norm(w))
                 for q in (kquants.baseline_quantizer(t), qt.quantize)]
            print(f"| {n} {list(w.shape)} | {t} | {e[0]:.4f} | {e[1]:.4f} | {100 * (1 - e[1] / e[0]):.1f}% |", flush=True)


if __name__ == "__main__":
    main()
