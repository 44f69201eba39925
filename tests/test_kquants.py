"""K-quants against the gguf package's reference dequantizers (bit-exact), the tail-block layout
against an independent decoder written from format_spec/types/kquants.md, and the quantizers'
error against plain min/max rounding."""
import os

import gguf
import numpy as np
import pytest
from gguf.quants import dequantize as gguf_dequantize

from lowbit import quants
from lowbit.format import LowbitFile, TensorSpec, write_lowbit
from lowbit.quants import kquants

SHARED = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "shared")
KTYPES = ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k"]
GGML = {"q2_k": gguf.GGMLQuantizationType.Q2_K, "q3_k": gguf.GGMLQuantizationType.Q3_K,
        "q4_k": gguf.GGMLQuantizationType.Q4_K, "q5_k": gguf.GGMLQuantizationType.Q5_K,
        "q6_k": gguf.GGMLQuantizationType.Q6_K}
# where the fp16 super-block scales sit in each GGML block (offsets of d and dmin)
F16_FIELDS = {"q2_k": (80, 82), "q3_k": (108,), "q4_k": (0, 2), "q5_k": (0, 2), "q6_k": (208,)}


def real_tensor(model, name):
    from converters.hf import Checkpoint
    return Checkpoint(os.path.join(SHARED, "models", model)).tensor(name)


def rel_rmse(a, b, w=None):
    w = np.ones(a.shape[-1]) if w is None else w
    return float(np.sqrt(np.sum(w * (a - b) ** 2) / np.sum(w * b ** 2)))


def same_bits(a, b):
    return np.array_equal(np.asarray(a, np.float32).view(np.uint32), np.asarray(b, np.float32).view(np.uint32))


@pytest.mark.parametrize("name", KTYPES)
def test_registered_with_ggml_ids(name):
    qt = quants.get(name)
    assert qt.ggml_type == int(GGML[name]) and qt.block_size == 256
    assert qt.block_bytes == gguf.GGML_QUANT_SIZES[GGML[name]][1]
    assert qt.ggml_compatible(512) and not qt.ggml_compatible(384)


@pytest.mark.parametrize("name", KTYPES)
def test_random_tensor_dequantizes_like_gguf(name):
    rng = np.random.default_rng(1)
    w = rng.standard_normal((32, 768)).astype(np.float32) * 0.05
    w[3] = 0.0                                  # an all-zero row
    w[5, :256] = np.abs(w[5, :256])             # a block with no negative value
    w[7, 10] = 3.0                              # an outlier
    w[9] *= 1e-6                                # tiny values (subnormal fp16 scales)
    qt = quants.get(name)
    raw = qt.quantize(w)
    assert raw.shape == (32, qt.row_bytes(768)) and raw.dtype == np.uint8
    ref = gguf_dequantize(raw, GGML[name]).reshape(w.shape)
    assert same_bits(qt.dequantize(raw, w.shape), ref)
    assert np.all(qt.dequantize(raw, w.shape)[3] == 0)


@pytest.mark.parametrize("name", KTYPES)
def test_random_bytes_dequantize_like_gguf(name):
    """Every bit pattern of quants and scales decodes as GGML's does (fp16 scales kept finite)."""
    rng = np.random.default_rng(2)
    qt = quants.get(name)
    raw = rng.integers(0, 256, (16, qt.row_bytes(1024)), dtype=np.uint8)
    blocks = raw.reshape(16, 4, qt.block_bytes)
    for off in F16_FIELDS[name]:
        blocks[..., off:off + 2] = rng.uniform(-2, 2, blocks.shape[:2]).astype("<f2")[..., None].view(np.uint8)
    ref = gguf_dequantize(raw, GGML[name]).reshape(16, 1024)
    assert same_bits(qt.dequantize(raw, (16, 1024)), ref)


@pytest.mark.parametrize("name", KTYPES)
@pytest.mark.parametrize("model,tensor", [("pycode-30m", "blk.3.ffn_down.weight"),
                                          ("pycode-30m", "blk.0.attn_v.weight")])
def test_real_tensor_dequantizes_like_gguf_and_beats_minmax(name, model, tensor):
    w = real_tensor(model, tensor)
    qt = quants.get(name)
    raw = qt.quantize(w)
    mine = qt.dequantize(raw, w.shape)
    assert same_bits(mine, gguf_dequantize(raw, GGML[name]).reshape(w.shape))
    base = qt.dequantize(kquants.baseline_quantizer(name)(w), w.shape)
    assert rel_rmse(mine, w) < rel_rmse(base, w)
    bound = {"q2_k": 0.35, "q3_k": 0.2, "q4_k": 0.1, "q5_k": 0.05, "q6_k": 0.025}[name]
    assert rel_rmse(mine, w) < bound


