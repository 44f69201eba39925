"""q4_ke: q4_k's exact bytes (GGML Q4_K for whole super-blocks, the k-quant tail block otherwise),
quantized for entropy coding. format_spec/types/q4_ke.md is normative (it defers to kquants.md for
every byte); what differs from q4_k is only the quantizer, so `q4_ke.h` (huffcoded.py) can code
its nibbles ~12% smaller with bit-identical weights.

Why a separate quantizer: q4_k fits each 32-weight sub-block's 16 levels to its range, so all 16
nibble values are about equally likely (~3.9 bits of entropy, Huffman saves ~1%). Uniform scalar
quantization with a step set by the signal level (not the block's extremes), followed by entropy
coding, sits within ~0.25 bit of the rate-distortion bound: here every sub-block is symmetric
(w = step * (q - 8), dmin = 8 d, min = scale) and its step is

    max(K * sqrt(rms_row * rms_subblock) / (mean importance of its columns)^0.25, clip-free step)

so the outer levels are rare (~3.4 bits of entropy per weight). Importance (the imatrix, normalized
to mean 1 over the row) shrinks the step where errors cost more (a weighted-squared-error optimum
says ^0.5; ^0.25 measured better on pycode-30m's KLD). The step's mix of row and sub-block rms
(0.5/0.5) beat pure row (0.0354) and pure sub-block (0.0361) on 20 chunks: 0.0342, no imatrix."""
import numpy as np
from numba import njit, prange

from .base import QuantType
from .fp16 import f16_bits_to_f32
from .kquant_fit import f16_bits
from .kquants import QK, _pack_full, _pack_tail, dequant_row_q4_k, tail_bytes_fn

S = 32                 # weights per sub-block (q4_k's)
K_STEP = 0.40          # step / signal level: ~12% smaller .h files (0.35: 8.7%, too little), ~2.7x q4_k's squared error
IMP_CLAMP = 3.0        # the importance factor on the step stays within [1/3, 3]
A_ROW = 0.5            # step ~ rms_row^A_ROW * rms_subblock^(1 - A_ROW)
B_IMP = 0.25           # step ~ importance^-B_IMP (0.5, the weighted-MSE optimum, measured worse on KLD)


@njit(cache=True)
def _fit_superblock(x, h, n, sig_t, k, a, bi, steps, sc, m, L):
    """One super-block x[0:n] (h: importance per weight, mean ~1): fills sc (= m), L; returns
    fp16 bits (d, dmin = 8 d)."""
    nsub = (n + S - 1) // S
    for j in range(nsub):
        lo, hi = j * S, min(j * S + S, n)
        s2, hs, xmin, xmax = 0.0, 0.0, 0.0, 0.0
        for i in range(lo, hi):
            s2 += x[i] * x[i]
            hs += h[i]
            xmin = min(xmin, x[i])
            xmax = max(xmax, x[i])
        rms = np.sqrt(s2 / (hi - lo))
        f = max(hs / (hi - lo), 1e-30) ** -bi
        f = min(max(f, 1.0 / IMP_CLAMP), IMP_CLAMP)
        target = k * sig_t ** a * rms ** (1.0 - a) * f
        need = max(-xmin / 8.0, xmax / 7.0)
        if need > target:
            # range-limited: a little clipping of the extremes can pay; pick the step among
            # 0.80..1.00 x the clip-free one by the weighted squared error
            best, bs = np.inf, need
            for c in range(9):
                st = need * (0.80 + 0.025 * c)
                if st < target:
                    continue
                e = 0.0
                for i in range(lo, hi):
                    q = min(max(np.rint(x[i] / st), -8.0), 7.0)
                    t = x[i] - st * q
                    e += h[i] * t * t
                if e < best:
                    best, bs = e, st
            target = bs
        steps[j] = target
    smax = 0.0
    for j in range(nsub):
        smax = max(smax, steps[j])
    d = smax / 63.0
    db = f16_bits(d)
    df = f16_bits_to_f32(db)
    if df < d and df > 0 or (df == 0.0 and d > 0.0):   # round up so that every scale fits 6 bits
        db += 1
        df = f16_bits_to_f32(db)
    dmb = f16_bits(8.0 * df)                             # exact: a power-of-two multiple of an fp16
    for j in range(nsub):
        s = int(np.rint(steps[j] / df)) if df > 0 else 1
        s = min(max(s, 1), 63)
        sc[j] = s
        m[j] = s
        ds = np.float32(np.float32(df) * np.float32(s))
        lo, hi = j * S, min(j * S + S, n)
        for i in range(lo, hi):
            q = min(max(np.rint(x[i] / ds), -8.0), 7.0) if ds > 0 else 0.0
            L[i] = int(q) + 8
        for i in range(hi, j * S + S):
            L[i] = 8
    return db, dmb


