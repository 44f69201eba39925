"""Size, Huffman saving, quality and speed of the codebook / entropy-coded types on a shared model.

    python -m tools.reports.codebook_report pycode-30m --types q4_k_m,q4_ke,q4_ke.h,cbk4,cbk4.h --kld --huffman --speed

--kld: the quality rows come from tools/reports/quality_table.py itself (same F16 base, imatrix, chunks and
files, cached in --workdir; default /tmp/lowbit-quality/MODEL, shared with quality_table runs):
llama-perplexity-style PPL, mean / 99% KL(F16 || type), top-1 over the first 60 chunks of 512 tokens,
each type with and without the imatrix where it uses one.

--huffman: for every converted file holding entropy-coded `<base>.h` tensors: its bytes against the
same file with those tensors stored in the base type (the Huffman decoder's output, re-stored plainly;
file header differences aside), whether every such tensor's dequantized weights are bit-identical to
the base type's decoding of those bytes, and, where the plain type's own file exists (q4_ke next to
q4_ke.h, q4_k next to q4_k.h), whether that file's tensors are byte-identical to the decoded ones.

--speed: `lowbit bench` (-p 0 -n 64 -t 2 -r 3 by default) of each file: generation tokens/s.

bits/weight = file bytes x 8 / checkpoint weights (llama.cpp's definition)."""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

from lowbit import quants
from lowbit.format import LowbitFile
from tools._paths import ROOT
from tools.reports import quality_table as qt


def file_path(work, model, name, imatrix):
    """quality_table's name for a converted file."""
    return os.path.join(work, f"{model}-{name}{'-imatrix' if imatrix else ''}.lowbit")


def huffman_row(path, plain_path=None):
    """{'bytes', 'plain_equivalent', 'identical', 'plain_file_match', 'tensors'} for one file."""
    f = LowbitFile(path)
    size = os.path.getsize(path)
    delta, n, identical = 0, 0, True
    plain = LowbitFile(plain_path) if plain_path and os.path.exists(plain_path) else None
    plain_match = None if plain is None else True
    for name in f.tensors:
        info = f.info(name)
        q = f.qtype(name)
        if not q.name.endswith(".h"):
            continue
        n += 1
        base = quants.get(q.name[:-2])
        raw = np.ascontiguousarray(f.raw(name)).reshape(-1)
        b = q.bind(raw, tuple(info.shape))
        base_bytes = b.base_bytes()
        delta += base_bytes.size - raw.size
        w_h = b.dequantize()
        w_b = base.dequantize(base_bytes, tuple(info.shape)).reshape(w_h.shape)
        identical &= bool(np.array_equal(w_h.view(np.uint32), w_b.view(np.uint32)))
        if plain is not None:
            praw = np.ascontiguousarray(plain.raw(name)).reshape(-1) if name in plain.tensors else None
            plain_match &= praw is not None and plain.qtype(name).name == base.name and \
                np.array_equal(praw, base_bytes)
    return {"bytes": size, "plain_equivalent": size + delta, "identical": identical, "tensors": n,
            "plain_file_match": plain_match, "plain_file_bytes": os.path.getsize(plain_path) if plain else None}


