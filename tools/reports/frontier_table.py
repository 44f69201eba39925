"""The low-bit frontier of one shared model: size against KL divergence for GPTQ-quantized mixes
and --target-bpw files, next to llama.cpp's i-quant rows (IQ2_XS, IQ3_XXS, Q4_K_M with imatrix).

Each point is converted (cached in --workdir), then scored like tools/reports/quality_table.py (whose
machinery this reuses): llama-perplexity-style PPL, mean / 99% KL(F16 || point) and top-1 over
the first 60 chunks of 512 tokens of the model's eval text. The imatrix is computed with
--hessian (covariances + sensitivities) from 100 chunks of pycode-calib.txt.

    python -m tools.reports.frontier_table pycode-30m
    python -m tools.reports.frontier_table pychat-30m --points q3_k_m,q3_k_m+gptq,bpw4.25

Point syntax: TYPE_OR_MIX (imatrix, no GPTQ), TYPE_OR_MIX+gptq (imatrix with GPTQ), bpwX
(--target-bpw X, GPTQ), bpwX+T1+T2 (--target-bpw X --candidates +T1,+T2: the default k-quants plus
those types; bpwX+all: plus every opt-in type). bits/weight = file bytes x 8 / checkpoint weights (llama.cpp's
definition in ../shared/baselines/llamacpp.md).
"""
import argparse
import json
import os
import sys
import time

import lowbit
from lowbit import imatrix as imx, perplexity
from lowbit.format import LowbitFile
from tools.reports.quality_table import (CALIB_TEXT, EVAL_TEXT, SHARED, _small, convert_cached, converter_version,  # noqa: E402
                           hf_weights, llamacpp_rows, log_quiet)

DEFAULT_POINTS = {
    "pycode-30m": "q2_k,q2_k+gptq,bpw2.87,q3_k+gptq,bpw3.48,q4_k_m+gptq,bpw5.05",
    "pychat-30m": "q3_k_s+gptq,q3_k_m,q3_k_m+gptq,bpw3.5,bpw4.25,bpw5.0",
}
LLAMACPP_TYPES = ("IQ2_XS", "IQ3_XXS", "Q4_K_M")


def parse_point(p: str):
    """-> (label, kwargs for converters.convert)."""
    if p.startswith("bpw"):
        target, *extra = p[3:].split("+")
        kw = {"qtype": "q8_0", "target_bpw": float(target), "gptq": True}
        if extra:
            kw["candidates"] = ",".join("+" + t for t in extra)
        return p, kw
    name, _, opt = p.partition("+")
    if opt not in ("", "gptq"):
        raise SystemExit(f"bad point {p!r}: expected TYPE, TYPE+gptq or bpwX")
    return p, {"qtype": name, "gptq": opt == "gptq"}


