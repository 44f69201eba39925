"""The neural-net blocks of the forward pass, in Numba: RMSNorm, RoPE, attention, SwiGLU."""
import math

import numpy as np
from numba import njit, prange


@njit(parallel=True, fastmath=True, cache=True)
def rmsnorm(x, w, eps, out):
    for t in prange(x.shape[0]):
        ss = 0.0
        for i in range(x.shape[1]):
            ss += np.float64(x[t, i]) * x[t, i]
        inv = np.float32(1.0 / math.sqrt(ss / x.shape[1] + eps))
        for i in range(x.shape[1]):
            out[t, i] = x[t, i] * inv * w[i]


@njit(cache=True)
def rope(x, cos, sin, pos0):
    """Rotate q or k in place, Hugging Face's rotate-half pairing: element i pairs with
    i + head_dim/2. x: (n, heads, head_dim); cos/sin: (positions, head_dim/2)."""
    n, heads, d = x.shape
    half = d // 2
    for t in range(n):
        c = cos[pos0 + t]
        s = sin[pos0 + t]
        for h in range(heads):
            for i in range(half):
                a = x[t, h, i]
                b = x[t, h, i + half]
                x[t, h, i] = a * c[i] - b * s[i]
                x[t, h, i + half] = b * c[i] + a * s[i]


@njit(parallel=True, fastmath=True, cache=True)
def attention(q, k_cache, v_cache, pos0, out):
    """Causal grouped-query attention of n new queries at positions pos0.. against the cache.
    q: (n, H, D); k_cache, v_cache: (ctx, KVH, D); out: (n, H, D)."""
    n, heads, d = q.shape
    group = heads // k_cache.shape[1]
    scale = np.float32(1.0 / math.sqrt(d))
    for job in prange(n * heads):
        t = job // heads
        h = job % heads
        kvh = h // group
        length = pos0 + t + 1
        scores = np.empty(length, np.float32)
        best = -np.inf
        for j in range(length):
            s = np.float32(0.0)
            for i in range(d):
                s += q[t, h, i] * k_cache[j, kvh, i]
            s *= scale
            scores[j] = s
            if s > best:
                best = s
        total = np.float32(0.0)
        for j in range(length):
            scores[j] = np.exp(scores[j] - best)
            total += scores[j]
        acc = np.zeros(d, np.float32)
        for j in range(length):
            p = scores[j] / total
            for i in range(d):
                acc[i] += p * v_cache[j, kvh, i]
        out[t, h, :] = acc


@njit(parallel=True, fastmath=True, cache=True)
def swiglu(gate, up):
    """gate <- silu(gate) * up, in place."""
    for t in prange(gate.shape[0]):
        for i in range(gate.shape[1]):
            g = gate[t, i]
            gate[t, i] = g / (np.float32(1.0) + np.exp(-g)) * up[t, i]


def inv_freq(head_dim, theta, scaling) -> np.ndarray:
    """RoPE inverse frequencies (head_dim/2,) as transformers computes them, including its
    'linear' and 'llama3' scaling (float64)."""
    freq = 1.0 / theta ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    rtype = (scaling or {}).get("rope_type", "default")
    if rtype == "linear":
        return freq / float(scaling["factor"])
    if rtype == "llama3":
        factor = float(scaling["factor"])
        low, high = float(scaling.get("low_freq_factor", 1.0)), float(scaling.get("high_freq_factor", 4.0))
        old_ctx = float(scaling.get("original_max_position_embeddings", 8192))
        wavelen = 2 * math.pi / freq
        smooth = (old_ctx / wavelen - low) / (high - low)
        scaled = np.where(wavelen > old_ctx / low, freq / factor, freq)
        medium = (wavelen <= old_ctx / low) & (wavelen >= old_ctx / high)
        return np.where(medium, (1 - smooth) * freq / factor + smooth * freq, scaled)
    return freq


def rope_tables(head_dim, theta, scaling, positions):
    """cos/sin tables (positions, head_dim/2) for positions 0..positions-1."""
    inv = inv_freq(head_dim, theta, scaling)
    # computed in float32 like transformers, so long positions round the same way
    angles = np.arange(positions, dtype=np.float32)[:, None] * inv.astype(np.float32)[None, :]
    return np.cos(angles).astype(np.float32), np.sin(angles).astype(np.float32)
