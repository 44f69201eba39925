"""Time each kernel of one decode step in isolation (device events, 200 launches each) to see
where a token's time goes: GB/s per weight-matrix launch and microseconds per other kernel.

    python -m tools.bench.profile_cuda MODEL.lowbit [--pos 200]
"""
import argparse

from lowbit.cuda.model import CudaTransformer
from lowbit.format import LowbitFile



def timed(rt, fn, reps=200):
    e0, e1, ms = rt.ffi.new("uint64_t*"), rt.ffi.new("uint64_t*"), rt.ffi.new("float*")
    rt.call("lb_event_new", e0); rt.call("lb_event_new", e1)
    for _ in range(5):
        fn()
    rt.call("lb_event_record", e0[0])
    for _ in range(reps):
        fn()
    rt.call("lb_event_record", e1[0])
    rt.call("lb_event_ms", e0[0], e1[0], ms)
    rt.call("lb_event_free", e0[0]); rt.call("lb_event_free", e1[0])
    return ms[0] / reps * 1e3   # microseconds


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--pos", type=int, default=200)
    a = ap.parse_args()
    m = CudaTransformer(LowbitFile(a.model), n_ctx=max(1024, a.pos + 2), with_tokenizer=False)
    rt, lib, c = m.rt, m.rt.lib, m.config
    cache = m.new_cache()
    m.staging[0] = a.pos
    m.staging[1] = 1
    rt.call("lb_htod_async", m.io, rt.ffi.cast("void*", m.staging_ptr), 8)
    L = m.layers[0]
    H, KVH, D, dim = c.num_heads, c.num_kv_heads, c.head_dim, c.hidden_size
    rows = []

    def gemv(name, job, x, ldx, nbytes):
        us = timed(rt, lambda: rt.check(lib.lb_gemv(job, x, ldx, 1), name))
        rows.append((name, us, nbytes / us / 1e3))

    gemv("qkv", L["qkv"], m.h, dim, L["wq"].nbytes + L["wk"].nbytes + L["wv"].nbytes)
    gemv("wo (+residual)", L["o"], m.att, m.qdim, L["wo"].nbytes)
    gemv("gate/up+swiglu", L["gu"], m.h, dim, L["gate"].nbytes + L["up"].nbytes)
    gemv("down (+residual)", L["dn"], m.g, c.intermediate_size, L["down"].nbytes)
    gemv("output", m.out_job, m.h, dim, m.output.nbytes)
    if len(m.layers) > 1:   # q4_k_m: layer 1's v and down are q4_k where layer 0's are q6_k
        L1 = m.layers[1]
        gemv("layer 1 qkv", L1["qkv"], m.h, dim, L1["wq"].nbytes + L1["wk"].nbytes + L1["wv"].nbytes)
        gemv("layer 1 down", L1["dn"], m.g, c.intermediate_size, L1["down"].nbytes)
    for name, fn in (("rmsnorm+quantize", lambda: lib.lb_rmsnorm(m.x, L["attn_norm"], m.h, 1, dim, c.rms_norm_eps, m.xq, m.xq_cap)),
                     ("rmsnorm", lambda: lib.lb_rmsnorm(m.x, L["attn_norm"], m.h, 1, dim, c.rms_norm_eps, 0, 0)),
                     ("rope+kv store", lambda: lib.lb_rope_store(m.q, m.qdim, m.k, m.v, m.kvdim, m.cos, m.sin, cache.k, cache.v, m.io, 1, H, KVH, D)),
                     (f"attention @pos {a.pos}", lambda: lib.lb_attention(m.q, cache.k, cache.v, m.att, m.io, 1, H, KVH, D)),
                     (f"rope+store+attention, then quantize (decode) @pos {a.pos}",
                      lambda: lib.lb_rope_attention(m.q, m.k, m.v, m.cos, m.sin, cache.k, cache.v, m.att, m.io, H, KVH, D, m.xq, m.xq_cap)),
                     (f"rope+store+attention (decode, fused) @pos {a.pos}",
                      lambda: lib.lb_rope_attention(m.q, m.k, m.v, m.cos, m.sin, cache.k, cache.v, m.att, m.io, H, KVH, D, 0, 0))):
        rows.append((name, timed(rt, lambda: rt.check(fn(), name)), None))
    # the whole captured decode step, replayed
    m.forward([1], cache)
    step = timed(rt, lambda: rt.call("lb_graph_launch", cache.graph), reps=50)
    # the same step through forward() one token at a time (graph launch latency, logits copy, Python)
    import time
    ts = []
    for _ in range(50):
        cache.pos = a.pos
        t0 = time.perf_counter()
        m.forward([1], cache)
        ts.append(time.perf_counter() - t0)
    host = sorted(ts)[len(ts) // 2] * 1e6
    # pieces of the host loop: the graph launch call itself, and the logits copy, each on an idle stream
    tl, tc = [], []
    for _ in range(30):
        rt.call("lb_sync")
        t0 = time.perf_counter()
        rt.call("lb_graph_launch", cache.graph)
        tl.append(time.perf_counter() - t0)
        rt.call("lb_sync")
        t0 = time.perf_counter()
        rt.call("lb_dtoh", rt.ffi.cast("void*", m.logits_host_ptr), m.logits, c.vocab_size * 4)
        tc.append(time.perf_counter() - t0)
    rows.append(("host: cudaGraphLaunch call returns after", sorted(tl)[len(tl) // 2] * 1e6, None))
    rows.append(("host: logits copy to pinned memory", sorted(tc)[len(tc) // 2] * 1e6, None))
    # the greedy step (decode step + device argmax; each replay advances the position by one)
    cache.pos = a.pos
    cache.graph_greedy = m._capture(cache, greedy=True)
    rt.call("lb_htod_async", m.io, rt.ffi.cast("void*", m.staging_ptr), 8)
    greedy = timed(rt, lambda: rt.call("lb_graph_launch", cache.graph_greedy), reps=50)
    rt.call("lb_htod_async", m.io, rt.ffi.cast("void*", m.staging_ptr), 8)
    # one replay at a time on an idle GPU (events around each launch): the step's own GPU time,
    # without the overlap back-to-back replays may get
    def isolated(graph, reset):
        e0, e1, ms = rt.ffi.new("uint64_t*"), rt.ffi.new("uint64_t*"), rt.ffi.new("float*")
        rt.call("lb_event_new", e0); rt.call("lb_event_new", e1)
        ts = []
        for _ in range(20):
            if reset:
                rt.call("lb_htod_async", m.io, rt.ffi.cast("void*", m.staging_ptr), 8)
            rt.call("lb_sync")
            rt.call("lb_event_record", e0[0]); rt.call("lb_graph_launch", graph); rt.call("lb_event_record", e1[0])
            rt.call("lb_event_ms", e0[0], e1[0], ms)
            ts.append(ms[0] * 1e3)
        rt.call("lb_event_free", e0[0]); rt.call("lb_event_free", e1[0])
        return sorted(ts)[len(ts) // 2]
    iso_plain, iso_greedy = isolated(cache.graph, True), isolated(cache.graph_greedy, True)
    rt.call("lb_htod_async", m.io, rt.ffi.cast("void*", m.staging_ptr), 8)
    rows.append(("argmax (device, next token into io)", timed(rt, lambda: rt.check(lib.lb_argmax_next(m.logits, c.vocab_size, m.argmax_state, m.io, 0), "argmax"), reps=50), None))
    print(f"| kernel (layer 0) | us | GB/s |\n|---|---|---|")
    for name, us, gbs in rows:
        print(f"| {name} | {us:.1f} | {'' if gbs is None else f'{gbs:.0f}'} |")
    print(f"| whole decode step (graph replay) | {step:.1f} | {m.weight_bytes / step / 1e3:.0f} |")
    print(f"| whole decode step via forward() (median, host loop) | {host:.1f} | {m.weight_bytes / host / 1e3:.0f} |")
    print(f"| whole greedy step (graph replay, with device argmax) | {greedy:.1f} | {m.weight_bytes / greedy / 1e3:.0f} |")
    print(f"| one decode step alone (events around one replay, median) | {iso_plain:.1f} | {m.weight_bytes / iso_plain / 1e3:.0f} |")
    print(f"| one greedy step alone (events around one replay, median) | {iso_greedy:.1f} | {m.weight_bytes / iso_greedy / 1e3:.0f} |")


if __name__ == "__main__":
    main()
