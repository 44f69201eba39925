"""The native C kernels against the Numba path and against dequantize-then-numpy, for every type
with a C kernel and every feature level this CPU runs; and the native forward pass against the
Numba forward pass on real checkpoints."""
import os

import numpy as np
import pytest

from lowbit import kernels, native, quants
from lowbit.native import C_TYPES, CODEBOOK_TYPES

LEVELS = native.available_levels()
SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared")


KQUANTS = ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k"]
KQ_ACT = (*KQUANTS, "q4_ke")   # types whose C kernel quantizes activations like the k-quants (q4_ke: q4_k bytes)


def _quantize_act(x, block=32):
    """What the C side does to activations of 8-bit types: blocks of 32 (q8_0) or 256 (k-quants, the
    last one shorter), scale amax/127, rint."""
    n, cols = x.shape
    pad = -cols % block
    b = np.pad(x.astype(np.float32), ((0, 0), (0, pad))).reshape(n, -1, block)
    d = np.abs(b).max(-1) / np.float32(127)
    inv = np.divide(np.float32(1), d, out=np.zeros_like(d), where=d != 0)
    return (np.rint(b * inv[..., None]) * d[..., None]).reshape(n, -1)[:, :cols]


def _act(type_name, x):
    """The activations a type's C kernel multiplies."""
    if type_name == "q8_0":
        return _quantize_act(x, 32)
    return _quantize_act(x, 256) if type_name in KQ_ACT else x


def _int8_codebook(type_name, level, n):
    """cbk4 on AVX-512 (decode and prompt tiles) multiplies an int8-rounded codebook with 8-bit
    activations (blocks of 32): not exact, held to the tolerance the k-quants' activation rounding
    gets against Numba."""
    return type_name == "cbk4" and (level or LEVELS[0]) == "avx512vnni"


