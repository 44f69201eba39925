"""Huffman-coded (`<base>.h`) weights on the native CPU path: the C decoder's rate (symbols per ns,
one thread, each tensor decoded `--reps` times in a row, as matmul does: 4 rows interleaved, no
dequantization) and the CPU time of a whole one-token forward pass, next to the same numbers for
other files (e.g. the base type's). CPU time (process_time, one thread) rather than wall time, so
that the figures hold up on a machine shared with other jobs.

    python -m tools.bench.bench_huff pycode-q4_ke.lowbit pycode-q4_ke.h.lowbit [--reps 4] [--tokens 10] [--runs 5]
"""
import argparse
import os
import sys
import time

import numpy as np

import lowbit
from lowbit import backend, native
from lowbit.native import loader
from lowbit.format import LowbitFile


def decode_rate(path, reps, runs):
    """(symbols per token, symbols/ns) over the file's coded weights that a token multiplies (the
    embedding only when tied: the output projection; a lookup reads one row); None when none."""
    f = LowbitFile(path)
    bench = loader.bench_library()   # lb_huff_bench is in the tools' build of the kernels only
    lib = bench[1]
    total_s = total_n = per_token = 0
    tied = "output.weight" not in f.tensors
    for name in f.tensors:
        qt = f.qtype(name)
        if not qt.name.endswith(".h") or (name == "token_embd.weight" and not tied) or native.huff_base(qt.name) is None:
            continue
        b = qt.bind(f.raw(name).reshape(-1), f.info(name).shape)
        dec = native.HuffDecoder(b, lib=bench)
        best = None
        for _ in range(runs):
            t = time.process_time()
            n = lib.lb_huff_bench(dec.ptr, reps)
            dt = time.process_time() - t
            best = dt if best is None else min(best, dt)
        total_s += best
        total_n += n
        per_token += b.rows * b.ip.shape[0]
    return (per_token, total_n / total_s / 1e9) if total_n else None


def forward_ms(path, tokens, runs):
    """Median and best CPU milliseconds of one decode step (one token, one thread)."""
    m = lowbit.load(path)
    t = m.transformer
    cache = t.new_cache()
    t.forward(np.array([1, 2, 3]), cache)
    times = []
    for _ in range(runs):
        if cache.pos + tokens > cache.n_ctx:
            cache = t.new_cache()
        a = time.process_time()
        for _ in range(tokens):
            t.forward(np.array([5]), cache)
        times.append((time.process_time() - a) / tokens * 1e3)
    return float(np.median(times)), min(times), "c" if t.native is not None else "numba"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="+")
    ap.add_argument("--reps", type=int, default=4, help="decodes of each tensor in a row (default 4)")
    ap.add_argument("--tokens", type=int, default=10, help="tokens per timed forward run (default 10)")
    ap.add_argument("--runs", type=int, default=5, help="timed runs, best/median reported (default 5)")
    a = ap.parse_args()
    if not backend.native_kernels():
        sys.exit("the native backend is off (LOWBIT_BACKEND) or cannot be built")
    native.set_threads(1)
    ffi, lib = native.library()
    print(f"native level {ffi.string(lib.lb_level_name()).decode()}, 1 thread, CPU time")
    print("| file | MiB | backend | coded symbols/token | decode symbols/ns | forward CPU ms/token (median, best) |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for p in a.files:
        rate = decode_rate(p, a.reps, a.runs)
        med, best, ran_on = forward_ms(p, a.tokens, a.runs)
        sym, r = (f"{rate[0]:,}", f"{rate[1]:.2f}") if rate else ("-", "-")
        print(f"| {os.path.basename(p)} | {os.path.getsize(p) / 2**20:.2f} | {ran_on} | {sym} | {r} | {med:.2f}, {best:.2f} |")


if __name__ == "__main__":
    main()