def convert_point(model_dir, out, kw, imatrix_path):
    from converters import convert
    stamp = out + ".json"
    key = {**kw, "imatrix": imatrix_path, "src": os.path.abspath(model_dir), "code": converter_version()}
    if os.path.exists(out) and os.path.exists(stamp) and json.load(open(stamp)) == key:
        return
    t = time.perf_counter()
    convert(model_dir, out, kw["qtype"], progress=False, log=log_quiet, imatrix=imatrix_path, gptq=kw["gptq"],
            target_bpw=kw.get("target_bpw"), candidates=kw.get("candidates"))
    json.dump(key, open(stamp, "w"))
    print(f"converted {os.path.basename(out)} in {time.perf_counter() - t:.0f} s", file=sys.stderr)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model", choices=sorted(DEFAULT_POINTS))
    ap.add_argument("--points", help="comma-separated points (default: a set per model, see DEFAULT_POINTS)")
    ap.add_argument("--chunks", type=int, default=60, help="eval chunks of 512 tokens (default 60)")
    ap.add_argument("--imatrix-chunks", type=int, default=100)
    ap.add_argument("--workdir", help="cache folder (default /tmp/lowbit-frontier/MODEL)")
    ap.add_argument("--f16", help="an existing F16 .lowbit of the model (default: converted into --workdir)")
    ap.add_argument("--base", help="an existing KLD base file of that F16 over --chunks chunks")
    ap.add_argument("--imatrix", help="an existing imatrix file made with --hessian")
    ap.add_argument("--json", help="also write the rows as JSON here")
    args = ap.parse_args(argv)

    model_dir = os.path.join(SHARED, "models", args.model)
    text_name = EVAL_TEXT[args.model][0]
    work = args.workdir or os.path.join("/tmp/lowbit-frontier", args.model)
    os.makedirs(work, exist_ok=True)
    n_weights = hf_weights(model_dir)
    f16 = args.f16 or os.path.join(work, f"{args.model}-f16.lowbit")
    if not args.f16:
        convert_cached(model_dir, f16, "f16")
    base = args.base or os.path.join(work, f"base-c512-n{args.chunks}.npz")
    if not os.path.exists(base):
        perplexity.run(lowbit.load(f16), os.path.join(SHARED, "data", text_name), n_ctx=512, n_chunks=args.chunks,
                       save_base_path=base, log=log_quiet)
    imatrix_path = args.imatrix or os.path.join(work, f"{args.model}-calib-n{args.imatrix_chunks}-hessian.imatrix")
    if not os.path.exists(imatrix_path):
        t = time.perf_counter()
        stats, info = imx.compute(lowbit.load(f16), os.path.join(SHARED, "data", CALIB_TEXT), 512,
                                  args.imatrix_chunks, log=log_quiet, hessian=True)
        imx.save(imatrix_path, stats, os.path.basename(f16), CALIB_TEXT, info)
        print(f"imatrix (hessian): {time.perf_counter() - t:.0f} s", file=sys.stderr)

    rows = []
    done_path = os.path.join(work, "frontier-rows.json")
    done = json.load(open(done_path)) if os.path.exists(done_path) else {}
    for p in (args.points or DEFAULT_POINTS[args.model]).split(","):
        label, kw = parse_point(p.strip())
        key = f"{label}|{os.path.basename(base)}|{os.path.basename(imatrix_path)}|{args.chunks}|{converter_version()}"
        if key in done:
            rows.append(done[key])
            continue
        out = os.path.join(work, f"{args.model}-{label.replace('+', '-')}.lowbit")
        convert_point(model_dir, out, kw, imatrix_path)
        r = perplexity.run(lowbit.load(out), None, n_ctx=None, n_chunks=args.chunks, kld_base_path=base,
                           log=log_quiet)
        size = os.path.getsize(out)
        row = {"point": label, "bytes": size, "bits_per_weight": size * 8 / n_weights, "ppl": r.scored.ppl,
               "ppl_uncertainty": r.scored.ppl_uncertainty, "kld_mean": r.kld["mean"],
               "kld_uncertainty": r.kld["mean_uncertainty"], "kld_p99": r.kld["p99"], "top1": r.kld["same_top"],
               "tensor_types": LowbitFile(out).metadata["provenance"]["recipe"]["tensor_types"]}
        rows.append(row)
        done[key] = row
        json.dump(done, open(done_path, "w"), indent=1)
        print(f"{label}: {row['bits_per_weight']:.3f} bpw, KLD {row['kld_mean']:.6f}, types {row['tensor_types']}",
              file=sys.stderr)
    report(args.model, text_name, args.chunks, n_weights, rows)
    if args.json:
        json.dump({"model": args.model, "chunks": args.chunks, "n_weights": n_weights, "rows": rows},
                  open(args.json, "w"), indent=2)


def describe(label):
    if label.startswith("bpw"):
        target, *extra = label[3:].split("+")
        return f"--target-bpw {target}{' --candidates ' + ','.join('+' + t for t in extra) if extra else ''} (GPTQ)"
    name, _, opt = label.partition("+")
    return f"{name}, imatrix{' + GPTQ' if opt else ''}"


def report(model, text_name, chunks, n_weights, rows):
    print(f"\n{model}: {text_name}, first {chunks} chunks of 512; bits/weight over {n_weights:,} checkpoint "
          "weights; KLD vs lowbit F16 (llama.cpp rows: vs its F16, from ../shared/baselines/llamacpp.md)\n")
    print("| file | bytes | bits/weight | PPL | mean KLD | 99% KLD | top-1 % |")
    print("|---|---|---|---|---|---|---|")
    table = [(r["bits_per_weight"], f"| lowbit {describe(r['point'])} | {r['bytes']} | {r['bits_per_weight']:.3f} | "
              f"{r['ppl']:.4f} | {_small(r['kld_mean'], 6)} ± {_small(r['kld_uncertainty'], 6)} | "
              f"{_small(r['kld_p99'], 5)} | {100 * r['top1']:.2f} |") for r in rows]
    for r in llamacpp_rows(model):
        if r.get("type") in LLAMACPP_TYPES and r.get("imatrix") == "yes":
            table.append((float(r["bits/weight"]), f"| llama.cpp {r['type']} imatrix | {r['bytes']} | "
                          f"{float(r['bits/weight']):.3f} | {r['ppl']} | {r['mean kld']} | {r['99% kld']} | "
                          f"{r['top-1 %']} |"))
    for _, line in sorted(table, key=lambda x: -x[0]):
        print(line)


if __name__ == "__main__":
    main()
