"""Minimal registrations of GGML's block_q4_K and block_q6_K layouts (names 'q4_k', 'q6_k'), so
that the CUDA runtime and its random-weight benchmark files work before the k-quant branch lands.
When that branch has registered these names already, its types are used and nothing here is.

block_q4_K (144 bytes / 256 weights): fp16 d, fp16 dmin, 12 bytes of packed 6-bit scales and mins
(8 sub-blocks of 32), 128 bytes of 4-bit quants. Weight = d*sc[j]*q - dmin*m[j].
block_q6_K (210 bytes / 256 weights): 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits),
16 int8 scales (16 sub-blocks of 16), fp16 d. Weight = d*sc[j]*(q - 32).
Only dequantization is provided here (quantizers live with the k-quant family)."""
import numpy as np
from numba import njit

from .. import quants
from ..errors import ConvertError
from ..quants.base import QuantType
from ..quants.fp16 import read_f16

QK_K = 256


@njit(inline="always", cache=True)
def _scale_min_k4(j, raw, o):
    # o = offset of the 12 scale bytes
    if j < 4:
        return raw[o + j] & 63, raw[o + j + 4] & 63
    sc = (raw[o + j + 4] & 0xF) | ((raw[o + j - 4] >> 6) << 4)
    mn = (raw[o + j + 4] >> 4) | ((raw[o + j] >> 6) << 4)
    return sc, mn


@njit(cache=True)
def dequant_row_q4_k(raw, out):
    for b in range(out.shape[0] // QK_K):
        o = b * 144
        d = read_f16(raw, o)
        dmin = read_f16(raw, o + 2)
        for j in range(4):
            sc1, m1 = _scale_min_k4(2 * j, raw, o + 4)
            sc2, m2 = _scale_min_k4(2 * j + 1, raw, o + 4)
            d1, mm1 = d * np.float32(sc1), dmin * np.float32(m1)
            d2, mm2 = d * np.float32(sc2), dmin * np.float32(m2)
            for l in range(32):
                q = raw[o + 16 + 32 * j + l]
                out[b * QK_K + 64 * j + l] = d1 * np.float32(q & 0xF) - mm1
                out[b * QK_K + 64 * j + 32 + l] = d2 * np.float32(q >> 4) - mm2


@njit(cache=True)
def dequant_row_q6_k(raw, out):
    for b in range(out.shape[0] // QK_K):
        o = b * 210
        d = read_f16(raw, o + 208)
        for n in range(2):
            ql, qh, sc = o + 64 * n, o + 128 + 32 * n, o + 192 + 8 * n
            y = b * QK_K + 128 * n
            for l in range(32):
                is_ = l // 16
                h = np.int32(raw[qh + l])
                a, bb = np.int32(raw[ql + l]), np.int32(raw[ql + l + 32])
                q1 = ((a & 0xF) | ((h & 3) << 4)) - 32
                q2 = ((bb & 0xF) | (((h >> 2) & 3) << 4)) - 32
                q3 = ((a >> 4) | (((h >> 4) & 3) << 4)) - 32
                q4 = ((bb >> 4) | (((h >> 6) & 3) << 4)) - 32
                s = raw[sc:sc + 8].view(np.int8)
                out[y + l] = d * np.float32(s[is_]) * np.float32(q1)
                out[y + l + 32] = d * np.float32(s[is_ + 2]) * np.float32(q2)
                out[y + l + 64] = d * np.float32(s[is_ + 4]) * np.float32(q3)
                out[y + l + 96] = d * np.float32(s[is_ + 6]) * np.float32(q4)


def _no_quantizer(name):
    def quantize(w, imatrix=None):
        raise ConvertError(f"{name}: this build only reads {name} (its quantizer comes with the k-quant types)")
    return quantize


Q4_K = QuantType("q4_k", QK_K, 144, _no_quantizer("q4_k"), dequant_row_q4_k,
                 "GGML Q4_K: 256 weights, 4-bit quants, 6-bit sub-block scales/mins", ggml_type=12)
Q6_K = QuantType("q6_k", QK_K, 210, _no_quantizer("q6_k"), dequant_row_q6_k,
                 "GGML Q6_K: 256 weights, 6-bit quants, int8 sub-block scales", ggml_type=14)


def ensure_registered():
    """Register q4_k / q6_k unless a fuller implementation already did."""
    for qt in (Q4_K, Q6_K):
        if qt.name not in quants.TYPES:
            quants.register(qt)


def random_blocks(qtype: str, rows: int, cols: int, rng) -> np.ndarray:
    """Random but valid blocks (finite fp16 scales of a plausible size, random quant bits):
    uint8 (rows, row_bytes). Used by the benchmark's random-weight files and the tests."""
    nb = rows * (cols // QK_K)
    if qtype == "q4_k":
        blk = rng.integers(0, 256, size=(nb, 144), dtype=np.uint8)
        d = rng.random(nb, dtype=np.float32) * 2e-3 + 1e-4
        # dmin ~ 7.5 d makes the weights roughly zero-mean (mean q is 7.5, scales and mins alike)
        dmin = d * 7.5 * (0.8 + 0.4 * rng.random(nb, dtype=np.float32))
        blk[:, 0:2] = d.astype("<f2")[:, None].view(np.uint8)
        blk[:, 2:4] = dmin.astype("<f2")[:, None].view(np.uint8)
    elif qtype == "q6_k":
        blk = rng.integers(0, 256, size=(nb, 210), dtype=np.uint8)
        blk[:, 208:210] = (rng.random(nb, dtype=np.float32) * 2e-4 + 1e-5).astype("<f2")[:, None].view(np.uint8)
    else:
        raise ValueError(qtype)
    return blk.reshape(rows, -1)