def bench(path, threads, reps, n_gen):
    cmd = [sys.executable, "-m", "lowbit.cli", "bench", path, "-p", "0", "-n", str(n_gen), "-t", str(threads),
           "-r", str(reps), "--json"]
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": ROOT})
    if out.returncode:
        raise SystemExit(f"bench failed on {path}:\n{out.stderr}")
    return json.loads(out.stdout)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", choices=["pycode-30m", "pychat-30m", "stories260K"])
    ap.add_argument("--types", default="q4_k_m,q4_k,q4_k.h,q4_ke,q4_ke.h,cbk4,cbk4.h")
    ap.add_argument("--chunks", type=int, default=60)
    ap.add_argument("--workdir", help="default /tmp/lowbit-quality/MODEL (quality_table's cache)")
    ap.add_argument("--kld", action="store_true", help="quality rows (tools/reports/quality_table.py)")
    ap.add_argument("--no-imatrix", action="store_true", help="--kld: only rows without the imatrix")
    ap.add_argument("--only-imatrix", action="store_true", help="--kld: only rows with the imatrix (where a type uses one)")
    ap.add_argument("--kld-types", help="--kld: only these of --types (a .h type's weights are its base's)")
    ap.add_argument("--huffman", action="store_true", help="Huffman saving and bit-identical check per .h file")
    ap.add_argument("--speed", action="store_true", help="lowbit bench generation tokens/s per file")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--n-gen", type=int, default=64)
    ap.add_argument("--imatrix", choices=["yes", "no", "both"], default="yes",
                    help="--huffman/--speed: which converted files to use (default: the imatrix ones)")
    args = ap.parse_args(argv)
    work = args.workdir or os.path.join("/tmp/lowbit-quality", args.model)
    names = [t.strip() for t in args.types.split(",") if t.strip()]
    n_weights = qt.hf_weights(os.path.join(qt.SHARED, "models", args.model))

    if args.kld:
        kld_names = args.kld_types.split(",") if args.kld_types else names
        qargv = [args.model, "--chunks", str(args.chunks), "--types", ",".join(kld_names), "--workdir", work,
                 "--json", os.path.join(work, "codebook-rows.json"), "--plot", os.path.join(work, "codebook-kld.png")]
        if args.no_imatrix:
            qargv.append("--no-imatrix")
        if args.only_imatrix:
            qargv.append("--only-imatrix")
        qt.main(qargv)

    variants = {"yes": [True], "no": [False], "both": [False, True]}[args.imatrix]
    model_dir = os.path.join(qt.SHARED, "models", args.model)
    imatrix_path = os.path.join(work, f"{args.model}-calib-n100.imatrix")   # quality_table's
    files = []
    if args.huffman or args.speed:
        for name in names:
            for im in variants:
                im = im and qt.uses_imatrix(name)
                p = file_path(work, args.model, name, im)
                if p in [x[2] for x in files]:
                    continue
                if im and not os.path.exists(imatrix_path):
                    raise SystemExit(f"no imatrix {imatrix_path}: run with --kld first (quality_table makes it)")
                qt.convert_cached(model_dir, p, name, imatrix_path if im else None)
                if name.endswith(".h") and name[:-2] in quants.TYPES:   # its plain twin, for the byte check
                    qt.convert_cached(model_dir, file_path(work, args.model, name[:-2], im), name[:-2],
                                      imatrix_path if im else None)
                files.append((name, im, p))

    if args.huffman:
        print(f"\n{args.model}: Huffman coding (bits/weight over {n_weights:,} checkpoint weights)\n")
        print("| type | imatrix | .h file bytes | bits/weight | same indices stored plain | bits/weight | saving | "
              "bit-identical weights | plain type's own file |")
        print("|---|---|---|---|---|---|---|---|---|")
        for name, im, p in files:
            if not name.endswith(".h"):
                continue
            r = huffman_row(p, file_path(work, args.model, name[:-2], im))
            own = ("none" if r["plain_file_match"] is None else
                   f"{r['plain_file_bytes']} bytes, tensors {'byte-identical' if r['plain_file_match'] else 'DIFFER'}")
            print(f"| {name} | {'yes' if im else 'no'} | {r['bytes']} | {r['bytes'] * 8 / n_weights:.3f} | "
                  f"{r['plain_equivalent']} | {r['plain_equivalent'] * 8 / n_weights:.3f} | "
                  f"{100 * (1 - r['bytes'] / r['plain_equivalent']):.1f}% | {'yes' if r['identical'] else 'NO'} "
                  f"({r['tensors']} tensors) | {own} |")

    if args.speed:
        print(f"\n{args.model}: lowbit bench -p 0 -n {args.n_gen} -t {args.threads} -r {args.reps} "
              "(generation tokens/s, median; machine shared with other jobs)\n")
        print("| type | imatrix | bits/weight | backend | gen t/s | spread |")
        print("|---|---|---|---|---|---|")
        for name, im, p in files:
            d = bench(p, args.threads, args.reps, args.n_gen)
            tg = next(r for r in d["tests"] if r["test"].startswith("tg"))
            backend = f"{d['backend']} ({d['level']})" if d.get("level") else d["backend"]
            print(f"| {name} | {'yes' if im else 'no'} | {os.path.getsize(p) * 8 / n_weights:.3f} | {backend} | "
                  f"{tg['median']:.1f} | {tg['spread']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
