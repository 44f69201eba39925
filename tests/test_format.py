"""The container: write-then-read preserves bytes and checksums; malformed files raise
FormatError with a clear message and without large allocations."""
import json
import struct
import tracemalloc
import zlib

import numpy as np
import pytest

from lowbit import quants
from lowbit.errors import FormatError
from conftest import model_dir
from lowbit.format import PREFIX, PREFIX_SIZE, LowbitFile, TensorSpec, align, write_lowbit

RNG = np.random.default_rng(0)


def small_file(path, n=3):
    specs, raws = [], {}
    for i, typ in enumerate(["f32", "f16", "q8_0", "bf16"][:n]):
        w = RNG.standard_normal((4 + i, 64)).astype(np.float32)
        raw = quants.get(typ).quantize(w)
        raws[f"t{i}"] = raw
        specs.append(TensorSpec(f"t{i}", typ, w.shape, lambda r=raw: r))
    write_lowbit(path, {"hello": "wörld", "nested": {"a": [1, 2.5, None, True]}}, specs)
    return raws


def test_round_trip_preserves_bytes_and_checksums(tmp_path, converted):
    p = tmp_path / "a.lowbit"
    raws = small_file(p)
    with LowbitFile(p) as f:
        assert f.metadata["nested"] == {"a": [1, 2.5, None, True]}
        for name, raw in raws.items():
            assert np.array_equal(f.raw(name), raw)
            assert f.info(name).crc32 == f"{zlib.crc32(raw.tobytes()):08x}"
            assert (f.data_offset + f.info(name).offset) % 64 == 0
        assert f.verify() == []
    # the same on a real conversion: every tensor's bytes equal a fresh quantization of the source
    from converters.hf import Checkpoint
    path = converted("pycode-30m", "q8_0")
    ck = Checkpoint(model_dir("pycode-30m"))
    with LowbitFile(path) as f:
        assert f.verify() == []
        for name in ["blk.3.attn_v.weight", "output.weight", "blk.7.ffn_norm.weight"]:
            qt = f.qtype(name)
            assert np.array_equal(f.raw(name), qt.quantize(ck.tensor(name)))


def test_empty_table_and_metadata(tmp_path):
    p = tmp_path / "e.lowbit"
    write_lowbit(p, {}, [])
    with LowbitFile(p) as f:
        assert f.tensors == {} and f.metadata == {}


def rewrite(path, header=None, prefix=None, data=None, fix_crc=True):
    """Rebuild a file from (possibly altered) parts."""
    buf = path.read_bytes()
    magic, ver, flags, hl, do, dl, crc, res = PREFIX.unpack_from(buf)
    hdr = json.loads(buf[PREFIX_SIZE:PREFIX_SIZE + hl])
    body = buf[do:]
    if header:
        header(hdr)
    if data is not None:
        body = data(body)
    hb = json.dumps(hdr).encode()
    fields = dict(magic=magic, ver=ver, flags=flags, hl=len(hb), do=align(PREFIX_SIZE + len(hb)), dl=len(body),
                  crc=zlib.crc32(hb) if fix_crc else crc, res=res)
    if prefix:
        prefix(fields)
    out = PREFIX.pack(*fields.values()) + hb
    out += b"\0" * (align(PREFIX_SIZE + len(hb)) - len(out)) + body
    path.write_bytes(out)


def set_key(i, key, value):
    def f(h):
        h["tensors"][i][key] = value
    return f


CASES = {
    "wrong magic": (dict(prefix=lambda f: f.update(magic=b"GGUF\0\0\0\0")), "not a lowbit file"),
    "future version": (dict(prefix=lambda f: f.update(ver=2)), "version 2 is not supported"),
    "flags set": (dict(prefix=lambda f: f.update(flags=1)), "reserved"),
    "huge header length": (dict(prefix=lambda f: f.update(hl=1 << 62)), "header length"),
    "data offset wrong": (dict(prefix=lambda f: f.update(do=f["do"] + 64)), "data offset"),
    "header checksum": (dict(prefix=lambda f: f.update(crc=f["crc"] ^ 1)), "checksum"),
    "offset past the end": (dict(header=set_key(2, "offset", 1 << 40)), "gap"),
    "overlapping tensors": (dict(header=set_key(1, "offset", 0)), "overlaps"),
    "nbytes wrong for type": (dict(header=set_key(0, "nbytes", 100)), "needs"),
    "absurd dimension": (dict(header=set_key(0, "shape", [1 << 40, 64])), "invalid shape"),
    "negative dimension": (dict(header=set_key(0, "shape", [-4, 64])), "invalid shape"),
    "too many dimensions": (dict(header=set_key(0, "shape", [1, 1, 1, 1, 4])), "invalid shape"),
    "row not a block multiple": (dict(header=set_key(2, "shape", [6, 63])), "not a multiple"),
    "duplicate name": (dict(header=set_key(1, "name", "t0")), "appears twice"),
    "bad crc string": (dict(header=set_key(0, "crc32", "xyz")), "crc32"),
    "tensors not a list": (dict(header=lambda h: h.update(tensors={"a": 1})), "'tensors' list"),
    "too many tensors": (dict(header=lambda h: h.update(tensors=[{}] * 100_001)), "exceeds the cap"),
    "data shorter than header says": (dict(data=lambda b: b[:-10]), "past the end of the data region"),
    "trailing bytes": (dict(data=lambda b: b + b"\0" * 64), "tensors end at"),
}


