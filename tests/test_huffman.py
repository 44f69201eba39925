"""Canonical Huffman coding and the entropy-coded `.h` types (format_spec/types/huffman.md)."""
import dataclasses

import numpy as np
import pytest

from conftest import model_dir
from lowbit import quants
from lowbit.quants import huffcoded, huffman


def test_code_lengths_complete_and_limited():
    rng = np.random.default_rng(0)
    for counts in (rng.geometric(0.05, 256), np.r_[1 << 30, np.ones(255, np.int64)], np.r_[5, np.zeros(255, np.int64)]):
        L = huffman.code_lengths(counts)
        assert L.max() <= huffman.MAX_LEN and huffman.kraft_ok(L)


def test_rows_round_trip():
    rng = np.random.default_rng(1)
    sym = np.minimum(rng.geometric(0.1, (37, 100)), 255).astype(np.uint8)
    L = huffman.code_lengths(np.bincount(sym.reshape(-1), minlength=256))
    off, stream = huffman.encode_rows(sym, L)
    table = huffman.decode_table(L)
    pos = np.arange(100, dtype=np.int64)
    for r in range(37):
        out = np.zeros(100, np.uint8)
        huffman.decode_chunk(stream, int(off[r]), int(off[r + 1]), table, 100, out, pos)
        assert np.array_equal(out, sym[r])


@pytest.fixture(scope="module")
def ffn_up():
    from converters.hf import Checkpoint
    return Checkpoint(model_dir("pycode-30m")).tensor("blk.2.ffn_up.weight").astype(np.float32)


def test_q4_k_h_bit_identical(ffn_up, monkeypatch):
    monkeypatch.setenv("LOWBIT_BACKEND", "numba")   # the float decode-dot (test_native_huff: the C one)
    q = quants.get("q4_k")
    raw = q.quantize(ffn_up)
    enc = huffcoded.encode(dataclasses.replace(q, index_positions=huffcoded.q4_k_index_positions), raw, ffn_up.shape)
    a = q.dequantize(raw, ffn_up.shape)
    b = quants.get("q4_k.h").dequantize(enc, ffn_up.shape)
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))
    x = np.random.default_rng(0).standard_normal((2, ffn_up.shape[1])).astype(np.float32)
    y = np.empty((2, ffn_up.shape[0]), np.float32)
    quants.get("q4_k.h").bind(enc, ffn_up.shape).matmul(x, y)
    assert np.allclose(y, x @ a.T, atol=1e-4)


def test_cbk4_h_shrinks_at_least_10_percent(ffn_up):
    qh = quants.get("cbk4.h")
    enc = qh.quantize(ffn_up)
    bound = qh.bind(enc, ffn_up.shape)
    base = bound.base_bytes()      # the same indices stored as plain cbk4
    assert base.size == quants.get("cbk4").nbytes(ffn_up.shape)
    a = quants.get("cbk4").dequantize(base, ffn_up.shape)
    assert np.array_equal(a.view(np.uint32), qh.dequantize(enc, ffn_up.shape).view(np.uint32))
    assert enc.size <= 0.9 * base.size, (enc.size, base.size)


def test_bad_headers_rejected(ffn_up):
    qh = quants.get("cbk2.h")
    enc = qh.quantize(ffn_up)
    qh.check(enc, ffn_up.shape)
    for mutate in (lambda e: e.__setitem__(24, 13),                      # length > 12
                   lambda e: e.__setitem__(0, e[0] ^ 1),                 # rows
                   lambda e: e.__setitem__(16, e[16] ^ 4)):              # stream length
        bad = enc.copy()
        mutate(bad)
        with pytest.raises(ValueError):
            qh.check(bad, ffn_up.shape)
    with pytest.raises(ValueError):
        qh.check(enc[:-1], ffn_up.shape)


def _identical(a, b):
    return np.array_equal(np.asarray(a, np.float32).view(np.uint32), np.asarray(b, np.float32).view(np.uint32))


