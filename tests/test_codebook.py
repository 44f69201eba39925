"""Codebook types cbk2, cbk4, d4l2 (format_spec/types/codebook.md)."""
import numpy as np
import pytest

from conftest import model_dir, reference
from lowbit import quants
from lowbit.quants import vq


@pytest.fixture(scope="module")
def attn_q():
    from converters.hf import Checkpoint
    return Checkpoint(model_dir("pycode-30m")).tensor("blk.1.attn_q.weight").astype(np.float32)


def spec_dequant(name, flat, shape):
    """An independent decoder written from codebook.md."""
    D, B, learned = vq.PARAMS[name]
    R, C = shape
    o = 0
    if learned:
        P = flat[:256 * D * 2].view("<f2").astype(np.float32).reshape(256, D)
        o = 256 * D * 2
    else:
        P = vq.d4_lattice_codebook()
    d = flat[o:o + 2 * R].view("<f2").astype(np.float32)
    body = flat[o + 2 * R:].reshape(R, C // B, 1 + B // D)
    scale = np.where(body[..., 0] == 0, 0, np.exp2((body[..., 0].astype(np.float64) - 255) / 16)).astype(np.float32)
    sc = d[:, None] * scale
    return (sc[..., None, None] * P[body[..., 1:]]).reshape(R, C)


# measured relative RMS errors on this tensor: cbk2 ~0.30, cbk4 ~0.085, d4l2 ~0.38
@pytest.mark.parametrize("name,bound", [("cbk2", 0.34), ("cbk4", 0.10), ("d4l2", 0.43)])
def test_quantize_dequantize(attn_q, name, bound):
    q = quants.get(name)
    raw = q.quantize(attn_q)
    assert raw.size == q.nbytes(attn_q.shape)
    w = q.dequantize(raw, attn_q.shape)
    assert np.array_equal(w, spec_dequant(name, raw, attn_q.shape))
    err = np.sqrt(((w - attn_q) ** 2).mean() / (attn_q ** 2).mean())
    assert err < bound, err
    x = np.random.default_rng(0).standard_normal((6, attn_q.shape[1])).astype(np.float32)
    for n in (1, 3, 6):
        y = np.empty((n, attn_q.shape[0]), np.float32)
        q.bind(raw, attn_q.shape).matmul(x[:n], y)
        assert np.allclose(y, x[:n] @ w.T, atol=1e-3)


def test_d4_codebook():
    P = vq.d4_lattice_codebook()
    assert P.shape == (256, 4) and len({tuple(p) for p in P}) == 256
    assert (P.sum(1) % 2 == 0).all() and (P[0] == 0).all()
    assert np.array_equal(np.bincount((P * P).sum(1).astype(int))[[0, 2, 4, 6, 8, 10]], [1, 24, 24, 96, 24, 87])


def test_end_to_end_stories(tmp_path):
    """A whole model in a codebook mix: loads, falls back where rows do not fit, gives sane logits."""
    import lowbit
    from converters import convert
    out = tmp_path / "s.lowbit"
    s = convert(model_dir("stories260K"), str(out), "cbk4.h", progress=False, log=lambda m: None)
    assert any(v["type"] == "q4_k" for v in s["fallbacks"].values())
    m = lowbit.load(str(out))
    ref = reference("stories260K")
    lg = m.logits(ref["ids"].tolist())
    err = np.linalg.norm(lg - ref["logits"]) / np.linalg.norm(ref["logits"])
    assert err < 0.15, err
    raw = bytearray(out.read_bytes())
    t = m.file.info("blk.0.attn_q.weight")
    raw[m.file.data_offset + t.offset + 24] = 13      # an impossible code length
    bad = tmp_path / "bad.lowbit"
    bad.write_bytes(bytes(raw))
    from lowbit.errors import FormatError
    with pytest.raises(FormatError, match="code lengths"):
        lowbit.load(str(bad))