def _case(type_name, rows, cols, n, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((rows, cols)).astype(np.float32)
    w[0, :min(cols, 64)] *= 50        # a row with outliers
    x = rng.standard_normal((n, cols)).astype(np.float32)
    qt = quants.get(type_name)
    raw = qt.quantize(w, None)
    wd = qt.dequantize(raw, (rows, cols))
    return qt, raw, wd, x


def _numba_matmul(type_name, raw, x, y, rows, cols):
    """The Numba path's matmul (codebook types: through their bound tensor)."""
    qt = quants.get(type_name)
    if qt.whole_tensor:
        qt.bind(raw, (rows, cols)).matmul(x, y)
    else:
        kernels.matmul(qt.dequant_row, raw, x, y)


def _check(y, xa, wd, tol, what):
    exact = xa.astype(np.float64) @ wd.astype(np.float64).T      # the inputs the kernel multiplies
    scale = np.abs(xa).astype(np.float64) @ np.abs(wd).astype(np.float64).T + 1e-6
    err = np.max(np.abs(y - exact) / scale)
    assert err < tol, f"{what}: max relative error {err}"


def test_this_machine_runs_a_simd_level():
    # the project's machines have AVX-512 VNNI; a CPU without AVX2 would still pass the rest on scalar
    assert LEVELS[-1] == "scalar" and len(LEVELS) >= 1


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("type_name", sorted(C_TYPES))
@pytest.mark.parametrize("rows,cols,n", [(1, 64, 1), (7, 96, 1), (37, 160, 5), (130, 512, 3), (9, 172, 2), (13, 96, 11), (6, 320, 7)])
def test_matmul_matches_references(level, type_name, rows, cols, n):
    qt = quants.get(type_name)
    if not qt.fits(cols):
        cols = cols // qt.block_size * qt.block_size + qt.block_size   # q8_0: nearest block multiple
    qt, raw, wd, x = _case(type_name, rows, cols, n, seed=rows * 1000 + cols)
    y = np.full((n, rows), np.nan, np.float32)
    native.NativeMatmul(type_name, level)(raw, x, y)
    i8 = _int8_codebook(type_name, level, n)
    _check(y, _act(type_name, x), wd, 2e-2 if i8 else 1e-5, f"{type_name}@{level} vs dequantize+numpy")
    # the Numba path multiplies float activations: differs only by the activation quantization
    y_numba = np.empty_like(y)
    _numba_matmul(type_name, raw, x, y_numba, rows, cols)
    _check(y, x, wd, 2e-2 if type_name in ("q8_0", *KQ_ACT) or i8 else 1e-5, f"{type_name}@{level} vs numba")
    _check(y_numba, x, wd, 1e-5, "numba vs numpy")


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("n", [2, 6])   # 6: the prompt tiles (4 tokens, then 2)
def test_bias_and_accumulate(level, n):
    qt, raw, wd, x = _case("q8_0", 11, 64, n, seed=3)
    bias = np.arange(11, dtype=np.float32)
    y0 = np.zeros((n, 11), np.float32)
    native.NativeMatmul("q8_0", level)(raw, x, y0, bias=bias)
    y1 = np.ones((n, 11), np.float32)
    native.NativeMatmul("q8_0", level)(raw, x, y1, bias=bias, accumulate=True)
    np.testing.assert_allclose(y1, y0 + 1, rtol=1e-6, atol=1e-5)
    _check(y0 - bias, _quantize_act(x), wd, 1e-5, "bias")


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("type_name", KQUANTS)
def test_kquant_whole_and_tail_blocks(level, type_name):
    """Row lengths with and without a tail block; 1-2 tokens take the decode kernels (whole blocks
    straight from the map: every k-quant on AVX-512, q4_k and q6_k on AVX2), more tokens the
    unpacked-tile kernels. Embedding rows are bit-exact."""
    ffi, lib = native.library(level)
    for cols in (256, 384, 512, 172, 1280, 428):   # 428: a whole block and a 172-weight tail
        for n in (1, 2, 5, 10):   # 5, 10: prompt tiles of 4 tokens, then 1 or 2
            qt, raw, wd, x = _case(type_name, 9, cols, n, seed=cols * 10 + n)
            y = np.full((n, 9), np.nan, np.float32)
            native.NativeMatmul(type_name, level)(raw, x, y)
            _check(y, _act(type_name, x), wd, 1e-5, f"{type_name}@{level} cols={cols} n={n}")
            y_numba = np.empty_like(y)
            kernels.matmul(qt.dequant_row, raw, x, y_numba)
            _check(y, x, wd, 1e-2, f"{type_name}@{level} cols={cols} n={n} vs numba")
        w = native.NativeMatmul(type_name, level).weight(raw, cols)
        ids = np.array([8, 0, 3], np.int64)
        out = np.empty((3, cols), np.float32)
        assert lib.lb_get_rows(w.ptr, ffi.cast("int64_t *", ffi.from_buffer(ids)), 3, ffi.cast("float *", ffi.from_buffer(out))) == 0
        assert np.array_equal(out, wd[ids]), f"{type_name}@{level} cols={cols}: C dequantization differs from Numba's"


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("type_name", CODEBOOK_TYPES)
def test_codebook_decode_prompt_and_rows(level, type_name):
    """Codebook types: decode (1-2 tokens, fused from the map) and prompt (dequantized tiles) kernels
    against the Numba path and exact products, partial 4-row tiles, and embedding rows bit-exact
    (the spec's float32 order) through lb_get_rows."""
    ffi, lib = native.library(level)
    B = quants.get(type_name).block_size
    for rows, cols in ((5, B), (9, 3 * B), (130, 512), (6, 1280)):
        for n in (1, 2, 3, 9):
            qt, raw, wd, x = _case(type_name, rows, cols, n, seed=rows * 7 + cols + n)
            y = np.full((n, rows), np.nan, np.float32)
            native.NativeMatmul(type_name, level)(raw, x, y)
            tol = 2e-2 if _int8_codebook(type_name, level, n) else 1e-5
            _check(y, x, wd, tol, f"{type_name}@{level} {rows}x{cols} n={n}")
            y_numba = np.empty_like(y)
            _numba_matmul(type_name, raw, x, y_numba, rows, cols)
            _check(y_numba, x, wd, 1e-5, f"numba {type_name} {rows}x{cols} n={n}")
            assert np.abs(y - y_numba).max() <= 2 * tol * (np.abs(x) @ np.abs(wd).T).max()
        w = native.NativeMatmul(type_name, level).weight(raw, cols)
        ids = np.array([rows - 1, 0, rows // 2, rows - 1], np.int64)
        out = np.empty((len(ids), cols), np.float32)
        assert lib.lb_get_rows(w.ptr, ffi.cast("int64_t *", ffi.from_buffer(ids)), len(ids),
                               ffi.cast("float *", ffi.from_buffer(out))) == 0
        assert np.array_equal(out, wd[ids]), f"{type_name}@{level}: C rows differ from the Numba dequantizer's"
    assert np.array_equal(native.get_rows(type_name, raw, ids, cols), wd[ids])   # the Python entry (best level)


def test_codebook_bad_arguments_are_rejected():
    """A codebook weight without its codebook or row scales, a row length off the block, a size that
    fits no row count: refused (C returns -1, Python raises), never read."""
    qt, raw, wd, x = _case("cbk4", 8, 64, 1, seed=2)
    ffi, lib = native.library()
    kern = native.NativeMatmul("cbk4")
    w = kern.weight(raw, 64)
    y = np.empty((1, 8), np.float32)
    px, py = ffi.cast("const float *", ffi.from_buffer(x)), ffi.cast("float *", ffi.from_buffer(y))
    assert lib.lb_matmul(w.ptr, px, py, 1, 0) == 0
    for field in ("codebook", "row_scale"):
        saved = getattr(w.ptr, field)
        setattr(w.ptr, field, ffi.NULL)
        assert lib.lb_matmul(w.ptr, px, py, 1, 0) == -1
        setattr(w.ptr, field, saved)
    w.ptr.cols = 48   # not a multiple of 32
    assert lib.lb_matmul(w.ptr, px, py, 1, 0) == -1
    assert lib.lb_row_bytes(C_TYPES["cbk2"], 96) == -1 and lib.lb_row_bytes(C_TYPES["cbk2"], 128) == 34
    with pytest.raises(ValueError):
        kern(raw[:-1], x, y)              # one byte short: no whole number of rows
    with pytest.raises(ValueError):
        kern(raw, x[:, :48], y[:, :8])    # rows of 48 do not fit cbk4's blocks


def test_kquant_rows_split_over_threads_agree():
    # 1280 columns: 5 whole blocks per row, many 4-row tiles per thread (the decode kernels prefetch
    # the next tile), the last one partial; 384: a whole block and a tail
    for type_name, n, cols in (("cbk4", 1, 512), ("cbk2", 2, 512), ("d4l2", 5, 512), ("q4_k", 1, 384), ("q6_k", 2, 384), ("q3_k", 4, 384), ("q2_k", 1, 1280),
                               ("q3_k", 1, 1280), ("q4_k", 2, 1280), ("q5_k", 1, 1280), ("q6_k", 1, 1280)):
        qt, raw, wd, x = _case(type_name, 203, cols, n, seed=7)
        kern = native.NativeMatmul(type_name)
        outs = []
        try:
            for t in (1, 2, 3):   # (codebook types: float activations, same 1e-5 bound)
                native.set_threads(t)
                y = np.empty((n, 203), np.float32)
                kern(raw, x, y)
                outs.append(y)
        finally:
            native.set_threads(native.default_threads())
        assert all(np.array_equal(outs[0], o) for o in outs[1:]), type_name
        _check(outs[0], _act(type_name, x), wd, 2e-2 if _int8_codebook(type_name, None, n) else 1e-5,
               f"{type_name} cols={cols} n={n}")


def test_thread_count_does_not_change_results():
    qt, raw, wd, x = _case("q8_0", 203, 256, 4, seed=5)
    kern = native.NativeMatmul("q8_0")
    outs = []
    try:
        for t in (1, 2, 3):
            assert native.set_threads(t) == t
            y = np.empty((4, 203), np.float32)
            kern(raw, x, y)
            outs.append(y)
    finally:
        native.set_threads(native.default_threads())
    assert all(np.array_equal(outs[0], o) for o in outs[1:])


def test_bad_arguments_are_rejected():
    qt, raw, wd, x = _case("q8_0", 4, 64, 1, seed=1)
    kern = native.NativeMatmul("q8_0")
    with pytest.raises(ValueError):
        kern(raw, x[:, :32], np.empty((1, 4), np.float32))      # raw does not hold rows of 32
    with pytest.raises(ValueError):
        kern(raw, x, np.empty((1, 5), np.float32))              # wrong output shape
    ffi, lib = native.library()
    w = kern.weight(raw, 64).ptr
    w.cols = 48                                                  # not a multiple of the block
    assert lib.lb_matmul(w, ffi.NULL, ffi.NULL, 1, 0) == -1
    assert lib.lb_row_bytes(3, 48) == -1
    ids = np.array([4], np.int64)                                # out of range row
    w.cols = 64
    out = np.empty((1, 64), np.float32)
    assert lib.lb_get_rows(w, ffi.cast("int64_t *", ffi.from_buffer(ids)), 1, ffi.cast("float *", ffi.from_buffer(out))) == -1


def test_real_tensor_matches_dequantize():
    """A real pycode-30m weight (BF16 in the checkpoint) in every native type."""
    from converters.hf import Checkpoint
    w = Checkpoint(os.path.join(SHARED, "models", "pycode-30m")).tensor("blk.0.ffn_down.weight")
    x = np.random.default_rng(0).standard_normal((3, w.shape[1])).astype(np.float32)
    for type_name in sorted(C_TYPES):
        qt = quants.get(type_name)
        raw = qt.quantize(w, None)
        wd = qt.dequantize(raw, w.shape)
        for level in LEVELS:
            y = np.empty((3, w.shape[0]), np.float32)
            native.NativeMatmul(type_name, level)(raw, x, y)
            _check(y, _act(type_name, x), wd, 2e-2 if _int8_codebook(type_name, level, 3) else 1e-5, f"{type_name}@{level}")


@pytest.mark.parametrize("model,qtype", [("pycode-30m", "q8_0"), ("pychat-30m", "q8_0"), ("stories260K", "f32"),
                                         ("pycode-30m", "bf16"), ("pychat-30m", "f16"),
                                         ("pycode-30m", "q4_k_m"), ("pychat-30m", "q4_k_m"),
                                         ("pycode-30m", "q2_k"), ("pychat-30m", "q2_k")])
def test_native_forward_matches_numba_forward(tmp_path, model, qtype):
    import lowbit
    from converters import convert
    path = str(tmp_path / f"{model}-{qtype}.lowbit")
    convert(os.path.join(SHARED, "models", model), path, qtype)
    ref = np.load(os.path.join(SHARED, "reference", f"{model}.npz"))
    ids = [int(i) for i in ref["ids"][:24]]
    m = lowbit.load(path, n_ctx=64)
    assert m.transformer.native is not None
    fast = m.logits(ids)
    # token by token through the cache must agree with the batched prefill
    cache = m.transformer.new_cache()
    steps = np.concatenate([m.transformer.forward([i], cache) for i in ids[:8]])
    native_t, m.transformer.native = m.transformer.native, None
    os.environ["LOWBIT_BACKEND"] = "numba"
    try:
        slow = m.logits(ids)
    finally:
        del os.environ["LOWBIT_BACKEND"]
        m.transformer.native = native_t
    spread = np.abs(slow).max()
    # 8-bit activations in C (q8_0: blocks of 32; k-quants: blocks of 256, measured <= 0.029 of the
    # largest logit on these files, q8_0 <= ...); float types: summation order only
    tol = 5e-2 if "k" in qtype else 3e-2 if qtype == "q8_0" else 1e-3
    if "k" in qtype:   # the embedding lookup is C's too: bit-exact against the Numba dequantizer
        toks = np.array(ids[:5])
        assert np.array_equal(m.transformer.embed(toks),
                              m.transformer.embed_qtype.dequantize(m.transformer.embed_raw[toks], (5, m.transformer.config.hidden_size)))
    assert np.abs(fast - slow).max() < tol * spread
    # k-quants decode through other kernels than prefill (same integer sums, other float order), and a
    # last-bit difference can move an 8-bit activation by one step: the same bound as against Numba
    assert np.abs(steps - fast[:8]).max() < (tol if "k" in qtype else 1e-3) * spread
    assert (fast.argmax(-1) == slow.argmax(-1)).mean() > 0.9
    # q2_k itself (the Numba path too) agrees with the float reference on 20 of 24 positions
    assert (fast.argmax(-1) == ref["logits"][:24].argmax(-1)).mean() > (0.8 if qtype == "q2_k" else 0.85)


# cbk4: the whole model; cbk2 and d4l2: the embedding, layers 0-1 and the output in the type, the
# rest q4_k (a mix with k-quants; whole-model k-means / the lattice's scale search take 35-80 s
# under load, layers 0-1 ~10 s)
CODEBOOK_MODELS = [("cbk4", ()), ("cbk2", (r"blk\.[2-7]\..*=q4_k",)), ("d4l2", (r"blk\.[2-7]\..*=q4_k",))]


@pytest.mark.parametrize("qtype,overrides", CODEBOOK_MODELS)
def test_native_forward_codebook_model(tmp_path, qtype, overrides):
    """pycode-30m with codebook tensors runs on the native runtime (embedding lookup, every block and
    the output matmul in C) and agrees with the Numba path: float activations on both sides, so
    only the summation order differs."""
    import lowbit
    from converters import convert
    path = str(tmp_path / f"pycode-{qtype}.lowbit")
    convert(os.path.join(SHARED, "models", "pycode-30m"), path, qtype, progress=False, log=lambda m: None,
            overrides=overrides)
    ref = np.load(os.path.join(SHARED, "reference", "pycode-30m.npz"))
    ids = [int(i) for i in ref["ids"][:24]]
    m = lowbit.load(path, n_ctx=64)
    t = m.transformer
    assert t.native is not None and t.embed_qtype.name == qtype and t.output.qtype.name == qtype
    assert t.layers[0].w_down.qtype.name == qtype
    fast = m.logits(ids)
    cache = t.new_cache()
    steps = np.concatenate([t.forward([i], cache) for i in ids[:8]])   # the decode kernels
    toks = np.array(ids[:5])
    emb = native.get_rows(qtype, t.embed_raw, toks, t.config.hidden_size)
    assert np.array_equal(emb, t.embed_bound.gather(toks))             # C rows = Numba's, bit for bit
    native_t, t.native = t.native, None
    os.environ["LOWBIT_BACKEND"] = "numba"
    try:
        slow = m.logits(ids)
    finally:
        del os.environ["LOWBIT_BACKEND"]
        t.native = native_t
    spread = np.abs(slow).max()
    # pure codebook: float activations both sides (summation order only); with q4_k layers (and cbk4's
    # int8 decode kernel): 8-bit activations in C, the k-quant bound of test_native_forward_matches_numba_forward
    tol = 5e-2 if overrides or _int8_codebook(qtype, None, 1) else 1e-3
    assert np.abs(fast - slow).max() < tol * spread
    assert np.abs(steps - fast[:8]).max() < tol * spread
    assert (fast.argmax(-1) == slow.argmax(-1)).mean() > 0.9
    assert (fast.argmax(-1) == ref["logits"][:24].argmax(-1)).mean() > 0.7


@pytest.mark.parametrize("level", LEVELS)
def test_codebook_non_finite_side_data(level):
    """A codebook point or row scale that is infinite or NaN (any binary16 decodes, codebook.md): the
    rows that use it come out non-finite in C as in the Numba path (cbk4's int8 kernel steps aside for
    a non-finite codebook), the others stay finite and agree."""
    qt, raw, wd, x = _case("cbk4", 8, 128, 1, seed=4)
    raw = raw.copy()
    body = raw[1024 + 16:].reshape(8, -1)
    k = int(body[2, 1])                       # the first point row 2 uses
    raw[4 * k:4 * k + 2] = np.array([np.inf], "<f2").view(np.uint8)
    raw[1024 + 2 * 5:1024 + 2 * 6] = np.array([np.nan], "<f2").view(np.uint8)   # row 5's scale
    y = np.empty((1, 8), np.float32)
    native.NativeMatmul("cbk4", level)(raw, x, y)
    y_numba = np.empty_like(y)
    _numba_matmul("cbk4", raw, x, y_numba, 8, 128)
    assert np.array_equal(np.isfinite(y), np.isfinite(y_numba)) and not np.isfinite(y[0, [2, 5]]).any()
    fin = np.isfinite(y_numba)
    wd = qt.dequantize(raw, (8, 128))
    assert np.abs(y[fin] - y_numba[fin]).max() <= 1e-5 * np.abs(np.abs(x) @ np.abs(wd[fin[0]]).T).max()
