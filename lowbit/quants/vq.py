"""Codebook (vector) quantization: cbk2, cbk4 (a k-means codebook learned per tensor and stored in
the tensor's own bytes) and d4l2 (a fixed D4-lattice codebook that costs no storage).
format_spec/types/codebook.md is normative.

Tensor bytes: [codebook K x D fp16 (learned types only)] [fp16 d_row per row] [rows]. A row of C
weights is cut into blocks of B weights, each block into vectors of D consecutive weights; a block is
one scale byte s then B/D index bytes, each an index into a codebook of K = 256 entries of D values:
    w[b*B + v*D + j] = d_row * SCALE[s_b] * codebook[idx[b, v], j]
with SCALE[0] = 0 and SCALE[s] = 2^((s - 255) / 16)."""
import numpy as np
from numba import njit, prange

from .base import QuantType
from .fp16 import read_f16

K = 256
# name: (D, B, learned codebook)
PARAMS = {
    "cbk2": (4, 64, True),    # 2 bits/weight of indices + 1/8 of scales
    "cbk4": (2, 32, True),    # 4 bits/weight of indices + 1/4 of scales
    "d4l2": (4, 32, False),   # 2 bits/weight of indices + 1/4 of scales, fixed lattice codebook
}
SCALE = np.concatenate([[0.0], np.exp2((np.arange(1, 256) - 255) / 16.0)]).astype(np.float32)


def d4_lattice_codebook() -> np.ndarray:
    """The 256 points of smallest norm of the D4 lattice {z in Z^4 : sum(z) even}, ordered by
    (squared norm, then the point's coordinates lexicographically ascending). No storage: every reader
    derives it. (D4 is closed under every sign flip, so signs cost nothing extra.)"""
    r = np.arange(-4, 5)
    z = np.stack(np.meshgrid(r, r, r, r, indexing="ij"), -1).reshape(-1, 4)
    p = z[z.sum(1) % 2 == 0].astype(np.float64)
    n2 = (p * p).sum(1)
    order = np.lexsort(tuple(p[:, j] for j in range(3, -1, -1)) + (n2,))
    return np.ascontiguousarray(p[order[:K]], dtype=np.float32)


D4_CODEBOOK = d4_lattice_codebook()


def layout(name, shape):
    """(codebook bytes, prefix bytes, row bytes, rows)."""
    D, B, learned = PARAMS[name]
    cols = shape[-1]
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    cbb = K * D * 2 if learned else 0
    return cbb, cbb + 2 * rows, cols // B * (1 + B // D), rows


# ----------------------------------------------------------------------------- decoding

@njit(cache=True)
def _dq_row(cb, D, B, d, raw, out):
    cols = out.shape[0]
    nb = cols // B
    nv = B // D
    for b in range(nb):
        sc = d * SCALE_NB[raw[b * (nv + 1)]]
        base = b * (nv + 1) + 1
        for v in range(nv):
            k = np.int64(raw[base + v])
            for j in range(D):
                out[b * B + v * D + j] = sc * cb[k, j]


SCALE_NB = SCALE   # a global array: Numba freezes it as a constant


@njit(parallel=True, fastmath=True, cache=True)
def _matmul(cb, D, B, dr, raw, x, y):
    """y[t, r] = dot(W[r], x[t]). One token: a fused decode-dot (each index byte read once, the
    codebook entry dotted with x, then scaled per block). More tokens: the row is decoded once into a
    thread-local buffer and reused."""
    rows = raw.shape[0]
    n, cols = x.shape
    nb = cols // B
    nv = B // D
    if n == 1:
        for r in prange(rows):
            acc = np.float32(0.0)
            for b in range(nb):
                s = np.float32(0.0)
                base = b * (nv + 1) + 1
                for v in range(nv):
                    k = np.int64(raw[r, base + v])
                    o = b * B + v * D
                    for j in range(D):
                        s += cb[k, j] * x[0, o + j]
                acc += SCALE_NB[raw[r, b * (nv + 1)]] * s
            y[0, r] = dr[r] * acc
        return
    for r in prange(rows):
        w = np.empty(cols, np.float32)
        _dq_row(cb, D, B, dr[r], raw[r], w)
        for t in range(n):
            s = np.float32(0.0)
            for i in range(cols):
                s += w[i] * x[t, i]
            y[t, r] = s