@njit(parallel=True, cache=True)
def _quantize_rows(w, im, k, a, bi, out):
    rows, cols = w.shape
    nfull = cols // QK
    nblk = nfull + (1 if cols % QK else 0)
    for r in prange(rows):
        s2 = 0.0
        for i in range(cols):
            s2 += np.float64(w[r, i]) * w[r, i]
        sig_t = np.sqrt(s2 / cols)     # the row's rms: rows of one tensor can differ a lot in scale
        x = np.zeros(QK, np.float64)
        h = np.zeros(QK, np.float64)
        L = np.zeros(QK, np.int64)
        sc = np.zeros(16, np.int64)
        m = np.zeros(16, np.int64)
        steps = np.zeros(8, np.float64)
        for b in range(nblk):
            n = min(QK, cols - b * QK)
            x[:] = 0.0
            L[:] = 8
            for i in range(n):
                x[i] = w[r, b * QK + i]
                h[i] = im[b * QK + i]
            d, dmin = _fit_superblock(x, h, n, sig_t, k, a, bi, steps, sc, m, L)
            o = b * 144
            if n == QK:
                _pack_full(4, out[r], o, d, dmin, sc, m, L)
            else:
                _pack_tail(4, S, 4, out[r], o, n, d, dmin, sc, m, L)


def quantize(w, imatrix=None, k=K_STEP, a=A_ROW, bi=B_IMP):
    """float32[rows, cols] -> uint8[rows, row_bytes] in q4_k's layout. `imatrix`: mean squared input
    per column (normalized here to mean 1)."""
    w = np.ascontiguousarray(w, dtype=np.float32)
    if w.ndim != 2:
        w = w.reshape(1, -1) if w.ndim == 1 else w.reshape(-1, w.shape[-1])
    rows, cols = w.shape
    if not np.isfinite(w).all():
        raise ValueError("q4_ke: weights contain NaN or infinite values")
    im = np.ones(cols, np.float64)
    if imatrix is not None:
        v = np.asarray(imatrix, dtype=np.float64).reshape(-1)
        if v.shape[0] != cols:
            raise ValueError(f"q4_ke: importance vector has {v.shape[0]} values, rows have {cols}")
        if not np.isfinite(v).all() or (v < 0).any():
            raise ValueError("q4_ke: importance vector has negative, NaN or infinite values")
        if v.mean() > 0:
            im = np.maximum(v, 1e-6 * v.mean()) / v.mean()
    out = np.zeros((rows, TYPE.row_bytes(cols)), np.uint8)
    _quantize_rows(w, im, float(k), float(a), float(bi), out)
    return out


def index_positions(cols):
    """Nibble bytes of a q4_k row: qs (bytes 16..143) of every whole super-block and the packed
    quants of the tail block (its last 16 bytes per 32-weight sub-block)."""
    nfull, rem = divmod(cols, QK)
    p = np.arange(nfull * 144, dtype=np.int64)
    p = p[p % 144 >= 16]
    if rem:
        nsub = (rem + S - 1) // S
        p = np.concatenate([p, nfull * 144 + 4 + 2 * nsub + np.arange(16 * nsub, dtype=np.int64)])
    return p


