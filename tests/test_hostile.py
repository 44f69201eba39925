"""Hostile files: every malformed input is a FormatError (Python) or an error code (C reader), never
a crash, an out-of-bounds read, an allocation the file does not justify or an unbounded loop; and
lowbit.load / lowbit verify turn hostile metadata into FormatErrors too."""
import json
import os
import random
import subprocess
import sys
import tracemalloc
import zlib

import numpy as np
import pytest

import converters
import lowbit
from lowbit.commands.verify import verify
from lowbit.errors import FormatError
from lowbit.format import LowbitFile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VECTORS = os.path.join(ROOT, "format_spec", "vectors")
SHARED = os.path.join(ROOT, "..", "shared", "models")
sys.path.insert(0, os.path.join(ROOT, "format_spec", "reference"))
from lowbit_ctypes import CReader, CReaderError  # noqa: E402
from tools.generators.kquant_vectors import KQ, kq_row_bytes  # noqa: E402
from tools.generators.make_vectors import assemble, build, compact  # noqa: E402

REGRESSIONS = os.path.join(ROOT, "tests", "fuzz_regressions")


def read(name):
    with open(os.path.join(VECTORS, name), "rb") as f:
        return f.read()


def py_open(tmp_path, data, name="x.lowbit"):
    p = tmp_path / name
    p.write_bytes(data)
    return LowbitFile(str(p))


def both_reject(tmp_path, data):
    """Both readers reject `data`; returns the C error code."""
    with pytest.raises(FormatError):
        py_open(tmp_path, data)
    with pytest.raises(CReaderError) as e:
        CReader.from_bytes(data)
    assert e.value.message
    return e.value.code


def canonical(a):
    bits = np.ascontiguousarray(a, "<f4").reshape(-1).view("<u4").copy()
    bits[np.isnan(a.reshape(-1))] = 0x7FC00000
    return bits.tobytes()


def repair(data: bytes) -> bytes:
    """Make the header CRC, data_offset and data_len consistent (as the fuzz harnesses do)."""
    hl = int.from_bytes(data[16:24], "little")
    if len(data) < 48 or not 0 < hl <= len(data) - 48:
        return data
    off = (48 + hl + 63) // 64 * 64
    b = bytearray(data + b"\0" * max(0, off - len(data)))
    b[24:32] = off.to_bytes(8, "little")
    b[32:40] = (len(b) - off).to_bytes(8, "little")
    b[40:44] = zlib.crc32(b[48:48 + hl]).to_bytes(4, "little")
    return bytes(b)


def same_verdict(tmp_path, data):
    """Both readers accept (and dequantize identically) or both reject."""
    try:
        f = py_open(tmp_path, data)
    except FormatError:
        f = None
    try:
        r = CReader.from_bytes(data)
    except CReaderError as e:
        assert e.message
        r = None
    assert (f is None) == (r is None), "the readers disagree"
    if f is None:
        return False
    with f, r:
        assert [t["name"] for t in r.tensors()] == list(f.tensors)
        for t in r.tensors():
            if t["known"]:
                assert canonical(f.dequantize(t["name"])) == canonical(r.dequantize(t["name"]))
            else:
                with pytest.raises(FormatError):
                    f.dequantize(t["name"])
                with pytest.raises(CReaderError):
                    r.dequantize(t["name"])
        f.verify()
    return True


@pytest.mark.parametrize("vector", ["type_q8_0.lowbit", "metadata_kinds.lowbit"])
def test_truncation_at_every_byte(tmp_path, vector):
    data = read(vector)
    for n in range(len(data)):
        both_reject(tmp_path, data[:n])


def test_random_mutations_same_verdict(tmp_path):
    rng = random.Random(1234)
    base = [read(v) for v in ("type_q8_0.lowbit", "shapes.lowbit", "unknown_type.lowbit", "gaps.lowbit")]
    accepted = 0
    for i in range(250):
        b = bytearray(rng.choice(base))
        for _ in range(rng.randint(1, 4)):
            pos = rng.randrange(len(b))
            b[pos] = rng.choice([0, 0xFF, ord('"'), ord("9"), ord("-"), ord("["), rng.randrange(256), b[pos] ^ (1 << rng.randrange(8))])
        accepted += same_verdict(tmp_path, repair(bytes(b)))
    assert 0 < accepted < 250


