"""Decode (one token: matrix x vector) speed of the native kernels on a real .lowbit file, per
(type, shape) group of its weights, in GB/s of weight bytes read. "stream": one lb_matmul per
tensor of the group, cycling over all of them (a group larger than the L3 cache reads from DRAM,
as decoding does); "cached": the first ~384 KiB of rows of the group's first tensor again and again (they stay in
the L2 cache, so this is the kernel's own arithmetic speed plus the per-call overhead).

  python -m tools.bench.bench_decode_kernels /tmp/sbs-tl/tinyllama-random-q4_k_m.lowbit -t 2
  python -m tools.bench.bench_decode_kernels FILE -t 1 --level avx2
"""
import argparse
import os
import time
from collections import defaultdict
from types import SimpleNamespace

import numpy as np

from lowbit import native
from lowbit.format import LowbitFile


def time_calls(fn, min_s, clock=time.perf_counter):
    """Median seconds per round of fn() over rounds lasting at least min_s in all."""
    fn()   # warm-up: page cache, pool, scratch
    rounds, total = [], 0.0
    while total < min_s or len(rounds) < 5:
        t0 = clock()
        fn()
        dt = clock() - t0
        rounds.append(dt)
        total += dt
    return float(np.median(rounds))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="a .lowbit file")
    ap.add_argument("-t", "--threads", type=int, default=native.default_threads())
    ap.add_argument("--level", choices=native.ORDER, help="native level (default: the best this CPU runs)")
    ap.add_argument("--min-seconds", type=float, default=1.0, help="time per measurement (default 1)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time with this process's CPU time, not the wall clock (with -t 1: immune to other "
                         "processes taking the core away, on a shared machine)")
    ap.add_argument("--skip", default="token_embd.weight", help="comma-separated tensors to leave out")
    a = ap.parse_args(argv)

    if a.cpu_time and a.threads != 1:
        ap.error("--cpu-time needs -t 1 (spinning pool threads would count)")
    clock = time.process_time if a.cpu_time else time.perf_counter
    ffi, lib = native.library(a.level)
    lib.lb_init(a.threads)
    f = LowbitFile(a.model)
    skip = set(a.skip.split(","))
    groups = defaultdict(list)
    for name, info in f.tensors.items():
        if name in skip or len(info.shape) != 2 or info.type not in native.C_TYPES:
            continue
        groups[(info.type, info.rows, info.cols)].append(name)
    mm = native.NativeMatmul
    print(f"{os.path.basename(a.model)}: level {ffi.string(lib.lb_level_name()).decode()}, {a.threads} threads, "
          f"{'CPU' if a.cpu_time else 'wall-clock'} time, 1-min load average {os.getloadavg()[0]:.1f}")
    print("| type | rows x cols | tensors | MiB | stream GB/s | cached GB/s | cached us/call (rows) |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    tot_bytes = tot_time = 0.0
    for (tname, rows, cols), names in sorted(groups.items(), key=lambda kv: -len(kv[1]) * kv[0][1] * kv[0][2]):
        m = mm(tname, a.level)
        ws = [m.weight(np.ascontiguousarray(f.raw(n)), cols) for n in names]
        bounds = ([native.bind_codebook(tname, f.raw(n), cols) for n in names[:1]]
                  if tname in native.CODEBOOK_TYPES else None)
        nbytes = sum(f.raw(n).nbytes for n in names)
        x = np.random.default_rng(0).standard_normal((1, cols)).astype(np.float32)
        y = np.empty((1, rows), np.float32)
        px, py = ffi.cast("const float *", ffi.from_buffer(x)), ffi.cast("float *", ffi.from_buffer(y))

        def stream():
            for w in ws:
                lib.lb_matmul(w.ptr, px, py, 1, 0)

        # cached: the first rows of the first tensor, ~384 KiB (inside this CPU's L2)
        raw0 = bounds[0].raw if bounds else np.ascontiguousarray(f.raw(names[0]))
        crows = int(min(rows, max(4, (384 << 10) // raw0.shape[1] // 4 * 4)))
        if bounds:   # codebook types: the first rows with the tensor's codebook and their row scales
            b0 = SimpleNamespace(cb=bounds[0].cb, dr=bounds[0].dr[:crows], raw=raw0[:crows])
            w0 = m.weight(None, cols, bound=b0)
        else:
            w0 = m.weight(raw0[:crows], cols)
        cbytes = raw0[:crows].nbytes
        reps = max(1, int((4 << 20) // cbytes))   # ~4 MiB of weights per timed round

        def cached():
            for _ in range(reps):
                lib.lb_matmul(w0.ptr, px, py, 1, 0)

        ts = time_calls(stream, a.min_seconds, clock)
        tc = time_calls(cached, a.min_seconds, clock) / reps
        tot_bytes += nbytes
        tot_time += ts
        print(f"| {tname} | {rows} x {cols} | {len(names)} | {nbytes / 2**20:.1f} | {nbytes / ts / 1e9:.1f} | "
              f"{cbytes / tc / 1e9:.1f} | {tc * 1e6:.1f} ({crows}) |")
    print(f"all groups: {tot_bytes / 2**20:.1f} MiB in {tot_time * 1e3:.2f} ms = {tot_bytes / tot_time / 1e9:.1f} GB/s "
          f"(one token's weights: an upper bound of {1 / tot_time:.1f} tokens/s)")


if __name__ == "__main__":
    main()
