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


def test_q4_k_h_bit_identical(ffn_up):
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
