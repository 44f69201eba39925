"""Measure the CUDA runtime: prompt and generation tokens/s, and the bandwidth achieved in
generation (weight bytes + KV bytes read per token / time per token) against the card's own
device-to-device copy bandwidth, measured in the same run with cudaMemcpy.

    python -m tools.bench.bench_cuda MODEL.lowbit [MODEL2.lowbit ...] [--prompt 128] [--gen 128] [--ctx 1024]
"""
import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np

from lowbit.cuda.model import CudaTransformer
from lowbit.cuda.loader import get_runtime
from lowbit.format import LowbitFile



def d2d_bandwidth(nbytes=1 << 30, iters=50):
    """Bytes read + bytes written per second by a large cudaMemcpy D2D (the usual convention), timed
    by tools/cuda_d2d.cu: a benchmark entry point built beside the tool, not in the shipped library."""
    from cffi import FFI
    from lowbit.cuda.build import library
    ffi = FFI()
    ffi.cdef("int lb_bench_d2d(size_t bytes, int iters, float* ms_per_copy); const char* lb_bench_last_error(void);")
    lib = ffi.dlopen(str(library(source=Path(__file__).with_name("cuda_d2d.cu"), name="liblowbit_cuda_d2d.so")))
    ms = ffi.new("float*")
    if lib.lb_bench_d2d(nbytes, iters, ms) != 0:
        raise RuntimeError(f"lb_bench_d2d failed: {ffi.string(lib.lb_bench_last_error()).decode()}")
    return 2 * nbytes / (ms[0] * 1e-3)


def kind(f):
    types = {}
    for t in f.tensors.values():
        if len(t.shape) == 2:
            types[t.type] = types.get(t.type, 0) + t.nbytes
    total = sum(types.values())
    return "+".join(f"{k}" for k, v in sorted(types.items(), key=lambda kv: -kv[1]) if v > 0.02 * total)


def bench(path, n_prompt, n_gen, n_ctx, reps):
    f = LowbitFile(path)
    t0 = time.perf_counter()
    m = CudaTransformer(f, n_ctx=n_ctx, with_tokenizer=False)
    load_s = time.perf_counter() - t0
    c = m.config
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, c.vocab_size, n_prompt)
    res = []
    for rep in range(reps + 1):   # the first round warms up (graph capture, caches)
        cache = m.new_cache()
        t0 = time.perf_counter()
        logits = m.forward(prompt, cache)
        t_prompt = time.perf_counter() - t0
        tok = int(logits[-1].argmax())
        times = []
        for _ in range(n_gen):
            t0 = time.perf_counter()
            logits = m.forward([tok], cache)
            times.append(time.perf_counter() - t0)
            tok = int(logits[-1].argmax())
        # greedy generation as lowbit generates it (device argmax, steps pipelined by one)
        cache2 = m.new_cache()
        tok2 = int(m.forward(prompt, cache2)[-1].argmax())
        t0 = time.perf_counter()
        n_done = sum(1 for _ in m.decode_greedy(tok2, cache2, n_gen))
        t_greedy = (time.perf_counter() - t0) / n_done
        if rep:
            res.append((t_prompt, statistics.median(times), sum(times), t_greedy))
        del cache, cache2
    t_prompt = min(r[0] for r in res)
    t_tok = min(r[1] for r in res)
    total = min(r[2] for r in res)
    t_greedy = min(r[3] for r in res)
    # KV bytes read per generated token, averaged over the generated positions
    kv_per_pos = 2 * c.num_layers * c.num_kv_heads * c.head_dim * 2
    kv_bytes = kv_per_pos * (n_prompt + n_gen / 2)
    m.close()
    return dict(file=os.path.basename(path), kind=kind(f), weights=m.weight_bytes, kv=kv_bytes, load_s=load_s,
                prompt_tps=n_prompt / t_prompt, gen_tps=n_gen / total, t_tok=t_tok, t_greedy=t_greedy)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--ctx", type=int, default=1024)
    ap.add_argument("--reps", type=int, default=2)
    a = ap.parse_args()
    rt = get_runtime()
    bw = d2d_bandwidth()
    print(f"device: {rt.describe()}")
    print(f"cudaMemcpy D2D (1 GiB, read+write counted): {bw / 1e9:.0f} GB/s")
    rows = []
    for p in a.models:
        r = bench(p, a.prompt, a.gen, a.ctx, a.reps)
        rows.append(r)
        print(f"  {r['file']}: loaded in {r['load_s']:.1f} s", flush=True)
    print()
    print("forward(): one decode step per call, logits copied to the host (sampling); greedy: lowbit's")
    print("greedy generation (decode_greedy: argmax on the device, the next step queued before the token is read)")
    print(f"| model | types | weight GB | prompt tok/s ({a.prompt}) | forward() tok/s ({a.gen}) | forward() ms/token (median) "
          f"| GB/s | % of D2D | greedy tok/s | greedy ms/token | greedy GB/s (weights+KV) | greedy % of D2D |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        gbs = (r["weights"] + r["kv"]) / r["t_tok"]
        gbg = (r["weights"] + r["kv"]) / r["t_greedy"]
        print(f"| {r['file']} | {r['kind']} | {r['weights'] / 1e9:.3f} | {r['prompt_tps']:.0f} | {r['gen_tps']:.1f} "
              f"| {r['t_tok'] * 1e3:.3f} | {gbs / 1e9:.0f} | {100 * gbs / bw:.1f}% "
              f"| {1 / r['t_greedy']:.1f} | {r['t_greedy'] * 1e3:.3f} | {gbg / 1e9:.0f} | {100 * gbg / bw:.1f}% |")


if __name__ == "__main__":
    main()
