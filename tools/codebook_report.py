"""Quality, size and speed of the codebook / entropy-coded types on the shared models.

    PYTHONPATH=$PWD python tools/codebook_report.py --model pycode-30m --types q4_k_m cb2_m cbk4.h \\
        --windows 4 [--speed]

For each type or mix: bits per weight over the whole file (file bytes * 8 / checkpoint weights),
relative logit error vs transformers' float32 logits (shared/reference), and mean KLD(F16 || quant)
and top-1 agreement over `--windows` 512-token windows of the model's eval text (second half of each
window scored, as llama-perplexity does), vs this runtime's own f16 file. An importance matrix
(diagonal: mean squared input per column of every linear layer) is collected once from the
calibration text with the f16 model and passed to every conversion. --speed adds single-token
generation speed (tokens/s). --huffman prints per-type Huffman savings (bit-identical check)."""
import argparse
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
EVAL = {"pycode-30m": "pycode-eval.txt", "pychat-30m": "pychat-eval.txt", "stories260K": "tinystories-sample.txt"}


def collect_imatrix(f16_path, text, out_path, windows=4, n_ctx=512):
    """Diagonal importance matrix: mean x^2 per input column of every Linear, written as a lowbit
    file of f32 vectors named like the weights (the --imatrix format)."""
    import lowbit
    from lowbit import model as M
    from lowbit.format import TensorSpec, write_lowbit
    m = lowbit.load(f16_path, n_ctx=n_ctx)
    ids = m.tokenize(text)
    sums, counts = {}, {}
    orig = M.Linear.__call__

    def hook(self, x):
        sums[self.name] = sums.get(self.name, 0) + (x.astype(np.float64) ** 2).sum(0)
        counts[self.name] = counts.get(self.name, 0) + x.shape[0]
        return orig(self, x)
    M.Linear.__call__ = hook
    try:
        for w in range(windows):
            chunk = ids[w * n_ctx:(w + 1) * n_ctx]
            if len(chunk) < 2:
                break
            m.logits(chunk)
    finally:
        M.Linear.__call__ = orig
    specs = [TensorSpec(n, "f32", (len(v),), lambda v=v, n=n: (v / counts[n]).astype(np.float32))
             for n, v in sums.items()]
    write_lowbit(out_path, {"imatrix": {"windows": windows, "n_ctx": n_ctx}}, specs)
    return out_path


def kld_windows(path, ref_logits_list, ids_list):
    import lowbit
    m = lowbit.load(path, n_ctx=512)
    kl, top = [], []
    for ids, ref in zip(ids_list, ref_logits_list):
        lg = m.logits(ids)[len(ids) // 2:].astype(np.float64)
        p = ref - ref.max(1, keepdims=True)
        p = p - np.log(np.exp(p).sum(1, keepdims=True))
        q = lg - lg.max(1, keepdims=True)
        q = q - np.log(np.exp(q).sum(1, keepdims=True))
        kl.append((np.exp(p) * (p - q)).sum(1))
        top.append(ref.argmax(1) == lg.argmax(1))
    return float(np.concatenate(kl).mean()), float(np.concatenate(top).mean() * 100)


def rel_logit_err(path, model):
    import lowbit
    ref = np.load(os.path.join(SHARED, "reference", f"{model}.npz"))
    m = lowbit.load(path, n_ctx=512)
    lg = m.logits(ref["ids"].tolist())
    return float(np.linalg.norm(lg - ref["logits"]) / np.linalg.norm(ref["logits"]))


def speed(path, n=32):
    import lowbit
    m = lowbit.load(path, n_ctx=256)
    tf = m.transformer
    cache = tf.new_cache()
    tf.forward([1], cache)
    t0 = time.perf_counter()
    for i in range(n):
        tf.forward([1 + i % 100], cache)
    return n / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="pycode-30m")
    ap.add_argument("--types", nargs="+", default=["q4_k_m", "cb2_m", "cb3_m"])
    ap.add_argument("--windows", type=int, default=4)
    ap.add_argument("--no-imatrix", action="store_true")
    ap.add_argument("--speed", action="store_true")
    ap.add_argument("--keep", help="folder to keep the converted files in")
    args = ap.parse_args()
    from converters import convert
    import lowbit
    src = os.path.join(SHARED, "models", args.model)
    work = args.keep or tempfile.mkdtemp(prefix="cbreport-")
    os.makedirs(work, exist_ok=True)
    quiet = dict(progress=False, log=lambda m: None)
    f16 = os.path.join(work, f"{args.model}-f16.lowbit")
    if not os.path.exists(f16):
        convert(src, f16, "f16", **quiet)
    im = None
    if not args.no_imatrix:
        im = os.path.join(work, f"{args.model}-imatrix.lowbit")
        if not os.path.exists(im):
            calib = open(os.path.join(SHARED, "data", "pycode-calib.txt"), encoding="utf-8").read()
            collect_imatrix(f16, calib, im)
    text = open(os.path.join(SHARED, "data", EVAL[args.model]), encoding="utf-8").read()
    m16 = lowbit.load(f16, n_ctx=512)
    ids = m16.tokenize(text[:400_000], add_bos=False)
    bos = m16.tokenizer.bos_id if hasattr(m16.tokenizer, "bos_id") else None
    head = [bos] if bos is not None else []
    ids_list = [head + ids[w * 511:(w + 1) * 511][:512 - len(head)] for w in range(args.windows)]
    refs = [m16.logits(i)[256:].astype(np.float64) for i in ids_list]
    del m16
    rows = []
    for t in args.types:
        out = os.path.join(work, f"{args.model}-{t}.lowbit")
        t0 = time.perf_counter()
        s = convert(src, out, t, imatrix=im, **quiet)
        conv = time.perf_counter() - t0
        kld, top = kld_windows(out, refs, ids_list)
        row = [t, s["bytes"], s["bits_per_weight"], rel_logit_err(out, args.model), kld, top, conv]
        if args.speed:
            row.append(speed(out))
        rows.append(row)
        print(f"  done {t}", file=sys.stderr)
    hdr = "| type | bytes | bits/weight | logit rel err | mean KLD vs f16 | top-1 % | convert s |" + (" gen t/s |" if args.speed else "")
    print(f"\n{args.model}, {args.windows} windows of 512 tokens ({'imatrix' if im else 'no imatrix'})\n")
    print(hdr)
    print("|" + "---|" * (hdr.count("|") - 1))
    for r in rows:
        line = f"| {r[0]} | {r[1]} | {r[2]:.3f} | {r[3]:.4f} | {r[4]:.5f} | {r[5]:.2f} | {r[6]:.0f} |"
        if args.speed:
            line += f" {r[7]:.1f} |"
        print(line)


if __name__ == "__main__":
    main()
