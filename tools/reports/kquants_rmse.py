"""Relative error of each k-quant's searched quantizer vs plain min/max rounding (same layout) on
real tensors: a quick proxy for KLD while working on the quantizers.

    python -m tools.reports.kquants_rmse [--model M] [tensor ...]
        plain relative RMSE of every k-quant on a few tensors
    python -m tools.reports.kquants_rmse --model pycode-30m --type q3_k --imatrix FILE [--row-step 4]
        every weight of the model that `--mix` (default q3_k_m) gives type --type, quantized without
        and with the importance matrix; the error of both is weighted by the importance matrix
        (mean squared input activation per channel), which estimates each weight's share of the
        layer's output error better than an unweighted RMSE does.
"""
import argparse
import os
import time

import numpy as np

from converters.hf import Checkpoint
from lowbit import quants
from lowbit.quants import kquants
from tools._paths import SHARED


def rel_err(deq, w, im=None):
    """sqrt(sum im (deq - w)^2 / sum im w^2), im = 1 when absent."""
    im = np.ones(w.shape[-1]) if im is None else im
    return float(np.sqrt(np.sum(im * (deq - w) ** 2) / np.sum(im * w ** 2)))


def plain_table(ck, names):
    print("| tensor | type | rel. RMSE min/max | rel. RMSE searched | reduction |")
    print("|---|---|---|---|---|")
    for n in names:
        w = ck.tensor(n)
        for t in kquants.PARAMS:
            qt = quants.get(t)
            e = [rel_err(qt.dequantize(q(w), w.shape), w) for q in (kquants.baseline_quantizer(t), qt.quantize)]
            print(f"| {n} {list(w.shape)} | {t} | {e[0]:.4f} | {e[1]:.4f} | {100 * (1 - e[1] / e[0]):.1f}% |", flush=True)


def mix_table(ck, qtype, mix, imatrix_path, row_step, eval_imatrix_path=None):
    from converters.recipes import assign_types
    from lowbit import imatrix as imx
    ims = imx.load(imatrix_path)
    evs = imx.load(eval_imatrix_path) if eval_imatrix_path else ims
    shapes = {n: tuple(ck.names[n][0].shape(ck.names[n][1])) for n in ck.ordered_names()}
    types = assign_types(mix, shapes, ck.config.num_layers, ck.config.tie_word_embeddings)
    names = [n for n, t in types.items() if t == qtype]
    qt = quants.get(qtype)
    quantizers = {"min/max": kquants.baseline_quantizer(qtype), "searched": qt.quantize}
    print(f"{len(names)} tensors of {qtype} in {mix}; rows 0::{row_step}; error weighted by the "
          f"{'--eval-imatrix' if eval_imatrix_path else 'imatrix'} (uniform where it has no vector)\n")
    print("| tensor | " + " | ".join(f"{k} | {k} +im" for k in quantizers) + " |")
    print("|---" * (1 + 2 * len(quantizers)) + "|")
    tot = np.zeros(2 * len(quantizers))
    cnt = np.zeros(2 * len(quantizers))
    times = np.zeros(2 * len(quantizers))
    for n in names:
        w = np.ascontiguousarray(ck.tensor(n)[::row_step])
        im, ev = ims.get(n), evs.get(n)
        errs = []
        for k, (label, q) in enumerate(quantizers.items()):
            for j, v in enumerate((None, im)):
                if j and v is None:
                    errs.append(np.nan)
                    continue
                t = time.perf_counter()
                raw = q(w, v)
                times[2 * k + j] += time.perf_counter() - t
                errs.append(rel_err(qt.dequantize(raw, w.shape), w, ev))
        tot += np.nan_to_num(np.square(errs))
        cnt += ~np.isnan(errs)
        print(f"| {n} | " + " | ".join(f"{e:.5f}" for e in errs) + " |", flush=True)
    rms = np.sqrt(tot / cnt)
    print("| **rms over tensors** | " + " | ".join(f"**{e:.5f}**" for e in rms) + " |")
    print("| seconds | " + " | ".join(f"{t:.1f}" for t in times) + " |")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tensors", nargs="*")
    ap.add_argument("--model", default="pychat-30m")
    ap.add_argument("--type", help="measure every tensor of this type in --mix (needs --imatrix)")
    ap.add_argument("--mix", default="q3_k_m")
    ap.add_argument("--imatrix", help="importance matrix file of --model (tools/reports/quality_table.py makes one)")
    ap.add_argument("--eval-imatrix", help="weigh the errors by this importance matrix instead (one made from "
                                           "the evaluation text: an estimate that does not favour --imatrix)")
    ap.add_argument("--row-step", type=int, default=4, help="use every Nth row of each tensor (speed)")
    a = ap.parse_args()
    ck = Checkpoint(os.path.join(SHARED, "models", a.model))
    if a.type:
        if not a.imatrix:
            ap.error("--type needs --imatrix")
        mix_table(ck, a.type, a.mix, a.imatrix, a.row_step, a.eval_imatrix)
    else:
        plain_table(ck, a.tensors or ["token_embd.weight", "blk.3.attn_v.weight", "blk.3.ffn_up.weight",
                                      "blk.3.ffn_down.weight"])


if __name__ == "__main__":
    main()