@njit(parallel=True, cache=True)
def _dequant_rows(cb, D, B, dr, raw, ids, out):
    for t in prange(ids.shape[0]):
        _dq_row(cb, D, B, dr[ids[t]], raw[ids[t]], out[t])


class Bound:
    """A cbk*/d4l2 tensor bound to its codebook for the runtime."""

    def __init__(self, name, flat, shape):
        D, B, learned = PARAMS[name]
        cbb, prefix, rb, rows = layout(name, shape)
        if learned:
            self.cb = np.ascontiguousarray(flat[:cbb]).view("<f2").astype(np.float32).reshape(K, D)
        else:
            self.cb = D4_CODEBOOK
        self.dr = np.ascontiguousarray(flat[cbb:prefix]).view("<f2").astype(np.float32)
        self.D, self.B, self.cols = D, B, shape[-1]
        self.raw = flat[prefix:prefix + rows * rb].reshape(rows, rb)

    def matmul(self, x, y):
        if x.shape[0] >= 4:   # a prompt: decode 256 rows at a time, multiply with BLAS
            x = np.ascontiguousarray(x, np.float32)
            rows = self.raw.shape[0]
            for r0 in range(0, rows, 256):
                ids = np.arange(r0, min(r0 + 256, rows))
                y[:, r0:r0 + len(ids)] = x @ self.gather(ids).T   # (matmul into a strided out skips BLAS)
            return
        _matmul(self.cb, self.D, self.B, self.dr, self.raw, np.ascontiguousarray(x, np.float32), y)

    def gather(self, ids):
        out = np.empty((len(ids), self.cols), np.float32)
        _dequant_rows(self.cb, self.D, self.B, self.dr, self.raw, np.asarray(ids, np.int64), out)
        return out

    def dequantize(self):
        return self.gather(np.arange(self.raw.shape[0]))


# ----------------------------------------------------------------------------- quantization

@njit(parallel=True, cache=True)
def _assign(V, Hw, cb, pen, idx, err):
    """idx[i] = argmin_k sum_j Hw[i,j] (V[i,j] - cb[k,j])^2 + pen[k]."""
    N, D = V.shape
    for i in prange(N):
        best, bk = 1e300, 0
        for k in range(cb.shape[0]):
            e = pen[k]
            for j in range(D):
                t = V[i, j] - cb[k, j]
                e += Hw[i, j] * t * t
            if e < best:
                best, bk = e, k
        idx[i] = bk
        err[i] = best - pen[bk]


@njit(cache=True)
def _update(V, Hw, idx, cb, counts):
    num = np.zeros(cb.shape)
    den = np.zeros(cb.shape)
    counts[:] = 0
    for i in range(V.shape[0]):
        k = idx[i]
        counts[k] += 1
        for j in range(V.shape[1]):
            num[k, j] += Hw[i, j] * V[i, j]
            den[k, j] += Hw[i, j]
    for k in range(cb.shape[0]):
        for j in range(cb.shape[1]):
            if den[k, j] > 0:
                cb[k, j] = num[k, j] / den[k, j]


def _penalty(counts, lam):
    if lam <= 0:
        return np.zeros(K)
    p = (counts + 0.5) / (counts.sum() + 0.5 * K)
    return lam * -np.log2(p)


