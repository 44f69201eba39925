"""Quality of every lowbit type and mix on a shared model, next to llama.cpp's figures.

For one model it converts F16 (the reference), computes an importance matrix, converts every
type in lowbit.quants.TYPES and every mix in converters.recipes (when that module exists), with
and without the imatrix where the type uses one, and measures llama-perplexity-style PPL, mean
and 99th-percentile KL(F16 || type) and top-1 agreement. Prints a markdown table and draws
KLD against bits/weight with llama.cpp's points (/work/shared/baselines/llamacpp.md).

    python -m tools.reports.quality_table pycode-30m --chunks 60
    python -m tools.reports.quality_table pychat-30m --chunks 40 --types f16,q8_0 --plot pychat.png

The shared test world is ../shared beside the checkout (LOWBIT_SHARED overrides it).
bits/weight = file bytes x 8 / weights of the Hugging Face checkpoint (llama.cpp's definition
in the baselines). Runs are cached in --workdir: converted files, the F16 base log-probs and
the imatrix are reused when their inputs did not change (for converted files and rows: the options
and a hash of converters/ and lowbit/quants/, so a quantizer change converts again).
"""
import argparse
import json
import os
import sys
import time

import numpy as np

import lowbit
from lowbit import imatrix as imx, perplexity, quants
from tools._paths import ROOT, SHARED

EVAL_TEXT = {"pycode-30m": ("pycode-eval.txt", 60), "pychat-30m": ("pychat-eval.txt", None),
             "stories260K": ("tinystories-sample.txt", None)}
CALIB_TEXT = "pycode-calib.txt"


# ----------------------------------------------------------------------------- what to measure

def mixes() -> list:
    from converters.recipes import MIXES
    return list(MIXES)


def plain_types() -> list:
    return [t for t in quants.TYPES if t not in ("u8", "f32")]


