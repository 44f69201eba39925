"""Generate format_spec/vectors/: small valid and invalid lowbit files plus manifest.json saying
what every reader must make of them (SPEC.md section 8). Deterministic: running it twice gives
byte-identical output, and tests/test_vectors.py checks the committed files against a fresh run.

    python -m tools.generators.make_vectors [OUT_DIR]      (default format_spec/vectors)
"""
import hashlib
import json
import os
import struct
import sys
import zlib

import numpy as np

from tools._paths import ROOT
from tools.generators import codebook_vectors
from tools.generators.kquant_vectors import KQ, kq_dequantize, kq_random, kq_row_bytes, kq_tail_bytes

MAGIC = b"\x89LOWBIT\n"
PREFIX = struct.Struct("<8sIIQQQII")


def align(n, a=64):
    return (n + a - 1) // a * a


# ----------------------------------------------------------------------------- encoding

def f16_bits(values):
    return np.asarray(values, dtype=np.uint16).astype("<u2").tobytes()


def q8_0_block(d_bits, q):
    return struct.pack("<H", d_bits) + np.asarray(q, dtype=np.int8).tobytes()


def table_and_data(tensors):
    """tensors: [(name, type, shape, raw bytes)] -> (table entries, data region bytes)."""
    table, data = [], bytearray()
    for name, typ, shape, raw in tensors:
        data += b"\0" * (align(len(data)) - len(data))
        table.append({"name": name, "type": typ, "shape": list(shape), "offset": len(data),
                      "nbytes": len(raw), "crc32": f"{zlib.crc32(raw):08x}"})
        data += raw
    return table, bytes(data)


def compact(obj):
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def assemble(header: bytes, data: bytes, **over) -> bytes:
    """Prefix + header + padding + data; keyword overrides corrupt single prefix fields."""
    hl = over.get("header_len", len(header))
    data_offset = over.get("data_offset", align(48 + len(header)))
    fields = dict(magic=MAGIC, version=1, flags=0, header_len=hl, data_offset=data_offset,
                  data_len=len(data), crc=zlib.crc32(header), reserved=0)
    fields.update({k: v for k, v in over.items() if k in fields})
    prefix = PREFIX.pack(fields["magic"], fields["version"], fields["flags"], fields["header_len"],
                         fields["data_offset"], fields["data_len"], fields["crc"], fields["reserved"])
    pad = over.get("pad", b"\0" * (align(48 + len(header)) - 48 - len(header)))
    return prefix + header + pad + data


def build(metadata, tensors, header_override=None, **over):
    table, data = table_and_data(tensors)
    doc = {"metadata": metadata, "tensors": table} if metadata is not None else {"tensors": table}
    header = header_override(doc) if header_override else compact(doc)
    return assemble(header, data, **over)


def raw_header(text: bytes, data=b"", **over):
    return assemble(text, data, **over)


# ----------------------------------------------------------------------------- expected values

def dequantize_reference(typ, shape, raw):
    """Straight from format_spec/types/*.md (independent of the runtime's Numba kernels)."""
    n = int(np.prod(shape))
    if typ == "f32":
        out = np.frombuffer(raw, "<f4").astype(np.float32)
    elif typ == "f16":
        out = np.frombuffer(raw, "<f2").astype(np.float32)
    elif typ == "bf16":
        out = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
    elif typ == "u8":
        out = np.frombuffer(raw, np.uint8).astype(np.float32)
    elif typ == "q8_0":
        b = np.frombuffer(raw, np.uint8).reshape(-1, 34)
        d = b[:, :2].copy().view("<f2").astype(np.float32)
        q = b[:, 2:].copy().view(np.int8).astype(np.float32)
        with np.errstate(invalid="ignore"):
            out = (d * q).reshape(-1).astype(np.float32)
    elif typ in KQ:
        out = kq_dequantize(typ, shape, raw)
    else:
        out = codebook_vectors.dequantize(typ, shape, raw, kq_dequantize)
        if out is None:
            return None
    assert out.size == n
    return out


def canonical_f32_bytes(values: np.ndarray) -> bytes:
    """float32 little-endian bytes with every NaN as 0x7FC00000 (a NaN's payload is not specified)."""
    bits = np.ascontiguousarray(values, dtype="<f4").view("<u4").copy()
    bits[np.isnan(values)] = 0x7FC00000
    return bits.tobytes()