def fit_codebook(V, Hw, iters=14, lam=0.0, seed=0, max_fit=65536):
    """Importance-weighted k-means (entropy-constrained when lam > 0) over normalized vectors."""
    rng = np.random.default_rng(seed)
    N = V.shape[0]
    sub = rng.choice(N, max_fit, replace=False) if N > max_fit else np.arange(N)
    Vs, Hs = np.ascontiguousarray(V[sub]), np.ascontiguousarray(Hw[sub])
    cb = Vs[rng.choice(len(Vs), K, replace=len(Vs) < K)].astype(np.float64).copy()
    idx = np.zeros(len(Vs), np.int64)
    err = np.zeros(len(Vs))
    counts = np.zeros(K, np.int64)
    pen = np.zeros(K)
    for it in range(iters):
        _assign(Vs, Hs, cb, pen, idx, err)
        _update(Vs, Hs, idx, cb, counts)
        empty = np.flatnonzero(counts == 0)
        if len(empty) and lam <= 0:   # re-seed empty cells at the worst-served vectors
            worst = np.argsort(err)[-len(empty):]
            cb[empty[:len(worst)]] = Vs[worst]   # (fewer vectors than empty cells: a tiny tensor)
        if lam > 0 and it >= 2:
            pen = _penalty(counts, lam)
    return cb, pen


def _f16_round(a):
    return np.asarray(a, np.float32).astype(np.float16).astype(np.float32)


def encode_scales(target):
    """target float[rows, nb] >= 0 -> (d_row fp16 as float32 [rows], s uint8 [rows, nb], actual scales)."""
    dmax = target.max(axis=1)
    d = _f16_round(dmax)
    d = np.where((d < dmax) & (d > 0), np.nextafter(d.astype(np.float16), np.float16(np.inf)).astype(np.float32), d)
    with np.errstate(divide="ignore", invalid="ignore"):
        s = np.round(255 + 16 * np.log2(target / np.where(d > 0, d, 1)[:, None]))
    s = np.where(target > 0, np.clip(s, 1, 255), 0).astype(np.uint8)
    return d, s, d[:, None] * SCALE[s]


def quantize_vq(name, w, imatrix=None, lam=0.0):
    """float32[rows, cols] -> uint8 tensor bytes (prefix + rows). `imatrix`: mean squared input per
    column (weights the squared error); `lam` > 0: entropy-constrained assignment (bits traded for
    error, for the Huffman-coded variants)."""
    f = fit_plain(name, w, imatrix, lam)
    return pack(name, f["shape"], f["cb"], f["d"], f["s"], f["idx"])


def _check_input(name, w, imatrix):
    """-> (float32[rows, cols] weights, importance float64[cols] normalized to mean 1)."""
    D, B, learned = PARAMS[name]
    w = np.ascontiguousarray(w, np.float32)
    if w.ndim != 2:
        w = w.reshape(-1, w.shape[-1])
    rows, cols = w.shape
    if cols % B:
        raise ValueError(f"{name}: row length {cols} is not a multiple of {B}")
    if not np.isfinite(w).all():
        raise ValueError(f"{name}: weights contain NaN or infinite values")
    h = np.ones(cols) if imatrix is None else np.asarray(imatrix, np.float64).reshape(-1)
    if h.shape[0] != cols:
        raise ValueError(f"{name}: importance vector has {h.shape[0]} values, rows have {cols}")
    h = np.maximum(h, 1e-6 * max(h.mean(), 1e-30)) if h.mean() > 0 else np.ones(cols)
    return w, h / h.mean()