def test_kquant_mutations_same_verdict(tmp_path):
    """Bytes of the k-quant vectors flipped anywhere (mostly scales, d and quants of blocks and tails):
    both readers accept or reject alike and dequantize identically."""
    rng = random.Random(4321)
    base = [read(f"type_{t}.lowbit") for t in KQ]
    accepted = 0
    for i in range(60):
        b = bytearray(rng.choice(base))
        for _ in range(rng.randint(1, 8)):
            pos = rng.randrange(len(b))
            b[pos] = rng.choice([0, 0xFF, 0x7C, rng.randrange(256), b[pos] ^ (1 << rng.randrange(8))])
        accepted += same_verdict(tmp_path, repair(bytes(b)))
    assert 20 < accepted < 60


def test_kquant_random_layouts(tmp_path):
    """Random k-quant tensors of random row lengths (whole blocks, tails, both) over random bytes are
    read identically by both readers; the same table with nbytes one row-size off, or relabelled
    with a neighbouring row length or another k-quant, is rejected by both as a layout error
    (unless that happens to be the right size)."""
    rng = np.random.RandomState(99)
    types = list(KQ)
    for i in range(40):
        typ = types[i % len(types)]
        rows, cols = int(rng.randint(1, 4)), int(rng.choice([rng.randint(1, 256), rng.randint(257, 800), 256 * rng.randint(1, 4)]))
        raw = rng.randint(0, 256, rows * kq_row_bytes(typ, cols)).astype(np.uint8).tobytes()
        assert same_verdict(tmp_path, build({}, [("w", typ, (rows, cols), raw)]))
        for shape, other in [((rows, cols + 1), typ), ((rows, max(1, cols - 1)), typ), ((rows + 1, cols), typ),
                             ((rows, cols), types[(i + 1) % len(types)])]:
            data = build({}, [("w", other, shape, raw)])
            if rows * kq_row_bytes(typ, cols) == shape[0] * kq_row_bytes(other, shape[1]):
                assert same_verdict(tmp_path, data)
            else:
                assert both_reject(tmp_path, data) == "layout"


def test_fuzz_regressions_replay(tmp_path):
    """Every input a fuzzer once crashed on stays here; both readers must handle it."""
    files = sorted(os.listdir(REGRESSIONS))
    assert files, "tests/fuzz_regressions/ is empty"
    for name in files:
        if name.endswith(".md"):
            continue
        data = open(os.path.join(REGRESSIONS, name), "rb").read()
        same_verdict(tmp_path, data)
        same_verdict(tmp_path, repair(data))


def test_too_many_tensors(tmp_path):
    header = b'{"metadata":{},"tensors":[' + b",".join([b"{}"] * 100_001) + b"]}"
    data = assemble(header, b"")
    assert both_reject(tmp_path, data) == "limit"
    with pytest.raises(FormatError, match="100001 tensors exceeds the cap"):
        py_open(tmp_path, data)


def test_deep_nesting_and_huge_numbers(tmp_path):
    for header in (b'{"metadata":{"x":' + b"[" * 50_000 + b"]" * 50_000 + b'},"tensors":[]}',
                   b'{"metadata":{"x":' + b"1" * 100_000 + b'},"tensors":[]}',
                   b'{"metadata":{"x":1e' + b"9" * 1000 + b'},"tensors":[]}'):
        assert both_reject(tmp_path, assemble(header, b"")) == "json"
    # tiny exponents underflow to zero: valid
    assert same_verdict(tmp_path, assemble(b'{"metadata":{"x":1e-99999999999999},"tensors":[]}', b""))