TYPE = QuantType("q4_ke", QK, 144, quantize, dequant_row_q4_k,
                 "q4_k bytes (GGML Q4_K) quantized for entropy coding: symmetric sub-blocks, step from the "
                 "signal level; plain file = q4_k size, q4_ke.h ~12% smaller", ggml_type=12,
                 tail_bytes=tail_bytes_fn("q4_k"), index_positions=index_positions,
                 id=12, same_bytes_as="q4_k", candidate="opt-in", gptq=lambda w, U, im: gptq_quantize(w, U, im))
TYPES = [TYPE]


# ----------------------------------------------------------------------------- GPTQ error feedback

@njit(parallel=True, cache=True)
def _gptq_block(W, U, c0, n, im, sig, k, a, bi, bidx, err, out):
    """Columns c0..c0+n (one super-block) of every row of W (float64, updated in place): steps fitted
    on the error-updated weights, then each column rounded in turn and its error spread over the
    block's later columns; err[r, i] = (w - q) / U[c, c] for the lazy update of the rest."""
    rows = W.shape[0]
    for r in prange(rows):
        x = np.zeros(QK, np.float64)
        h = np.zeros(QK, np.float64)
        L = np.zeros(QK, np.int64)
        sc = np.zeros(16, np.int64)
        m = np.zeros(16, np.int64)
        steps = np.zeros(8, np.float64)
        for i in range(n):
            x[i] = W[r, c0 + i]
            h[i] = im[c0 + i]
        L[:] = 8
        d, dmin = _fit_superblock(x, h, n, sig[r], k, a, bi, steps, sc, m, L)
        df = np.float32(f16_bits_to_f32(d))
        for i in range(n):
            c = c0 + i
            v = W[r, c]
            ds = np.float32(df * np.float32(sc[i // S]))
            q = min(max(np.rint(v / ds), -8.0), 7.0) if ds > 0.0 else 0.0
            L[i] = int(q) + 8
            e = (v - np.float32(ds * np.float32(q))) / U[c, c]
            err[r, i] = e
            for j in range(i + 1, n):
                W[r, c0 + j] -= e * U[c, c0 + j]
        o = bidx * 144
        if n == QK:
            _pack_full(4, out[r], o, d, dmin, sc, m, L)
        else:
            _pack_tail(4, S, 4, out[r], o, n, d, dmin, sc, m, L)


def gptq_quantize(w, U, imatrix=None, k=K_STEP, a=A_ROW, bi=B_IMP):
    """q4_ke bytes of float32[rows, cols] with GPTQ error feedback; U = converters.gptq.inverse_cholesky(H)."""
    w = np.asarray(w, dtype=np.float32)
    rows, cols = w.shape
    if not np.isfinite(w).all():
        raise ValueError("q4_ke: weights contain NaN or infinite values")
    im = np.ones(cols, np.float64) if imatrix is None else np.asarray(imatrix, np.float64).reshape(-1).copy()
    im = np.maximum(im, 1e-6 * im.mean()) / im.mean() if im.mean() > 0 else np.ones(cols)
    W = w.astype(np.float64)
    sig = np.sqrt((W * W).mean(1))          # the original rows' rms sets the step, as in quantize()
    out = np.zeros((rows, TYPE.row_bytes(cols)), np.uint8)
    for b in range((cols + QK - 1) // QK):
        c0 = b * QK
        n = min(QK, cols - c0)
        err = np.zeros((rows, n), np.float64)
        _gptq_block(W, U, c0, n, im, sig, float(k), float(a), float(bi), b, err, out)
        if c0 + n < cols:
            W[:, c0 + n:] -= err @ U[c0:c0 + n, c0 + n:]
    return out
