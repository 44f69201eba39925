"""Structure-aware fuzz inputs for the entropy-coded `.h` types (format_spec/types/huffman.md),
shared by fuzz_python.py and seeds.py; tools/fuzz/fuzz_reader.c implements the same mapping in C.

An input `H t r c0 c1 f <tensor bytes>` becomes a one-tensor file: type TYPES[t % 5], shape
[1 + r % 4, cols] with cols from (c0, c1), nbytes = len(tensor bytes). Unless flag bit 0 is set,
the header's R, n_idx, n_other and P are overwritten with what the shape needs; unless bit 1 is
set, S is made to fit nbytes and off[0] = 0, off[R] = S. So a mutation reaches the code lengths,
the middle offsets, the prefix, the other bytes and the stream, and the decoders run on them."""
import json
import struct
import zlib

TYPES = ["cbk2.h", "cbk4.h", "d4l2.h", "q4_k.h", "q4_ke.h"]
# block weights, block bytes, index bytes per block, stored codebook bytes (prefix = that + 2R for codebook bases)
PARAMS = {"cbk2.h": (64, 17, 16, 2048), "cbk4.h": (32, 17, 16, 1024), "d4l2.h": (32, 9, 8, 0), "q4_k.h": (256, 144, 128, None),
          "q4_ke.h": (256, 144, 128, None)}


def shape_of(t, r, c0, c1):
    typ = TYPES[t % 5]
    B = PARAMS[typ][0]
    cols = (1 + (c0 % 4)) * B if typ not in ("q4_k.h", "q4_ke.h") else 1 + (c0 | c1 << 8) % 600
    return typ, (1 + r % 4, cols)


def counts(typ, rows, cols):
    """(n_idx, n_other, P) the shape needs."""
    B, bb, nidx, cb = PARAMS[typ]
    rb = cols // B * bb
    n_idx = cols // B * nidx
    if typ in ("q4_k.h", "q4_ke.h") and cols % B:
        rb += 4 + -(-(cols % B) // 32) * 18   # q4_k tail block: d, dmin, then per 32 weights 2 scale bytes + 16 quant bytes
        if typ == "q4_ke.h":
            n_idx += -(-(cols % B) // 32) * 16   # q4_ke: the tail's quant bytes are index bytes too
    return n_idx, rb - n_idx, (cb + 2 * rows) if cb is not None else 0


def to_file(data: bytes):
    """The lowbit file for an 'H' input, or None when the input is not one."""
    if len(data) < 6 or data[:1] != b"H":
        return None
    typ, (rows, cols) = shape_of(data[1], data[2], data[3], data[4])
    flags, raw = data[5], bytearray(data[6:])
    if len(raw) >= 280:
        n_idx, n_other, P = counts(typ, rows, cols)
        if not flags & 1:
            struct.pack_into("<IIII", raw, 0, rows, n_idx, n_other, P)
        fixed = 284 + 4 * rows + P + rows * n_other
        if not flags & 2 and len(raw) >= fixed:
            S = len(raw) - fixed
            struct.pack_into("<Q", raw, 16, S)
            struct.pack_into("<I", raw, 280, 0)
            struct.pack_into("<I", raw, 280 + 4 * rows, S)
    raw = bytes(raw)
    header = json.dumps({"tensors": [{"name": "t", "type": typ, "shape": [rows, cols], "offset": 0, "nbytes": len(raw),
                                      "crc32": "00000000"}]}, separators=(",", ":")).encode()
    off = (48 + len(header) + 63) // 64 * 64
    return (struct.pack("<8sIIQQQII", b"\x89LOWBIT\n", 1, 0, len(header), off, len(raw), zlib.crc32(header), 0)
            + header + b"\0" * (off - 48 - len(header)) + raw)


def seed(typ, shape, raw: bytes):
    """The 'H' input for a valid tensor (shape as shape_of would give it), or None if it has no such form."""
    if typ not in TYPES or not isinstance(shape, list) or len(shape) != 2:
        return None
    rows, cols = shape
    if not 1 <= rows <= 4:
        return None
    t = TYPES.index(typ)
    B = PARAMS[typ][0]
    if typ in ("q4_k.h", "q4_ke.h"):
        c0, c1 = (cols - 1) % 256, (cols - 1) // 256
        if cols > 600:
            return None
    else:
        if cols % B or not 1 <= cols // B <= 4:
            return None
        c0, c1 = cols // B - 1, 0
    inp = bytes([ord("H"), t, rows - 1, c0, c1, 0]) + raw
    assert shape_of(t, rows - 1, c0, c1) == (typ, (rows, cols))
    return inp