@pytest.mark.parametrize("case", CASES)
def test_malformed_files_raise_format_error(tmp_path, case):
    p = tmp_path / "bad.lowbit"
    small_file(p)
    kwargs, message = CASES[case]
    rewrite(p, **kwargs)
    tracemalloc.start()
    with pytest.raises(FormatError) as e:
        LowbitFile(p)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert message in str(e.value) and str(p) in str(e.value)
    assert peak < 64 << 20, f"{case}: allocated {peak} bytes"


def test_truncated_file_at_every_region(tmp_path):
    p = tmp_path / "t.lowbit"
    small_file(p)
    full = p.read_bytes()
    for cut in [0, 7, 47, 48, 60, PREFIX_SIZE + 10, len(full) // 2, len(full) - 1]:
        p.write_bytes(full[:cut])
        with pytest.raises(FormatError):
            LowbitFile(p)


def test_non_json_and_non_utf8_headers(tmp_path):
    for junk in [b"\xff\xfe{}", b"[1,2]", b'{"a": NaN}', b'{"a": 1, "a": 2}', b"[" * 100 + b"]" * 100]:
        p = tmp_path / "j.lowbit"
        do = align(PREFIX_SIZE + len(junk))
        p.write_bytes(PREFIX.pack(b"\x89LOWBIT\n", 1, 0, len(junk), do, 0, zlib.crc32(junk), 0) + junk
                      + b"\0" * (do - PREFIX_SIZE - len(junk)))
        with pytest.raises(FormatError):
            LowbitFile(p)


def test_tensor_checksum_mismatch_is_found_by_verify(tmp_path):
    p = tmp_path / "c.lowbit"
    small_file(p)
    buf = bytearray(p.read_bytes())
    buf[-1] ^= 0xFF
    p.write_bytes(bytes(buf))
    with LowbitFile(p) as f:
        assert f.verify() == ["t2"]


def test_unknown_type_is_listed_but_not_dequantized(tmp_path):
    p = tmp_path / "u.lowbit"
    small_file(p)
    rewrite(p, header=set_key(0, "type", "q9_z"))
    with LowbitFile(p) as f:
        assert f.info("t0").type == "q9_z"
        with pytest.raises(FormatError, match="cannot read"):
            f.dequantize("t0")


def test_missing_file_is_a_format_error(tmp_path):
    with pytest.raises(FormatError, match="cannot open"):
        LowbitFile(tmp_path / "nope.lowbit")


def test_write_is_atomic_when_interrupted(tmp_path):
    p = tmp_path / "x.lowbit"

    def boom():
        raise KeyboardInterrupt

    specs = [TensorSpec("a", "f32", (4,), lambda: np.zeros(4, np.float32)), TensorSpec("b", "f32", (4,), boom)]
    with pytest.raises(KeyboardInterrupt):
        write_lowbit(p, {}, specs)
    assert list(tmp_path.iterdir()) == []


def test_huge_context_length_does_not_size_allocations(tmp_path, converted):
    """context_length is backed by no tensor bytes: loading must not allocate by it."""
    import shutil

    import lowbit
    p = tmp_path / "ctx.lowbit"
    shutil.copy(converted("stories260K", "q8_0"), p)
    rewrite(p, header=lambda h: h["metadata"]["architecture"].update(context_length=1 << 20))
    tracemalloc.start()
    m = lowbit.load(p)
    m.generate_ids("Once", max_tokens=2, temperature=0.0)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert m.transformer.n_ctx == 4096 and peak < 64 << 20   # a 2^20 context would need > 1 GiB
    # an explicit context whose KV cache cannot fit in memory is refused with advice, not attempted
    from lowbit.config import ModelConfig, context_size
    huge = ModelConfig(**{**m.config.to_json(), "num_layers": 1024, "num_kv_heads": 1024, "head_dim": 1024})
    with pytest.raises(ValueError, match="--ctx"):
        context_size(str(p), huge, 1 << 20)
