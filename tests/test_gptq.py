"""GPTQ error feedback (converters/gptq.py) and imatrix files with covariances: GPTQ lowers the
layer output error on real tensors, its bytes are ordinary k-quants (the gguf package's
dequantizer agrees), the file round-trips and bad files give clear errors."""
import os

import numpy as np
import pytest

import lowbit
from converters import convert
from converters.gptq import gptq_quantize, inverse_cholesky, output_error
from converters.hf import Checkpoint
from lowbit import imatrix, quants
from lowbit.errors import ConvertError, FormatError
from lowbit.format import LowbitFile, TensorSpec, write_lowbit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
CALIB = os.path.join(SHARED, "data", "pycode-calib.txt")
STORIES_TEXT = os.path.join(SHARED, "data", "tinystories-sample.txt")


def layer0_input(model: str, n_tokens: int = 4096):
    """Real inputs of blk.0.attn_q: RMS-normed embeddings of calibration tokens (float64)."""
    ck = Checkpoint(os.path.join(SHARED, "models", model))
    text = open(CALIB, encoding="utf-8").read()[:60000]
    if model == "pycode-30m":
        import sentencepiece as spm
        ids = spm.SentencePieceProcessor(model_file=os.path.join(ck.folder, "tokenizer.model")).encode(text)
    else:
        from tokenizers import Tokenizer
        ids = Tokenizer.from_file(os.path.join(ck.folder, "tokenizer.json")).encode(text).ids
    ids = np.asarray(ids[:n_tokens])
    x = ck.tensor("token_embd.weight").astype(np.float64)[ids]
    g = ck.tensor("blk.0.attn_norm.weight").astype(np.float64)
    h = x / np.sqrt((x * x).mean(axis=1, keepdims=True) + ck.config.rms_norm_eps) * g
    return ck, h


