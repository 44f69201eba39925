"""The native forward pass: one C call per transformer block (norms, q/k/v, RoPE, KV cache,
attention, output projection, SwiGLU FFN, all threaded inside C) plus the embedding lookup, the
final norm and the output matmul: about 11 crossings from Python per forward call."""
import time

import numpy as np

from .loader import library
from .weights import fill_weight, supported


def _ptr(ffi, a, ctype="float *"):
    return ffi.cast(ctype, ffi.from_buffer(a))


class NativeTransformer:
    def __init__(self, t):
        self.ffi, self.lib = ffi, lib = library()
        c = t.config
        self.t, self.c = t, c
        self._keep = []
        self.layers = []
        for L in t.layers:
            s = ffi.new("lb_layer *")
            s.dim, s.n_heads, s.n_kv_heads, s.head_dim, s.ffn = (c.hidden_size, c.num_heads, c.num_kv_heads,
                                                                  c.head_dim, c.intermediate_size)
            s.eps = c.rms_norm_eps
            for name in ("attn_norm", "ffn_norm"):
                v = np.ascontiguousarray(getattr(L, name), np.float32)
                self._keep.append(v)
                setattr(s, name, _ptr(ffi, v, "const float *"))
            for name in ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down"):
                self._fill(getattr(s, name), getattr(L, name))
            self.layers.append(s)
        self.embed = ffi.new("lb_weight *")
        fill_weight(ffi, self.embed, t.embed_qtype.name, t.embed_raw, c.hidden_size, None, self._keep, t.embed_bound)
        self.output = ffi.new("lb_weight *")
        self._fill(self.output[0], t.output)
        self.output_norm = np.ascontiguousarray(t.output_norm, np.float32)
        self.cos, self.sin = np.ascontiguousarray(t.cos), np.ascontiguousarray(t.sin)
        self.p_cos, self.p_sin = _ptr(self.ffi, self.cos, "const float *"), _ptr(self.ffi, self.sin, "const float *")
        self.c_seconds = None   # set to 0.0 to add up the time spent inside C (lowbit bench's overhead figure)

    def _fill(self, w, lin):
        fill_weight(self.ffi, w, lin.qtype.name, lin.raw, lin.in_features, lin.bias, self._keep, lin.bound)

    def forward(self, tokens, cache, all_logits, return_hidden=False):
        ffi, lib, c = self.ffi, self.lib, self.c
        timing = self.c_seconds is not None
        clock = time.perf_counter if timing else _no_clock
        n, pos0 = tokens.shape[0], cache.pos
        ids = np.ascontiguousarray(tokens, np.int64)
        x = np.empty((n, c.hidden_size), np.float32)
        px = _ptr(ffi, x)
        inside = 0.0
        t0 = clock()
        rc = lib.lb_get_rows(self.embed, _ptr(ffi, ids, "const int64_t *"), n, px)
        inside += clock() - t0
        if rc != 0:
            raise ValueError("token id out of range")
        ptrs = getattr(cache, "_native_ptrs", None)
        if ptrs is None:   # per-layer cache pointers, made once per cache (saves ~5 us per layer per token)
            ptrs = cache._native_ptrs = [(_ptr(ffi, cache.k[i]), _ptr(ffi, cache.v[i])) for i in range(len(self.layers))]
        for li, s in enumerate(self.layers):
            pk, pv = ptrs[li]
            t0 = clock()
            rc = lib.lb_layer_forward(s, px, n, pos0, pk, pv, cache.n_ctx, self.p_cos, self.p_sin)
            inside += clock() - t0
            if rc != 0:
                raise ValueError(f"native layer {li} rejected its arguments")
        cache.pos = pos0 + n
        last = np.ascontiguousarray(x if all_logits else x[-1:])
        h = np.empty_like(last)
        logits = np.empty((h.shape[0], c.vocab_size), np.float32)
        pl, ph, pn, plog = (_ptr(ffi, last, "const float *"), _ptr(ffi, h), _ptr(ffi, self.output_norm, "const float *"),
                            _ptr(ffi, logits))
        t0 = clock()
        lib.lb_rmsnorm(pl, pn, c.rms_norm_eps, last.shape[0], c.hidden_size, ph)
        rc = lib.lb_matmul(self.output, ph, plog, h.shape[0], 0)
        inside += clock() - t0
        if rc != 0:
            raise ValueError("native output matmul rejected its arguments")
        if timing:
            self.c_seconds += inside
        return (logits, h) if return_hidden else logits


def _no_clock():
    return 0.0