def test_q4_ke_h_bit_identical_and_10_percent_smaller(ffn_up):
    """The criterion-(c) pair: q4_ke and q4_ke.h of the same tensor decode to the same bits and the
    Huffman-coded one is at least 10% smaller (q4_k.h saves ~1%: q4_k's nibbles are near uniform)."""
    plain = quants.get("q4_ke").quantize(ffn_up)
    enc = quants.get("q4_ke.h").quantize(ffn_up)
    assert np.array_equal(quants.get("q4_ke.h").bind(enc, ffn_up.shape).base_bytes(), plain.reshape(-1))
    w = quants.get("q4_ke").dequantize(plain, ffn_up.shape)
    assert _identical(w, quants.get("q4_ke.h").dequantize(enc, ffn_up.shape))
    assert _identical(w, quants.get("q4_k").dequantize(plain, ffn_up.shape))   # q4_k's bytes
    assert enc.size <= 0.9 * plain.size, (enc.size, plain.size)
    # the price: more error than q4_k (measured ~0.115 vs 0.070 relative RMS), still a 4-bit grid
    err = np.sqrt(((w - ffn_up) ** 2).mean() / (ffn_up ** 2).mean())
    assert 0.08 < err < 0.13, err


def test_q4_ke_h_codes_tail_blocks(monkeypatch):
    """pychat-30m rows of 384 = one super-block + a 128-weight tail: the tail's nibbles are coded too."""
    monkeypatch.setenv("LOWBIT_BACKEND", "numba")   # the float decode-dot (test_native_huff: the C one)
    from converters.hf import Checkpoint
    w = Checkpoint(model_dir("pychat-30m")).tensor("blk.1.ffn_up.weight").astype(np.float32)
    assert w.shape[1] == 384
    assert len(quants.get("q4_ke").index_positions(384)) == 128 + 64
    plain = quants.get("q4_ke").quantize(w)
    enc = quants.get("q4_ke.h").quantize(w)
    b = quants.get("q4_ke.h").bind(enc, w.shape)
    assert np.array_equal(b.base_bytes(), plain.reshape(-1))
    assert enc.size <= 0.9 * plain.size, (enc.size, plain.size)
    a = quants.get("q4_ke").dequantize(plain, w.shape)
    x = np.random.default_rng(0).standard_normal((6, 384)).astype(np.float32)
    for n in (1, 3, 6):   # 6: the prompt path (row blocks + BLAS)
        y = np.empty((n, w.shape[0]), np.float32)
        b.matmul(x[:n], y)
        assert np.allclose(y, x[:n] @ a.T, atol=1e-4)
    assert _identical(b.gather(np.array([5, 0, 1023])), a[[5, 0, 1023]])


def test_q4_ke_imatrix_weights_the_error(ffn_up):
    """Columns the importance vector marks get a finer step (smaller error) than the others."""
    imp = np.ones(ffn_up.shape[1], np.float32)
    imp[:128] = 8.0
    w = quants.get("q4_ke").dequantize(quants.get("q4_ke").quantize(ffn_up, imp), ffn_up.shape)
    e = ((w - ffn_up) ** 2)
    assert e[:, :128].mean() < 0.5 * e[:, 128:].mean()


@pytest.mark.parametrize("model", ["pycode-30m", "pychat-30m"])
def test_q4_ke_gptq_lowers_output_error(model):
    """GPTQ error feedback for q4_ke (converters/gptq.py dispatches to q4ke.gptq_quantize): lower
    layer output error than plain q4_ke on real inputs; q4_ke.h through GPTQ is the same bytes coded."""
    from test_gptq import layer0_input
    from converters.gptq import gptq_quantize, output_error
    ck, X = layer0_input(model)
    H = X.T @ X / X.shape[0]
    w = ck.tensor("blk.0.attn_q.weight").astype(np.float32)
    im = np.diag(H).astype(np.float32)
    plain = quants.get("q4_ke").quantize(w, im)
    g = gptq_quantize("q4_ke", w, H, im)
    assert g.shape == plain.shape
    assert output_error("q4_ke", w, g, H) < 0.9 * output_error("q4_ke", w, plain, H)
    enc = gptq_quantize("q4_ke.h", w, H, im)
    assert np.array_equal(quants.get("q4_ke.h").bind(enc, w.shape).base_bytes(), g.reshape(-1))
