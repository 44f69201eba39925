"""K-quants: q2_k, q3_k, q4_k, q5_k, q6_k. Whole super-blocks of 256 weights are byte-identical
to GGML's block_q2_K .. block_q6_K; a row whose length is not a multiple of 256 ends in a shorter
"tail block" (a lowbit-only layout with the same quantization grid, plainly bit-packed).
format_spec/types/kquants.md is normative for every byte."""
import numpy as np
from numba import njit, prange

from .base import QuantType
from .fp16 import read_f16
from .kquant_fit import fit_affine_block, fit_symmetric_block

QK = 256

# kind: (sub-block size S, bits per weight, affine, block bytes, GGML type id)
PARAMS = {
    "q2_k": (16, 2, True, 84, 10),
    "q3_k": (16, 3, False, 110, 11),
    "q4_k": (32, 4, True, 144, 12),
    "q5_k": (32, 5, True, 176, 13),
    "q6_k": (16, 6, False, 210, 14),
}
KIND = {"q2_k": 2, "q3_k": 3, "q4_k": 4, "q5_k": 5, "q6_k": 6}


def tail_layout(name: str, rem: int):
    """(sub-blocks, header bytes, scale bytes, quant bytes) of the tail block for `rem` weights."""
    S, bits, affine, _, _ = PARAMS[name]
    nsub = (rem + S - 1) // S
    header = 4 if affine else 2
    scale_bytes = 2 * nsub if name in ("q4_k", "q5_k") else nsub
    return nsub, header, scale_bytes, nsub * S * bits // 8


def tail_bytes_fn(name):
    def tail_bytes(rem: int) -> int:
        _, header, scale_bytes, quant_bytes = tail_layout(name, rem)
        return header + scale_bytes + quant_bytes
    return tail_bytes


# ----------------------------------------------------------------------------- dequantization

@njit(inline="always", cache=True)
def _u(raw, i):
    return np.int32(raw[i])


@njit(inline="always", cache=True)
def _f(v):
    return np.float32(v)


@njit(cache=True)
def _dq_q2_k(raw, o, out, base):
    d = read_f16(raw, o + 80)
    dmin = read_f16(raw, o + 82)
    for n in range(2):
        for j in range(4):
            for l in range(32):
                e = 128 * n + 32 * j + l
                sc = _u(raw, o + (e >> 4))
                q = (_u(raw, o + 16 + 32 * n + l) >> (2 * j)) & 3
                out[base + e] = (d * _f(sc & 15)) * _f(q) - dmin * _f(sc >> 4)


@njit(inline="always", cache=True)
def _q3_scale(raw, s, j):
    if j < 8:
        lo = _u(raw, s + j) & 15
    else:
        lo = _u(raw, s + j - 8) >> 4
    hi = (_u(raw, s + 8 + (j & 3)) >> (2 * (j >> 2))) & 3
    return np.int32(lo | (hi << 4)) - 32


@njit(cache=True)
def _dq_q3_k(raw, o, out, base):
    d = read_f16(raw, o + 108)
    for n in range(2):
        for j in range(4):
            for l in range(32):
                e = 128 * n + 32 * j + l
                low = (_u(raw, o + 32 + 32 * n + l) >> (2 * j)) & 3
                high = (_u(raw, o + l) >> (e >> 5)) & 1
                q = np.int32(low) - (0 if high else 4)
                out[base + e] = (d * _f(_q3_scale(raw, o + 96, e >> 4))) * _f(q)


@njit(inline="always", cache=True)
def _k4_scale_min(raw, s, j):
    """6-bit scale and min of sub-block j (0..7) from GGML's 12-byte packing at raw[s:]."""
    if j < 4:
        return _u(raw, s + j) & 63, _u(raw, s + j + 4) & 63
    sc = (_u(raw, s + j + 4) & 15) | ((_u(raw, s + j - 4) >> 6) << 4)
    m = (_u(raw, s + j + 4) >> 4) | ((_u(raw, s + j) >> 6) << 4)
    return sc, m


