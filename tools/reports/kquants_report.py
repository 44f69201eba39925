"""Table of k-quant types and mixes on the shared models: file bytes, bits/weight over the whole
file, conversion seconds, and relative Frobenius error of the logits vs transformers' reference.
Usage: python -m tools.reports.kquants_report [--models pychat-30m ...] [--types q4_k_m ...] [--imatrix FILE]"""
import argparse
import os
import sys
import tempfile

import numpy as np

from tools._paths import SHARED

# weights counted as llama.cpp's baselines count them (the Hugging Face checkpoint's parameters)
HF_WEIGHTS = {"pycode-30m": 30_417_408, "pychat-30m": 31_468_928}


def main():
    import lowbit
    from converters import convert
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="+", default=["stories260K", "pycode-30m", "pychat-30m"])
    ap.add_argument("--types", nargs="+", default=["q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q3_k_m", "q4_k_s",
                                                   "q4_k_m", "q5_k_m"])
    ap.add_argument("--imatrix", help="importance matrix file (applies to every model given)")
    a = ap.parse_args()
    print("| model | type/mix | bytes | bits/weight | convert s | logit rel. err |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for model in a.models:
            ref = np.load(os.path.join(SHARED, "reference", f"{model}.npz"), allow_pickle=False)
            for t in a.types:
                out = os.path.join(tmp, f"{model}-{t}.lowbit")
                s = convert(os.path.join(SHARED, "models", model), out, t, progress=False, log=lambda m: None,
                            imatrix=a.imatrix)
                m = lowbit.load(out)
                logits = m.logits(ref["ids"].tolist())
                err = np.linalg.norm(logits - ref["logits"]) / np.linalg.norm(ref["logits"])
                bpw = s["bytes"] * 8 / HF_WEIGHTS.get(model, s["weights"])
                print(f"| {model} | {t} | {s['bytes']:,} | {bpw:.3f} | {s['seconds']:.1f} | {err:.4f} |", flush=True)
                m.file.close()
                del m
                os.unlink(out)


if __name__ == "__main__":
    sys.exit(main())