def expected_entry(name, typ, shape, raw):
    e = {"name": name, "type": typ, "shape": list(shape)}
    vals = dequantize_reference(typ, shape, raw)
    if vals is None:
        e["dequantize_error"] = "unknown_type"
        return e
    e["sha256"] = hashlib.sha256(canonical_f32_bytes(vals)).hexdigest()
    if vals.size <= 64:
        e["f32_bits"] = [f"{b:08x}" for b in np.frombuffer(canonical_f32_bytes(vals), "<u4")]
    return e


# ----------------------------------------------------------------------------- the vectors

def valid_vectors():
    rng = np.random.RandomState(20261124)
    from lowbit.quants.q8_0 import quantize_q8_0
    from lowbit.quants.floats import quantize_bf16
    v = []

    def add(file, description, metadata, tensors, **kw):
        v.append((file, description, metadata, tensors, kw))

    add("zero_tensors.lowbit", "empty metadata, no tensors: data_len 0, the file ends at data_offset", {}, [])
    add("no_metadata_key.lowbit", "header without a 'metadata' key (same as an empty object)", None, [])

    specials32 = np.array([0.0, -0.0, 1.0, -2.5, np.inf, -np.inf, 1e-45, -1e-45, 1.17549435e-38,
                           3.4028235e38, -3.4028235e38, np.pi], np.float32)
    nan32 = np.array([0x7FC00000, 0xFFC00001, 0x7F800001], "<u4").tobytes()   # NaNs, payloads differ
    add("type_f32.lowbit", "f32: special values (signed zero, infinities, subnormals, extremes, NaNs) and a random matrix",
        {"note": "f32"}, [("special", "f32", (12,), specials32.astype("<f4").tobytes()),
                          ("nans", "f32", (3,), nan32),
                          ("matrix", "f32", (3, 5), rng.randn(3, 5).astype("<f4").tobytes())])
    f16_special = [0x0000, 0x8000, 0x0001, 0x8001, 0x03FF, 0x0400, 0x3C00, 0xC000, 0x7BFF, 0xFBFF,
                   0x7C00, 0xFC00, 0x7E00, 0xFE01, 0x7C01, 0x3555]
    add("type_f16.lowbit", "f16: zeros, subnormals, smallest normal, largest finite, infinities, NaNs, and a random matrix",
        {}, [("special", "f16", (16,), f16_bits(f16_special)),
             ("matrix", "f16", (4, 6), rng.randn(4, 6).astype("<f2").tobytes())])
    bf16_special = [0x0000, 0x8000, 0x0001, 0x807F, 0x3F80, 0xC000, 0x7F7F, 0xFF7F, 0x7F80, 0xFF80, 0x7FC0, 0xFFC1]
    add("type_bf16.lowbit", "bf16: zeros, subnormals, extremes, infinities, NaNs, and a random matrix",
        {}, [("special", "bf16", (12,), f16_bits(bf16_special)),
             ("matrix", "bf16", (2, 9), quantize_bf16(rng.randn(2, 9).astype(np.float32)).tobytes())])
    add("type_u8.lowbit", "u8: every byte value, as an embedded blob is stored",
        {}, [("blob", "u8", (256,), bytes(range(256)))])
    blocks = (q8_0_block(0x3C00, list(range(-16, 16))) + q8_0_block(0x8001, [-128, 127] * 16)
              + q8_0_block(0x7C00, [0, 1, -1] + [0] * 29) + q8_0_block(0x7E00, [5] * 32)
              + q8_0_block(0xBC00, [-128] * 32) + q8_0_block(0x0000, [77] * 32))
    add("type_q8_0.lowbit", "q8_0: scales 1, negative subnormal, +inf (times 0 gives NaN), NaN, -1, 0; q at -128 and 127; and a quantized random matrix",
        {}, [("blocks", "q8_0", (3, 64), blocks),
             ("matrix", "q8_0", (4, 64), quantize_q8_0(rng.randn(4, 64).astype(np.float32)).tobytes())])
    add("shapes.lowbit", "1- to 4-dimensional tensors: all leading dimensions flatten into rows",
        {}, [("d1", "f32", (5,), rng.randn(5).astype("<f4").tobytes()),
             ("d4_ones", "f32", (1, 1, 1, 1), np.float32(7).tobytes()),
             ("d4", "f16", (2, 1, 3, 4), rng.randn(24).astype("<f2").tobytes()),
             ("d3_q8", "q8_0", (2, 2, 32), quantize_q8_0(rng.randn(4, 32).astype(np.float32)).tobytes())])
    pad_meta = {"pad": ""}
    hl = len(compact({"metadata": pad_meta, "tensors": [
        {"name": "a", "type": "f32", "shape": [16], "offset": 0, "nbytes": 64, "crc32": "00000000"},
        {"name": "b", "type": "f32", "shape": [32], "offset": 64, "nbytes": 128, "crc32": "00000000"}]}))
    pad_meta["pad"] = "x" * ((-(48 + hl)) % 64)
    add("no_padding.lowbit", "48 + header_len is a multiple of 64 (no header padding) and tensor sizes are multiples of 64 (no gaps)",
        pad_meta, [("a", "f32", (16,), rng.randn(16).astype("<f4").tobytes()),
                   ("b", "f32", (32,), rng.randn(32).astype("<f4").tobytes())])
    add("gaps.lowbit", "tensor sizes of 1, 3 and 65 bytes: zero gaps up to each next 64-byte boundary",
        {}, [("one", "u8", (1,), b"\x07"), ("three", "u8", (3,), b"abc"), ("sixtyfive", "u8", (65,), bytes(range(65))),
             ("last", "f16", (1,), f16_bits([0x3C00]))])
    add("fallback.lowbit", "a q8_0 model whose row of 43 weights fell back to f16, recorded in provenance.recipe.fallbacks",
        {"provenance": {"recipe": {"type": "q8_0", "tensor_types": {"q8_0": 1, "f16": 1},
                                   "fallbacks": {"blk.0.ffn_down.weight": {"type": "f16", "reason": "row length 43 is not a multiple of q8_0's block size 32"}}}}},
        [("token_embd.weight", "q8_0", (4, 32), quantize_q8_0(rng.randn(4, 32).astype(np.float32)).tobytes()),
         ("blk.0.ffn_down.weight", "f16", (2, 43), rng.randn(2, 43).astype("<f2").tobytes())])
    deep = "leaf"
    for i in range(30):   # top object (1) > metadata (2) > 29 nested lists + the string = level 32
        deep = [deep] if i < 29 else deep
    add("metadata_kinds.lowbit", "every JSON value kind: strings with escapes, surrogate pairs and raw UTF-8, integers, floats at the binary64 limits, booleans, null, empty containers, nesting of exactly 32 levels, unknown keys",
        {"string": "plain", "escapes": "q\"b\\s/\b\f\n\r\t\u0001\u00e9\u2028\U0001F600", "utf8": "héllo wörld ✓ 😀",
         "empty_string": "", "int": 42, "negative": -7, "zero": 0, "big_int": 9007199254740992, "float": 1.5,
         "exp": -2.5e-300, "max_double": 1.7976931348623157e308, "min_subnormal": 5e-324, "true": True, "false": False,
         "null": None, "empty_object": {}, "empty_array": [], "mixed": [1, "two", 3.0, None, True, {"k": []}], "deep": deep,
         "architecture_is_free_here": {"unknown_key": 1}},
        [("t", "f32", (2,), np.array([1, 2], "<f4").tobytes())])
    long_name = "é" * 256   # 512 bytes of UTF-8, the cap
    add("max_name.lowbit", "a tensor name of exactly 512 bytes (256 two-byte characters) and non-ASCII names",
        {}, [(long_name, "f32", (1,), np.float32(1).tobytes()), ("名前.weight", "f32", (1,), np.float32(2).tobytes())])
    add("unknown_type.lowbit", "a tensor of a type this version does not define: valid, listable, not dequantizable; tiling continues after it",
        {}, [("before", "f32", (2,), np.array([1, 2], "<f4").tobytes()), ("future", "q9_z", (3, 7), bytes(range(10))),
             ("after", "f32", (1,), np.float32(3).tobytes())])

    # k-quants: whole super-blocks, block + tail, tail-only rows (172 = stories260K's FFN width, 1, 255),
    # scale/min/quant bytes random (so every bit position and out-of-range tail scale bytes occur),
    # d set to modest values, then to special binary16s, then tail padding bits set.
    special_d = [0x0001, 0x8000, 0x7BFF, 0x7C00, 0x7E00]   # subnormal, -0, largest, inf, NaN
    for typ in KQ:
        krng = np.random.RandomState(int.from_bytes(typ.encode(), "little") % 2**32)
        add(f"type_{typ}.lowbit", f"{typ}: rows of 256, 512, 384 (block + 128-weight tail), 172, 1 and 255 weights; "
            "special d values (subnormal, -0, largest, infinity, NaN) in blocks and tails; non-zero tail padding bits, which readers ignore",
            {"note": typ}, [("whole", typ, (2, 256), kq_random(krng, typ, 2, 256)),
                            ("two_blocks", typ, (1, 512), kq_random(krng, typ, 1, 512)),
                            ("block_tail", typ, (2, 384), kq_random(krng, typ, 2, 384)),
                            ("tail_172", typ, (3, 172), kq_random(krng, typ, 3, 172)),
                            ("tail_1", typ, (1, 1), kq_random(krng, typ, 1, 1)),
                            ("tail_255", typ, (2, 255), kq_random(krng, typ, 2, 255)),
                            ("cube", typ, (2, 1, 3, 40), kq_random(krng, typ, 6, 40)),
                            ("special_d", typ, (5, 300), kq_random(krng, typ, 5, 300, d_bits=special_d)),
                            ("padding_bits", typ, (1, 20), kq_random(krng, typ, 1, 20, padding_bits=True))])

    def pretty(doc):
        text = json.dumps(doc, indent="\t", ensure_ascii=True).replace("\n", "\r\n")
        return text.replace('"EDGE"', "1.7976931348623158e308").encode() + b" \n"   # rounds to the largest double
    add("pretty_header.lowbit", "a header with whitespace (tabs, CR LF, trailing space) and \\u-escaped non-ASCII: valid JSON, so valid",
        {"unknown": "ünïcode 😀", "edge": "EDGE"}, [("t", "bf16", (2,), f16_bits([0x3F80, 0xC000]))], header_override=pretty)
    codebook_vectors.valid(np.random.RandomState(20260501), add)   # cbk2, cbk4, d4l2 and the .h types
    return v