def fit_plain(name, w, imatrix=None, lam=0.0):
    """The plain quantizer: scales, codebook (fp16-rounded, float64) and assignment. Returns a dict
    with shape, h (normalized importance), alpha (d4l2's lattice multiplier, 1 for learned
    codebooks), cb, pen (the entropy penalty per point, normalized units), d (row scales), s (scale
    codes [rows, nb]), scale (the blocks' actual scales) and idx (flat indices)."""
    D, B, learned = PARAMS[name]
    w, h = _check_input(name, w, imatrix)
    rows, cols = w.shape
    nb = cols // B
    W = w.astype(np.float64)
    blocks = W.reshape(rows, nb, B)
    hb = h.reshape(nb, B)
    sigma = np.sqrt((blocks ** 2 * hb).sum(-1) / hb.sum(-1))
    alpha = 1.0
    if not learned:   # the lattice's points are fixed: fit the one multiplier (folded into the scales)
        alpha = _best_alpha(blocks, hb, sigma)
    d, s, scale = encode_scales(sigma * alpha)
    V, Hw = _normalized(W, h, scale, B, D)
    cb, pen = fit_codebook(V, Hw, lam=lam) if learned else (D4_CODEBOOK.astype(np.float64), np.zeros(K))
    idx = np.zeros(len(V), np.int64)
    err = np.zeros(len(V))
    _assign(V, Hw, cb, pen, idx, err)
    # refit each block's scale by least squares for its chosen points, then reassign once
    C = cb[idx].reshape(rows, nb, B)
    num = (blocks * C * hb).sum(-1)
    den = (C * C * hb).sum(-1)
    ls = np.where(den > 0, num / np.where(den > 0, den, 1), 0)
    d, s, scale = encode_scales(np.maximum(ls, 0))
    V, Hw = _normalized(W, h, scale, B, D)
    _assign(V, Hw, cb, pen, idx, err)
    if learned:   # one more codebook update for the final assignment
        counts = np.zeros(K, np.int64)
        _update(V, Hw, idx, cb, counts)
        cb = cb.astype(np.float16).astype(np.float64)   # assign against the stored (fp16) points
        _assign(V, Hw, cb, pen, idx, err)
    return {"shape": (rows, cols), "h": h, "alpha": alpha, "cb": cb, "pen": pen, "d": d, "s": s,
            "scale": scale, "idx": idx}