def decode_tail_from_spec(name, buf, r):
    """format_spec/types/kquants.md, "Tail block", written independently of lowbit's decoder."""
    S, bits, affine, _, _ = kquants.PARAMS[name]
    nsub = -(-r // S)
    d = np.frombuffer(buf[0:2].tobytes(), "<f2")[0].astype(np.float32)
    pos = 2
    if affine:
        dmin = np.frombuffer(buf[2:4].tobytes(), "<f2")[0].astype(np.float32)
        pos = 4
    sc_bytes = buf[pos:pos + nsub]
    if name in ("q4_k", "q5_k"):
        mins = buf[pos + nsub:pos + 2 * nsub].astype(np.float32)
        pos += 2 * nsub
    else:
        pos += nsub
    stream = np.unpackbits(buf[pos:], bitorder="little")
    q = np.array([int("".join(str(b) for b in stream[i * bits:(i + 1) * bits][::-1]), 2) for i in range(r)],
                 np.float32)
    j = np.arange(r) // S
    if name == "q2_k":
        return (d * (sc_bytes & 15).astype(np.float32))[j] * q - (dmin * (sc_bytes >> 4).astype(np.float32))[j]
    if name in ("q4_k", "q5_k"):
        return (d * sc_bytes.astype(np.float32))[j] * q - (dmin * mins)[j]
    if name == "q3_k":
        return (d * (sc_bytes.astype(np.float32) - 32))[j] * (q - 4)
    return (d * sc_bytes.view(np.int8).astype(np.float32))[j] * (q - 32)


@pytest.mark.parametrize("name", KTYPES)
@pytest.mark.parametrize("cols", [172, 384, 576, 896])
def test_partial_rows_tail_block(name, cols):
    rng = np.random.default_rng(cols)
    w = rng.standard_normal((6, cols)).astype(np.float32) * 0.03
    qt = quants.get(name)
    assert qt.fits(cols)
    S, bits, affine, bb, _ = kquants.PARAMS[name]
    r, nfull = cols % 256, cols // 256
    nsub = -(-r // S)
    tail = (4 if affine else 2) + (2 if name in ("q4_k", "q5_k") else 1) * nsub + nsub * S * bits // 8
    assert qt.row_bytes(cols) == nfull * bb + tail
    raw = qt.quantize(w)
    out = qt.dequantize(raw, w.shape)
    # whole super-blocks stay GGML blocks; the tail decodes as the spec says
    if nfull:
        full = raw[:, :nfull * bb]
        assert same_bits(out[:, :nfull * 256], gguf_dequantize(full, GGML[name]).reshape(6, -1))
    for i in range(6):
        assert same_bits(out[i, nfull * 256:], decode_tail_from_spec(name, raw[i, nfull * bb:], r))
    # the tail gets the type's precision: error like whole rows of the same type
    w256 = rng.standard_normal((6, 512)).astype(np.float32) * 0.03
    e256 = rel_rmse(qt.dequantize(qt.quantize(w256), w256.shape), w256)
    assert rel_rmse(out, w) < 1.15 * e256


@pytest.mark.parametrize("name", KTYPES)
def test_importance_matrix_lowers_weighted_error(name):
    w = real_tensor("pycode-30m", "blk.2.attn_q.weight")[:128]
    rng = np.random.default_rng(3)
    im = (rng.lognormal(0, 1.5, w.shape[1]) ** 2).astype(np.float32)   # a few channels dominate
    qt = quants.get(name)
    plain = qt.dequantize(qt.quantize(w), w.shape)
    weighted = qt.dequantize(qt.quantize(w, im), w.shape)
    assert rel_rmse(weighted, w, im) < 0.97 * rel_rmse(plain, w, im)


def test_bad_importance_vector_is_refused():
    qt = quants.get("q4_k")
    w = np.zeros((2, 256), np.float32)
    with pytest.raises(ValueError, match="importance vector has 3 values"):
        qt.quantize(w, np.ones(3, np.float32))
    with pytest.raises(ValueError, match="negative"):
        qt.quantize(w, -np.ones(256, np.float32))


def test_container_round_trip_with_tail_rows(tmp_path):
    w = np.random.default_rng(4).standard_normal((5, 384)).astype(np.float32)
    qt = quants.get("q3_k")
    path = tmp_path / "t.lowbit"
    write_lowbit(path, {}, [TensorSpec("x", "q3_k", (5, 384), lambda: qt.quantize(w))])
    with LowbitFile(path) as f:
        assert f.info("x").nbytes == 5 * qt.row_bytes(384) == 5 * (110 + 58)
        assert same_bits(f.dequantize("x"), qt.dequantize(qt.quantize(w), w.shape))


def objective_weights(w, im=None):
    """The k-quant quantizers' per-weight error weights: sqrt(4 sigma^2 + x^2), sigma^2 the mean
    square of the 256-weight block, times the importance of the weight's input channel."""
    b = w.reshape(w.shape[0], -1, 256).astype(np.float64)
    wt = np.sqrt(4 * np.mean(b * b, axis=-1, keepdims=True) + b * b).reshape(w.shape)
    return wt if im is None else wt * im


@pytest.mark.parametrize("tensor", ["blk.3.attn_q.weight", "blk.5.ffn_up.weight", "token_embd.weight"])
def test_q3_k_search_clearly_beats_plain_rounding(tensor):
    """On real pycode-30m weights the searched q3_k quantizer's weighted error is well below plain
    min/max rounding's in the same layout, without and with an importance vector."""
    w = real_tensor("pycode-30m", tensor)[:192]
    qt = quants.get("q3_k")
    plain = qt.dequantize(kquants.baseline_quantizer("q3_k")(w), w.shape)

    def err(deq, wt):
        return float(np.sqrt(np.sum(wt * (deq - w) ** 2) / np.sum(wt * w ** 2)))

    wt = objective_weights(w)
    searched = qt.dequantize(qt.quantize(w), w.shape)
    assert err(searched, wt) < 0.95 * err(plain, wt)
    assert rel_rmse(searched, w) < 0.95 * rel_rmse(plain, w)
    im = (np.random.default_rng(5).lognormal(0, 1.0, w.shape[1]) ** 2).astype(np.float32)
    wt = objective_weights(w, im)
    searched = qt.dequantize(qt.quantize(w, im), w.shape)
    assert err(searched, wt) < 0.9 * err(plain, wt)