def uses_imatrix(qtype: str) -> bool:
    """Whether the type's quantizer reacts to an importance matrix (mixes are assumed to)."""
    if qtype not in quants.TYPES:
        return True
    qt = quants.TYPES[qtype]
    rng = np.random.default_rng(0)
    cols = 256 * max(1, qt.block_size // 256 if qt.block_size > 256 else 1)
    if not qt.fits(cols):
        return True
    w = rng.standard_normal((4, cols)).astype(np.float32)
    imat = rng.uniform(0.01, 100.0, cols).astype(np.float32)
    try:
        return not np.array_equal(qt.quantize(w, None), qt.quantize(w, imat))
    except Exception:
        return False


def hf_weights(model_dir: str) -> int:
    from converters.hf import Checkpoint
    ck = Checkpoint(model_dir)
    return int(sum(np.prod(ck.names[n][0].shape(ck.names[n][1]), dtype=np.int64) for n in ck.names))


# ----------------------------------------------------------------------------- llama.cpp figures

def llamacpp_rows(model: str, path=os.path.join(SHARED, "baselines", "llamacpp.md")) -> list:
    """The quality rows of `model`'s section of the baselines file: dicts keyed by column."""
    if not os.path.exists(path):
        return []
    rows, section, header = [], None, None
    for line in open(path, encoding="utf-8"):
        if line.startswith("## "):
            section, header = line[3:].strip(), None
            continue
        if not (section and section.startswith(model) and line.startswith("|")):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = [c.lower() for c in cells]
            continue
        if set(cells[0]) <= set("-: "):
            continue
        if "mean kld" in header and "bits/weight" in header:
            rows.append(dict(zip(header, cells)))
    return rows


# ----------------------------------------------------------------------------- runs

def log_quiet(*a, **k):
    pass


def log_stderr(msg, end="\n"):
    print(msg, end=end, file=sys.stderr, flush=True)


_CODE = None


def converter_version() -> str:
    """Hash of the converter and quantizer sources: a cached file or row made by other code is
    converted and measured again."""
    global _CODE
    if _CODE is None:
        import hashlib
        h = hashlib.sha256()
        for d in (os.path.join(ROOT, "converters"), os.path.join(ROOT, "lowbit", "quants")):
            for name in sorted(os.listdir(d)):
                if name.endswith(".py"):
                    h.update(name.encode())
                    h.update(open(os.path.join(d, name), "rb").read())
        _CODE = h.hexdigest()[:16]
    return _CODE


def convert_cached(model_dir, out, qtype, imatrix_path=None):
    from converters import convert
    stamp = out + ".json"
    key = {"qtype": qtype, "imatrix": imatrix_path, "src": os.path.abspath(model_dir)}
    if qtype not in ("f16", "bf16", "f32"):    # the reference files do not depend on the quantizers
        key["code"] = converter_version()
    if os.path.exists(out) and os.path.exists(stamp) and json.load(open(stamp)) == key:
        return
    kw = {"imatrix": imatrix_path} if imatrix_path else {}
    convert(model_dir, out, qtype, progress=False, log=log_quiet, **kw)
    json.dump(key, open(stamp, "w"))


def base_result(path, n_chunks=None) -> perplexity.Result:
    b = perplexity.load_base(path)
    s = perplexity.Running()
    nll = b.nll[:n_chunks] if n_chunks else b.nll
    s.add(nll.reshape(-1))
    r = perplexity.Result(b.meta["n_ctx"], len(nll), b.meta.get("text_tokens", 0), s, 0.0)
    r.kld = {"mean": 0.0, "p99": 0.0, "same_top": 1.0}
    return r


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", choices=sorted(EVAL_TEXT), help="a model folder of ../shared/models")
    ap.add_argument("--chunks", type=int, help="eval chunks of 512 tokens (default: llama.cpp's: 60 for "
                                               "pycode-30m, all for pychat-30m)")
    ap.add_argument("--row-chunks", type=int, help="evaluate the quantized rows on only the first N of the "
                                                   "base's chunks (the F16 base still covers --chunks)")
    ap.add_argument("-c", "--ctx", type=int, default=512, help="tokens per chunk (default 512)")
    ap.add_argument("--types", help="comma-separated types/mixes (default: every type and mix found)")
    ap.add_argument("--no-imatrix", action="store_true", help="skip the imatrix rows")
    ap.add_argument("--only-imatrix", action="store_true",
                    help="skip the rows without imatrix of the types that use one")
    ap.add_argument("--imatrix-chunks", type=int, default=100,
                    help=f"chunks of {CALIB_TEXT} for the imatrix (default 100; llama.cpp's baseline used all)")
    ap.add_argument("--workdir", default=None, help="cache folder (default /tmp/lowbit-quality/MODEL)")
    ap.add_argument("--plot", help="PNG of mean KLD against bits/weight (default WORKDIR/kld.png)")
    ap.add_argument("--json", help="also write the rows as JSON here")
    ap.add_argument("--from-json", metavar="JSON", help="only print the table and draw the plot of a saved --json")
    ap.add_argument("--from-docs", metavar="DIR", help="only draw the plot (--plot) of the tables published in DIR "
                    "(quality-, codebook- and frontier-MODEL.md), e.g. docs/results")
    args = ap.parse_args(argv)
    if args.from_docs:
        plot(args.model, None, args.plot or os.path.join(args.from_docs, f"quality-{args.model}.png"),
             points=doc_points(args.model, args.from_docs))
        return
    if args.from_json:
        d = json.load(open(args.from_json))
        report(d["model"], d["text"], d["rows"], d["chunks"], d["ctx"], d["n_weights"])
        plot(d["model"], d["rows"], args.plot or os.path.splitext(args.from_json)[0] + ".png")
        return

    model_dir = os.path.join(SHARED, "models", args.model)
    text_name, default_chunks = EVAL_TEXT[args.model]
    text = os.path.join(SHARED, "data", text_name)
    chunks = args.chunks if args.chunks is not None else default_chunks
    work = args.workdir or os.path.join("/tmp/lowbit-quality", args.model)
    os.makedirs(work, exist_ok=True)
    n_weights = hf_weights(model_dir)

    names = args.types.split(",") if args.types else list(dict.fromkeys(plain_types() + mixes()))   # q2_k, q6_k: type and mix share a name
    unknown = [n for n in names if n not in quants.TYPES and n not in mixes()]
    if unknown:
        ap.error(f"unknown types/mixes {unknown}; known: {plain_types() + mixes()}")
    want_imatrix = not args.no_imatrix and any(uses_imatrix(n) for n in names)

    # the reference: F16, its base log-probs over the eval chunks
    f16 = os.path.join(work, f"{args.model}-f16.lowbit")
    convert_cached(model_dir, f16, "f16")
    base = os.path.join(work, f"base-c{args.ctx}-n{chunks or 'all'}.npz")
    if not os.path.exists(base):
        t = time.perf_counter()
        r = perplexity.run(lowbit.load(f16), text, n_ctx=args.ctx, n_chunks=chunks, save_base_path=base,
                           log=log_stderr)
        print(f"base: F16 PPL {r.scored.ppl:.4f} +/- {r.scored.ppl_uncertainty:.5f} over {r.n_chunks} chunks, "
              f"{time.perf_counter() - t:.0f} s",
              file=sys.stderr)
    imatrix_path = None
    if want_imatrix:
        imatrix_path = os.path.join(work, f"{args.model}-calib-n{args.imatrix_chunks}.imatrix")
        if not os.path.exists(imatrix_path):
            t = time.perf_counter()
            stats, info = imx.compute(lowbit.load(f16), os.path.join(SHARED, "data", CALIB_TEXT), args.ctx,
                                      args.imatrix_chunks, log=log_quiet)
            imx.save(imatrix_path, stats, os.path.basename(f16), CALIB_TEXT, info)
            print(f"imatrix: {info['chunks']} chunks, {time.perf_counter() - t:.0f} s", file=sys.stderr)

    rows = []
    done_path = os.path.join(work, "rows.json")   # finished rows: an interrupted run resumes
    done = json.load(open(done_path)) if os.path.exists(done_path) else {}
    for name in names:
        variants = [False, True] if want_imatrix and uses_imatrix(name) else [False]
        for with_imatrix in (variants[1:] if args.only_imatrix and len(variants) > 1 else variants):
            out = os.path.join(work, f"{args.model}-{name}{'-imatrix' if with_imatrix else ''}.lowbit")
            key = (f"{name}|{with_imatrix}|{os.path.basename(base)}|{os.path.basename(imatrix_path or '')}|"
                   f"{args.row_chunks}|{converter_version()}")
            if key in done:
                rows.append(done[key])
                continue
            convert_cached(model_dir, out, name, imatrix_path if with_imatrix else None)
            t = time.perf_counter()
            if name == "f16":   # the reference itself: its figures are in the base file
                r = base_result(base, args.row_chunks)
            else:
                r = perplexity.run(lowbit.load(out), None, n_ctx=None, n_chunks=args.row_chunks or chunks,
                                   kld_base_path=base,
                                   log=log_quiet)
            size = os.path.getsize(out)
            row = {"type": name, "imatrix": with_imatrix, "bytes": size, "bits_per_weight": size * 8 / n_weights,
                   "ppl": r.scored.ppl, "ppl_uncertainty": r.scored.ppl_uncertainty, "kld_mean": r.kld["mean"],
                   "kld_p99": r.kld["p99"], "top1": r.kld["same_top"], "chunks": r.n_chunks,
                   "seconds": time.perf_counter() - t}
            rows.append(row)
            done[key] = row
            json.dump(done, open(done_path, "w"), indent=1)
            print(f"{name}{' +imatrix' if with_imatrix else ''}: PPL {row['ppl']:.4f}, KLD {row['kld_mean']:.6f}, "
                  f"{row['seconds']:.0f} s", file=sys.stderr)

    report(args.model, text_name, rows, chunks, args.ctx, n_weights)
    if args.json:
        json.dump({"model": args.model, "text": text_name, "n_weights": n_weights, "ctx": args.ctx,
                   "chunks": chunks, "rows": rows}, open(args.json, "w"), indent=2)
    plot(args.model, rows, args.plot or os.path.join(work, "kld.png"))


def report(model, text_name, rows, chunks, ctx, n_weights):
    print(f"\n{model}: {text_name}, {rows[0]['chunks'] if rows else chunks} chunks of {ctx}; "
          f"bits/weight over {n_weights:,} checkpoint weights; KLD vs lowbit F16\n")
    print("| type | imatrix | bytes | bits/weight | PPL | mean KLD | 99% KLD | top-1 % |")
    print("|---|---|---|---|---|---|---|---|")
    for r in sorted(rows, key=lambda r: -r["bits_per_weight"]):
        print(f"| {r['type']} | {'yes' if r['imatrix'] else 'no'} | {r['bytes']} | {r['bits_per_weight']:.3f} | "
              f"{r['ppl']:.4f} ± {r['ppl_uncertainty']:.4f} | {_small(r['kld_mean'], 6)} | {_small(r['kld_p99'], 5)} | "
              f"{100 * r['top1']:.2f} |")


def _small(x, digits):
    """Fixed point like llama.cpp's tables, scientific below what that shows."""
    return f"{x:.{digits}f}" if x == 0 or x >= 10 ** -digits else f"{x:.1e}"


# Marker series of the plot: (label, color, marker); quality rows are split by type family.
SERIES = {
    "kquant": ("lowbit k-quants / mixes", "tab:blue", "o"),
    "q4_ke": ("lowbit q4_ke", "tab:orange", "X"),
    "codebook": ("lowbit codebook (cbk2, cbk4, d4l2, cb* mixes)", "tab:green", "D"),
    "huffman": ("lowbit Huffman-coded .h", "tab:purple", "P"),
    "gptq": ("lowbit mix + GPTQ", "tab:cyan", "<"),
    "target": ("lowbit --target-bpw (k-quants)", "black", "*"),
    "target_new": ("lowbit --target-bpw + new types", "tab:pink", "*"),
}
CODEBOOK_MIXES = ("cb2_s", "cb2_m", "cb3_m")


def family(name: str) -> str:
    """The plot series of a quality row's type or mix name."""
    from lowbit.quants import vq
    if name.endswith(".h"):
        return "huffman"
    if name in vq.PARAMS or name in CODEBOOK_MIXES:
        return "codebook"
    return "q4_ke" if name == "q4_ke" else "kquant"


def _float(cell):
    try:
        return float(cell.replace("*", "").split("±")[0].split()[0])
    except (ValueError, IndexError):
        return None


def doc_points(model: str, folder: str) -> list:
    """Plot points {series, label, imatrix, bits_per_weight, kld_mean} from the published tables in
    `folder` (quality-MODEL.md, codebook-MODEL.md, frontier-MODEL.md): every table with a bits/weight
    and a mean KLD column; llama.cpp rows are left out (they come from the baselines file)."""
    import re
    pts, seen = [], set()
    for kind in ("quality", "codebook", "frontier"):
        path = os.path.join(folder, f"{kind}-{model}.md")
        if not os.path.exists(path):
            continue
        header = None
        for line in open(path, encoding="utf-8"):
            if not line.startswith("|"):
                header = None
                continue
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if header is None:
                header = [c.lower() for c in cells]
                continue
            if set(cells[0]) <= set("-: ") or not {"bits/weight", "mean kld"} <= set(header):
                continue
            row = dict(zip(header, cells))
            name = re.sub(r"\*\*", "", cells[0]).strip()
            bpw, kld = _float(row["bits/weight"]), _float(row["mean kld"])
            if bpw is None or kld is None or kld <= 1e-8 or name.startswith("llama.cpp"):
                continue
            imat = row.get("imatrix", "yes").startswith("yes")
            if name.startswith("lowbit "):            # frontier rows
                what = name[len("lowbit "):]
                if what.startswith("--target-bpw"):
                    series = "target_new" if "--candidates" in what else "target"
                    label = "bpw " + what.split()[1] + (" +new" if "--candidates" in what else "")
                elif "GPTQ" in what:
                    series, label = "gptq", what.split(",")[0]
                else:
                    continue                           # plain mixes: already quality rows
            else:
                typ = name.split()[0]
                series = "gptq" if "GPTQ" in name else family(typ)
                label = typ
            key = (series, label, imat, round(bpw, 3))
            if key not in seen:
                seen.add(key)
                pts.append({"series": series, "label": label, "imatrix": imat, "bits_per_weight": bpw,
                            "kld_mean": kld})
    return pts


def plot(model, rows, path, points=None):
    """KLD against bits/weight: quality `rows` (this run's) or `points` (doc_points) by series, with
    llama.cpp's points. Hollow markers: without imatrix."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install '.[tools]'): no plot", file=sys.stderr)
        return
    if points is None:
        points = [{"series": family(r["type"]), "label": r["type"], "imatrix": r["imatrix"],
                   "bits_per_weight": r["bits_per_weight"], "kld_mean": r["kld_mean"]} for r in rows]
    fig, ax = plt.subplots(figsize=(10, 6.5))
    ours = [p for p in points if p["kld_mean"] > 1e-8]   # lossless rows (F16, BF16 of a BF16 checkpoint) off the log axis
    for key, (label, color, marker) in SERIES.items():
        pts = [p for p in ours if p["series"] == key]
        if not pts:
            continue
        size = 90 if marker == "*" else 30
        for imat in (True, False):
            sub = [p for p in pts if p["imatrix"] == imat]
            if sub:
                ax.scatter([p["bits_per_weight"] for p in sub], [p["kld_mean"] for p in sub], marker=marker, s=size,
                           color=color if imat else "none", edgecolors=color, linewidths=1,
                           label=label + ("" if imat else " (no imatrix)"))
        for p in pts:
            ax.annotate(p["label"], (p["bits_per_weight"], p["kld_mean"]), fontsize=6, xytext=(3, 3),
                        textcoords="offset points", color=color)
    ref = []
    for r in llamacpp_rows(model):
        try:
            ref.append((float(r["bits/weight"]), float(r["mean kld"]), r["type"], r.get("imatrix") == "yes"))
        except (KeyError, ValueError):
            continue   # F16 has no KLD
    for imat, marker in ((False, "^"), (True, "v")):
        pts = [p for p in ref if p[3] == imat]
        if pts:
            ax.scatter([p[0] for p in pts], [p[1] for p in pts], marker=marker, color="tab:red",
                       label=f"llama.cpp b4747{' + imatrix' if imat else ''}")
            for p in pts:
                ax.annotate(p[2], (p[0], p[1]), fontsize=6, xytext=(3, -8), textcoords="offset points",
                            color="tab:red")
    ax.set_xscale("linear")
    ax.set_yscale("log")
    ax.set_xlabel("bits per weight (file bytes x 8 / checkpoint weights)")
    ax.set_ylabel("mean KL(F16 || quantized)")
    ax.set_title(f"{model}: KL divergence against size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower left")  # low bits and low KLD: the empty corner
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print(f"plot: {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
