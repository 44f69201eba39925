"""GPTQ-style error feedback for k-quant types (q2_k .. q6_k), producing ordinary k-quant bytes
(q4_ke: lowbit/quants/q4ke.py; the codebook types cbk2, cbk4, d4l2 and their .h variants:
GPTVQ in lowbit/quants/vq.py, D-weight vectors snapped under the inverse-Hessian metric).

The layer's squared output error over calibration inputs X is tr(E H E^T) with E = W - Q and
H = X^T X / n (recorded by `lowbit imatrix --hessian`). GPTQ quantizes W column by column and,
after each column, spreads that column's rounding error over the columns not yet quantized so
that the output error, not the weight error, is minimized; the Cholesky factor U of the damped
H^-1 (H^-1 = U^T U, U upper) gives the update: W[:, j>i] -= (w_i - q_i) / U[i,i] * U[i, j>i].

k-quants need per-super-block scales before any column of the block can be rounded, so when the
column cursor enters a 256-wide super-block (or a row's shorter tail block) the block's scales
and mins are fitted for every row on the error-updated weights with kquant_fit's searches; the
block's columns are then rounded one by one on that fixed grid with the error fed forward inside
the block (per row, Numba), and the block's accumulated errors update all later columns at once
(one BLAS product: GPTQ's lazy batch update, with the super-block as the batch).
"""
import numpy as np
from numba import njit, prange

from lowbit import quants
from lowbit.errors import ConvertError
from lowbit.quants.fp16 import f16_bits_to_f32
from lowbit.quants import vq
from lowbit.quants.kquants import KIND, PARAMS, QK, _pack_full, _pack_tail, block_weights, fit_block

# the k-quants, q4_ke and the codebook types (GPTVQ, lowbit/quants/vq.py); other types are quantized as usual
GPTQ_TYPES = tuple(PARAMS) + ("q4_ke", "q4_ke.h") + tuple(vq.PARAMS) + tuple(n + ".h" for n in vq.PARAMS)
DEFAULT_DAMP = 0.01                 # fraction of mean(diag H) added to the diagonal


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


def inverse_cholesky(H: np.ndarray, damp: float = DEFAULT_DAMP) -> np.ndarray:
    """Upper U with U^T U = (H + damp * mean(diag H) * I)^-1; channels never seen (diag 0) get
    a unit diagonal. Damping grows tenfold until H is positive definite."""
    H = np.array(H, dtype=np.float64)
    dead = np.diag(H) <= 0
    H[dead, dead] = 1.0
    mean = float(np.mean(np.diag(H)))
    for _ in range(6):
        try:
            Hd = H + damp * mean * np.eye(H.shape[0])
            Lc = np.linalg.cholesky(Hd)                      # Hd = Lc Lc^T
            Linv = np.linalg.inv(Lc)
            return np.ascontiguousarray(np.linalg.cholesky(Linv.T @ Linv).T)
        except np.linalg.LinAlgError:
            damp *= 10
    raise ConvertError("covariance matrix is not positive definite even with heavy damping")


def gptq_quantize(qtype: str, w: np.ndarray, H: np.ndarray, imatrix=None, damp: float = DEFAULT_DAMP,
                  U: np.ndarray = None) -> np.ndarray:
    """Quantize float32[rows, cols] to `qtype` (a k-quant) with GPTQ error feedback under the
    input second-moment matrix H (float[cols, cols]); returns uint8[rows, row_bytes] in the
    type's ordinary layout. `imatrix` (default diag H) weights the scale fits; a precomputed
    inverse_cholesky(H) can be passed as U (it depends only on H)."""
    if qtype in ("q4_ke", "q4_ke.h"):   # its own block fit (lowbit/quants/q4ke.py); .h: coded after
        from lowbit.quants import huffcoded, q4ke
        raw = q4ke.gptq_quantize(w, inverse_cholesky(H, damp) if U is None else U, np.diag(H) if imatrix is None
                                 else imatrix)
        return raw if qtype == "q4_ke" else huffcoded.encode(quants.get("q4_ke"), raw, np.shape(w))
    base = qtype[:-2] if qtype.endswith(".h") else qtype
    if base in vq.PARAMS:              # GPTVQ; .h: the entropy-constrained assignment, then Huffman-coded
        from lowbit.quants import huffcoded
        w = np.asarray(w, dtype=np.float32)
        if H.shape != (w.shape[-1], w.shape[-1]):
            raise ValueError(f"covariance is {list(H.shape)}, the weight has {w.shape[-1]} columns")
        raw = vq.gptq_quantize(base, w, inverse_cholesky(H, damp) if U is None else U,
                               np.diag(H) if imatrix is None else imatrix,
                               lam=huffcoded.LAMS[base] if qtype != base else 0.0)
        return raw if qtype == base else huffcoded.encode(quants.get(base), raw, np.shape(w))
    if qtype not in PARAMS:
        raise ValueError(f"GPTQ applies to k-quants ({', '.join(PARAMS)}), not {qtype}")
    S, bits, _, block_bytes, _ = PARAMS[qtype]
    w = np.asarray(w, dtype=np.float32)
    rows, cols = w.shape
    if H.shape != (cols, cols):
        raise ValueError(f"covariance is {list(H.shape)}, the weight has {cols} columns")
    if not np.isfinite(w).all():
        raise ValueError(f"{qtype}: weights contain NaN or infinite values")
    if U is None:
        U = inverse_cholesky(H, damp)
    im = np.asarray(np.diag(H) if imatrix is None else imatrix, dtype=np.float64).copy()
    mean = im.mean()
    im = np.maximum(im, 1e-6 * mean) if mean > 0 else np.ones(cols)
    W = w.astype(np.float64)
    qt = quants.get(qtype)
    out = np.zeros((rows, qt.row_bytes(cols)), np.uint8)
    nblk = (cols + QK - 1) // QK
    for b in range(nblk):
        c0 = b * QK
        n = min(QK, cols - c0)
        err = np.zeros((rows, n), np.float64)
        _gptq_block(W, U, c0, n, KIND[qtype], S, bits, im, True, b, block_bytes, err, out)
        if c0 + n < cols:
            W[:, c0 + n:] -= err @ U[c0:c0 + n, c0 + n:]
    return out


def output_error(qtype: str, w: np.ndarray, raw: np.ndarray, H: np.ndarray = None, imatrix=None) -> float:
    """The layer's squared output error summed over rows, per calibration token:
    tr(E H E^T) with E = w - dequant(raw); with only an importance vector, its diagonal
    approximation sum(E^2 * imatrix); with neither, sum(E^2)."""
    E = np.asarray(w, np.float64) - quants.get(qtype).dequantize(raw, w.shape).astype(np.float64)
    if H is not None:
        return float(np.einsum("ij,ij->", E @ np.asarray(H, np.float64), E))
    if imatrix is not None:
        return float(((E * E) @ np.asarray(imatrix, np.float64)).sum())
    return float((E * E).sum())
