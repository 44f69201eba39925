"""lowbit bench: llama-bench-style speed table (prompt processing and generation tokens/s, median
over repetitions, plus load time, RSS and KV cache size)."""
import os
import resource
import statistics
import sys
import time


def register(sub):
    p = sub.add_parser("bench", help="measure prompt and generation speed (like llama-bench)",
                       description="Time prompt processing (one batch of -p tokens) and generation (-n tokens, "
                                   "one at a time, from an empty context) like llama-bench; print a table.")
    p.add_argument("model", help="a .lowbit file")
    p.add_argument("-p", "--n-prompt", type=int, default=128, help="prompt tokens (default 128; 0 = skip)")
    p.add_argument("-n", "--n-gen", type=int, default=64, help="generated tokens (default 64; 0 = skip)")
    p.add_argument("-t", "--threads", type=int, help="threads (default: the CPUs this process may use)")
    p.add_argument("-r", "--repetitions", type=int, default=3, help="repetitions (default 3)")
    p.add_argument("--backend", choices=["auto", "c", "numba"], default="auto",
                   help="c: native kernels; numba: the portable fallback (default: fastest available)")
    p.add_argument("--json", action="store_true", help="print results as JSON instead of a table")
    p.set_defaults(func=run)


def rss_bytes() -> int:
    """Resident set size now (Linux /proc), else the peak."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return peak_rss_bytes()


def peak_rss_bytes() -> int:
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return r if sys.platform == "darwin" else r * 1024


def _spread(xs):
    return statistics.stdev(xs) if len(xs) > 1 else 0.0


def measure(model, n_prompt, n_gen, reps):
    """Returns {'pp': [t/s...], 'tg': [t/s...], 'py_overhead_us': per generated token}."""
    import numpy as np
    t = model.transformer
    rng = np.random.default_rng(0)
    vocab = t.config.vocab_size
    out = {"pp": [], "tg": [], "py_overhead_us": None}
    nat = t.native
    for rep in range(reps + 1):               # the first round warms up (page cache, JIT, pool)
        if n_prompt:
            cache = t.new_cache()
            ids = rng.integers(0, vocab, n_prompt)
            t0 = time.perf_counter()
            t.forward(ids, cache)
            dt = time.perf_counter() - t0
            if rep:
                out["pp"].append(n_prompt / dt)
        if n_gen:
            cache = t.new_cache()
            tok = int(rng.integers(0, vocab))
            if nat is not None:
                nat.c_seconds = 0.0
            t0 = time.perf_counter()
            for _ in range(n_gen):
                t.forward([tok], cache)
            dt = time.perf_counter() - t0
            if rep:
                out["tg"].append(n_gen / dt)
                if nat is not None:
                    out.setdefault("_over", []).append((dt - nat.c_seconds) / n_gen * 1e6)
            if nat is not None:
                nat.c_seconds = None
    if "_over" in out:
        out["py_overhead_us"] = statistics.median(out.pop("_over"))
    return out


def run(args):
    if args.n_prompt < 0 or args.n_gen < 0 or args.repetitions < 1:
        raise ValueError("-p and -n must be >= 0 and -r >= 1")
    if args.backend == "numba":
        from lowbit import backend
        with backend.reference_only("lowbit bench --backend numba"):
            return _run(args)
    return _run(args)


def _run(args):
    import lowbit
    from lowbit import backend, native
    if backend.native_kernels():
        native.set_threads(args.threads or native.default_threads())
    elif args.threads:
        import numba
        numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    rss0 = rss_bytes()
    n_ctx = max(args.n_prompt, args.n_gen, 1)
    t0 = time.perf_counter()
    model = lowbit.load(args.model, n_ctx=n_ctx)
    load_s = time.perf_counter() - t0
    rss_load = rss_bytes() - rss0
    if args.backend == "c" and model.backend.name != backend.CPU_NATIVE:
        raise ValueError("the native backend cannot run this file (a tensor type has no C kernel, or no compiler)")
    res = measure(model, args.n_prompt, args.n_gen, args.repetitions)
    name = "c" if model.backend.name == backend.CPU_NATIVE else "numba"
    level = ""
    if name == "c":
        ffi, lib = native.library()
        level = ffi.string(lib.lb_level_name()).decode()
        threads = lib.lb_threads()
    else:
        import numba
        threads = numba.get_num_threads()
    cache = model.transformer.new_cache()
    size = os.path.getsize(model.path)
    rows = []
    for test, key, n in (("pp", "pp", args.n_prompt), ("tg", "tg", args.n_gen)):
        if n:
            xs = res[key]
            rows.append({"test": f"{test}{n}", "median": statistics.median(xs), "spread": _spread(xs), "runs": xs})
    result = {"model": os.path.basename(model.path), "bytes": size, "backend": name, "backend_reason": model.backend.reason, "level": level,
              "threads": threads, "load_s": load_s, "rss_after_load_bytes": rss_load, "peak_rss_bytes": peak_rss_bytes(),
              "kv_cache_bytes": cache.nbytes, "n_ctx": n_ctx, "py_overhead_us_per_token": res["py_overhead_us"],
              "tests": rows}
    if args.json:
        import json
        print(json.dumps(result, indent=2))
        return 0
    name = f"{name} ({level})" if level else name
    print(f"| model | size | backend | threads | test | t/s (median ± stdev of {args.repetitions}) |")
    print("| --- | ---: | --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {result['model']} | {size / 2**20:.2f} MiB | {name} | {threads} | {r['test']} | "
              f"{r['median']:.2f} ± {r['spread']:.2f} |")
    over = res["py_overhead_us"]
    print(f"\nload {load_s * 1000:.0f} ms; RSS after load +{rss_load / 2**20:.1f} MiB (file {size / 2**20:.1f} MiB, "
          f"memory-mapped); peak RSS {result['peak_rss_bytes'] / 2**20:.1f} MiB; KV cache {cache.nbytes / 2**20:.2f} MiB "
          f"for {n_ctx} positions" + (f"; Python overhead {over:.0f} us per generated token" if over is not None else ""))
    print(f"backend {model.backend}")
    return 0
