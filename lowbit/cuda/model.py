"""The transformer on the GPU: the same forward pass as lowbit.model.Transformer, with weights
uploaded once in their quantized layout (weights.py) and the decode step replayed as one CUDA
graph; the fp16 KV cache (CudaKVCache)."""
import numpy as np

from .. import ops
from ..config import ModelConfig, context_size
from ..errors import FormatError, LowbitError
from ..format import LowbitFile
from .loader import get_runtime
from .weights import CODEBOOK, GpuMatrix

CHUNK = 256   # prompt tokens per batched pass (activation buffers are sized for this)


class CudaKVCache:
    """fp16 keys and values of every layer: [layer][position][kv head][head_dim] on the GPU."""

    def __init__(self, model, n_ctx):
        c = model.config
        self.rt, self.n_ctx, self.pos = model.rt, n_ctx, 0
        self.layer_bytes = n_ctx * c.num_kv_heads * c.head_dim * 2
        self.k = self.rt.malloc(self.layer_bytes * c.num_layers)
        self.v = self.rt.malloc(self.layer_bytes * c.num_layers)
        self.graph = None         # the decode step captured for this cache's buffers
        self.graph_greedy = None  # the same step followed by the device argmax (decode_greedy)
        self.num_layers = c.num_layers

    @property
    def nbytes(self):
        return 2 * self.layer_bytes * self.num_layers

    def __del__(self):
        try:
            for g in (self.graph, self.graph_greedy):
                if g:
                    self.rt.lib.lb_graph_free(g)
            self.rt.lib.lb_free(self.k)
            self.rt.lib.lb_free(self.v)
        except Exception:
            pass


