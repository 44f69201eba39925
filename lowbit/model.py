"""The reference transformer (Llama / Qwen2): weights are views into the memory-mapped file, the
forward pass reads top to bottom like llama2.c's.

This forward is the reference: the tests check the C block forward (lowbit.native) and the CUDA
forward (lowbit.cuda) against it, and statistics (lowbit.imatrix) are gathered on it through its
hooks (Transformer.observer, Transformer.perturb). It decides nothing about backends:
lowbit.backend chooses one for a file and, for "cpu-native", attaches the C block forward as
Transformer.native, which forward() then hands the whole pass to. Its matmuls call a type's fused
C kernel when backend.native_kernels() says the C kernels are on, else the Numba/NumPy kernels."""
import numpy as np

from . import backend, kernels, native, ops
from .config import ModelConfig, context_size
from .errors import FormatError
from .format import LowbitFile
from .tokenizer import Tokenizer


class Linear:
    """y = x @ W.T (+ b), W kept in its stored type and read straight from the map."""

    def __init__(self, f: LowbitFile, name: str, shape, bias: str = None):
        info = f.info(name)
        if tuple(info.shape) != tuple(shape):
            raise FormatError(f.path, f"tensor {name!r} has shape {list(info.shape)}, the architecture needs {list(shape)}")
        self.name, self.qtype, self.raw = name, f.qtype(name), f.raw(name)
        self.bound = self.qtype.bind(self.raw, tuple(shape)) if self.qtype.whole_tensor else None
        self.out_features, self.in_features = shape
        self.bias = None
        if bias is not None and bias in f.tensors:
            if f.info(bias).shape != (self.out_features,):
                raise FormatError(f.path, f"tensor {bias!r} has shape {list(f.info(bias).shape)}, expected [{self.out_features}]")
            self.bias = _dequantize(f, bias)

    def __call__(self, x: np.ndarray) -> np.ndarray:
        y = np.empty((x.shape[0], self.out_features), np.float32)
        if self.bound is not None:
            fast = native.bound_weight(self.bound) if backend.native_kernels() else None
            if fast is not None and y.flags.c_contiguous:   # `.h`: fused decode-dequantize-dot in C
                fast.matmul(x, y)
            else:
                self.bound.matmul(x, y)
        else:
            fused = self.qtype.kernels.get("c") if backend.native_kernels() else None
            if fused is not None:   # fastest backend: fused SIMD kernel (bias added inside)
                return fused(self.raw, x, y, cols=self.in_features, bias=self.bias)
            kernels.matmul(self.qtype.dequant_row, self.raw, x, y)
        if self.bias is not None:
            y += self.bias
        return y


class Layer:
    def __init__(self, f: LowbitFile, c: ModelConfig, i: int):
        p = f"blk.{i}."
        q, kv, dim = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.hidden_size
        self.attn_norm = _vector(f, p + "attn_norm.weight", dim)
        self.ffn_norm = _vector(f, p + "ffn_norm.weight", dim)
        self.wq = Linear(f, p + "attn_q.weight", (q, dim), p + "attn_q.bias")
        self.wk = Linear(f, p + "attn_k.weight", (kv, dim), p + "attn_k.bias")
        self.wv = Linear(f, p + "attn_v.weight", (kv, dim), p + "attn_v.bias")
        self.wo = Linear(f, p + "attn_output.weight", (dim, q), p + "attn_output.bias")
        self.w_gate = Linear(f, p + "ffn_gate.weight", (c.intermediate_size, dim), p + "ffn_gate.bias")
        self.w_up = Linear(f, p + "ffn_up.weight", (c.intermediate_size, dim), p + "ffn_up.bias")
        self.w_down = Linear(f, p + "ffn_down.weight", (dim, c.intermediate_size), p + "ffn_down.bias")


def _vector(f: LowbitFile, name, n):
    if f.info(name).shape != (n,):
        raise FormatError(f.path, f"tensor {name!r} has shape {list(f.info(name).shape)}, expected [{n}]")
    return _dequantize(f, name)


def _dequantize(f: LowbitFile, name):
    # norms and biases are f32: NumPy views, no JIT at load
    return np.ascontiguousarray(f.dequantize(name), dtype=np.float32)


class KVCache:
    """Keys and values of every layer for positions 0..n_ctx-1 (float32)."""

    def __init__(self, c: ModelConfig, n_ctx: int):
        shape = (c.num_layers, n_ctx, c.num_kv_heads, c.head_dim)
        self.k = np.zeros(shape, np.float32)
        self.v = np.zeros(shape, np.float32)
        self.n_ctx = n_ctx
        self.pos = 0   # number of positions filled

    @property
    def nbytes(self):
        return self.k.nbytes + self.v.nbytes


