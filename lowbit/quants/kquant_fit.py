"""Numba search for k-quant parameters: per sub-block scales (and mins) fitted by weighted least
squares over a grid of candidate inverse scales, then the super-block scale chosen among
candidates by the weighted squared error of the whole block after every scale is quantized.

Everything here works on one virtual super-block of 256 floats `x` with weights `w` (w = 0 for
padding), and reports integer parameters; packing into bytes is kquants.py's job."""
import math

import numpy as np
from numba import njit

from .fp16 import f16_bits_to_f32


@njit(cache=True)
def f16_bits(x):
    """IEEE binary16 bits of float x, rounded to nearest even (overflow -> inf)."""
    if x != x:
        return 0x7E00
    sign = 0x8000 if x < 0 else 0
    a = abs(x)
    if a == 0.0:
        return sign
    m, e = math.frexp(a)          # a = m * 2^e, m in [0.5, 1)
    E = e - 1
    if E < -14:                   # subnormal: quantum 2^-24
        q = int(np.rint(a * 16777216.0))
        return sign | q
    q = int(np.rint(a * 2.0 ** (10 - E)))   # in [1024, 2048]
    bits = ((E + 15) << 10) + (q - 1024)
    if bits >= 0x7C00:
        return sign | 0x7C00
    return sign | bits


@njit(cache=True)
def f16_round(x):
    return np.float32(f16_bits_to_f32(f16_bits(x)))


# ----------------------------------------------------------------------------- sub-block fits

@njit(cache=True)
def fit_affine(x, w, lo, n, nmax, search):
    """(scale >= 0, minv <= 0) so that x ~ scale * L + minv with integer L in 0..nmax, minimizing
    sum w (scale L + minv - x)^2 over a grid of inverse scales, each refined by least squares."""
    xmin, xmax = x[lo], x[lo]
    sw = 0.0
    for i in range(lo, lo + n):
        xmin = min(xmin, x[i])
        xmax = max(xmax, x[i])
        sw += w[i]
    if xmin > 0.0:
        xmin = 0.0
    if xmax <= xmin:
        return 0.0, xmin
    plain_scale = (xmax - xmin) / nmax
    if not search or sw <= 0.0:
        return plain_scale, xmin
    best_err = np.inf
    best_s, best_m = plain_scale, xmin
    nstep = 20
    for k in range(-1, nstep + 1):
        iscale = nmax / (xmax - xmin) if k < 0 else (nmax - 1.0 + 0.1 * k) / (xmax - xmin)
        sl, sl2, sx, slx = 0.0, 0.0, 0.0, 0.0
        for i in range(lo, lo + n):
            q = min(max(np.rint(iscale * (x[i] - xmin)), 0.0), nmax)
            sl += w[i] * q
            sl2 += w[i] * q * q
            sx += w[i] * x[i]
            slx += w[i] * q * x[i]
        D = sw * sl2 - sl * sl
        if D <= 0.0:
            continue
        s = (sw * slx - sx * sl) / D
        mn = (sl2 * sx - sl * slx) / D
        if mn > 0.0:
            mn = 0.0
            s = slx / sl2
        if s <= 0.0:
            continue
        err = 0.0
        for i in range(lo, lo + n):
            q = min(max(np.rint((x[i] - mn) / s), 0.0), nmax)
            e = s * q + mn - x[i]
            err += w[i] * e * e
        if err < best_err:
            best_err, best_s, best_m = err, s, mn
    return best_s, best_m


@njit(cache=True)
def fit_symmetric(x, w, lo, n, qmin, qmax, search):
    """Signed scale s so that x ~ s * L with integer L in qmin..qmax (qmin = -qmax - 1): the value
    of largest magnitude maps near qmin, the side with one more level."""
    amax, maxv = 0.0, 0.0
    for i in range(lo, lo + n):
        if abs(x[i]) > amax:
            amax, maxv = abs(x[i]), x[i]
    if amax == 0.0:
        return 0.0
    nm = -qmin
    if not search:
        return maxv / -nm
    best, best_s = -1.0, maxv / -nm
    for k in range(-12, 13):
        iscale = -(nm + 0.1 * k) / maxv
        slx, sl2 = 0.0, 0.0
        for i in range(lo, lo + n):
            q = min(max(np.rint(iscale * x[i]), qmin), qmax)
            slx += w[i] * q * x[i]
            sl2 += w[i] * q * q
        if sl2 > 0.0 and slx * slx > best * sl2:
            best = slx * slx / sl2
            best_s = slx / sl2
    return best_s


# ----------------------------------------------------------------------------- block errors

@njit(cache=True)
def sub_err_affine(x, w, lo, n, ds, dm, nmax, L, store):
    err = 0.0
    for i in range(lo, lo + n):
        q = min(max(np.rint((x[i] + dm) / ds), 0.0), nmax) if ds > 0.0 else 0.0
        e = ds * q - dm - x[i]
        err += w[i] * e * e
        if store:
            L[i] = int(q)
    return err


@njit(cache=True)
def sub_err_sym(x, w, lo, n, ds, qmin, qmax, L, store):
    err = 0.0
    for i in range(lo, lo + n):
        q = min(max(np.rint(x[i] / ds), qmin), qmax) if ds != 0.0 else 0.0
        e = ds * q - x[i]
        err += w[i] * e * e
        if store:
            L[i] = int(q) - qmin     # stored unsigned
    return err


