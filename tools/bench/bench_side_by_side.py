"""lowbit vs llama.cpp on the same weights, side by side: for each repetition, lowbit then llama.cpp
(alternating, so both see the same machine load), prompt processing of -p tokens in one batch and
generation of -n tokens one at a time from an empty context (llama-bench's pp/tg), then a table of
medians and ratios. llama.cpp runs through llama-cpp-python (benchmark only: pip install
llama-cpp-python). The GGUF is written here from the Hugging Face checkpoint with the gguf
package (F16 or Q8_0 tensors; Llama q/k rows permuted to llama.cpp's interleaved RoPE order); for
q4_k_m (which the gguf package cannot quantize) that F16 GGUF goes through llama.cpp's own
quantizer (llama_model_quantize, LLAMA_FTYPE_MOSTLY_Q4_K_M, no imatrix), which picks its own
fallback types for rows that are not a multiple of 256 (pychat-30m's 384-wide ones).

  python -m tools.bench.bench_side_by_side ../shared/models/pycode-30m --type q8_0 -p 128 -n 64 -t 2 -r 3
  python -m tools.bench.bench_side_by_side ../shared/models/pycode-30m --type q4_k_m -p 128 -n 64 -t 2 -r 3

--cpu-time (with -t 1) times both runtimes in this process's CPU time instead of the wall clock:
tokens per CPU-second, which other processes taking the core away do not change (a check of the
kernels' efficiency on a busy shared machine; memory-bandwidth contention still shows).
"""
import argparse
import os
import statistics
import sys
import time

import numpy as np