def test_no_allocation_from_claimed_sizes(tmp_path):
    """Sizes claimed by a small file (header_len 64 MiB, data_len 2^64-1, 2^48 elements) allocate nothing."""
    ok = compact({"metadata": {}, "tensors": []})
    hostile = [assemble(ok, b"", header_len=64 << 20, data_offset=(48 + (64 << 20) + 63) // 64 * 64),
               assemble(ok, b"", data_len=2 ** 64 - 1),
               assemble(compact({"metadata": {}, "tensors": [{"name": "t", "type": "f32", "shape": [2 ** 24, 2 ** 24],
                                                             "offset": 0, "nbytes": 2 ** 50, "crc32": "00000000"}]}), b"")]
    hostile += [read(v["file"]) for v in json.load(open(os.path.join(VECTORS, "manifest.json")))["invalid"]]
    for data in hostile:
        p = tmp_path / "h.lowbit"
        p.write_bytes(data)
        tracemalloc.start()
        with pytest.raises(FormatError):
            LowbitFile(str(p))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 8 * len(data) + (1 << 20), f"{peak} bytes allocated for a {len(data)}-byte file"
        both_reject(tmp_path, data)


# ----------------------------------------------------------------------------- hostile models

@pytest.fixture(scope="module")
def stories(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("hostile") / "stories.lowbit")
    converters.convert(os.path.join(SHARED, "stories260K"), out, "q8_0", progress=False, log=lambda m: None)
    return out


def patched(src, dst, fn):
    """A copy of `src` with its header transformed by fn(header dict); tensor data unchanged."""
    data = open(src, "rb").read()
    hl = int.from_bytes(data[16:24], "little")
    off = int.from_bytes(data[24:32], "little")
    header = json.loads(data[48:48 + hl])
    fn(header)
    with open(dst, "wb") as f:
        f.write(assemble(compact(header), data[off:]))
    return str(dst)


def arch(**kw):
    return lambda h: h["metadata"]["architecture"].update(kw)


def tok(**kw):
    return lambda h: h["metadata"]["tokenizer"].update(kw)


def table(tensor, **kw):
    def fn(h):
        for t in h["tensors"]:
            if t["name"] == tensor:
                t.update(kw)
    return fn


def drop_tensor_entry(name):
    """Rename (the data stays): the model then lacks `name`."""
    return table(name, name=name + ".renamed")


HOSTILE = {
    "arch_layers_huge": (arch(num_layers=10 ** 9), r"num_layers .* outside"),
    "arch_vocab_negative": (arch(vocab_size=-1), r"vocab_size .* outside"),
    "arch_dim_string": (arch(hidden_size="64"), r"hidden_size .* outside"),
    "arch_dim_bool": (arch(hidden_size=True), r"hidden_size .* outside"),
    "arch_context_huge": (arch(context_length=2 ** 40), r"context_length .* outside"),
    "arch_head_dim_odd": (arch(head_dim=7), r"head_dim"),
    "arch_heads_ratio": (arch(num_kv_heads=3), r"not a multiple of num_kv_heads"),
    "arch_unknown": (arch(arch="gpt2"), r"not supported"),
    "arch_act": (arch(hidden_act="gelu"), r"activation"),
    "arch_eps_zero": (arch(rms_norm_eps=0), r"rms_norm_eps .* positive"),
    "arch_theta_string": (arch(rope_theta="1e4"), r"rope_theta .* positive"),
    "arch_missing_field": (lambda h: h["metadata"]["architecture"].pop("num_heads"), r"incomplete"),
    "arch_not_object": (lambda h: h["metadata"].update(architecture=[1]), r"architecture is missing"),
    "arch_missing": (lambda h: h["metadata"].pop("architecture"), r"architecture is missing"),
    "rope_factor_zero": (arch(rope_scaling={"rope_type": "linear", "factor": 0}), r"factor .* positive"),
    "rope_factor_string": (arch(rope_scaling={"rope_type": "linear", "factor": "x"}), r"factor .* positive"),
    "rope_llama3_equal": (arch(rope_scaling={"rope_type": "llama3", "factor": 8, "low_freq_factor": 4, "high_freq_factor": 4}), r"low_freq_factor"),
    "rope_unknown": (arch(rope_scaling={"rope_type": "yarn", "factor": 4}), r"rope_type"),
    "rope_list": (arch(rope_scaling=[1]), r"object or null"),
    "tok_missing": (lambda h: h["metadata"].pop("tokenizer"), r"tokenizer is missing"),
    "tok_kind": (tok(kind="bpe"), r"kind 'bpe' is not supported"),
    "tok_tensor_missing": (tok(tensor="nope"), r"missing|does not name"),
    "tok_tensor_list": (tok(tensor=["x"]), r"does not name"),
    "tok_garbage_sp": (tok(kind="sentencepiece", tensor="blk.0.attn_q.weight"), r"cannot be loaded"),
    "tok_garbage_hf": (tok(tensor="blk.0.attn_q.weight"), r"cannot be loaded"),
    "tok_eos_string": (tok(eos_ids=["a"]), r"integer ids"),
    "tok_bos_negative": (tok(bos_id=-1), r"integer ids"),
    "tok_template_number": (tok(chat_template=5), r"chat_template"),
    "tensor_missing": (drop_tensor_entry("blk.0.attn_q.weight"), r"'blk.0.attn_q.weight' is missing"),
    "tensor_unknown_type": (table("blk.0.attn_q.weight", type="q9_z"), r"cannot read"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_load_and_verify_hostile_models(tmp_path, stories, case):
    fn, message = HOSTILE[case]
    path = patched(stories, tmp_path / f"{case}.lowbit", fn)
    with pytest.raises(FormatError, match=message):
        lowbit.load(path)
    problems, _ = verify(path)
    assert problems and any(__import__("re").search(message, p) for p in problems), problems


def test_wrong_shape_is_a_format_error(tmp_path, stories):
    # a [64, 64] q8_0 matrix relabelled [32, 128] has the same nbytes: the table is valid, the model is not
    path = patched(stories, tmp_path / "shape.lowbit", table("blk.0.attn_q.weight", shape=[32, 128]))
    with pytest.raises(FormatError, match="has shape"):
        lowbit.load(path)
    assert any("has shape [32, 128]" in p for p in verify(path)[0])


def test_verify_cli(tmp_path, stories):
    cli = [sys.executable, "-m", "lowbit.cli", "verify"]
    env = {**os.environ, "PYTHONPATH": ROOT}
    r = subprocess.run(cli + [stories], capture_output=True, text=True, env=env)
    assert r.returncode == 0 and "OK" in r.stdout and "checksums: all 49 tensors ok" in r.stdout
    data = bytearray(open(stories, "rb").read())
    data[-100] ^= 0xFF   # inside the last tensor (the tokenizer blob)
    bad = tmp_path / "flipped.lowbit"
    bad.write_bytes(bytes(data))
    r = subprocess.run(cli + [str(bad)], capture_output=True, text=True, env=env)
    assert r.returncode == 1 and "CRC-32 mismatch" in r.stderr and "Traceback" not in r.stderr
    from lowbit.cli import main
    assert main(["verify", "-q", os.path.join(VECTORS, "json_deep.lowbit")]) == 1


def test_many_keys_are_linear(tmp_path):
    """50,000 metadata keys and 20,000 tensor names: duplicate checks and listing stay linear
    (a quadratic reader would take minutes)."""
    from lowbit_ctypes import build
    keys = b",".join(b'"k%d":%d' % (i, i) for i in range(50_000))
    entries = b",".join(b'{"name":"t%d","type":"zz","shape":[1],"offset":0,"nbytes":0,"crc32":"00000000"}' % i
                        for i in range(1))
    data = assemble(b'{"metadata":{' + keys + b'},"tensors":[' + entries + b"]}", b"")
    p = tmp_path / "keys.lowbit"
    p.write_bytes(data)
    with LowbitFile(str(p)) as f:
        assert len(f.metadata) == 50_000
    out = subprocess.run([build()[1], str(p)], capture_output=True, text=True, timeout=20)
    assert out.returncode == 0 and "metadata: 50000 keys" in out.stdout
    names = b",".join(b'{"name":"t%d","type":"zz","shape":[1],"offset":%d,"nbytes":1,"crc32":"00000000"}' % (i, 64 * i)
                      for i in range(20_000))
    data = assemble(b'{"tensors":[' + names + b"]}", b"".join(b"\1" + b"\0" * 63 for _ in range(19_999)) + b"\1")
    r = CReader.from_bytes(data)
    assert len(r.tensors()) == 20_000
    r.close()
    assert len(py_open(tmp_path, data).tensors) == 20_000


# ----------------------------------------------------------------------------- codebook and entropy-coded types

CODEBOOK_VECTORS = ["type_cbk2.lowbit", "type_cbk4.lowbit", "type_d4l2.lowbit", "type_cbk2_h.lowbit",
                    "type_cbk4_h.lowbit", "type_d4l2_h.lowbit", "type_q4_k_h.lowbit", "type_q4_ke_h.lowbit",
                    "huffman_edges.lowbit"]


def tensor_spans(data):
    """(type, start, nbytes) of every tensor of a valid file, from its header."""
    hl = int.from_bytes(data[16:24], "little")
    off = int.from_bytes(data[24:32], "little")
    return [(t["type"], off + t["offset"], t["nbytes"]) for t in json.loads(data[48:48 + hl])["tensors"]]


def test_codebook_and_huffman_mutations_same_verdict(tmp_path):
    """Bytes of the codebook and .h vectors changed where it matters most: the .h header fields
    (rows, counts, stream length), code lengths, chunk offsets, and anywhere in prefixes (codebook, row
    scales), other bytes and streams. Both readers accept or reject alike and dequantize identically."""
    rng = random.Random(777)
    files = [read(v) for v in CODEBOOK_VECTORS]
    verdicts = {True: 0, False: 0}
    for i in range(160):
        data = rng.choice(files)
        spans = tensor_spans(data)
        typ, start, n = rng.choice(spans)
        b = bytearray(data)
        for _ in range(rng.randint(1, 3)):
            if typ.endswith(".h") and rng.random() < 0.7:
                where = rng.choice(["field", "lengths", "offsets"])
                if where == "field":   # u32 R, n_idx, n_other, P or the u64 S: nudged or set to an extreme
                    o, w = rng.choice([(0, 4), (4, 4), (8, 4), (12, 4), (16, 8)])
                    v = int.from_bytes(b[start + o:start + o + w], "little")
                    v = rng.choice([v + 1, v - 1, 0, 2 ** (8 * w) - 1, v ^ (1 << rng.randrange(8 * w))]) % 2 ** (8 * w)
                    b[start + o:start + o + w] = v.to_bytes(w, "little")
                elif where == "lengths":
                    b[start + 24 + rng.randrange(256)] = rng.choice([0, 1, 2, 11, 12, 13, 255, rng.randrange(16)])
                else:
                    rows = int.from_bytes(b[start:start + 4], "little")
                    o = start + 280 + 4 * rng.randrange(min(rows + 1, (n - 280) // 4) or 1)
                    v = int.from_bytes(b[o:o + 4], "little")
                    b[o:o + 4] = (rng.choice([v + 1, v - 1, 0, 2 ** 32 - 1]) % 2 ** 32).to_bytes(4, "little")
            else:
                pos = start + rng.randrange(n)
                b[pos] = rng.choice([0, 0xFF, 0x7C, 0x7E, rng.randrange(256), b[pos] ^ (1 << rng.randrange(8))])
        verdicts[same_verdict(tmp_path, repair(bytes(b)))] += 1
    assert verdicts[True] > 20 and verdicts[False] > 20, verdicts


def _h_tensor(typ, shape, raw):
    return build({}, [("w", typ, shape, raw)])


def test_random_codes_and_streams_decode_alike(tmp_path):
    """Any complete code over arbitrary stream bytes with arbitrary non-decreasing offsets is a valid
    file (a damaged stream gives other index bytes, never a read outside its chunk): both readers
    accept it and decode it to identical weights. Incomplete codes and bad offsets are rejected."""
    import struct
    from lowbit.quants import huffman
    rng = np.random.RandomState(5)
    for i in range(50):
        base = ["cbk2", "cbk4", "d4l2", "q4_k", "q4_ke"][i % 5]
        typ = base + ".h"
        cols = {"cbk2": 128, "cbk4": 64, "d4l2": 64}.get(base) or int(rng.choice([172, 256, 300, 512]))
        rows = int(rng.randint(1, 5))
        from lowbit import quants
        qt = quants.TYPES[typ]
        B = quants.TYPES[base]
        n_idx = cols // B.block_size * (B.block_bytes - 1 if base not in ("q4_k", "q4_ke") else 128)
        if base == "q4_ke":   # the tail block's packed quants are index bytes too (huffman.md)
            n_idx += 16 * -(-(cols % 256) // 32)
        n_other = B.row_bytes(cols) - n_idx
        P = B.prefix_bytes((rows, cols)) if B.prefix_bytes else 0
        counts = rng.randint(0, 50, 256) * (rng.rand(256) < rng.choice([0.02, 0.2, 1.0]))
        counts[rng.randint(256)] += 1
        lengths = huffman.code_lengths(counts)
        S = int(rng.randint(0, 40))
        offsets = np.sort(rng.randint(0, S + 1, rows + 1))
        offsets[0], offsets[-1] = 0, S
        prefix = rng.randint(0, 256, P).astype(np.uint8)
        if P:   # keep the codebook and row scales finite half of the time
            if rng.rand() < 0.5:
                prefix = np.asarray(rng.randn(P // 2), np.float16).view(np.uint8)
        raw = (struct.pack("<IIIIQ", rows, n_idx, n_other, P, S) + lengths.astype(np.uint8).tobytes()
               + offsets.astype("<u4").tobytes() + prefix.tobytes()
               + rng.randint(0, 256, rows * n_other + S).astype(np.uint8).tobytes())
        assert same_verdict(tmp_path, _h_tensor(typ, (rows, cols), raw)), (typ, rows, cols)
        assert len(qt.bind(np.frombuffer(raw, np.uint8), (rows, cols)).base_bytes()) == P + rows * B.row_bytes(cols)
        bad = bytearray(raw)
        k = int(np.flatnonzero(lengths)[0])
        bad[24 + k] = lengths[k] + 1 if lengths[k] < 12 else 0   # incomplete code
        assert both_reject(tmp_path, _h_tensor(typ, (rows, cols), bytes(bad))) == "layout"
        if S:
            bad = bytearray(raw)
            struct.pack_into("<I", bad, 280 + 4 * rows, S - 1)         # last offset short of S
            assert both_reject(tmp_path, _h_tensor(typ, (rows, cols), bytes(bad))) == "layout"


def test_huge_rows_of_self_sized_types_allocate_nothing(tmp_path):
    """A few hundred bytes claiming a .h tensor of one row of 2^31 - 64 weights (or 2^47 rows): the
    header check is arithmetic, so neither reader allocates for the claimed rows before rejecting."""
    import struct
    hostile = []
    for typ, shape in [("cbk2.h", [1, 2 ** 31 - 64]), ("q4_k.h", [1, 2 ** 31 - 1]), ("q4_ke.h", [1, 2 ** 31 - 1]), ("d4l2.h", [2 ** 16, 2 ** 31 // 32 * 32 // 2 ** 15])]:
        raw = struct.pack("<IIIIQ", 1, 0, 0, 0, 0) + bytes([1, 1]) + bytes(254) + bytes(8)
        hostile.append(_h_tensor(typ, tuple(shape), raw))
    for data in hostile:
        p = tmp_path / "h.lowbit"
        p.write_bytes(data)
        tracemalloc.start()
        with pytest.raises(FormatError, match=r"\.h\): header"):
            LowbitFile(str(p))
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < (1 << 20), f"{peak} bytes allocated for a {len(data)}-byte file"
        assert both_reject(tmp_path, data) == "layout"


def test_h_mode_fuzz_inputs_same_verdict(tmp_path):
    """The fuzz harnesses' entropy-coded mode (tools/fuzz/h_mode.py): seeds made from the .h vectors
    are valid files; random byte changes to them (header fields are then re-fixed, so the changes land
    in code lengths, offsets, prefixes and streams) give the same verdict and weights in both readers."""
    from tools.fuzz import h_mode
    seeds = []
    for v in ("type_cbk2_h.lowbit", "type_cbk4_h.lowbit", "type_d4l2_h.lowbit", "type_q4_k_h.lowbit", "type_q4_ke_h.lowbit"):
        data = read(v)
        off = int.from_bytes(data[24:32], "little")
        for t in json.loads(data[48:48 + int.from_bytes(data[16:24], "little")])["tensors"]:
            s = h_mode.seed(t["type"], t["shape"], data[off + t["offset"]:off + t["offset"] + t["nbytes"]])
            if s is not None:
                seeds.append(s)
                assert same_verdict(tmp_path, h_mode.to_file(s))
    assert len(seeds) >= 8
    rng = random.Random(99)
    verdicts = {True: 0, False: 0}
    for i in range(120):
        b = bytearray(rng.choice(seeds))
        for _ in range(rng.randint(1, 4)):
            pos = 6 + rng.randrange(min(len(b) - 6, 600) if rng.random() < 0.6 else len(b) - 6)
            b[pos] = rng.choice([0, 1, 12, 13, 0xFF, rng.randrange(256), b[pos] ^ (1 << rng.randrange(8))])
        if rng.random() < 0.2:
            b[5] = rng.randrange(4)   # flags: keep the file's own header fields or S
        verdicts[same_verdict(tmp_path, h_mode.to_file(bytes(b)))] += 1
    assert verdicts[True] > 20 and verdicts[False] > 20, verdicts