@pytest.mark.parametrize("model", ["pycode-30m", "pychat-30m"])   # pychat: 384 = one block + a tail block
def test_gptq_lowers_output_error_on_real_tensors(model):
    ck, X = layer0_input(model)
    H = X.T @ X / X.shape[0]
    w = ck.tensor("blk.0.attn_q.weight").astype(np.float32)
    im = np.diag(H).astype(np.float32)
    for t in ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k"):
        plain = quants.get(t).quantize(w, im)
        g = gptq_quantize(t, w, H, im)
        assert g.shape == plain.shape and g.dtype == np.uint8
        e_plain, e_gptq = output_error(t, w, plain, H), output_error(t, w, g, H)
        assert e_gptq < 0.9 * e_plain, (t, e_gptq, e_plain)
        # and on inputs it was not fitted to (the second half of the tokens), still lower
        Xh = X[X.shape[0] // 2:]
        Hh = Xh.T @ Xh / Xh.shape[0]
        assert output_error(t, w, g, Hh) < output_error(t, w, plain, Hh), t


def test_gptq_bytes_are_ordinary_k_quants():
    """Whole super-blocks decode identically with the gguf package's (GGML's) dequantizers."""
    from gguf import GGMLQuantizationType, quants as gq
    ck, X = layer0_input("pycode-30m", 2048)
    H = X.T @ X / X.shape[0]
    w = ck.tensor("blk.0.attn_k.weight").astype(np.float32)
    for t in ("q2_k", "q3_k", "q4_k", "q5_k", "q6_k"):
        raw = gptq_quantize(t, w, H)
        ours = quants.get(t).dequantize(raw, w.shape)
        theirs = gq.dequantize(raw, GGMLQuantizationType[t.upper()]).reshape(w.shape)
        np.testing.assert_array_equal(ours, theirs)
        # and they are a good quantization of w: lower output error tr(E H E^T) than plain rounding
        plain = quants.get(t).dequantize(quants.get(t).quantize(w), w.shape)
        E, P = (ours - w).astype(np.float64), (plain - w).astype(np.float64)
        assert np.trace(E @ H @ E.T) < np.trace(P @ H @ P.T), t


def test_inverse_cholesky():
    rng = np.random.default_rng(1)
    A = rng.standard_normal((300, 40))
    H = A.T @ A / 300
    H[:, 7] = H[7, :] = 0.0            # a channel never seen
    U = inverse_cholesky(H, damp=0.01)
    assert np.allclose(U, np.triu(U))
    Hd = H.copy()
    Hd[7, 7] = 1.0
    Hd += 0.01 * np.mean(np.diag(Hd)) * np.eye(40)
    np.testing.assert_allclose(U.T @ U, np.linalg.inv(Hd), rtol=1e-6, atol=1e-9)


@pytest.fixture(scope="module")
def stories(tmp_path_factory):
    root = tmp_path_factory.mktemp("gptq")
    f32 = str(root / "stories-f32.lowbit")
    convert(os.path.join(SHARED, "models", "stories260K"), f32, "f32", progress=False, log=lambda m: None)
    m = lowbit.load(f32)
    stats, info = imatrix.compute(m, STORIES_TEXT, 64, 3, log=lambda *a, **k: None, hessian=True,
                                  sensitivity_chunks=2)
    path = str(root / "stories-h.imatrix")
    imatrix.save(path, stats, "stories-f32.lowbit", "tinystories-sample.txt", info)
    return {"f32": f32, "imatrix": path, "stats": stats, "info": info, "root": root}


def test_covariances_round_trip_and_match_direct_computation(stories):
    vectors, covs = imatrix.load_full(stories["imatrix"])
    assert set(vectors) == set(stories["stats"])
    m = lowbit.load(stories["f32"])
    c = m.config
    # one matrix per distinct input, shared by the weights that read it
    assert covs["blk.1.attn_q.weight"] is covs["blk.1.attn_k.weight"] is covs["blk.1.attn_v.weight"]
    assert covs["blk.1.ffn_gate.weight"] is covs["blk.1.ffn_up.weight"]
    assert covs["blk.1.ffn_down.weight"].shape == (c.intermediate_size, c.intermediate_size)
    assert covs["token_embd.weight"].shape == (c.hidden_size, c.hidden_size)   # tied: the output projection
    assert len({id(v) for v in covs.values()}) == 4 * c.num_layers + 1
    for name, H in covs.items():
        np.testing.assert_allclose(np.diag(H), vectors[name], rtol=1e-4, atol=1e-7)
        np.testing.assert_array_equal(H, stories["info"]["covariances"][
            next(k for k, v in stories["info"]["groups"].items() if name in v)])
    from lowbit import perplexity
    chunks = perplexity.make_chunks(m, m.tokenize(open(STORIES_TEXT).read()), 64, 3)
    emb = m.file.dequantize("token_embd.weight").astype(np.float64)
    g = m.file.dequantize("blk.0.attn_norm.weight").astype(np.float64)
    x = emb[chunks.reshape(-1)]
    h = x / np.sqrt((x * x).mean(axis=1, keepdims=True) + c.rms_norm_eps) * g
    np.testing.assert_allclose(covs["blk.0.attn_q.weight"], h.T @ h / h.shape[0], rtol=1e-4, atol=1e-6)
    meta = LowbitFile(stories["imatrix"]).metadata["imatrix"]
    sens = meta["sensitivity"]
    assert set(sens) == set(vectors) | {imatrix.LOOKUP} and all(v > 0 for v in sens.values())
    # a plain imatrix (no --hessian) still loads, without covariances
    plain = str(stories["root"] / "plain.imatrix")
    imatrix.save(plain, stories["stats"], "x", "y", {k: stories["info"][k] for k in ("chunks", "tokens", "n_ctx")})
    assert imatrix.load_full(plain)[1] == {}


def _rewrite(src, dst, meta_fn=None, tensor_fn=None):
    """Copy an imatrix file, changing its metadata and/or tensors."""
    with LowbitFile(src) as f:
        meta = dict(f.metadata)
        tensors = {n: np.array(f.dequantize(n), np.float32) for n in f.tensors}
    if meta_fn:
        meta = meta_fn(meta)
    if tensor_fn:
        tensors = tensor_fn(tensors)
    write_lowbit(dst, meta, [TensorSpec(n, "f32", v.shape, lambda v=v: v) for n, v in tensors.items()])
    return dst


def test_bad_covariance_files_give_clear_errors(stories, tmp_path):
    src = stories["imatrix"]
    cov = "cov.blk.0.attn_input"

    def meta_with(groups):
        def fn(meta):
            m = dict(meta)
            m["imatrix"] = dict(m["imatrix"], covariances=groups(dict(m["imatrix"]["covariances"])))
            return m
        return fn

    def tensors_with(fn):
        def go(t):
            t = dict(t)
            fn(t)
            return t
        return go

    cases = [
        (meta_with(lambda g: dict(g, **{"cov.extra": ["blk.0.attn_q.weight"]})), None, "has no tensor"),
        (None, tensors_with(lambda t: t.__setitem__(cov, t[cov][:, :10].copy())), "must be a square f32 matrix"),
        (None, tensors_with(lambda t: t.__setitem__(cov, t[cov] + np.triu(np.ones_like(t[cov])))), "not symmetric"),
        (None, tensors_with(lambda t: t[cov].__setitem__((0, 0), np.nan)), "non-finite"),
        (meta_with(lambda g: dict(g, **{cov: ["blk.0.ffn_down.weight"]})), None, "lists weight 'blk.0.ffn_down.weight'"),
        (meta_with(lambda g: dict(g, **{cov: "blk.0.attn_q.weight"})), None, "must map tensor names to lists"),
    ]
    for i, (mf, tf, msg) in enumerate(cases):
        bad = _rewrite(src, str(tmp_path / f"bad{i}.imatrix"), mf, tf)
        with pytest.raises(FormatError, match=msg) as e:
            imatrix.load_full(bad)
        assert f"bad{i}.imatrix" in str(e.value)
        with pytest.raises(ConvertError, match=msg):
            convert(os.path.join(SHARED, "models", "stories260K"), str(tmp_path / "o.lowbit"), "q4_k",
                    progress=False, log=lambda m: None, imatrix=bad)
        assert not os.path.exists(tmp_path / "o.lowbit")
    bad = _rewrite(src, str(tmp_path / "sens.imatrix"),
                   lambda m: dict(m, imatrix=dict(m["imatrix"], sensitivity={"x": "big"})))
    with pytest.raises(ConvertError, match="sensitivity must map"):
        convert(os.path.join(SHARED, "models", "stories260K"), str(tmp_path / "o.lowbit"), "q4_k",
                progress=False, log=lambda m: None, imatrix=bad)


def test_convert_uses_gptq_with_tail_blocks_end_to_end(stories, tmp_path):
    """stories260K: rows of 64 and 172 (every k-quant block is a tail block)."""
    src = os.path.join(SHARED, "models", "stories260K")
    a, b = str(tmp_path / "gptq.lowbit"), str(tmp_path / "plain.lowbit")
    convert(src, a, "q4_k", progress=False, log=lambda m: None, imatrix=stories["imatrix"])
    convert(src, b, "q4_k", progress=False, log=lambda m: None, imatrix=stories["imatrix"], gptq=False)
    ra = LowbitFile(a).metadata["provenance"]["recipe"]
    rb = LowbitFile(b).metadata["provenance"]["recipe"]
    assert ra["gptq"]["tensors"] == 7 * 5 + 1 and rb["gptq"] is None
    _, covs = imatrix.load_full(stories["imatrix"])
    fa, fb = LowbitFile(a), LowbitFile(b)
    assert {n: (t.type, t.nbytes) for n, t in fa.tensors.items()} == {n: (t.type, t.nbytes) for n, t in fb.tensors.items()}
    ck = Checkpoint(src)
    ea = eb = 0.0
    for name in ("blk.2.ffn_down.weight", "blk.2.attn_q.weight", "token_embd.weight"):
        w = ck.tensor(name)
        ea += output_error("q4_k", w, np.asarray(fa.raw(name)), covs[name])
        eb += output_error("q4_k", w, np.asarray(fb.raw(name)), covs[name])
    assert ea < eb
    m = lowbit.load(a)
    out = "".join(m.generate("Once upon a time", max_tokens=12, temperature=0))
    assert isinstance(out, str) and len(out) > 0


def test_cli_imatrix_hessian(stories, tmp_path):
    import subprocess
    import sys
    out = str(tmp_path / "cli.imatrix")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", "lowbit.cli", "imatrix", stories["f32"], "--text", STORIES_TEXT,
                        "-o", out, "-c", "64", "--chunks", "2", "--hessian", "-q"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    assert "covariance matrices" in p.stderr
    meta = LowbitFile(out).metadata["imatrix"]
    assert meta["sensitivity_chunks"] == 2 and len(meta["covariances"]) == 4 * 5 + 1
    vectors, covs = imatrix.load_full(out)
    assert set(covs) == set(vectors)


# ----------------------------------------------------------------------------- GPTVQ: codebook types

def _decode_codebook_spec(name, raw, shape):
    """format_spec/types/codebook.md's dequantization, written out in numpy (float32 products)."""
    from lowbit.quants import vq
    D, B, learned = vq.PARAMS[name]
    R, C = shape
    raw = np.asarray(raw, np.uint8)
    o = 0
    if learned:
        cb = raw[:vq.K * D * 2].view("<f2").astype(np.float32).reshape(vq.K, D)
        o = vq.K * D * 2
    else:
        cb = vq.d4_lattice_codebook()
    d = raw[o:o + 2 * R].view("<f2").astype(np.float32)
    body = raw[o + 2 * R:].reshape(R, C // B, 1 + B // D)
    t = d[:, None] * vq.SCALE[body[:, :, 0]]                  # float32 * float32, rounded once
    return (t[:, :, None, None] * cb[body[:, :, 1:]]).reshape(R, C)


@pytest.mark.parametrize("t", ["cbk2", "cbk4", "d4l2", "cbk2.h"])
def test_gptvq_lowers_output_error_on_a_real_tensor(t):
    """pycode-30m blk.0.attn_q on real layer inputs: GPTVQ's bytes decode (the runtime's
    dequantizer = the spec's formula) to weights whose output error tr(E H E^T) is well below the
    plain quantizer's (measured ratio ~0.22-0.26), also on held-out inputs; same size as plain."""
    ck, X = layer0_input("pycode-30m")
    Xf, Xh = X[:X.shape[0] // 2], X[X.shape[0] // 2:]
    H, Hh = Xf.T @ Xf / Xf.shape[0], Xh.T @ Xh / Xh.shape[0]
    w = ck.tensor("blk.0.attn_q.weight").astype(np.float32)
    im = np.diag(H).astype(np.float32)
    plain = quants.get(t).quantize(w, im)
    g = gptq_quantize(t, w, H, im)
    assert g.dtype == np.uint8
    base = t.removesuffix(".h")
    if t == base:
        assert g.shape == plain.shape
        np.testing.assert_array_equal(quants.get(t).dequantize(g, w.shape), _decode_codebook_spec(t, g, w.shape))
    else:      # Huffman-coded: bit-identical to its base type's bytes, size within a few % of the plain .h
        from lowbit.quants import huffcoded
        flat = huffcoded.Bound(quants.get(base), g, w.shape).base_bytes()
        np.testing.assert_array_equal(quants.get(t).dequantize(g, w.shape), _decode_codebook_spec(base, flat, w.shape))
        assert abs(len(g) - len(plain)) < 0.05 * len(plain)
    e_plain, e_gptq = output_error(t, w, plain, H), output_error(t, w, g, H)
    assert e_gptq < 0.5 * e_plain, (t, e_gptq, e_plain)
    assert output_error(t, w, g, Hh) < 0.8 * output_error(t, w, plain, Hh), t


def test_gptvq_codebook_refit_runs_and_does_not_hurt():
    from lowbit.quants import vq
    ck, X = layer0_input("pycode-30m", 2048)
    H = X.T @ X / X.shape[0]
    w = ck.tensor("blk.0.attn_v.weight").astype(np.float32)
    U = inverse_cholesky(H)
    a = vq.gptq_quantize("cbk4", w, U, np.diag(H))
    b = vq.gptq_quantize("cbk4", w, U, np.diag(H), refit=True)
    assert not np.array_equal(a[:vq.K * 2 * 2], b[:vq.K * 2 * 2])      # a different stored codebook
    assert output_error("cbk4", w, b, H) < 1.02 * output_error("cbk4", w, a, H)


def test_convert_gptvq_end_to_end(stories, tmp_path):
    """stories260K cbk2 (+ d4l2 overrides) with a --hessian imatrix: every weight gets GPTQ (ffn_down's
    172 columns fall back to q2_k, itself a GPTQ type), the file loads, its codebook tensors decode
    as the spec says, and the output error is lower than the plain quantizer's file."""
    src = os.path.join(SHARED, "models", "stories260K")
    a, b = str(tmp_path / "gptq.lowbit"), str(tmp_path / "plain.lowbit")
    ov = [r"blk\.1\..*_v\.weight=d4l2", r"blk\.2\.attn_q\.weight=cbk4"]
    convert(src, a, "cbk2", progress=False, log=lambda m: None, imatrix=stories["imatrix"], overrides=ov)
    convert(src, b, "cbk2", progress=False, log=lambda m: None, imatrix=stories["imatrix"], overrides=ov, gptq=False)
    ra = LowbitFile(a).metadata["provenance"]["recipe"]
    assert ra["gptq"]["tensors"] == 7 * 5 + 1 and LowbitFile(b).metadata["provenance"]["recipe"]["gptq"] is None
    _, covs = imatrix.load_full(stories["imatrix"])
    fa, fb = LowbitFile(a), LowbitFile(b)
    assert {n: (t.type, t.nbytes) for n, t in fa.tensors.items()} == {n: (t.type, t.nbytes) for n, t in fb.tensors.items()}
    assert {fa.tensors[n].type for n in fa.tensors} >= {"cbk2", "cbk4", "d4l2", "q2_k"}
    ck = Checkpoint(src)
    ea = eb = 0.0
    for name, t in fa.tensors.items():
        if t.type not in ("cbk2", "cbk4", "d4l2"):
            continue
        w = ck.tensor(name)
        np.testing.assert_array_equal(fa.dequantize(name), _decode_codebook_spec(t.type, fa.raw(name), w.shape))
        ea += output_error(t.type, w, np.asarray(fa.raw(name)), covs[name])
        eb += output_error(t.type, w, np.asarray(fb.raw(name)), covs[name])
    assert ea < 0.9 * eb, (ea, eb)
    m = lowbit.load(a)
    out = "".join(m.generate("Once upon a time", max_tokens=12, temperature=0))
    assert isinstance(out, str) and len(out) > 0
