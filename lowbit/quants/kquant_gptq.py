"""GPTQ-style error feedback for the k-quants (q2_k .. q6_k), producing ordinary k-quant bytes;
converters/gptq.py explains the method and calls this through QuantType.gptq.

k-quants need per-super-block scales before any column of the block can be rounded, so when the
column cursor enters a 256-wide super-block (or a row's shorter tail block) the block's scales
and mins are fitted for every row on the error-updated weights with kquant_fit's searches; the
block's columns are then rounded one by one on that fixed grid with the error fed forward inside
the block (per row, Numba), and the block's accumulated errors update all later columns at once
(one BLAS product: GPTQ's lazy batch update, with the super-block as the batch)."""
import numpy as np
from numba import njit, prange

from .fp16 import f16_bits_to_f32
from .kquants import KIND, PARAMS, QK, TYPES_BY_NAME, _pack_full, _pack_tail, block_weights, fit_block


@njit(parallel=True, cache=True)
def _gptq_block(W, U, c0, n, kind, S, bits, im, search, bidx, block_bytes, err, out):
    """Quantize columns c0..c0+n of every row of W (float64, updated in place inside the block)
    into block `bidx` of out[r]; err[r, i] receives (w - q) / U[c, c] for the lazy update."""
    rows = W.shape[0]
    affine = kind == 2 or kind == 4 or kind == 5
    nmax = (1 << bits) - 1
    qmin = -(1 << (bits - 1))
    qmax = -qmin - 1
    for r in prange(rows):
        x = np.zeros(QK, np.float64)
        wt = np.zeros(QK, np.float64)
        L = np.zeros(QK, np.int64)
        sc = np.zeros(16, np.int64)
        m = np.zeros(16, np.int64)
        fs = np.zeros(16, np.float64)
        fm = np.zeros(16, np.float64)
        for i in range(n):
            x[i] = W[r, c0 + i]
        block_weights(x, n, S, kind, im, c0, True, wt)   # the plain quantizer's imatrix weighting
        d, dmin = fit_block(x, wt, n, kind, S, bits, search, sc, m, L, fs, fm)
        df = np.float32(f16_bits_to_f32(d))
        dmf = np.float32(f16_bits_to_f32(dmin))
        for i in range(n):
            j = i // S
            c = c0 + i
            v = W[r, c]
            ds = np.float32(df * np.float32(sc[j]))
            if affine:
                dm = np.float32(dmf * np.float32(m[j]))
                q = min(max(np.rint((v + dm) / ds), 0.0), nmax) if ds > 0.0 else 0.0
                deq = np.float32(ds * np.float32(q)) - dm
                L[i] = int(q)
            else:
                q = min(max(np.rint(v / ds), qmin), qmax) if ds != 0.0 else 0.0
                deq = np.float32(ds * np.float32(q))
                L[i] = int(q) - qmin
            e = (v - deq) / U[c, c]
            err[r, i] = e
            for k in range(i + 1, n):
                W[r, c0 + k] -= e * U[c, c0 + k]
        o = bidx * block_bytes
        if n == QK:
            _pack_full(kind, out[r], o, d, dmin, sc, m, L)
        else:
            _pack_tail(kind, S, bits, out[r], o, n, d, dmin, sc, m, L)


def gptq_quantize(qtype: str, w: np.ndarray, U: np.ndarray, imatrix) -> np.ndarray:
    """`qtype` bytes of float32[rows, cols] with GPTQ error feedback; U = inverse_cholesky(H) and
    `imatrix` (float[cols]) weights the scale fits."""
    S, bits, _, block_bytes, _ = PARAMS[qtype]
    w = np.asarray(w, dtype=np.float32)
    rows, cols = w.shape
    if not np.isfinite(w).all():
        raise ValueError(f"{qtype}: weights contain NaN or infinite values")
    im = np.asarray(imatrix, dtype=np.float64).copy()
    mean = im.mean()
    im = np.maximum(im, 1e-6 * mean) if mean > 0 else np.ones(cols)
    W = w.astype(np.float64)
    out = np.zeros((rows, TYPES_BY_NAME[qtype].row_bytes(cols)), np.uint8)
    nblk = (cols + QK - 1) // QK
    for b in range(nblk):
        c0 = b * QK
        n = min(QK, cols - c0)
        err = np.zeros((rows, n), np.float64)
        _gptq_block(W, U, c0, n, KIND[qtype], S, bits, im, True, b, block_bytes, err, out)
        if c0 + n < cols:
            W[:, c0 + n:] -= err @ U[c0:c0 + n, c0 + n:]
    return out