@njit(cache=True)
def _dq_q4_k(raw, o, out, base):
    d = read_f16(raw, o)
    dmin = read_f16(raw, o + 2)
    for c in range(4):
        for h in range(2):
            sc, m = _k4_scale_min(raw, o + 4, 2 * c + h)
            d1, m1 = d * _f(sc), dmin * _f(m)
            for l in range(32):
                q = (_u(raw, o + 16 + 32 * c + l) >> (4 * h)) & 15
                out[base + 64 * c + 32 * h + l] = d1 * _f(q) - m1


@njit(cache=True)
def _dq_q5_k(raw, o, out, base):
    d = read_f16(raw, o)
    dmin = read_f16(raw, o + 2)
    for c in range(4):
        for h in range(2):
            sub = 2 * c + h
            sc, m = _k4_scale_min(raw, o + 4, sub)
            d1, m1 = d * _f(sc), dmin * _f(m)
            for l in range(32):
                q = ((_u(raw, o + 48 + 32 * c + l) >> (4 * h)) & 15) | (((_u(raw, o + 16 + l) >> sub) & 1) << 4)
                out[base + 32 * sub + l] = d1 * _f(q) - m1


@njit(cache=True)
def _dq_q6_k(raw, o, out, base):
    d = read_f16(raw, o + 208)
    for n in range(2):
        for k in range(4):
            for l in range(32):
                e = 128 * n + 32 * k + l
                f = 32 * k + l                      # index within the half
                low = (_u(raw, o + 64 * n + (f & 63)) >> (4 * (f >> 6))) & 15
                high = (_u(raw, o + 128 + 32 * n + l) >> (2 * k)) & 3
                q = np.int32(low | (high << 4)) - 32
                sc = np.int32(_u(raw, o + 192 + (e >> 4)))
                if sc > 127:
                    sc -= 256
                out[base + e] = (d * _f(sc)) * _f(q)


@njit(inline="always", cache=True)
def _get_bits(raw, p0, i, bits):
    p = i * bits
    b = p0 + (p >> 3)
    sh = p & 7
    v = np.int32(_u(raw, b)) >> sh
    if sh + bits > 8:
        v |= np.int32(_u(raw, b + 1)) << (8 - sh)
    return v & ((1 << bits) - 1)


@njit(cache=True)
def _dq_tail(kind, S, bits, raw, o, out, base, r):
    """The tail block: fp16 d, [fp16 dmin], scale bytes, [min bytes], LSB-first bit-packed quants."""
    nsub = (r + S - 1) // S
    d = read_f16(raw, o)
    p = o + 2
    dmin = np.float32(0.0)
    if kind == 2 or kind == 4 or kind == 5:
        dmin = read_f16(raw, p)
        p += 2
    qoff = p + (2 * nsub if (kind == 4 or kind == 5) else nsub)
    for i in range(r):
        j = i // S
        v = _get_bits(raw, qoff, i, bits)
        if kind == 2:
            b = _u(raw, p + j)
            out[base + i] = (d * _f(b & 15)) * _f(v) - dmin * _f(b >> 4)
        elif kind == 4 or kind == 5:
            out[base + i] = (d * _f(_u(raw, p + j))) * _f(v) - dmin * _f(_u(raw, p + nsub + j))
        elif kind == 3:
            out[base + i] = (d * _f(np.int32(_u(raw, p + j)) - 32)) * _f(v - 4)
        else:
            sc = np.int32(_u(raw, p + j))
            if sc > 127:
                sc -= 256
            out[base + i] = (d * _f(sc)) * _f(v - 32)


@njit(cache=True)
def dequant_row_q2_k(raw, out):
    n = out.shape[0] // QK
    for b in range(n):
        _dq_q2_k(raw, b * 84, out, b * QK)
    if out.shape[0] > n * QK:
        _dq_tail(2, 16, 2, raw, n * 84, out, n * QK, out.shape[0] - n * QK)