def header_of(doc):
    return compact(doc)


def entry(**kw):
    e = {"name": "t", "type": "f32", "shape": [2], "offset": 0, "nbytes": 8, "crc32": "00000000"}
    e.update(kw)
    return {k: v for k, v in e.items() if v is not DROP}


DROP = object()


def one_tensor(**kw):
    """A file with one entry (fields overridden by kw) and 8 data bytes."""
    e = entry(**kw)
    return raw_header(compact({"metadata": {}, "tensors": [e]}), b"\0" * 8)


def two_tensors(second, first_nbytes=8, data_len=None):
    a = entry(name="a", nbytes=first_nbytes, shape=[first_nbytes // 4])
    b = entry(**{"name": "b", **second})
    n = data_len if data_len is not None else b["offset"] + b["nbytes"] if isinstance(b.get("offset"), int) and isinstance(b.get("nbytes"), int) and b["offset"] + b["nbytes"] < 4096 else 72
    return raw_header(compact({"metadata": {}, "tensors": [a, b]}), b"\0" * n)


def invalid_vectors():
    good = build({"k": "v"}, [("t", "f32", (2,), np.array([1, 2], "<f4").tobytes())])
    ok_header = compact({"metadata": {}, "tensors": []})
    iv = []

    def add(file, error, description, data):
        iv.append((file, error, description, data))

    def hdr(text: bytes):
        return raw_header(text)

    add("empty.lowbit", "truncated", "a 0-byte file", b"")
    add("short_prefix.lowbit", "truncated", "47 bytes: shorter than the prefix", good[:47])
    add("bad_magic.lowbit", "magic", "magic of another format (GGUF)", b"GGUF\3\0\0\0" + good[8:])
    add("text_mode_magic.lowbit", "magic", "the newline of the magic turned into CR LF by a text-mode transfer", good[:7] + b"\r\n" + good[8:])
    add("version_0.lowbit", "version", "major version 0", assemble(ok_header, b"", version=0))
    add("version_2.lowbit", "version", "major version 2", assemble(ok_header, b"", version=2))
    add("flags.lowbit", "reserved", "flags not zero", assemble(ok_header, b"", flags=1))
    add("reserved.lowbit", "reserved", "reserved field not zero", assemble(ok_header, b"", reserved=0x80000000))
    add("header_len_zero.lowbit", "header_len", "header_len 0", assemble(ok_header, b"", header_len=0, data_offset=64))
    add("header_len_over_cap.lowbit", "header_len", "header_len 64 MiB + 1", assemble(ok_header, b"", header_len=(64 << 20) + 1))
    add("header_len_huge.lowbit", "header_len", "header_len 2^64 - 1 (align64 of 48 + it would wrap)", assemble(ok_header, b"", header_len=2**64 - 1, data_offset=0))
    add("data_offset_wrong.lowbit", "data_offset", "data_offset one block too far", assemble(ok_header, b"", data_offset=192))
    add("data_offset_unaligned.lowbit", "data_offset", "data_offset = 48 + header_len, not aligned", assemble(ok_header, b"", data_offset=48 + len(ok_header)))
    add("data_offset_huge.lowbit", "data_offset", "data_offset 2^64 - 64", assemble(ok_header, b"", data_offset=2**64 - 64))
    add("truncated_header.lowbit", "truncated", "cut inside the JSON header", good[:60])
    add("header_crc.lowbit", "header_crc", "one header byte changed after the CRC was computed", good[:50] + bytes([good[50] ^ 0x20]) + good[51:])
    g = bytearray(good)
    g[48 + PREFIX.unpack_from(good)[3]] = 1
    add("padding.lowbit", "padding", "a non-zero byte in the padding between header and data", bytes(g))
    add("data_len_short.lowbit", "file_size", "one byte more in the file than data_offset + data_len", good + b"\0")
    add("data_len_huge.lowbit", "file_size", "data_len 2^64 - 1 (data_offset + data_len wraps)", assemble(ok_header, b"", data_len=2**64 - 1))
    add("truncated_data.lowbit", "file_size", "cut inside the data region", good[:-1])
    for name, text, what in [
        ("json_syntax", b'{"metadata":{},"tensors":[],}', "trailing comma"),
        ("json_trailing", b'{"metadata":{},"tensors":[]} {}', "a second value after the object"),
        ("json_bom", b'\xef\xbb\xbf{"metadata":{},"tensors":[]}', "a UTF-8 byte-order mark"),
        ("json_nan", b'{"metadata":{"x":NaN},"tensors":[]}', "NaN"),
        ("json_infinity", b'{"metadata":{"x":-Infinity},"tensors":[]}', "-Infinity"),
        ("json_overflow_float", b'{"metadata":{"x":1e400},"tensors":[]}', "a number that overflows a binary64"),
        ("json_overflow_edge", b'{"metadata":{"x":1.7976931348623159e308},"tensors":[]}', "a number just past the largest binary64 (rounds to infinity)"),
        ("json_overflow_int", b'{"metadata":{"x":' + b"9" * 400 + b'},"tensors":[]}', "a 400-digit integer (infinite as a binary64)"),
        ("json_duplicate_key", b'{"metadata":{"a":1,"a":2},"tensors":[]}', "a duplicate key"),
        ("json_duplicate_escaped", b'{"metadata":{"a":1,"\\u0061":2},"tensors":[]}', "a duplicate key spelled with an escape"),
        ("json_duplicate_top", b'{"metadata":{},"tensors":[],"tensors":[]}', "a duplicate top-level key"),
        ("json_lone_surrogate", b'{"metadata":{"x":"\\ud800"},"tensors":[]}', "a lone surrogate escape"),
        ("json_lone_low_surrogate", b'{"metadata":{"x":"\\udc00x"},"tensors":[]}', "a lone low surrogate escape"),
        ("json_bad_utf8", b'{"metadata":{"x":"\xff"},"tensors":[]}', "a byte that is not UTF-8"),
        ("json_overlong_utf8", b'{"metadata":{"x":"\xc0\xaf"},"tensors":[]}', "an overlong UTF-8 sequence"),
        ("json_encoded_surrogate", b'{"metadata":{"x":"\xed\xa0\x80"},"tensors":[]}', "a UTF-8-encoded surrogate"),
        ("json_control_char", b'{"metadata":{"x":"a\nb"},"tensors":[]}', "a raw newline inside a string"),
        ("json_single_quotes", b"{'metadata':{},'tensors':[]}", "single quotes"),
        ("json_leading_zero", b'{"metadata":{"x":01},"tensors":[]}', "a number with a leading zero"),
        ("json_bad_escape", b'{"metadata":{"x":"\\x41"},"tensors":[]}', "an escape JSON does not have"),
        ("json_depth_33", b'{"metadata":{"x":' + b"[" * 30 + b"1" + b"]" * 30 + b'},"tensors":[]}', "a value at nesting level 33"),
        ("json_deep", b'{"metadata":{"x":' + b"[" * 5000 + b"]" * 5000 + b'},"tensors":[]}', "5000 nested arrays"),
        ("json_unterminated", b'{"metadata":{"x":"abc', "an unterminated string"),
        ("json_nul", b'{"metadata":{},"tensors":[]}\x00', "a NUL byte after the object"),
    ]:
        add(name + ".lowbit", "json", what, hdr(text))
    add("header_array.lowbit", "header", "the header is a JSON array", hdr(b"[]"))
    add("header_no_tensors.lowbit", "header", "no 'tensors' key", hdr(b'{"metadata":{}}'))
    add("header_tensors_object.lowbit", "header", "'tensors' is an object", hdr(b'{"metadata":{},"tensors":{}}'))
    add("header_metadata_list.lowbit", "header", "'metadata' is a list", hdr(b'{"metadata":[],"tensors":[]}'))
    add("tensor_not_object.lowbit", "tensor", "a tensor entry that is a string", raw_header(b'{"metadata":{},"tensors":["t"]}'))
    add("name_missing.lowbit", "tensor", "no name", one_tensor(name=DROP))
    add("name_empty.lowbit", "tensor", "an empty name", one_tensor(name=""))
    add("name_too_long.lowbit", "tensor", "a 513-byte name", one_tensor(name="a" * 511 + "é"))
    add("name_number.lowbit", "tensor", "a name that is a number", one_tensor(name=5))
    add("type_missing.lowbit", "tensor", "no type", one_tensor(type=DROP))
    add("type_number.lowbit", "tensor", "a type that is a number", one_tensor(type=8))
    add("shape_empty.lowbit", "tensor", "shape []", one_tensor(shape=[]))
    add("shape_5d.lowbit", "tensor", "five dimensions", one_tensor(shape=[1, 1, 1, 1, 2]))
    add("shape_zero.lowbit", "tensor", "a zero dimension", one_tensor(shape=[0], nbytes=0))
    add("shape_negative.lowbit", "tensor", "a negative dimension", one_tensor(shape=[-2]))
    add("shape_float.lowbit", "tensor", "a dimension written 2.0", raw_header(b'{"metadata":{},"tensors":[{"name":"t","type":"f32","shape":[2.0],"offset":0,"nbytes":8,"crc32":"00000000"}]}', b"\0" * 8))
    add("shape_exponent.lowbit", "tensor", "a dimension written 2e0", raw_header(b'{"metadata":{},"tensors":[{"name":"t","type":"f32","shape":[2e0],"offset":0,"nbytes":8,"crc32":"00000000"}]}', b"\0" * 8))
    add("shape_bool.lowbit", "tensor", "a dimension true", one_tensor(shape=[True]))
    add("shape_dim_2e31.lowbit", "tensor", "a dimension of 2^31", one_tensor(shape=[2**31]))
    add("shape_huge_dim.lowbit", "tensor", "a dimension of 2^64 + 2 (wraps to 2 in 64 bits)", one_tensor(shape=[2**64 + 2]))
    add("elements_over_cap.lowbit", "limit", "four dimensions of 2^31 - 1 (product far over 2^48, overflows 64 bits)", one_tensor(shape=[2**31 - 1] * 4))
    add("elements_2e48_plus.lowbit", "limit", "2^24 x 2^24 + 1 x ... = just over 2^48 elements", one_tensor(shape=[2**24, 2**24 + 1]))
    add("offset_negative.lowbit", "tensor", "offset -64", one_tensor(offset=-64))
    add("offset_float.lowbit", "tensor", "offset 0.0", raw_header(b'{"metadata":{},"tensors":[{"name":"t","type":"f32","shape":[2],"offset":0.0,"nbytes":8,"crc32":"00000000"}]}', b"\0" * 8))
    add("nbytes_missing.lowbit", "tensor", "no nbytes", one_tensor(nbytes=DROP))
    add("nbytes_string.lowbit", "tensor", "nbytes \"8\"", one_tensor(nbytes="8"))
    add("crc_uppercase.lowbit", "tensor", "crc32 in uppercase hex", one_tensor(crc32="0000000A"))
    add("crc_short.lowbit", "tensor", "crc32 of 7 digits", one_tensor(crc32="0000000"))
    add("crc_number.lowbit", "tensor", "crc32 as a number", one_tensor(crc32=0))
    add("duplicate_name.lowbit", "duplicate", "two tensors named 'a'", two_tensors({"name": "a", "offset": 64}))
    add("row_not_multiple.lowbit", "layout", "q8_0 with rows of 33 weights", one_tensor(type="q8_0", shape=[33], nbytes=8))
    add("nbytes_wrong.lowbit", "layout", "f32 [2] with nbytes 7", one_tensor(nbytes=7))
    add("nbytes_wraps.lowbit", "layout", "f32 of 2^48 elements whose nbytes is given as that size mod 2^64 (0)", one_tensor(shape=[2**24, 2**24], nbytes=0))
    def kq_one(typ, shape, nbytes, desc, file):
        e = entry(type=typ, shape=list(shape), nbytes=nbytes)
        add(file, "layout", desc, raw_header(compact({"metadata": {}, "tensors": [e]}), b"\0" * nbytes))
    kq_one("q4_k", (1, 384), 144 + 76 - 1, "q4_k [1,384] one byte short of a block + 128-weight tail (220 bytes)", "kq_tail_short.lowbit")
    kq_one("q4_k", (1, 384), 2 * 144, "q4_k [1,384] sized as two whole blocks (tail padded to a super-block, as GGML would need)", "kq_tail_as_block.lowbit")
    kq_one("q6_k", (1, 172), 210, "q6_k [1,172] sized as one whole block instead of a 172-weight tail (112 bytes)", "kq_tail_only_as_block.lowbit")
    kq_one("q2_k", (3, 172), 2 * kq_row_bytes("q2_k", 172), "q2_k [3,172] with the bytes of two rows", "kq_rows_short.lowbit")
    kq_one("q3_k", (1, 256), 110 + kq_tail_bytes("q3_k", 1), "q3_k [1,256] with one extra 1-weight tail block", "kq_extra_tail.lowbit")
    kq_one("q5_k", (1, 255), kq_tail_bytes("q5_k", 256 - 32) , "q5_k [1,255] sized for a 224-weight tail (one sub-block too few)", "kq_tail_nsub.lowbit")
    kq_one("q2_k", (2**24, 2**24), 0, "q2_k of 2^48 elements (rows of 2^24) with nbytes 0", "kq_huge.lowbit")
    add("first_offset.lowbit", "tiling", "first tensor at offset 64", one_tensor(offset=64))
    add("offset_gap.lowbit", "tiling", "second tensor one block too far", two_tensors({"offset": 128}))
    add("offset_overlap.lowbit", "tiling", "second tensor overlapping the first", two_tensors({"offset": 0}))
    add("offset_unaligned.lowbit", "tiling", "second tensor right after the first, not at a 64-byte boundary", two_tensors({"offset": 8}))
    add("offset_huge.lowbit", "tiling", "offset 2^64 + 64 (wraps to 64 in 64 bits)", two_tensors({"offset": 2**64 + 64}))
    add("tensor_past_end.lowbit", "tiling", "a tensor of an unknown type ending past the data region", one_tensor(type="zz", nbytes=9))
    add("unknown_huge_nbytes.lowbit", "tiling", "a tensor of an unknown type with nbytes 2^63 (offset + nbytes near wrapping)", one_tensor(type="zz", nbytes=2**63))
    add("data_len_long.lowbit", "tiling", "the data region is 64 bytes longer than its last tensor", raw_header(compact({"metadata": {}, "tensors": [entry()]}), b"\0" * 72))
    add("data_without_tensors.lowbit", "tiling", "64 data bytes but no tensors", raw_header(ok_header, b"\0" * 64))

    def entry_file(typ, shape, raw, gap_after=False):
        """One tensor of `typ` holding `raw` (nbytes = len(raw)), optionally then an f32 tensor one block too far."""
        tensors = [entry(type=typ, shape=list(shape), nbytes=len(raw), crc32=f"{zlib.crc32(raw):08x}")]
        data = raw
        if gap_after:
            data += b"\0" * (align(len(raw)) - len(raw))
            tensors.append(entry(name="u", offset=len(data) + 64))
            data += b"\0" * 64 + b"\0" * 8
        return raw_header(compact({"metadata": {}, "tensors": tensors}), data)
    codebook_vectors.invalid(lambda file, desc, data, code="layout": add(file, code, desc, data), entry_file,
                             np.random.RandomState(20260502))
    bad_crc = bytearray(good)
    bad_crc[-1] ^= 1
    return iv, [("tensor_crc.lowbit", "tensor_crc", "structurally valid, one data byte flipped: only a CRC check (lowbit verify) finds it", bytes(bad_crc))]


ERROR_CODES = {
    "truncated": "shorter than the 48-byte prefix, or than data_offset",
    "magic": "wrong magic",
    "version": "a major version other than 1",
    "reserved": "flags or reserved not zero",
    "header_len": "header_len outside 1 .. 64 MiB",
    "data_offset": "data_offset differs from align64(48 + header_len)",
    "header_crc": "header CRC-32 mismatch",
    "padding": "a non-zero byte between the header and data_offset",
    "json": "the header is not strict UTF-8 JSON (syntax, encoding, duplicate keys, non-finite numbers, nesting over 32 levels)",
    "header": "the JSON is not an object with a 'tensors' list and an optional 'metadata' object",
    "file_size": "data_offset + data_len differs from the file size",
    "tensor": "a tensor entry is malformed (not an object; name, type, shape, offset, nbytes or crc32 missing or of the wrong kind or range)",
    "limit": "a cap of section 7 is exceeded (tensor count, elements, file size)",
    "duplicate": "two tensors share a name",
    "layout": "a known type's row length or nbytes does not fit its layout",
    "tiling": "offsets do not tile the data region (first offset, gaps, overlaps, past the end, data_len)",
    "unknown_type": "dequantizing a tensor whose type the reader does not know",
    "tensor_crc": "a tensor's bytes do not match its crc32",
}


def generate(out_dir):
    os.makedirs(out_dir, exist_ok=True)
    # "about" names the generator by the path it had when the vectors were made: the manifest is part of
    # the contract in format_spec/ and must come out byte for byte as committed
    manifest = {"format": "lowbit", "version": 1,
                "about": "Test vectors for format_spec/SPEC.md; made by tools/make_vectors.py. "
                         "Expected values: SHA-256 of the dequantized float32 little-endian bytes, every NaN as 0x7fc00000.",
                "error_codes": ERROR_CODES, "valid": [], "invalid": [], "corrupt": []}
    written = set()
    for file, desc, metadata, tensors, kw in valid_vectors():
        data = build(metadata, tensors, **kw)
        _write(out_dir, file, data, written)
        manifest["valid"].append({"file": file, "description": desc, "bytes": len(data),
                                  "metadata": json.loads(data[48:48 + PREFIX.unpack_from(data)[3]]).get("metadata", {}),
                                  "tensors": [expected_entry(*t) for t in tensors]})
    invalid, corrupt = invalid_vectors()
    for file, error, desc, data in invalid:
        _write(out_dir, file, data, written)
        manifest["invalid"].append({"file": file, "error": error, "description": desc})
    for file, error, desc, data in corrupt:
        _write(out_dir, file, data, written)
        manifest["corrupt"].append({"file": file, "error": error, "description": desc})
    with open(os.path.join(out_dir, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1, ensure_ascii=False)
        f.write("\n")
    return manifest


def _write(out_dir, file, data, written):
    assert file not in written, file
    written.add(file)
    assert len(data) < 64 << 10, (file, len(data))
    with open(os.path.join(out_dir, file), "wb") as f:
        f.write(data)


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(ROOT, "format_spec", "vectors")
    m = generate(out)
    print(f"{len(m['valid'])} valid, {len(m['invalid'])} invalid, {len(m['corrupt'])} corrupt vectors in {os.path.normpath(out)}")
