"""Test vectors for the codebook types (cbk2, cbk4, d4l2; format_spec/types/codebook.md) and the
entropy-coded types (<base>.h; format_spec/types/huffman.md), used by tools/generators/make_vectors.py.

The decoders here are written from those two documents alone (bit-by-bit Huffman decoding, the
lattice enumerated by brute force, SCALE from its 16 listed constants), independently of the
runtime's Numba kernels and of lowbit.quants.huffman; the hand-made streams are encoded here too."""
import struct

import numpy as np

from tools.generators.kquant_vectors import kq_random, kq_row_bytes

F = np.float32

# ----------------------------------------------------------------------------- codebook types

VQ = {"cbk2": (4, 64, True), "cbk4": (2, 32, True), "d4l2": (4, 32, False)}   # D, B, learned codebook
# 2^(r/16), r = 0..15, correctly rounded to float32 (codebook.md lists these bit patterns)
SCALE_FRAC_BITS = [0x3f800000, 0x3f85aac3, 0x3f8b95c2, 0x3f91c3d3, 0x3f9837f0, 0x3f9ef532, 0x3fa5fed7, 0x3fad583f,
                   0x3fb504f3, 0x3fbd08a4, 0x3fc5672a, 0x3fce248c, 0x3fd744fd, 0x3fe0ccdf, 0x3feac0c7, 0x3ff5257d]


def scale_table():
    out = np.zeros(256, np.float32)
    for s in range(1, 256):
        q, r = divmod(s - 255, 16)   # floor division: s - 255 = 16 q + r, 0 <= r < 16
        out[s] = np.array([SCALE_FRAC_BITS[r]], "<u4").view("<f4")[0] * F(2.0 ** q)
    return out


def d4_points():
    pts = [(a, b, c, d) for a in range(-3, 4) for b in range(-3, 4) for c in range(-3, 4) for d in range(-3, 4)
           if (a + b + c + d) % 2 == 0 and a * a + b * b + c * c + d * d <= 10]
    pts.sort(key=lambda z: (sum(x * x for x in z), z))
    return np.array(pts[:256], np.float32)


def vq_layout(typ, shape):
    """(codebook bytes, prefix bytes, row bytes, rows)."""
    D, B, learned = VQ[typ]
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    cbb = 256 * D * 2 if learned else 0
    return cbb, cbb + 2 * rows, shape[-1] // B * (1 + B // D), rows