@njit(cache=True)
def dequant_row_q3_k(raw, out):
    n = out.shape[0] // QK
    for b in range(n):
        _dq_q3_k(raw, b * 110, out, b * QK)
    if out.shape[0] > n * QK:
        _dq_tail(3, 16, 3, raw, n * 110, out, n * QK, out.shape[0] - n * QK)


@njit(cache=True)
def dequant_row_q4_k(raw, out):
    n = out.shape[0] // QK
    for b in range(n):
        _dq_q4_k(raw, b * 144, out, b * QK)
    if out.shape[0] > n * QK:
        _dq_tail(4, 32, 4, raw, n * 144, out, n * QK, out.shape[0] - n * QK)


@njit(cache=True)
def dequant_row_q5_k(raw, out):
    n = out.shape[0] // QK
    for b in range(n):
        _dq_q5_k(raw, b * 176, out, b * QK)
    if out.shape[0] > n * QK:
        _dq_tail(5, 32, 5, raw, n * 176, out, n * QK, out.shape[0] - n * QK)


@njit(cache=True)
def dequant_row_q6_k(raw, out):
    n = out.shape[0] // QK
    for b in range(n):
        _dq_q6_k(raw, b * 210, out, b * QK)
    if out.shape[0] > n * QK:
        _dq_tail(6, 16, 6, raw, n * 210, out, n * QK, out.shape[0] - n * QK)


# ----------------------------------------------------------------------------- packing

@njit(inline="always", cache=True)
def _put_f16(buf, o, bits):
    buf[o] = bits & 255
    buf[o + 1] = (bits >> 8) & 255


@njit(cache=True)
def _pack_full(kind, buf, o, d, dmin, sc, m, L):
    """Write one GGML super-block at buf[o:] (buf zeroed) from integer parameters."""
    if kind == 2:
        for j in range(16):
            buf[o + j] = sc[j] | (m[j] << 4)
        for e in range(QK):
            n, j, l = e >> 7, (e >> 5) & 3, e & 31
            buf[o + 16 + 32 * n + l] |= L[e] << (2 * j)
        _put_f16(buf, o + 80, d)
        _put_f16(buf, o + 82, dmin)
    elif kind == 3:
        for e in range(QK):
            n, j, l = e >> 7, (e >> 5) & 3, e & 31
            buf[o + 32 + 32 * n + l] |= (L[e] & 3) << (2 * j)
            buf[o + l] |= ((L[e] >> 2) & 1) << (e >> 5)
        for j in range(16):
            v = sc[j] + 32
            if j < 8:
                buf[o + 96 + j] |= v & 15
            else:
                buf[o + 96 + j - 8] |= (v & 15) << 4
            buf[o + 96 + 8 + (j & 3)] |= (v >> 4) << (2 * (j >> 2))
        _put_f16(buf, o + 108, d)
    elif kind == 4 or kind == 5:
        _put_f16(buf, o, d)
        _put_f16(buf, o + 2, dmin)
        s = o + 4
        for j in range(4):
            buf[s + j] = (sc[j] & 63) | ((sc[j + 4] >> 4) << 6)
            buf[s + j + 4] = (m[j] & 63) | ((m[j + 4] >> 4) << 6)
            buf[s + j + 8] = (sc[j + 4] & 15) | ((m[j + 4] & 15) << 4)
        qs = o + 16 if kind == 4 else o + 48
        for e in range(QK):
            c, h, l = e >> 6, (e >> 5) & 1, e & 31
            buf[qs + 32 * c + l] |= (L[e] & 15) << (4 * h)
            if kind == 5:
                buf[o + 16 + l] |= ((L[e] >> 4) & 1) << (e >> 5)
    else:
        for e in range(QK):
            n, f = e >> 7, e & 127
            buf[o + 64 * n + (f & 63)] |= (L[e] & 15) << (4 * (f >> 6))
            buf[o + 128 + 32 * n + (e & 31)] |= ((L[e] >> 4) & 3) << (2 * ((e >> 5) & 3))
        for j in range(16):
            buf[o + 192 + j] = sc[j] & 255
        _put_f16(buf, o + 208, d)