class CudaTransformer:
    def __init__(self, f: LowbitFile, n_ctx: int = None, with_tokenizer: bool = True):
        self.rt = rt = get_runtime()
        self.file = f
        self._allocs, self._scratch = [], (0, 0)
        self.config = c = ModelConfig.from_json(f.path, f.metadata.get("architecture"))
        self.n_ctx = context_size(f.path, c, n_ctx)
        if not 1 <= self.n_ctx <= 1 << 20:
            raise ValueError(f"context length {self.n_ctx} is outside 1..{1 << 20}")
        if c.hidden_size > 16384:
            raise LowbitError(f"{f.path}: hidden size {c.hidden_size} > 16384 is not supported on CUDA; use --device cpu")
        if c.head_dim > 256:
            raise LowbitError(f"{f.path}: head_dim {c.head_dim} > 256 is not supported on CUDA; use --device cpu")
        H, KVH, D, dim, ffn = c.num_heads, c.num_kv_heads, c.head_dim, c.hidden_size, c.intermediate_size
        self.qdim, self.kvdim = H * D, KVH * D
        self.embed = GpuMatrix(self, f, "token_embd.weight", (c.vocab_size, dim))
        self.layers = []
        self.weight_bytes = self.embed.nbytes if c.tie_word_embeddings else 0   # bytes read per token
        for i in range(c.num_layers):
            p = f"blk.{i}."
            L = {"attn_norm": self._vector(f, p + "attn_norm.weight", dim),
                 "ffn_norm": self._vector(f, p + "ffn_norm.weight", dim)}
            for key, name, shape in (("wq", "attn_q", (self.qdim, dim)), ("wk", "attn_k", (self.kvdim, dim)),
                                     ("wv", "attn_v", (self.kvdim, dim)), ("wo", "attn_output", (dim, self.qdim)),
                                     ("gate", "ffn_gate", (ffn, dim)), ("up", "ffn_up", (ffn, dim)),
                                     ("down", "ffn_down", (dim, ffn))):
                L[key] = GpuMatrix(self, f, p + name + ".weight", shape, p + name + ".bias")
                self.weight_bytes += L[key].nbytes
            if (L["gate"].mat.type in CODEBOOK or L["up"].mat.type in CODEBOOK) and L["gate"].mat.type != L["up"].mat.type:
                raise LowbitError(f"{f.path}: layer {i}: ffn_gate and ffn_up must have the same type on CUDA when either "
                                  "is a codebook type (they run in one fused launch); use --device cpu")
            self.layers.append(L)
        self.output_norm = self._vector(f, "output_norm.weight", dim)
        self.output = self.embed if c.tie_word_embeddings else GpuMatrix(self, f, "output.weight", (c.vocab_size, dim))
        if not c.tie_word_embeddings:
            self.weight_bytes += self.output.nbytes
        self._free_scratch()
        cos, sin = ops.rope_tables(D, c.rope_theta, c.rope_scaling, self.n_ctx)
        self.cos, self.sin = self.upload(cos), self.upload(sin)
        # activations for CHUNK tokens
        P = CHUNK
        self.x, self.h = self.alloc(P * dim * 4), self.alloc(P * dim * 4)
        self.q, self.k, self.v = self.alloc(P * self.qdim * 4), self.alloc(P * self.kvdim * 4), self.alloc(P * self.kvdim * 4)
        self.att, self.g = self.alloc(P * self.qdim * 4), self.alloc(P * ffn * 4)
        self.logits = self.alloc(P * c.vocab_size * 4)
        # one decode token's activations quantized like q8_K for the q4_k dp4a GEMVs (layout: XQ in
        # kernels/common.cuh: 256 quant bytes + 16 int sums + a float scale per 256-block)
        self.xq_cap = max(dim, self.qdim, ffn) // 256 + 1
        self.xq = self.alloc(self.xq_cap * (256 + 64 + 4))
        self.io = self.alloc((P + 1) * 4)         # [pos0, token ids...] read by the kernels
        self.staging_ptr = self._host_alloc((P + 1) * 4)
        self.staging = np.frombuffer(rt.ffi.buffer(rt.ffi.cast("int32_t*", self.staging_ptr), (P + 1) * 4), np.int32)
        # one token's logits land in pinned memory: a pageable copy goes through a driver bounce buffer
        self.logits_host_ptr = self._host_alloc(c.vocab_size * 4)
        self.logits_host = np.frombuffer(rt.ffi.buffer(rt.ffi.cast("float*", self.logits_host_ptr), c.vocab_size * 4), np.float32)
        # greedy decoding on the device (decode_greedy): the argmax kernel's state, and the token
        # chosen after each position, written by the kernel straight into mapped host memory
        self.argmax_state = self.alloc(16)
        rt.call("lb_memset", self.argmax_state, 0, 16)
        hp, dp = rt.ffi.new("uint64_t*"), rt.ffi.new("uint64_t*")
        rt.call("lb_host_alloc_mapped", hp, dp, self.n_ctx * 4)
        self.next_host_ptr, self.next_dev = hp[0], dp[0]
        self.next_host = np.frombuffer(rt.ffi.buffer(rt.ffi.cast("int32_t*", self.next_host_ptr), self.n_ctx * 4), np.int32)
        self.events = []
        for _ in range(2):
            ev = rt.ffi.new("uint64_t*")
            rt.call("lb_event_new", ev)
            self.events.append(ev[0])
        self._jobs()
        self.tokenizer = None
        if with_tokenizer:
            from ..tokenizer import Tokenizer
            self.tokenizer = Tokenizer(f)

    # ---------------------------------------------------------------- memory
    def alloc(self, nbytes):
        p = self.rt.malloc(max(int(nbytes), 16))
        self._allocs.append(p)
        return p

    def upload(self, a):
        a = np.ascontiguousarray(a)
        p = self.alloc(a.nbytes)
        self.rt.htod(p, a)
        return p

    def scratch(self, nbytes):
        if self._scratch[1] < nbytes:
            self._free_scratch()
            self._scratch = (self.rt.malloc(nbytes), nbytes)
        return self._scratch[0]

    def _free_scratch(self):
        if self._scratch[0]:
            self.rt.lib.lb_free(self._scratch[0])
        self._scratch = (0, 0)

    def _host_alloc(self, n):
        p = self.rt.ffi.new("uint64_t*")
        self.rt.call("lb_host_alloc", p, n)
        return p[0]

    def _vector(self, f, name, n):
        if f.info(name).shape != (n,):
            raise FormatError(f.path, f"tensor {name!r} has shape {list(f.info(name).shape)}, expected [{n}]")
        return self.upload(f.dequantize(name).astype(np.float32))

    def close(self):
        for p in self._allocs:
            self.rt.lib.lb_free(p)
        self._allocs = []
        if self.staging_ptr:
            self.rt.lib.lb_host_free(self.staging_ptr)
            self.staging_ptr = 0
        if self.logits_host_ptr:
            self.rt.lib.lb_host_free(self.logits_host_ptr)
            self.logits_host_ptr = 0
        if self.next_host_ptr:
            self.rt.lib.lb_host_free(self.next_host_ptr)
            self.next_host_ptr = 0
        for ev in self.events:
            self.rt.lib.lb_event_free(ev)
        self.events = []

    # ---------------------------------------------------------------- jobs
    def _job(self, mats, ys, ldys, mode, xq_ready):
        """xq_ready: in decode, x arrives already quantized in self.xq (it comes from an rmsnorm)."""
        j = self.rt.ffi.new("lb_job*")
        for i, (m, y, ld) in enumerate(zip(mats, ys, ldys)):
            j.m[i] = m.mat[0]
            j.y[i], j.ldy[i] = y, ld
        j.nmat, j.mode = len(mats), mode
        j.xq, j.xq_cap, j.xq_ready = self.xq, self.xq_cap, int(xq_ready)
        return j

    def _jobs(self):
        c = self.config
        for L in self.layers:
            L["qkv"] = self._job([L["wq"], L["wk"], L["wv"]], [self.q, self.k, self.v], [self.qdim, self.kvdim, self.kvdim], 0, True)
            L["o"] = self._job([L["wo"]], [self.x], [c.hidden_size], 1, True)   # decode: attention quantized it
            L["gu"] = self._job([L["gate"], L["up"]], [self.g, 0], [c.intermediate_size, 0], 2, True)
            L["dn"] = self._job([L["down"]], [self.x], [c.hidden_size], 1, False)
        self.out_job = self._job([self.output], [self.logits], [c.vocab_size], 0, True)

    # ---------------------------------------------------------------- forward
    def new_cache(self) -> CudaKVCache:
        return CudaKVCache(self, self.n_ctx)

    def _enqueue(self, n, cache, n_logits, greedy=False):
        """Queue one pass over n tokens (ids and pos0 already in self.io) on the stream; greedy (a
        decode step): the output GEMV is followed by the device argmax (see _capture)."""
        c, lib = self.config, self.rt.lib
        H, KVH, D, dim = c.num_heads, c.num_kv_heads, c.head_dim, c.hidden_size
        chk = self.rt.check
        ids, pos = self.io + 4, self.io
        chk(lib.lb_embed(self.embed.mat, ids, n, self.x), "embed")
        eps = c.rms_norm_eps
        xq, cap = (self.xq, self.xq_cap) if n == 1 else (0, 0)   # decode: norms also quantize their output
        for li, L in enumerate(self.layers):
            kc, vc = cache.k + li * cache.layer_bytes, cache.v + li * cache.layer_bytes
            chk(lib.lb_rmsnorm(self.x, L["attn_norm"], self.h, n, dim, eps, xq, cap), "rmsnorm")
            chk(lib.lb_gemv(L["qkv"], self.h, dim, n), "gemv qkv")
            if n == 1:   # decode: RoPE, cache store and attention in one launch, then wo's input quantized
                chk(lib.lb_rope_attention(self.q, self.k, self.v, self.cos, self.sin, kc, vc, self.att, pos, H, KVH, D,
                                          self.xq, self.xq_cap), "attention")
            else:
                chk(lib.lb_rope_store(self.q, self.qdim, self.k, self.v, self.kvdim, self.cos, self.sin, kc, vc, pos, n, H, KVH, D), "rope")
                chk(lib.lb_attention(self.q, kc, vc, self.att, pos, n, H, KVH, D), "attention")
            chk(lib.lb_gemv(L["o"], self.att, self.qdim, n), "gemv o")
            chk(lib.lb_rmsnorm(self.x, L["ffn_norm"], self.h, n, dim, eps, xq, cap), "rmsnorm")
            chk(lib.lb_gemv(L["gu"], self.h, dim, n), "gemv gate/up")
            chk(lib.lb_gemv(L["dn"], self.g, c.intermediate_size, n), "gemv down")
        if n_logits == 0:
            return
        first = n - n_logits
        oq, ocap = (self.xq, self.xq_cap) if n_logits == 1 else (0, 0)
        chk(lib.lb_rmsnorm(self.x + first * dim * 4, self.output_norm, self.h, n_logits, dim, eps, oq, ocap), "rmsnorm")
        chk(lib.lb_gemv(self.out_job, self.h, dim, n_logits), "gemv output")
        if greedy:   # the next token chosen on the device (it also advances the position in self.io)
            chk(lib.lb_argmax_next(self.logits, c.vocab_size, self.argmax_state, self.io, self.next_dev), "argmax")

    def _capture(self, cache, greedy):
        """The decode step (ids and pos0 read from self.io) as a CUDA graph; greedy: followed by the
        argmax kernel, which writes the next step's token and position into self.io."""
        self.rt.call("lb_capture_begin")
        try:
            self._enqueue(1, cache, 1, greedy)
        finally:
            g = self.rt.ffi.new("uint64_t*")
            self.rt.call("lb_capture_end", g)
        return g[0]

    def decode_greedy(self, tok: int, cache: CudaKVCache, max_steps: int):
        """Greedy decoding from token `tok`: yields the next token ids (at most max_steps, and no
        further than the context allows), the same ids as forward([tok]) + argmax per step. The
        argmax runs on the device and feeds the next step there, so the host queues step k+1
        before it reads step k's token: the GPU never waits for Python. The one step computed
        ahead only writes cache positions past cache.pos (overwritten by the next forward)."""
        steps = min(int(max_steps), cache.n_ctx - cache.pos)
        if steps <= 0:
            return
        if not 0 <= tok < self.config.vocab_size:
            raise ValueError(f"token id out of range 0..{self.config.vocab_size - 1}")
        rt, lib = self.rt, self.rt.lib
        if cache.graph_greedy is None:
            cache.graph_greedy = self._capture(cache, greedy=True)
        pos0 = cache.pos
        self.staging[0], self.staging[1] = pos0, tok
        rt.call("lb_htod_async", self.io, rt.ffi.cast("void*", self.staging_ptr), 8)
        g, ev, chk = cache.graph_greedy, self.events, rt.check
        chk(lib.lb_graph_launch(g), "graph launch")
        chk(lib.lb_event_record(ev[0]), "event record")
        try:
            for k in range(steps):
                if k + 1 < steps:
                    chk(lib.lb_graph_launch(g), "graph launch")
                    chk(lib.lb_event_record(ev[(k + 1) & 1]), "event record")
                chk(lib.lb_event_sync(ev[k & 1]), "decode step")
                cache.pos = pos0 + k + 1
                yield int(self.next_host[pos0 + k])
        finally:
            lib.lb_sync()   # nothing left in flight that still writes self.io

    def forward(self, tokens, cache: CudaKVCache, all_logits: bool = False) -> np.ndarray:
        c = self.config
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        n = tokens.shape[0]
        if n == 0:
            raise ValueError("forward() needs at least one token")
        if cache.pos + n > cache.n_ctx:
            raise ValueError(f"context is full: {cache.pos} + {n} tokens exceed the context length {cache.n_ctx}")
        if tokens.min() < 0 or tokens.max() >= c.vocab_size:
            raise ValueError(f"token id out of range 0..{c.vocab_size - 1}")
        outs = []
        for s in range(0, n, CHUNK):
            part = tokens[s:s + CHUNK]
            m = len(part)
            last_chunk = s + CHUNK >= n
            n_logits = m if all_logits else (1 if last_chunk else 0)
            self.staging[0] = cache.pos
            self.staging[1:m + 1] = part
            self.rt.call("lb_htod_async", self.io, self.rt.ffi.cast("void*", self.staging_ptr), (m + 1) * 4)
            if m == 1 and n_logits == 1:
                if cache.graph is None:   # capture the decode step once per cache
                    cache.graph = self._capture(cache, greedy=False)
                self.rt.call("lb_graph_launch", cache.graph)
            else:
                self._enqueue(m, cache, n_logits)
            if n_logits == 1:   # the one logits copy (it also waits for the pass)
                self.rt.call("lb_dtoh", self.rt.ffi.cast("void*", self.logits_host_ptr), self.logits, c.vocab_size * 4)
                outs.append(self.logits_host.copy().reshape(1, -1))
            elif n_logits:
                out = np.empty((n_logits, c.vocab_size), np.float32)
                self.rt.dtoh(out, self.logits)
                outs.append(out)
            else:
                self.rt.call("lb_sync")
            cache.pos += m
        return np.concatenate(outs) if len(outs) > 1 else outs[0]