def pack(name, shape, cb, d, s, idx):
    """The tensor bytes: codebook (learned types), fp16 row scales d, then per block the scale code
    s[r, b] and its B/D indices (idx: [rows * cols / D] in row order)."""
    D, B, learned = PARAMS[name]
    rows, cols = shape
    nb = cols // B
    cbb, prefix, rb, _ = layout(name, (rows, cols))
    out = np.zeros(prefix + rows * rb, np.uint8)
    if learned:
        out[:cbb] = np.asarray(cb).astype("<f2").reshape(-1).view(np.uint8)
    out[cbb:prefix] = np.asarray(d).astype("<f2").view(np.uint8)
    body = out[prefix:].reshape(rows, nb, 1 + B // D)
    body[:, :, 0] = s
    body[:, :, 1:] = np.asarray(idx).reshape(rows, nb, B // D).astype(np.uint8)
    return out


def _normalized(W, h, scale, B, D):
    rows, cols = W.shape
    sc = np.repeat(scale, B, axis=1)                      # [rows, cols]
    V = np.where(sc > 0, W / np.where(sc > 0, sc, 1), 0).reshape(-1, D)
    Hw = (h[None, :] * sc * sc).reshape(-1, D)
    m = Hw.mean()
    Hw = Hw / (m if m > 0 else 1)
    return np.ascontiguousarray(V), np.ascontiguousarray(Hw)


def _best_alpha(blocks, hb, sigma):
    rows, nb, B = blocks.shape
    sel = np.arange(rows)[: max(1, min(rows, 4096 // max(nb, 1) + 1))]
    W = blocks[sel].reshape(len(sel), -1)
    h = hb.reshape(-1)
    best, ba = np.inf, 1.0
    for a in np.linspace(0.2, 1.4, 25):
        _, _, scale = encode_scales(sigma[sel] * a)
        V, Hw = _normalized(W, h, scale, B, 4)
        idx = np.zeros(len(V), np.int64)
        err = np.zeros(len(V))
        _assign(V, Hw, D4_CODEBOOK.astype(np.float64), np.zeros(K), idx, err)
        e = err.sum()
        if e < best:
            best, ba = e, a
    return ba


def make_type(name):
    D, B, learned = PARAMS[name]

    def quantize(w, imatrix=None, **kw):
        return quantize_vq(name, w, imatrix, **kw)
    quantize.__name__ = f"quantize_{name}"

    def index_positions(cols):
        nv = B // D
        p = np.arange(cols // B * (1 + nv), dtype=np.int64)
        return p[p % (1 + nv) != 0]

    def dequant_row_unbound(raw, out):   # rows cannot be decoded without the tensor's side data
        raise ValueError("codebook types are decoded through bind()")

    def gptq(w, U, imatrix, lam=0.0):
        return gptq_quantize(name, w, U, imatrix, lam=lam)

    what = "learned k-means codebook (stored)" if learned else "fixed D4-lattice codebook (no storage)"
    return QuantType(name, B, 1 + B // D, quantize, dequant_row_unbound,
                     f"{D}-weight vectors as 1-byte indices into a {what}, u8 log scale per {B} weights, "
                     "fp16 row scale", prefix_bytes=lambda shape, n=name: layout(n, shape)[1],
                     bind=lambda flat, shape, n=name: Bound(n, flat, shape), index_positions=index_positions,
                     id=IDS[name], has_kernels=True, fallback=FALLBACK[name], candidate="opt-in", gptq=gptq)


IDS = {"cbk2": 9, "cbk4": 10, "d4l2": 11}
# Rows whose length is not a multiple of the block go to the k-quant of about the same size.
FALLBACK = {"cbk2": "q2_k", "cbk4": "q4_k", "d4l2": "q2_k"}


TYPES = [make_type(n) for n in PARAMS]


# ----------------------------------------------------------------------------- GPTQ (GPTVQ) quantization

HEADROOM = 2.0   # d_r = this x the plain fit's row scale: room for blocks that the error feedback enlarges


@njit(parallel=True, cache=True)
def _gptvq_block(W, U, A, ACb, cb32, c0, B, D, h, alpha, pen, zpen, dr, s_out, idx_out, err, Vn, Wn):
    """Quantize columns c0..c0+B of every row of W (float64, error-updated in place inside the
    block). Each row's block scale is fitted on the updated weights as the plain quantizer does
    (importance-weighted RMS -> assignment -> least squares), coded against d_r; then each D-vector
    is snapped to the codebook point nearest under the inverse-Hessian metric ||A_g (w - t c)||^2
    (A_g = U_gg^-T of its D columns, ACb[g] = A_g cb^T) plus the entropy penalty, and its error is
    fed to the block's later columns; err[r, i] receives (w - q) / U[c, c] for the lazy update.
    Vn, Wn: the vector each choice was made for, in codebook units, and its per-element weight
    (for a codebook refit)."""
    rows = W.shape[0]
    nv = B // D
    b = c0 // B
    nk = cb32.shape[0]
    for r in prange(rows):
        x = np.empty(B, np.float64)
        num = 0.0
        hs = 0.0
        for i in range(B):
            x[i] = W[r, c0 + i]
            num += h[c0 + i] * x[i] * x[i]
            hs += h[c0 + i]
        sigma = np.sqrt(num / hs) * alpha
        s = 0
        if sigma > 0.0:
            num = 0.0
            den = 0.0
            for v in range(nv):
                best, bk = 1e300, 0
                for k in range(nk):
                    e = 0.0
                    for j in range(D):
                        t = x[v * D + j] / sigma - cb32[k, j]
                        e += h[c0 + v * D + j] * t * t
                    if e < best:
                        best, bk = e, k
                for j in range(D):
                    c = cb32[bk, j]
                    num += h[c0 + v * D + j] * x[v * D + j] * c
                    den += h[c0 + v * D + j] * c * c
            ls = num / den if den > 0.0 else 0.0
            if ls > 0.0 and dr[r] > 0.0:
                s = int(np.rint(255.0 + 16.0 * np.log2(ls / dr[r])))
                s = min(max(s, 1), 255)
        s_out[r, b] = s
        t32 = np.float32(np.float32(dr[r]) * SCALE_NB[s])
        tt = np.float64(t32)
        y = np.empty(D, np.float64)
        for v in range(nv):
            g = (c0 + v * D) // D
            c = c0 + v * D
            for i in range(D):
                acc = 0.0
                for j in range(i + 1):
                    acc += A[g, i, j] * W[r, c + j]
                y[i] = acc
            best, bk = 1e300, 0
            for k in range(nk):
                e = zpen * pen[k]
                for i in range(D):
                    dl = y[i] - tt * ACb[g, k, i]
                    e += dl * dl
                if e < best:
                    best, bk = e, k
            idx_out[r, c // D] = bk
            for i in range(D):
                wv = W[r, c + i]
                if tt > 0.0:
                    Vn[r, c + i] = wv / tt
                    Wn[r, c + i] = tt * tt / (U[c + i, c + i] * U[c + i, c + i])
                q = np.float64(np.float32(t32 * np.float32(cb32[bk, i])))
                e = (wv - q) / U[c + i, c + i]
                err[r, v * D + i] = e
                for k2 in range(c + i + 1, c0 + B):
                    W[r, k2] -= e * U[c + i, k2]


def _gptvq_pass(name, w, U, h, alpha, cb, pen, zpen, dr):
    D, B, learned = PARAMS[name]
    rows, cols = w.shape
    ng = cols // D
    Ug = np.stack([U[g * D:(g + 1) * D, g * D:(g + 1) * D] for g in range(ng)])
    A = np.ascontiguousarray(np.transpose(np.linalg.inv(Ug), (0, 2, 1)))          # U_gg^-T, lower
    cb32 = np.ascontiguousarray(cb.astype(np.float32).astype(np.float64))
    ACb = np.ascontiguousarray(np.einsum("gij,kj->gki", A, cb32))
    W = w.astype(np.float64)
    s = np.zeros((rows, cols // B), np.uint8)
    idx = np.zeros((rows, ng), np.int64)
    Vn = np.zeros((rows, cols))
    Wn = np.zeros((rows, cols))
    for c0 in range(0, cols, B):
        err = np.zeros((rows, B))
        _gptvq_block(W, U, A, ACb, cb32, c0, B, D, h, float(alpha), pen, float(zpen), dr, s, idx, err, Vn, Wn)
        if c0 + B < cols:
            W[:, c0 + B:] -= err @ U[c0:c0 + B, c0 + B:]
    return s, idx, Vn, Wn


def gptq_quantize(name, w, U, imatrix=None, lam=0.0, refit=False):
    """cbk2/cbk4/d4l2 bytes (the ordinary layout) of float32[rows, cols] with GPTQ-style error
    feedback (GPTVQ): U = converters.gptq.inverse_cholesky(H). The codebook (learned types), the
    d4l2 lattice multiplier and the row scales' range come from the plain quantizer's fit; blocks
    are then quantized left to right as _gptvq_block describes. `refit`: update the codebook once
    from the first pass's vectors (weighted k-means step) and quantize again. `lam`: the entropy
    penalty of the .h variants, in the plain quantizer's normalized error units."""
    D, B, learned = PARAMS[name]
    f = fit_plain(name, w, imatrix, lam)
    w, h = _check_input(name, w, imatrix)
    rows, cols = w.shape
    if U.shape != (cols, cols):
        raise ValueError(f"{name}: inverse Cholesky factor is {list(U.shape)}, the weight has {cols} columns")
    dr = _f16_round(np.minimum(f["d"] * HEADROOM, 65504.0)).astype(np.float64)
    # the penalty's unit: the plain quantizer's mean weighted squared error unit, in output-error terms
    inv_u2 = (1.0 / np.diag(U) ** 2).reshape(cols // B, B).mean(-1)
    zpen = float((f["scale"] ** 2 * inv_u2[None, :]).mean()) if lam > 0 else 0.0
    cb = f["cb"]
    s, idx, Vn, Wn = _gptvq_pass(name, w, U, h, f["alpha"], cb, f["pen"], zpen, dr)
    if refit and learned:
        cb = cb.copy()
        counts = np.zeros(K, np.int64)
        _update(np.ascontiguousarray(Vn.reshape(-1, D)), np.ascontiguousarray(Wn.reshape(-1, D)),
                idx.reshape(-1), cb, counts)
        cb = cb.astype(np.float16).astype(np.float64)
        s, idx, _, _ = _gptvq_pass(name, w, U, h, f["alpha"], cb, f["pen"], zpen, dr)
    return pack(name, (rows, cols), cb, dr, s, idx)