@njit(cache=True)
def _pack_tail(kind, S, bits, buf, o, r, d, dmin, sc, m, L):
    nsub = (r + S - 1) // S
    _put_f16(buf, o, d)
    p = o + 2
    if kind == 2 or kind == 4 or kind == 5:
        _put_f16(buf, p, dmin)
        p += 2
    for j in range(nsub):
        if kind == 2:
            buf[p + j] = sc[j] | (m[j] << 4)
        elif kind == 3:
            buf[p + j] = sc[j] + 32
        elif kind == 6:
            buf[p + j] = sc[j] & 255
        else:
            buf[p + j] = sc[j]
            buf[p + nsub + j] = m[j]
    qoff = p + (2 * nsub if (kind == 4 or kind == 5) else nsub)
    for i in range(nsub * S):
        pos = i * bits
        b = qoff + (pos >> 3)
        sh = pos & 7
        v = L[i] if i < r else 0
        buf[b] |= (v << sh) & 255
        if sh + bits > 8:
            buf[b + 1] |= v >> (8 - sh)


# ----------------------------------------------------------------------------- quantization

@njit(cache=True)
def block_weights(x, n, S, kind, im, off, use_im, wt):
    """Error weights wt[0:n] of one super-block x[0:n] whose first column is `off` (im: the
    imatrix, used when use_im). Weight sqrt(4 sigma^2 + x^2) (sigma^2: the block's mean square)
    times the importance: close to uniform, a little more for the largest weights. On pycode-30m's
    KLD this beats x^2, |x|, sqrt(sigma^2 + x^2) and uniform weights for every k-quant, with and
    without imatrix, except q5_k without one, which keeps rms + |x| per sub-block
    (docs/results/quality-pycode-30m.md). Shared by the plain quantizer and GPTQ."""
    ss = 0.0
    for i in range(n):
        ss += x[i] * x[i]
    if kind == 5 and not use_im:
        for j in range((n + S - 1) // S):
            s2, cnt = 0.0, 0
            for i in range(j * S, min(j * S + S, n)):
                s2 += x[i] * x[i]
                cnt += 1
            av = np.sqrt(s2 / cnt)
            for i in range(j * S, min(j * S + S, n)):
                wt[i] = av + abs(x[i])
    else:
        s4 = 4.0 * ss / n
        for i in range(n):
            wt[i] = np.sqrt(s4 + x[i] * x[i])
            if use_im:
                wt[i] *= im[off + i]


@njit(cache=True)
def fit_block(x, wt, n, kind, S, bits, search, sc, m, L, fs, fm):
    """Fit one super-block of n weights: fills sc, m (affine types), L; returns fp16 bits (d, dmin)."""
    nsub = (n + S - 1) // S
    if kind == 2 or kind == 4 or kind == 5:
        return fit_affine_block(x, wt, nsub, S, (1 << bits) - 1, 15 if kind == 2 else 63, search,
                                sc, m, L, fs, fm)
    qmin = -(1 << (bits - 1))
    scmin = -32 if kind == 3 else -128
    return fit_symmetric_block(x, wt, nsub, S, qmin, -qmin - 1, scmin, -scmin - 1, search, sc, L, fs), 0


@njit(parallel=True, cache=True)
def _quantize_rows(w, im, use_im, kind, S, bits, block_bytes, search, out):
    rows, cols = w.shape
    nfull = cols // QK
    nblk = nfull + (1 if cols % QK else 0)
    for r in prange(rows):
        x = np.zeros(QK, np.float64)
        wt = np.zeros(QK, np.float64)
        L = np.zeros(QK, np.int64)
        sc = np.zeros(16, np.int64)
        m = np.zeros(16, np.int64)
        fs = np.zeros(16, np.float64)
        fm = np.zeros(16, np.float64)
        for b in range(nblk):
            n = min(QK, cols - b * QK)
            x[:] = 0.0
            wt[:] = 0.0
            L[:] = 0
            for i in range(n):
                x[i] = w[r, b * QK + i]
            block_weights(x, n, S, kind, im, b * QK, use_im, wt)
            d, dmin = fit_block(x, wt, n, kind, S, bits, search, sc, m, L, fs, fm)
            o = b * block_bytes
            if n == QK:
                _pack_full(kind, out[r], o, d, dmin, sc, m, L)
            else:
                _pack_tail(kind, S, bits, out[r], o, n, d, dmin, sc, m, L)


def make_quantizer(name, search=True):
    S, bits, _, block_bytes, _ = PARAMS[name]
    kind = KIND[name]

    def quantize(w, imatrix=None):
        """Quantize float32[rows, cols] to uint8[rows, row_bytes]; `imatrix` (float32[cols], mean
        squared input activation per input channel) weights the squared error."""
        w = np.ascontiguousarray(w, dtype=np.float32)
        if w.ndim != 2:
            w = w.reshape(1, -1) if w.ndim == 1 else w.reshape(-1, w.shape[-1])
        rows, cols = w.shape
        if not np.isfinite(w).all():
            raise ValueError(f"{name}: weights contain NaN or infinite values")
        use_im = imatrix is not None
        im = np.ones(1, np.float64)
        if use_im:
            im = np.asarray(imatrix, dtype=np.float64).reshape(-1)
            if im.shape[0] != cols:
                raise ValueError(f"{name}: importance vector has {im.shape[0]} values, rows have {cols}")
            if not np.isfinite(im).all() or (im < 0).any():
                raise ValueError(f"{name}: importance vector has negative, NaN or infinite values")
            mean = im.mean()
            if mean <= 0:
                use_im, im = False, np.ones(1, np.float64)
            else:   # a channel never seen in calibration still deserves a little weight
                im = np.maximum(im, 1e-6 * mean)
        qt = TYPES_BY_NAME[name]
        out = np.zeros((rows, qt.row_bytes(cols)), np.uint8)
        _quantize_rows(w, im, use_im, kind, S, bits, block_bytes, search, out)
        return out
    quantize.__name__ = f"quantize_{name}"
    return quantize


_DEQUANT = {"q2_k": dequant_row_q2_k, "q3_k": dequant_row_q3_k, "q4_k": dequant_row_q4_k,
            "q5_k": dequant_row_q5_k, "q6_k": dequant_row_q6_k}
_DESCRIPTION = {
    "q2_k": "2-bit affine k-quant: 16x16 sub-blocks, 4-bit scales/mins, fp16 d/dmin (GGML Q2_K)",
    "q3_k": "3-bit symmetric k-quant: 16x16 sub-blocks, 6-bit scales, fp16 d (GGML Q3_K)",
    "q4_k": "4-bit affine k-quant: 8x32 sub-blocks, 6-bit scales/mins, fp16 d/dmin (GGML Q4_K)",
    "q5_k": "5-bit affine k-quant: 8x32 sub-blocks, 6-bit scales/mins, fp16 d/dmin (GGML Q5_K)",
    "q6_k": "6-bit symmetric k-quant: 16x16 sub-blocks, int8 scales, fp16 d (GGML Q6_K)",
}
_IDS = {"q2_k": 4, "q3_k": 5, "q4_k": 6, "q5_k": 7, "q6_k": 8}


def _gptq(name):
    def gptq(w, U, imatrix):
        from .kquant_gptq import gptq_quantize   # Numba code compiled only when GPTQ runs
        return gptq_quantize(name, w, U, imatrix)
    return gptq


TYPES_BY_NAME = {}
for _name, (_S, _bits, _affine, _bb, _ggml) in PARAMS.items():
    TYPES_BY_NAME[_name] = QuantType(_name, QK, _bb, make_quantizer(_name), _DEQUANT[_name],
                                     _DESCRIPTION[_name], ggml_type=_ggml, tail_bytes=tail_bytes_fn(_name),
                                     id=_IDS[_name], has_kernels=True, candidate="default", gptq=_gptq(_name))
TYPES = list(TYPES_BY_NAME.values())


def baseline_quantizer(name):
    """Plain min/max rounding into the same layout (no search): the reference point for RMSE."""
    return make_quantizer(name, search=False)