class Transformer:
    """The reference forward (also named ReferenceTransformer). lowbit.load builds it and attaches
    the C block forward when lowbit.backend chose "cpu-native" for the file."""

    def __init__(self, f: LowbitFile, n_ctx: int = None):
        self.file = f
        meta = f.metadata
        self.config = c = ModelConfig.from_json(f.path, meta.get("architecture"))
        self.n_ctx = context_size(f.path, c, n_ctx)
        emb = f.info("token_embd.weight")
        if emb.shape != (c.vocab_size, c.hidden_size):
            raise FormatError(f.path, f"token_embd.weight has shape {list(emb.shape)}, expected [{c.vocab_size}, {c.hidden_size}]")
        self.embed_qtype, self.embed_raw = f.qtype("token_embd.weight"), f.raw("token_embd.weight")
        self.embed_bound = (self.embed_qtype.bind(self.embed_raw, emb.shape) if self.embed_qtype.whole_tensor else None)
        self.layers = [Layer(f, c, i) for i in range(c.num_layers)]
        self.output_norm = _vector(f, "output_norm.weight", c.hidden_size)
        out_name = "token_embd.weight" if c.tie_word_embeddings else "output.weight"
        self.output = Linear(f, out_name, (c.vocab_size, c.hidden_size))
        self.cos, self.sin = ops.rope_tables(c.head_dim, c.rope_theta, c.rope_scaling, self.n_ctx)
        self.tokenizer = Tokenizer(f)
        # the C block forward, attached by lowbit.load (api.py) when lowbit.backend chose "cpu-native"
        self.native = None
        # statistics hooks (lowbit.imatrix): observer(name, x) sees the input of every matmul,
        # perturb(name, y) returns the output to use instead of y. The C block forward runs past the
        # matmuls, so forward() takes this reference path while either is set.
        self.observer = None
        self.perturb = None

    def embed(self, tokens: np.ndarray) -> np.ndarray:
        """Embedding rows of `tokens`, dequantized (only those rows are read)."""
        if self.embed_bound is not None:
            fast = native.bound_weight(self.embed_bound) if backend.native_kernels() else None
            return (fast.get_rows if fast is not None else self.embed_bound.gather)(np.asarray(tokens, np.int64))
        if backend.native_kernels() and self.embed_qtype.name in native.C_TYPES:   # in C: no Numba JIT
            return native.get_rows(self.embed_qtype.name, self.embed_raw, tokens, self.config.hidden_size)
        return np.ascontiguousarray(self.embed_qtype.dequantize(self.embed_raw[tokens], (len(tokens), self.config.hidden_size)),
                                    dtype=np.float32)

    def new_cache(self) -> KVCache:
        return KVCache(self.config, self.n_ctx)

    def linear(self, lin: Linear, x: np.ndarray) -> np.ndarray:
        """lin(x), seen by the statistics hooks."""
        if self.observer is not None:
            self.observer(lin.name, x)
        y = lin(x)
        return y if self.perturb is None else self.perturb(lin.name, y)

    def layer_forward(self, li: int, x: np.ndarray, h: np.ndarray, cache: KVCache, pos0: int):
        """Layer `li` on the residual stream x (n, dim) of positions pos0.., in place; h is
        scratch of x's shape; the layer's keys and values go into the cache (imatrix's
        sensitivities start runs at a given layer)."""
        c, L, n = self.config, self.layers[li], x.shape[0]
        H, KVH, D = c.num_heads, c.num_kv_heads, c.head_dim
        # attention
        ops.rmsnorm(x, L.attn_norm, c.rms_norm_eps, h)
        q = self.linear(L.wq, h).reshape(n, H, D)
        k = self.linear(L.wk, h).reshape(n, KVH, D)
        v = self.linear(L.wv, h).reshape(n, KVH, D)
        ops.rope(q, self.cos, self.sin, pos0)
        ops.rope(k, self.cos, self.sin, pos0)
        cache.k[li, pos0:pos0 + n] = k
        cache.v[li, pos0:pos0 + n] = v
        att = np.empty((n, H, D), np.float32)
        ops.attention(q, cache.k[li], cache.v[li], pos0, att)
        x += self.linear(L.wo, att.reshape(n, H * D))
        # feed-forward (SwiGLU)
        ops.rmsnorm(x, L.ffn_norm, c.rms_norm_eps, h)
        gate = self.linear(L.w_gate, h)
        ops.swiglu(gate, self.linear(L.w_up, h))
        x += self.linear(L.w_down, gate)

    def forward(self, tokens, cache: KVCache, all_logits: bool = False, return_hidden: bool = False):
        """Run `tokens` at positions cache.pos.. and append them to the cache. Returns logits
        for every token (all_logits) or only the last one: (n or 1, vocab); with return_hidden,
        also the output projection's input (the final normed hidden states)."""
        c = self.config
        tokens = np.asarray(tokens, dtype=np.int64).reshape(-1)
        n, pos0 = tokens.shape[0], cache.pos
        if n == 0:
            raise ValueError("forward() needs at least one token")
        if pos0 + n > cache.n_ctx:
            raise ValueError(f"context is full: {pos0} + {n} tokens exceed the context length {cache.n_ctx}")
        if tokens.min() < 0 or tokens.max() >= c.vocab_size:
            raise ValueError(f"token id out of range 0..{c.vocab_size - 1}")
        if self.native is not None and self.observer is None and self.perturb is None:
            return self.native.forward(tokens, cache, all_logits, return_hidden)

        x = self.embed(tokens)
        h = np.empty_like(x)
        for li in range(len(self.layers)):
            self.layer_forward(li, x, h, cache, pos0)
        cache.pos = pos0 + n
        last = x if all_logits else x[-1:]
        out = np.empty_like(last)
        ops.rmsnorm(np.ascontiguousarray(last), self.output_norm, c.rms_norm_eps, out)
        logits = self.linear(self.output, out)
        return (logits, out) if return_hidden else logits


ReferenceTransformer = Transformer   # the name says what it is: the reference forward