def vq_dequantize(typ, shape, raw):
    D, B, learned = VQ[typ]
    cbb, prefix, rb, rows = vq_layout(typ, shape)
    raw = np.frombuffer(bytes(raw), np.uint8)
    assert raw.size == prefix + rows * rb
    P = raw[:cbb].view("<f2").astype(np.float32).reshape(256, D) if learned else d4_points()
    d = raw[cbb:prefix].view("<f2").astype(np.float32)
    body = raw[prefix:].reshape(rows, shape[-1] // B, 1 + B // D)
    with np.errstate(all="ignore"):
        sc = d[:, None] * scale_table()[body[..., 0]]                 # float32 products, one rounding each
        w = sc[..., None, None] * P[body[..., 1:].astype(np.int64)]   # then times the point's value
    return w.reshape(-1).astype(np.float32)


def f16(values):
    return np.asarray(values, np.uint16).astype("<u2").tobytes()


def vq_bytes(typ, rows, cols, codebook_bits=None, d_bits=None, body=None, rng=None):
    """A codebook tensor from its parts; missing parts are random (codebook: binary16 normals of
    modest size, d: 0.001 .. 0.05, body: random scale and index bytes)."""
    D, B, learned = VQ[typ]
    cbb, prefix, rb, _ = vq_layout(typ, (rows, cols))
    cb = b""
    if learned:
        cb = np.asarray(rng.randn(256 * D) * 0.7, np.float16).tobytes() if codebook_bits is None else f16(codebook_bits)
        assert len(cb) == cbb
    d = (np.asarray(rng.uniform(0.001, 0.05, rows), np.float16).tobytes() if d_bits is None else f16(d_bits))
    body = rng.randint(0, 256, rows * rb).astype(np.uint8).tobytes() if body is None else bytes(body)
    assert len(body) == rows * rb
    return cb + d + body


# ----------------------------------------------------------------------------- entropy-coded types

def index_mask(base, cols):
    """Which bytes of a base-type row are index bytes (huffman.md's table)."""
    if base in VQ:
        D, B, _ = VQ[base]
        rb = cols // B * (1 + B // D)
        return np.arange(rb) % (1 + B // D) != 0
    # q4_k: bytes 16..143 of every whole super-block
    p = np.arange(kq_row_bytes("q4_k", cols))
    m = (p < cols // 256 * 144) & (p % 144 >= 16)
    if base == "q4_ke" and cols % 256:      # and the tail block's packed quants: t + 4 + 2 nsub .. t + 4 + 18 nsub - 1
        t, nsub = cols // 256 * 144, -(-(cols % 256) // 32)
        m |= (p >= t + 4 + 2 * nsub) & (p <= t + 4 + 18 * nsub - 1)
    return m


def base_prefix(base, shape):
    return vq_layout(base, shape)[1] if base in VQ else 0


def canonical_codes(lengths):
    codes, code, prev = {}, 0, 0
    for s in sorted((s for s in range(256) if lengths[s]), key=lambda s: (lengths[s], s)):
        code <<= lengths[s] - prev
        prev = lengths[s]
        codes[s] = code
        code += 1
    return codes


def pack_bits(symbols, lengths):
    codes, bits = canonical_codes(lengths), []
    for s in symbols:
        bits += [(codes[s] >> k) & 1 for k in range(lengths[s] - 1, -1, -1)]
    bits += [0] * (-len(bits) % 8)
    return bytes(int("".join(map(str, bits[i:i + 8])), 2) for i in range(0, len(bits), 8))


def huff_encode(base, shape, raw, lengths=None, chunks=None):
    """Base-type tensor bytes -> `<base>.h` bytes. `lengths`: the code (default: from symbol counts by
    lowbit's encoder); `chunks(r, packed) -> bytes` may replace a row's chunk (damaged streams)."""
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    raw = np.frombuffer(bytes(raw), np.uint8)
    P = base_prefix(base, shape)
    body = raw[P:].reshape(rows, -1)
    m = index_mask(base, shape[-1])
    sym = body[:, m]
    if lengths is None:
        from lowbit.quants import huffman
        lengths = [int(x) for x in huffman.code_lengths(np.bincount(sym.reshape(-1), minlength=256))]
    stream, offsets = b"", [0]
    for r in range(rows):
        c = pack_bits(sym[r], lengths)
        if chunks is not None:
            c = chunks(r, c)
        stream += c
        offsets.append(len(stream))
    head = struct.pack("<IIIIQ", rows, int(m.sum()), int((~m).sum()), P, len(stream)) + bytes(lengths)
    return head + struct.pack(f"<{rows + 1}I", *offsets) + raw[:P].tobytes() + body[:, ~m].tobytes() + stream


def huff_decode(typ, shape, raw):
    """`<base>.h` bytes -> the base type's bytes, decoding one bit at a time (huffman.md)."""
    base = typ[:-2]
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    R, n_idx, n_other, P, S = struct.unpack_from("<IIIIQ", raw, 0)
    lengths = list(raw[24:280])
    by_code = {(lengths[s], c): s for s, c in canonical_codes(lengths).items()}
    off = struct.unpack_from(f"<{R + 1}I", raw, 280)
    o = 284 + 4 * R
    prefix, o = raw[o:o + P], o + P
    other, o = np.frombuffer(raw[o:o + R * n_other], np.uint8).reshape(R, n_other), o + R * n_other
    stream = raw[o:o + S]
    m = index_mask(base, shape[-1])
    out = bytearray(prefix)
    for r in range(rows):
        chunk = stream[off[r]:off[r + 1]]
        bit, idx = 0, []
        for _ in range(n_idx):
            code, n = 0, 0
            while (n, code) not in by_code:   # a complete code ends every path within 12 bits
                b = (chunk[bit >> 3] >> (7 - (bit & 7))) & 1 if bit >> 3 < len(chunk) else 0
                code, n, bit = code * 2 + b, n + 1, bit + 1
            idx.append(by_code[n, code])
        row = np.zeros(m.size, np.uint8)
        row[m], row[~m] = idx, other[r]
        out += row.tobytes()
    return bytes(out)


def dequantize(typ, shape, raw, kq_dequantize):
    if typ in VQ:
        return vq_dequantize(typ, shape, raw)
    if typ == "q4_ke":   # q4_ke.md: q4_k's bytes and dequantization
        return kq_dequantize("q4_k", shape, bytes(raw))
    if typ.endswith(".h") and (typ[:-2] in VQ or typ[:-2] in ("q4_k", "q4_ke")):
        base = typ[:-2]
        b = huff_decode(typ, shape, bytes(raw))
        return vq_dequantize(base, shape, b) if base in VQ else kq_dequantize("q4_k", shape, b)
    return None


# ----------------------------------------------------------------------------- the vectors

# special binary16 values: 0, -0, 1, -1, subnormals, smallest normal, largest, infinities, NaN, 1/3
SPECIAL = [0x0000, 0x8000, 0x3C00, 0xBC00, 0x0001, 0x8001, 0x03FF, 0x0400, 0x7BFF, 0xFBFF, 0x7C00, 0xFC00, 0x7E00, 0x3555]


def special_codebook(rng, D):
    bits = list(np.asarray(rng.randn(256 * D) * 0.7, np.float16).view(np.uint16))
    bits[:len(SPECIAL)] = SPECIAL           # the first points carry every special value
    return bits


def special_body(rng, typ, rows, cols, scale_bytes):
    """Random index bytes; block scale bytes given per row (0: scale 0, 1: the smallest, 255: 1)."""
    D, B, _ = VQ[typ]
    rb = cols // B * (1 + B // D)
    body = rng.randint(0, 256, (rows, rb)).astype(np.uint8)
    body[:, 0::1 + B // D] = np.array(scale_bytes, np.uint8)[:, None]
    body[0, 1:1 + 8] = np.arange(8)         # the special points first
    return body.tobytes()


def valid(rng, add):
    from lowbit import quants   # the real quantizers, for the "matrix" tensors

    def quant(typ, w):
        return np.asarray(quants.TYPES[typ].quantize(np.ascontiguousarray(w, np.float32))).tobytes()

    for typ, (D, B, learned) in VQ.items():
        cols_all = 256 * B // (B // D) // 2    # two rows of blocks hold every index value 0..255 once
        all_body = bytearray(rng.randint(0, 256, 2 * vq_layout(typ, (2, cols_all))[2]).astype(np.uint8).tobytes())
        nv = B // D
        for k in range(256):                  # row r, block b, vector v <- index value k
            r, rest = divmod(k, 128)
            b, v = divmod(rest, nv)
            all_body[r * vq_layout(typ, (2, cols_all))[2] + b * (1 + nv) + 1 + v] = k
        tensors = [
            ("special", typ, (3, B), vq_bytes(typ, 3, B, special_codebook(rng, D) if learned else None,
                                              d_bits=[0x3C00, 0x8001, 0x7BFF],
                                              body=special_body(rng, typ, 3, B, [255, 0, 1]), rng=rng)),
            ("special_d", typ, (4, B), vq_bytes(typ, 4, B, d_bits=[0x7C00, 0x7E00, 0x0000, 0xFC00], rng=rng)),
            ("every_index", typ, (2, cols_all), vq_bytes(typ, 2, cols_all, body=bytes(all_body), rng=rng)),
            ("matrix", typ, (8, 2 * B), quant(typ, rng.randn(8, 2 * B))),
        ]
        if typ != "cbk2":   # (cbk2's 2 KiB codebooks would take its file over the vectors' 11 KB)
            tensors += [("cube", typ, (2, 1, 3, B), vq_bytes(typ, 6, B, rng=rng)),   # rows = 2 * 1 * 3: a row scale each
                        ("vector", typ, (2 * B,), vq_bytes(typ, 1, 2 * B, rng=rng))]  # one-dimensional: one row
        if not learned:   # index k in order with d = 1 and s = 255: the dequantized tensor is the lattice
            lattice_body = bytearray()
            for b in range(256 // nv):
                lattice_body += bytes([255]) + bytes(range(b * nv, b * nv + nv))
            tensors.insert(0, ("lattice", typ, (1, 256 * D), vq_bytes(typ, 1, 256 * D, d_bits=[0x3C00], body=lattice_body)))
        add(f"type_{typ}.lowbit", f"{typ}: special codebook values (signed zeros, subnormals, largest, infinities, NaN), "
            "row scales 1, subnormal, largest, infinite, NaN, 0; block scale bytes 0, 1, 255; every index value; "
            "a quantized random matrix" + ("" if typ == "cbk2" else "; 4- and 1-dimensional shapes") + ("; the lattice itself (indices 0..255 at scale 1)" if not learned else ""),
            {"note": typ}, tensors)

    # q4_ke (q4_ke.md): q4_k's bytes, so q4_k's random rows (blocks, block + tail, tail-only) and a matrix
    # from its own quantizer (symmetric sub-blocks: dmin = 8 d, min = scale) with a tail; its own rng, so
    # that the other vectors stay as they were
    krng = np.random.RandomState(11)
    add("type_q4_ke.lowbit", "q4_ke: random q4_k bytes in rows of 256, 384 (block + 128-weight tail), 172 and 1 weights "
        "(decoded exactly as q4_k), and matrices from the q4_ke quantizer with rows of 256 and 300 weights", {"note": "q4_ke"},
        [("whole", "q4_ke", (2, 256), kq_random(krng, "q4_k", 2, 256)),
         ("block_tail", "q4_ke", (2, 384), kq_random(krng, "q4_k", 2, 384)),
         ("tail_172", "q4_ke", (3, 172), kq_random(krng, "q4_k", 3, 172)),
         ("tail_1", "q4_ke", (1, 1), kq_random(krng, "q4_k", 1, 1)),
         ("matrix", "q4_ke", (4, 256), quant("q4_ke", krng.randn(4, 256))),
         ("matrix_tail", "q4_ke", (3, 300), quant("q4_ke", krng.randn(3, 300)))])

    for base in list(VQ) + ["q4_k", "q4_ke"]:
        typ = base + ".h"
        if base in VQ:
            D, B, _ = VQ[base]
            special = vq_bytes(base, 3, B, special_codebook(rng, D) if VQ[base][2] else None, d_bits=[0x3C00, 0x8001, 0x7BFF],
                               body=special_body(rng, base, 3, B, [255, 0, 1]), rng=rng)
            one = vq_bytes(base, 2, 2 * B, rng=rng, body=bytes([200, *[7] * (B // D)] * 4))
            shapes = [] if base == "cbk2" else [  # (cbk2 as above)
                ("cube", typ, (2, 3, B), huff_encode(base, (2, 3, B), vq_bytes(base, 6, B, rng=rng))),
                ("vector", typ, (B,), huff_encode(base, (B,), vq_bytes(base, 1, B, rng=rng)))]
            tensors = shapes + [("special", typ, (3, B), huff_encode(base, (3, B), special)),
                       ("one_symbol", typ, (2, 2 * B), huff_encode(base, (2, 2 * B), one)),
                       ("matrix", typ, (8, 2 * B), quant(typ, rng.randn(8, 2 * B)))]
            desc = (f"{typ}: the {base} special tensor entropy-coded; one symbol only (it and the next byte value "
                    "get length 1); a quantized random matrix" + ("" if base == "cbk2" else "; 3- and 1-dimensional shapes"))
        elif base == "q4_ke":
            krng = np.random.RandomState(13)
            one = np.frombuffer(kq_random(krng, "q4_k", 2, 300), np.uint8).reshape(2, -1).copy()
            one[:, index_mask("q4_ke", 300)] = 0x88   # every nibble 8 (the middle level), block and tail
            tensors = [("whole", typ, (2, 512), huff_encode(base, (2, 512), kq_random(krng, "q4_k", 2, 512))),
                       ("block_tail", typ, (2, 384), huff_encode(base, (2, 384), kq_random(krng, "q4_k", 2, 384))),
                       ("tail_only", typ, (3, 172), huff_encode(base, (3, 172), kq_random(krng, "q4_k", 3, 172))),
                       ("tail_1", typ, (1, 1), huff_encode(base, (1, 1), kq_random(krng, "q4_k", 1, 1))),
                       ("one_symbol", typ, (2, 300), huff_encode(base, (2, 300), one.tobytes())),
                       ("matrix", typ, (4, 300), quant(typ, krng.randn(4, 300)))]   # (own rng: the vectors after stay as they were)
            desc = ("q4_ke.h: random q4_k bytes in rows of 512, 384 (block + tail: the tail's packed quants are index "
                    "bytes too) and 172 and 1 (tail only: the tail's quants are the only index bytes; every q4_ke row "
                    "has some); one symbol only (byte 0x88 and 0x89 get length 1); a quantized random matrix with tails")
        else:
            krng = np.random.RandomState(7)
            tensors = [("whole", typ, (2, 512), huff_encode("q4_k", (2, 512), kq_random(krng, "q4_k", 2, 512))),
                       ("block_tail", typ, (2, 384), huff_encode("q4_k", (2, 384), kq_random(krng, "q4_k", 2, 384))),
                       ("tail_only", typ, (3, 172), huff_encode("q4_k", (3, 172), kq_random(krng, "q4_k", 3, 172))),
                       ("matrix", typ, (4, 256), quant(typ, rng.randn(4, 256)))]
            desc = ("q4_k.h: random q4_k rows of 512, 384 (block + tail: the tail stays in the other bytes) and 172 "
                    "(tail only: no index bytes, every code length 0), and a quantized random matrix")
        add(f"type_{base}_h.lowbit", desc, {}, tensors)

    # Hand-made code and damaged-but-valid chunks: lengths 1..11, 12, 12 (Kraft sum exactly 4096) on byte
    # values chosen so that canonical order (length, then value) differs from value order.
    lengths = [0] * 256
    for s, l in zip([9, 250, 3, 128, 0, 77, 5, 31, 64, 200, 100, 255, 1], list(range(1, 12)) + [12, 12]):
        lengths[s] = l
    used = [s for s in range(256) if lengths[s]]
    rows, cols = 5, 64
    body = bytearray(rng.randint(0, 256, rows * 18).astype(np.uint8).tobytes())   # d4l2 (5, 64): 2 blocks of 9 bytes
    for r in range(rows):
        for b in range(2):
            for v in range(8):
                body[r * 18 + b * 9 + 1 + v] = used[(r * 16 + b * 8 + v) % len(used)]
    base_raw = vq_bytes("d4l2", rows, cols, d_bits=[0x3C00, 0x3800, 0xB800, 0x4000, 0x3C00], body=bytes(body))

    def damage(r, c):
        if r == 1:
            return b""                 # empty chunk: every code reads as zero bits -> the all-zeros code's symbol
        if r == 2:
            return c + b"\xff\xa5"     # trailing bytes after the last code: ignored
        if r == 3:
            return c[:-1]              # last byte cut: the missing bits read as zero
        return c
    add("huffman_edges.lowbit", "d4l2.h with a hand-made code of lengths 1..12 (two of 12) on byte values out of "
        "canonical order; chunks that are empty, have trailing bytes, or lack their last byte (bits past a chunk read "
        "as zero): valid, they decode to other index bytes", {},
        [("edges", "d4l2.h", (rows, cols), huff_encode("d4l2", (rows, cols), base_raw, lengths=lengths, chunks=damage))])


def invalid(add, entry_file, rng):
    """Broken `.h` headers and codebook sizes: each a `layout` error (checked after the table)."""
    base_raw = vq_bytes("d4l2", 2, 64, rng=rng)
    good = huff_encode("d4l2", (2, 64), base_raw)

    def patched(**kw):
        b = bytearray(good)
        for off, fmt, val in kw.values():
            struct.pack_into(fmt, b, off, *val) if isinstance(val, tuple) else struct.pack_into(fmt, b, off, val)
        return bytes(b)
    lens = list(good[24:280])
    used = [s for s in range(256) if lens[s]]
    unused = [s for s in range(256) if not lens[s]][0]
    S = struct.unpack_from("<Q", good, 16)[0]
    cases = [
        ("h_short", "d4l2.h tensor of 279 bytes, shorter than the fixed header", good[:279]),
        ("h_rows", "d4l2.h header rows 3 for a [2, 64] tensor", patched(a=(0, "<I", 3))),
        ("h_n_idx", "d4l2.h header index bytes per row off by one", patched(a=(4, "<I", 15))),
        ("h_n_other", "d4l2.h header other bytes per row off by one", patched(a=(8, "<I", 3))),
        ("h_prefix", "d4l2.h header prefix bytes off by one", patched(a=(12, "<I", 5))),
        ("h_len_13", "a code length of 13", patched(a=(24 + used[0], "<B", 13))),
        ("h_incomplete", "an incomplete code (a used symbol's length one longer: Kraft sum below 4096)",
         patched(a=(24 + used[-1], "<B", lens[used[-1]] + 1))),
        ("h_oversubscribed", "an oversubscribed code (an unused byte value given length 12: Kraft sum above 4096)",
         patched(a=(24 + unused, "<B", 12))),
        ("h_no_code", "every code length 0 although the rows have index bytes", good[:24] + bytes(256) + good[280:]),
        ("h_stream_long", "stream length S one more than the bytes present", patched(a=(16, "<Q", S + 1))),
        ("h_stream_huge", "stream length S = 2^64 - 1 (the size sum wraps in 64 bits)", patched(a=(16, "<Q", 2**64 - 1))),
        ("h_offset_first", "first chunk offset 1", patched(a=(280, "<I", 1))),
        ("h_offset_last", "last chunk offset S - 1", patched(a=(288, "<I", S - 1))),
        ("h_offset_decreasing", "chunk offsets 0, S + 1, S (past the stream, then back)", patched(a=(284, "<I", S + 1))),
    ]
    for name, desc, raw in cases:
        add(name + ".lowbit", desc, entry_file("d4l2.h", [2, 64], raw))
    # a header error in the first tensor and a tiling error after it: the table's checks come first
    add("h_bad_then_gap.lowbit", "a broken d4l2.h header, then a tensor that leaves a gap: tiling, since self-sized "
        "headers are checked after the whole table", entry_file("d4l2.h", [2, 64], patched(a=(0, "<I", 3)), gap_after=True),
        code="tiling")
    add("h_row_not_multiple.lowbit", "cbk2.h with rows of 96 weights (not a multiple of 64)",
        entry_file("cbk2.h", [1, 96], good))
    add("h_rows_huge.lowbit", "d4l2.h of 2^33 rows (R cannot be represented in the u32 header)",
        entry_file("d4l2.h", [2**17, 2**16, 32], good))
    # q4_k.h and q4_ke.h share q4_k's bytes but not the index bytes of a tail block: each one's header
    # on the other type is a count mismatch
    kq = kq_random(np.random.RandomState(17), "q4_k", 2, 300)
    add("h_q4_ke_with_q4_k_counts.lowbit", "q4_ke.h [2, 300] whose header counts the tail's quants as other bytes "
        "(q4_k.h's n_idx 128, n_other 56; q4_ke.h needs 176, 8)", entry_file("q4_ke.h", [2, 300], huff_encode("q4_k", (2, 300), kq)))
    add("h_q4_k_with_q4_ke_counts.lowbit", "q4_k.h [2, 300] whose header counts the tail's quants as index bytes "
        "(q4_ke.h's n_idx 176, n_other 8; q4_k.h needs 128, 56)", entry_file("q4_k.h", [2, 300], huff_encode("q4_ke", (2, 300), kq)))
    add("cbk2_no_codebook.lowbit", "cbk2 [2, 64] sized without its 2048-byte codebook",
        entry_file("cbk2", [2, 64], vq_bytes("cbk2", 2, 64, rng=rng)[2048:]))
    add("d4l2_no_row_scales.lowbit", "d4l2 [2, 64] sized without its row scales",
        entry_file("d4l2", [2, 64], base_raw[4:]))
    add("cbk4_row_not_multiple.lowbit", "cbk4 with rows of 48 weights (not a multiple of 32)",
        entry_file("cbk4", [2, 48], vq_bytes("cbk4", 2, 32, rng=rng)))