@njit(cache=True)
def _q_scale(v, d, lo, hi):
    if d == 0.0:
        return 0
    return int(min(max(np.rint(v / d), lo), hi))


@njit(cache=True)
def _affine_total(x, w, nsub, S, nmax, scmax, scales, mins, d, dmin):
    err = 0.0
    for j in range(nsub):
        sc = _q_scale(scales[j], d, 0, scmax)
        m = _q_scale(mins[j], dmin, 0, scmax)
        err += sub_err_affine(x, w, j * S, S, np.float32(d * sc), np.float32(dmin * m), nmax, x, False)
    return err


# super-block scale candidates: multiples of the max-based scale
CAND = np.array([1.0, 1.03, 0.97, 0.94, 0.91, 0.88, 0.85, 0.82])


@njit(cache=True)
def fit_affine_block(x, w, nsub, S, nmax, scmax, search, sc, m, L, scales, mins):
    """Affine super-block (q2_k, q4_k, q5_k). Fills sc[j], m[j] (0..scmax), L (0..nmax);
    returns the fp16 bits of d and dmin. Weight = d*sc*L - dmin*m."""
    max_s, max_m = 0.0, 0.0
    for j in range(nsub):
        s, mn = fit_affine(x, w, j * S, S, nmax, search)
        scales[j], mins[j] = s, -mn
        max_s = max(max_s, s)
        max_m = max(max_m, -mn)
    d = f16_round(max_s / scmax)
    dmin = f16_round(max_m / scmax)
    if search:
        best = _affine_total(x, w, nsub, S, nmax, scmax, scales, mins, d, dmin)
        d0 = max_s / scmax
        for c in range(1, CAND.shape[0]):
            dc = f16_round(d0 * CAND[c])
            e = _affine_total(x, w, nsub, S, nmax, scmax, scales, mins, dc, dmin)
            if e < best:
                best, d = e, dc
        m0 = max_m / scmax
        for c in range(1, CAND.shape[0]):
            mc = f16_round(m0 * CAND[c])
            e = _affine_total(x, w, nsub, S, nmax, scmax, scales, mins, d, mc)
            if e < best:
                best, dmin = e, mc
    for j in range(nsub):
        s0 = _q_scale(scales[j], d, 0, scmax)
        m0i = _q_scale(mins[j], dmin, 0, scmax)
        bs, bm = s0, m0i
        if search:   # the rounded sub-scales are not always the best pair: try neighbours
            best = np.inf
            for a in range(max(s0 - 1, 0), min(s0 + 1, scmax) + 1):
                for b in range(max(m0i - 1, 0), min(m0i + 1, scmax) + 1):
                    e = sub_err_affine(x, w, j * S, S, np.float32(d * a), np.float32(dmin * b), nmax, L, False)
                    if e < best:
                        best, bs, bm = e, a, b
        sc[j], m[j] = bs, bm
        sub_err_affine(x, w, j * S, S, np.float32(d * bs), np.float32(dmin * bm), nmax, L, True)
    return f16_bits(d), f16_bits(dmin)


@njit(cache=True)
def _sym_total(x, w, nsub, S, qmin, qmax, scmin, scmax, scales, d):
    err = 0.0
    for j in range(nsub):
        sc = _q_scale(scales[j], d, scmin, scmax)
        err += sub_err_sym(x, w, j * S, S, np.float32(d * sc), qmin, qmax, x, False)
    return err


@njit(cache=True)
def fit_symmetric_block(x, w, nsub, S, qmin, qmax, scmin, scmax, search, sc, L, scales):
    """Symmetric super-block (q3_k, q6_k). Fills sc[j] (scmin..scmax, signed), L (q - qmin);
    returns the fp16 bits of d. Weight = d*sc*(L + qmin)."""
    amax, maxs = 0.0, 0.0
    for j in range(nsub):
        s = fit_symmetric(x, w, j * S, S, qmin, qmax, search)
        scales[j] = s
        if abs(s) > amax:
            amax, maxs = abs(s), s
    d0 = maxs / scmin if amax > 0.0 else 0.0
    d = f16_round(d0)
    if search and amax > 0.0:
        best = _sym_total(x, w, nsub, S, qmin, qmax, scmin, scmax, scales, d)
        for c in range(1, CAND.shape[0]):
            dc = f16_round(d0 * CAND[c])
            e = _sym_total(x, w, nsub, S, qmin, qmax, scmin, scmax, scales, dc)
            if e < best:
                best, d = e, dc
    for j in range(nsub):
        s0 = _q_scale(scales[j], d, scmin, scmax)
        bs = s0
        if search:
            best = np.inf
            for a in range(max(s0 - 1, scmin), min(s0 + 1, scmax) + 1):
                e = sub_err_sym(x, w, j * S, S, np.float32(d * a), qmin, qmax, L, False)
                if e < best:
                    best, bs = e, a
        sc[j] = bs
        sub_err_sym(x, w, j * S, S, np.float32(d * bs), qmin, qmax, L, True)
    return f16_bits(d)
