"""The native C path of the Huffman-coded `<base>.h` types (lowbit_native.c, "Huffman-coded types"):
decoded rows bit-identical to the Numba decoder, matmuls and row lookups equal to the base type's C
kernels on the decoded bytes, the whole model on the native runtime, and damaged streams decoded
without reading outside their chunk (format_spec/types/huffman.md: bits past a chunk's end are zeros)."""
import os
import subprocess
import sys

import numpy as np
import pytest

from lowbit import native, quants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
LEVELS = native.available_levels()
H_TYPES = ["q4_k.h", "q4_ke.h"]
# odd shapes: one weight, tails only (q4_k.h: no index bytes at all), whole blocks, whole + tail,
# row counts that are not multiples of 4 (a tile with 1..3 real rows)
SHAPES = [(1, 1), (3, 17), (5, 256), (7, 300), (6, 384), (9, 513), (37, 1000), (6, 2048)]


def _encoded(type_name, rows, cols, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    w[0, :min(cols, 64)] *= 50   # an outlier row
    qt = quants.get(type_name)
    return qt.bind(qt.quantize(w), (rows, cols))


def _numba(fn):
    """Run fn with the native backend off (the Numba path of huffcoded.Bound)."""
    old = os.environ.get("LOWBIT_BACKEND")
    os.environ["LOWBIT_BACKEND"] = "numba"
    try:
        return fn()
    finally:
        if old is None:
            del os.environ["LOWBIT_BACKEND"]
        else:
            os.environ["LOWBIT_BACKEND"] = old


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("type_name", H_TYPES)
@pytest.mark.parametrize("rows,cols", SHAPES)
def test_decoded_rows_bit_identical(level, type_name, rows, cols):
    b = _encoded(type_name, rows, cols)
    dec = native.HuffDecoder(b, level)
    ids = np.arange(rows)
    assert np.array_equal(dec.rows(ids), b.raw_rows(ids))
    perm = np.random.default_rng(1).integers(0, rows, 11)   # any order, repeats, groups of 4 and a rest
    assert np.array_equal(dec.rows(perm), b.raw_rows(perm))


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("type_name", H_TYPES)
@pytest.mark.parametrize("rows,cols", SHAPES)
@pytest.mark.parametrize("n", [1, 2, 5])   # decode kernels (1, 2 tokens) and prompt tiles
def test_matmul_equals_base_kernel(level, type_name, rows, cols, n):
    """The coded weight's C matmul is the base type's C kernel on the decoded bytes, bit for bit."""
    b = _encoded(type_name, rows, cols, seed=n)
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, cols)).astype(np.float32)
    bias = rng.standard_normal(rows).astype(np.float32)
    hw = native.HuffWeight(b, level)
    y = hw.matmul(x, np.empty((n, rows), np.float32))
    base = native.NativeMatmul(type_name[:-2], level)
    ref = base(b.base_bytes().reshape(rows, -1), x, np.empty((n, rows), np.float32), cols=cols)
    assert np.array_equal(y, ref)
    # bias through lb_weight (the runtime's path)
    ffi, lib = native.library(level)
    w, keep = ffi.new("lb_weight *"), []
    native.fill_weight(ffi, w, type_name, None, cols, bias, keep, b, level)
    yb = np.empty((n, rows), np.float32)
    assert lib.lb_matmul(w, ffi.cast("const float *", ffi.from_buffer(x)), ffi.cast("float *", ffi.from_buffer(yb)),
                         n, 0) == 0
    assert np.array_equal(yb, ref + bias)


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("type_name", H_TYPES)
@pytest.mark.parametrize("rows,cols", SHAPES)
def test_row_lookup_matches_numba_dequantizer(level, type_name, rows, cols):
    b = _encoded(type_name, rows, cols)
    ids = np.array([rows - 1, 0, rows // 2, rows - 1, 0])
    got = native.HuffWeight(b, level).get_rows(ids)
    want = _numba(lambda: b.gather(ids))
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


def test_bound_weight_is_made_once_and_runs_the_base_kernel():
    b = _encoded("q4_ke.h", 9, 300)
    hw = native.bound_weight(b)
    assert hw is not None and native.bound_weight(b) is hw
    x = np.random.default_rng(0).standard_normal((1, 300)).astype(np.float32)
    # the same C kernel on the decoded base bytes gives the same bits
    want = native.NativeMatmul("q4_ke")(b.base_bytes().reshape(9, -1), x, np.empty((1, 9), np.float32))
    got = hw.matmul(x, np.empty((1, 9), np.float32))
    assert np.array_equal(got.view(np.uint32), want.view(np.uint32))


def _damaged(type_name, rows, cols, seed):
    """A valid header over damaged chunks: flipped stream bytes, and chunk boundaries moved so that
    some chunks end early (even empty) and others carry the next row's bytes."""
    qt = quants.get(type_name)
    rng = np.random.default_rng(seed)
    flat = qt.quantize(rng.standard_normal((rows, cols)).astype(np.float32)).copy()
    b = qt.bind(flat, (rows, cols))
    s0 = flat.size - b.stream.size
    flat[s0 + rng.integers(0, b.stream.size, 40)] ^= rng.integers(1, 256, 40).astype(np.uint8)
    off = b.offsets.copy()
    inner = np.sort(rng.integers(0, b.stream.size + 1, rows - 1))
    inner[:3] = 0                      # the first chunks empty
    off[1:-1] = inner
    o = 280   # the offsets follow the fixed header
    flat[o:o + 4 * (rows + 1)] = off.astype("<u4").view(np.uint8)
    return qt.bind(flat, (rows, cols)), flat


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("type_name", H_TYPES)
def test_damaged_chunks_decode_like_the_spec(level, type_name):
    """A damaged chunk gives other index bytes, the same in C as in the reference decoder (bits past
    a chunk's end read as zeros), never a crash; the weights stay usable (finite)."""
    for seed in range(4):
        b, _ = _damaged(type_name, 23, 700, seed)
        ids = np.arange(23)
        assert np.array_equal(native.HuffDecoder(b, level).rows(ids), b.raw_rows(ids))
        y = native.HuffWeight(b, level).matmul(np.ones((1, 700), np.float32), np.empty((1, 23), np.float32))
        assert np.isfinite(y).all()


def test_bad_decoder_input_is_rejected():
    """lb_huff_new checks what it is given (the format layer checked it first): an incomplete code,
    lengths over 12, offsets out of order or not ending at the stream's length."""
    b = _encoded("q4_ke.h", 5, 512)
    good = (b.lengths.copy(), b.offsets.copy())
    for change in ("kraft", "long", "order", "end"):
        b.lengths, b.offsets = good[0].copy(), good[1].copy()
        if change == "kraft":
            b.lengths[np.flatnonzero(b.lengths)[0]] += 1
        elif change == "long":
            b.lengths[np.flatnonzero(b.lengths)[0]] = 13
        elif change == "order":
            b.offsets[2], b.offsets[3] = b.offsets[3], b.offsets[2] - 1
        else:
            b.offsets[-1] -= 1
        with pytest.raises(ValueError, match="rejected"):
            native.HuffDecoder(b)


GUARD_SCRIPT = r"""
import ctypes, mmap, sys
import numpy as np
from lowbit import native, quants
qt = quants.get(sys.argv[1])
rng = np.random.default_rng(int(sys.argv[2]))
rows, cols = 7, 600
flat = qt.quantize(rng.standard_normal((rows, cols)).astype(np.float32))
b0 = qt.bind(flat, (rows, cols))
stream_at = flat.size - b0.stream.size
flat = flat.copy()
flat[stream_at:] = rng.integers(0, 256, b0.stream.size, dtype=np.uint8)   # garbage chunks
off = b0.offsets.copy()
off[1:-1] = np.sort(rng.integers(0, b0.stream.size + 1, rows - 1))
flat[280:280 + 4 * (rows + 1)] = off.astype("<u4").view(np.uint8)
# the tensor ends exactly where an inaccessible page begins: a read past the stream faults
page = mmap.PAGESIZE
npages = (flat.size + page - 1) // page + 1
m = mmap.mmap(-1, npages * page)
base = ctypes.addressof(ctypes.c_char.from_buffer(m))
libc = ctypes.CDLL(None)
assert libc.mprotect(ctypes.c_void_p(base + (npages - 1) * page), page, 0) == 0
buf = np.frombuffer(m, np.uint8, count=(npages - 1) * page)
view = buf[buf.size - flat.size:]
view[:] = flat
b = qt.bind(view, (rows, cols))
dec = native.HuffDecoder(b)
got = dec.rows(np.arange(rows))
assert np.array_equal(got, b.raw_rows(np.arange(rows)))
native.HuffWeight(b).matmul(np.ones((3, cols), np.float32), np.empty((3, rows), np.float32))
print("ok")
"""


@pytest.mark.parametrize("type_name", H_TYPES)
def test_no_read_past_the_stream(type_name):
    """Garbage chunks whose tensor ends at an inaccessible page: decoding them in C must not fault."""
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for seed in range(3):
        r = subprocess.run([sys.executable, "-c", GUARD_SCRIPT, type_name, str(seed)], capture_output=True, text=True,
                           env=env, timeout=300)
        assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


@pytest.mark.parametrize("qtype", H_TYPES)
def test_native_forward_of_coded_model(converted, qtype):
    """pycode-30m as q4_k.h / q4_ke.h runs on the native runtime with logits equal to the base type's
    file (same kernels, same decoded bytes) and within the native tolerance of the Numba path."""
    import lowbit
    ref = np.load(os.path.join(SHARED, "reference", "pycode-30m.npz"))
    ids = [int(i) for i in ref["ids"][:20]]
    m = lowbit.load(converted("pycode-30m", qtype), n_ctx=64)
    assert m.transformer.native is not None
    fast = m.logits(ids)
    cache = m.transformer.new_cache()
    steps = np.concatenate([m.transformer.forward([i], cache) for i in ids[:6]])   # the decode kernels
    base = lowbit.load(converted("pycode-30m", qtype[:-2]), n_ctx=64)
    assert np.array_equal(fast, base.logits(ids))
    cache = base.transformer.new_cache()
    assert np.array_equal(steps, np.concatenate([base.transformer.forward([i], cache) for i in ids[:6]]))
    # the embedding lookup in C is bit-exact against the Numba decoder + dequantizer
    t = m.transformer
    toks = np.array(ids[:5])
    assert np.array_equal(t.embed(toks), _numba(lambda: t.embed_bound.gather(toks)))
    native_t, t.native = t.native, None
    try:
        slow = _numba(lambda: m.logits(ids[:12]))
    finally:
        t.native = native_t
    spread = np.abs(slow).max()
    assert np.abs(fast[:12] - slow).max() < 5e-2 * spread   # test_native_kernels' k-quant tolerance
    assert (fast[:12].argmax(-1) == slow.argmax(-1)).mean() > 0.9