def write_gguf(folder, out, qtype):
    """A GGUF of the checkpoint for llama.cpp, quantized from the Hugging Face weights by the gguf
    package (lowbit's own exporter, `lowbit export-gguf`, copies a .lowbit file's bytes instead)."""
    import gguf
    from converters import gguf_io
    from converters.convert import tokenizer_metadata
    from converters.hf import Checkpoint
    ck = Checkpoint(folder)
    c = ck.config
    w = gguf.GGUFWriter(out + ".tmp", c.arch)
    gguf_io.write_hparams(w, c, os.path.basename(os.path.normpath(folder)))
    w.add_file_type({"f16": 1, "q8_0": 7}[qtype])
    blobs = ck.tokenizer_blobs()
    meta = tokenizer_metadata(ck, blobs)
    gguf_io.write_tokenizer(w, meta, blobs[meta["tensor"]], c.vocab_size, warn=print)
    gq = {"f16": gguf.GGMLQuantizationType.F16, "q8_0": gguf.GGMLQuantizationType.Q8_0}[qtype]
    for name in ck.ordered_names():
        t = ck.tensor(name).astype(np.float32)
        heads = gguf_io.qk_heads(name, c)
        if heads:
            t = gguf_io.permute_qk(t, heads)
        if t.ndim == 2 and t.shape[1] % 32 == 0:
            data = gguf.quants.quantize(t, gq) if gq != gguf.GGMLQuantizationType.F16 else t.astype(np.float16)
            w.add_tensor(name, data, raw_dtype=gq)
        else:
            w.add_tensor(name, t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    os.replace(out + ".tmp", out)


def quantize_gguf(src, out, ftype=15):
    """llama.cpp's own quantizer (15 = LLAMA_FTYPE_MOSTLY_Q4_K_M) from an F16 GGUF."""
    import ctypes
    import llama_cpp
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = 2
    rc = llama_cpp.llama_model_quantize(src.encode(), (out + ".tmp").encode(), ctypes.byref(params))
    if rc != 0:
        raise SystemExit(f"llama_model_quantize failed ({rc})")
    os.replace(out + ".tmp", out)


CLOCK = time.perf_counter


def bench_lowbit(model, n_prompt, n_gen):
    """lowbit bench's measurement (lowbit.commands.bench.measure with one repetition: an untimed
    round, then a timed one), on CLOCK."""
    t = model.transformer
    rng = np.random.default_rng(0)
    for _ in range(2):
        cache = t.new_cache()
        ids = rng.integers(0, t.config.vocab_size, n_prompt)
        t0 = CLOCK()
        t.forward(ids, cache)
        pp = n_prompt / (CLOCK() - t0)
        cache = t.new_cache()
        tok = int(rng.integers(0, t.config.vocab_size))
        t0 = CLOCK()
        for _ in range(n_gen):
            t.forward([tok], cache)
        tg = n_gen / (CLOCK() - t0)
    return pp, tg


def bench_llama(llm, vocab, n_prompt, n_gen, rng):
    ids = [int(i) for i in rng.integers(0, vocab, n_prompt)]
    llm.reset()
    llm._ctx.kv_cache_clear() if hasattr(llm._ctx, "kv_cache_clear") else None
    t0 = CLOCK()
    llm.eval(ids)
    pp = n_prompt / (CLOCK() - t0)
    llm.reset()
    llm._ctx.kv_cache_clear() if hasattr(llm._ctx, "kv_cache_clear") else None
    tok = int(rng.integers(0, vocab))
    t0 = CLOCK()
    for _ in range(n_gen):
        llm.eval([tok])
    tg = n_gen / (CLOCK() - t0)
    return pp, tg


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint", help="Hugging Face checkpoint folder")
    ap.add_argument("--type", default="q8_0", choices=["q8_0", "f16", "q4_k_m"])
    ap.add_argument("-p", type=int, default=128)
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("-t", type=int, default=2)
    ap.add_argument("-r", type=int, default=3)
    ap.add_argument("--workdir", default="/tmp/lowbit-sbs")
    ap.add_argument("--cpu-time", action="store_true", help="time in process CPU time (needs -t 1)")
    args = ap.parse_args(argv)
    if args.cpu_time:
        if args.t != 1:
            ap.error("--cpu-time needs -t 1 (idle pool threads spinning would count)")
        global CLOCK
        CLOCK = time.process_time

    os.makedirs(args.workdir, exist_ok=True)
    name = os.path.basename(os.path.normpath(args.checkpoint))
    lb_path = os.path.join(args.workdir, f"{name}-{args.type}.lowbit")
    gg_path = os.path.join(args.workdir, f"{name}-{args.type}.gguf")
    if not os.path.exists(lb_path):
        from converters import convert
        convert(args.checkpoint, lb_path, args.type)
    if not os.path.exists(gg_path):
        if args.type == "q4_k_m":
            f16 = os.path.join(args.workdir, f"{name}-f16.gguf")
            if not os.path.exists(f16):
                write_gguf(args.checkpoint, f16, "f16")
            quantize_gguf(f16, gg_path)
        else:
            write_gguf(args.checkpoint, gg_path, args.type)

    import lowbit
    from lowbit import native
    from lowbit.commands.bench import peak_rss_bytes, rss_bytes
    from tools.llama_peer import llama
    native.set_threads(args.t)
    n_ctx = max(args.p, args.n) + 8
    r0 = rss_bytes()
    t0 = time.perf_counter()
    model = lowbit.load(lb_path, n_ctx=n_ctx)
    lb_load, lb_rss = time.perf_counter() - t0, rss_bytes() - r0
    r0 = rss_bytes()
    t0 = time.perf_counter()
    llm = llama(gg_path, n_ctx=n_ctx, n_batch=max(args.p, 32), n_threads=args.t, n_threads_batch=args.t,
                verbose=False, logits_all=False)
    ll_load, ll_rss = time.perf_counter() - t0, rss_bytes() - r0
    vocab = model.config.vocab_size
    rng = np.random.default_rng(0)
    bench_lowbit(model, args.p, args.n)          # warm-up both
    bench_llama(llm, vocab, args.p, args.n, rng)
    res = {"lowbit": {"pp": [], "tg": []}, "llama.cpp": {"pp": [], "tg": []}}
    load0 = os.getloadavg()[0]
    for _ in range(args.r):
        for who in ("lowbit", "llama.cpp"):
            pp, tg = bench_lowbit(model, args.p, args.n) if who == "lowbit" else bench_llama(llm, vocab, args.p, args.n, rng)
            res[who]["pp"].append(pp)
            res[who]["tg"].append(tg)
    load = os.getloadavg()[0]
    print(f"{name} {args.type}, {args.t} threads, {'CPU' if args.cpu_time else 'wall-clock'} time, median of {args.r} alternating runs "
          f"(1-min load average {load0:.1f} before, {load:.1f} after)")
    print("| runtime | file MiB | load s | RSS after load MiB | pp t/s | tg t/s |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for who, path, ld, rss in (("lowbit", lb_path, lb_load, lb_rss), ("llama.cpp", gg_path, ll_load, ll_rss)):
        pp, tg = res[who]["pp"], res[who]["tg"]
        print(f"| {who} | {os.path.getsize(path) / 2**20:.1f} | {ld:.2f} | {rss / 2**20:.1f} | "
              f"{statistics.median(pp):.1f} ({min(pp):.0f}-{max(pp):.0f}) | {statistics.median(tg):.1f} ({min(tg):.0f}-{max(tg):.0f}) |")
    pr = statistics.median(res["lowbit"]["pp"]) / statistics.median(res["llama.cpp"]["pp"])
    tr = statistics.median(res["lowbit"]["tg"]) / statistics.median(res["llama.cpp"]["tg"])
    print(f"| lowbit / llama.cpp | | | | {pr:.2f}x | {tr:.2f}x |")
    print(f"peak RSS of this process (both runtimes): {peak_rss_bytes() / 2**20:.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
