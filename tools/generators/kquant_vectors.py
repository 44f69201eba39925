"""The k-quant layouts (format_spec/types/kquants.md) as the vector generators need them: row sizes,
a dequantizer written from that document alone, and random but finite blocks. Shared by
make_vectors.py and codebook_vectors.py (q4_k.h codes q4_k's bytes), which is why it is its own module.
"""
import struct

import numpy as np

# ----------------------------------------------------------------------------- k-quants (types/kquants.md)

# name: (block bytes, offset of d, offset of dmin or None, tail sub-block size S, bits b, tail header bytes,
#        tail scale bytes per sub-block)
KQ = {"q2_k": (84, 80, 82, 16, 2, 4, 1), "q3_k": (110, 108, None, 16, 3, 2, 1), "q4_k": (144, 0, 2, 32, 4, 4, 2),
      "q5_k": (176, 0, 2, 32, 5, 4, 2), "q6_k": (210, 208, None, 16, 6, 2, 1)}
QK_K = 256


def kq_tail_bytes(typ, r):
    _, _, _, S, b, head, sps = KQ[typ]
    nsub = -(-r // S)
    return head + nsub * (sps + S * b // 8)


def kq_row_bytes(typ, n):
    return n // QK_K * KQ[typ][0] + (kq_tail_bytes(typ, n % QK_K) if n % QK_K else 0)


def _f16(b, o):
    return np.frombuffer(bytes(b[o:o + 2]), "<f2")[0].astype(np.float32)


F = np.float32


def _affine(d, dmin, sc, m, q):
    return (d * F(sc)) * F(q) - dmin * F(m)   # numpy float32 scalars: rounded after every operation


def _kq_block(typ, b):
    y = []
    if typ == "q2_k":
        d, dmin = _f16(b, 80), _f16(b, 82)
        for e in range(QK_K):
            h, j, l = e // 128, e % 128 // 32, e % 32
            s = b[e // 16]
            y.append(_affine(d, dmin, s & 15, s >> 4, (b[16 + 32 * h + l] >> (2 * j)) & 3))
    elif typ == "q3_k":
        d, K = _f16(b, 108), b[96:108]

        def sc(j):
            lo = K[j] & 15 if j < 8 else K[j - 8] >> 4
            return (lo | (((K[8 + j % 4] >> (2 * (j // 4))) & 3) << 4)) - 32
        for e in range(QK_K):
            h, j, l = e // 128, e % 128 // 32, e % 32
            low, high = (b[32 + 32 * h + l] >> (2 * j)) & 3, (b[l] >> (e // 32)) & 1
            y.append((d * F(sc(e // 16))) * F(low - (0 if high else 4)))
    elif typ in ("q4_k", "q5_k"):
        d, dmin, K = _f16(b, 0), _f16(b, 2), b[4:16]

        def scm(j):
            if j < 4:
                return K[j] & 63, K[j + 4] & 63
            return (K[j + 4] & 15) | ((K[j - 4] >> 6) << 4), (K[j + 4] >> 4) | ((K[j] >> 6) << 4)
        qs = 16 if typ == "q4_k" else 48
        for e in range(QK_K):
            c, t, l, j = e // 64, e % 64 // 32, e % 32, e // 32
            q = (b[qs + 32 * c + l] >> (4 * t)) & 15
            if typ == "q5_k":
                q |= ((b[16 + l] >> j) & 1) << 4
            s, m = scm(j)
            y.append(_affine(d, dmin, s, m, q))
    else:
        d = _f16(b, 208)
        for e in range(QK_K):
            h, f = e // 128, e % 128
            k, l = f // 32, f % 32
            low, high = (b[64 * h + f % 64] >> (4 * (f // 64))) & 15, (b[128 + 32 * h + l] >> (2 * k)) & 3
            sc = b[192 + e // 16] - 256 * (b[192 + e // 16] > 127)
            y.append((d * F(sc)) * F((low | (high << 4)) - 32))
    return y


def _kq_tail(typ, b, r):
    _, _, dmin_off, S, bits, head, sps = KQ[typ]
    nsub = -(-r // S)
    d = _f16(b, 0)
    dmin = _f16(b, 2) if dmin_off is not None else None
    sc0, qs = head, head + nsub * sps
    y = []
    for i in range(r):
        j = i // S
        q = sum(((b[qs + (i * bits + k) // 8] >> ((i * bits + k) % 8)) & 1) << k for k in range(bits))
        s = b[sc0 + j]
        if typ == "q2_k":
            y.append(_affine(d, dmin, s & 15, s >> 4, q))
        elif typ == "q3_k":
            y.append((d * F(s - 32)) * F(q - 4))
        elif typ in ("q4_k", "q5_k"):
            y.append(_affine(d, dmin, s, b[sc0 + nsub + j], q))
        else:
            y.append((d * F(s - 256 * (s > 127))) * F(q - 32))
    return y


def kq_dequantize(typ, shape, raw):
    n = shape[-1]
    rb = kq_row_bytes(typ, n)
    assert len(raw) % rb == 0
    out = []
    with np.errstate(all="ignore"):   # infinite or NaN d/dmin are part of the vectors
        for r0 in range(0, len(raw), rb):
            row = raw[r0:r0 + rb]
            for b0 in range(0, n // QK_K * KQ[typ][0], KQ[typ][0]):
                out += _kq_block(typ, row[b0:b0 + KQ[typ][0]])
            if n % QK_K:
                out += _kq_tail(typ, row[n // QK_K * KQ[typ][0]:], n % QK_K)
    return np.array(out, np.float32)


def kq_random(rng, typ, rows, n, d_bits=None, padding_bits=False):
    """Random bytes for rows of n weights, with every d/dmin set to a modest binary16 (or d_bits[row])
    so values stay finite unless asked, and tail padding quants zeroed (unless padding_bits)."""
    bb, d_off, dmin_off, S, bits, head, sps = KQ[typ]
    rb = kq_row_bytes(typ, n)
    out = bytearray(rng.randint(0, 256, rows * rb).astype(np.uint8).tobytes())
    for r in range(rows):
        starts = [(r * rb + k * bb, d_off, dmin_off) for k in range(n // QK_K)]
        if n % QK_K:
            starts.append((r * rb + n // QK_K * bb, 0, 2 if dmin_off is not None else None))
        for base, do, mo in starts:
            d = d_bits[r] if d_bits is not None else int(np.float16(rng.uniform(0.001, 0.05)).view(np.uint16))
            out[base + do:base + do + 2] = struct.pack("<H", d)
            if mo is not None:
                out[base + mo:base + mo + 2] = struct.pack("<H", int(np.float16(rng.uniform(0.0, 0.05)).view(np.uint16)))
        rem = n % QK_K
        if rem and not padding_bits:
            nsub = -(-rem // S)
            qs = r * rb + n // QK_K * bb + head + nsub * sps
            for p in range(rem * bits, nsub * S * bits):
                out[qs + p // 8] &= ~(1 << (p % 8)) & 0xFF
    return bytes(out)
