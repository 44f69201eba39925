"""Every registered type: quantize/dequantize round trips, its Numba and NumPy dequantizers agree,
and types that claim GGML byte-compatibility match the gguf package bit for bit."""
import numpy as np
import pytest

from lowbit import quants
from lowbit.kernels import dequantize_rows

# Row-decodable types; whole-tensor types (side data, self-sized streams) have their own tests
# (test_codebook.py, test_huffman.py).
TYPES = [t for t in quants.TYPES if t != "u8" and not quants.get(t).whole_tensor]


def sample(qt, rows=8):
    rng = np.random.default_rng(1)
    cols = 256 * max(1, qt.block_size // 256) * 2
    w = rng.standard_normal((rows, cols)).astype(np.float32) * 0.05
    w[0, :7] = [0.0, 1e-8, -3.0, 2.5, 1e-3, -1e-3, 0.0]    # zeros, tiny and outlying values
    w[1] = 0.0                                              # an all-zero row
    return w


@pytest.mark.parametrize("name", TYPES)
def test_numba_and_numpy_dequantizers_agree(name):
    qt = quants.get(name)
    w = sample(qt)
    raw = qt.quantize(w)
    assert raw.dtype == np.uint8 and raw.shape == (w.shape[0], qt.row_bytes(w.shape[1]))
    out = np.empty_like(w)
    dequantize_rows(qt.dequant_row, raw, out)
    assert np.array_equal(out, qt.dequantize(raw, w.shape))
    assert not out[1].any()


@pytest.mark.parametrize("name", [t for t in TYPES if quants.get(t).ggml_type is not None])
def test_ggml_types_match_gguf_package(name):
    import gguf   # a test dependency
    from gguf.quants import dequantize, quantize
    qt = quants.get(name)
    gt = gguf.GGMLQuantizationType(qt.ggml_type)
    w = sample(qt)
    raw = qt.quantize(w)
    assert np.array_equal(qt.dequantize(raw, w.shape), dequantize(raw, gt).reshape(w.shape))
    try:
        ref = quantize(w, gt)
    except NotImplementedError:
        return   # gguf has no numpy quantizer for this type; dequantization parity is the contract
    if name in ("f32", "f16", "bf16", "q8_0"):   # reference rounding: byte-identical
        assert np.array_equal(raw.view(np.uint8).ravel(), ref.view(np.uint8).ravel())


@pytest.mark.parametrize("name", TYPES)
def test_error_is_small(name):
    qt = quants.get(name)
    w = sample(qt)
    err = np.abs(qt.dequantize(qt.quantize(w), w.shape) - w).max(axis=1)
    scale = np.abs(w).max(axis=1) + 1e-12
    # max error relative to the row's largest weight: mantissa precision for floats, about one
    # quantization step for block types
    bound = {"f32": 1e-7, "f16": 1e-3, "bf16": 4e-3}.get(name, 2.0 ** (3 - qt.block_bytes * 8 / qt.block_size) + 2e-3)
    assert (err / scale).max() < bound
