"""Q8_0: byte-identical to GGML's block_q8_0. A block holds 32 weights in 34 bytes:
fp16 scale d, then 32 int8 q. Weight i = d * q[i]."""
import numpy as np
from numba import njit

from .base import QuantType
from .fp16 import read_f16

QK = 32
BLOCK_BYTES = 2 + QK


def quantize_q8_0(w, imatrix=None):
    """GGML's reference rounding: d = max|x| / 127, q = round-half-away(x / d).
    (Q8_0 error is tiny; the importance matrix does not change the optimum enough to matter.)"""
    w = np.ascontiguousarray(w, dtype=np.float32)
    rows, cols = w.shape
    blocks = w.reshape(rows, cols // QK, QK)
    amax = np.abs(blocks).max(axis=-1)
    d = amax / 127.0
    inv = np.divide(1.0, d, out=np.zeros_like(d), where=d != 0)
    x = blocks * inv[..., None]
    q = (np.sign(x) * np.floor(np.abs(x) + 0.5)).astype(np.int8)   # roundf: half away from zero
    out = np.empty((rows, cols // QK, BLOCK_BYTES), np.uint8)
    out[..., :2] = d.astype("<f2")[..., None].view(np.uint8)
    out[..., 2:] = q.view(np.uint8)
    return out.reshape(rows, -1)


@njit(cache=True)
def dequant_row_q8_0(raw, out):
    for b in range(out.shape[0] // QK):
        o = b * BLOCK_BYTES
        d = read_f16(raw, o)
        q = raw[o + 2:o + BLOCK_BYTES].view(np.int8)
        for i in range(QK):
            out[b * QK + i] = d * np.float32(q[i])


def np_dequantize_q8_0(raw):
    blocks = raw.reshape(raw.shape[0], -1, BLOCK_BYTES)
    d = np.ascontiguousarray(blocks[..., :2]).view("<f2").astype(np.float32)
    q = np.ascontiguousarray(blocks[..., 2:]).view(np.int8).astype(np.float32)
    with np.errstate(invalid="ignore", over="ignore"):   # inf/NaN scales of hostile files stay inf/NaN
        return (d * q).reshape(raw.shape[0], -1)


Q8_0 = QuantType("q8_0", QK, BLOCK_BYTES, quantize_q8_0, dequant_row_q8_0,
                 "32 int8 weights with one fp16 scale (GGML Q8_0)", ggml_type=8,
                 id=3, has_kernels=True, fallback="f16", candidate="default",
                 np_dequantize=np_dequantize_q8_0)
TYPES = [Q8_0]
