"""lowbit imatrix: names and shapes follow the weights, values match a direct computation,
the model is left unwrapped, bad inputs give clear errors."""
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import lowbit  # noqa: E402
from lowbit import imatrix  # noqa: E402
from lowbit.errors import FormatError, LowbitError  # noqa: E402
from lowbit.format import LowbitFile  # noqa: E402
from lowbit.model import Linear  # noqa: E402

STORIES_TEXT = os.path.join(SHARED, "data", "tinystories-sample.txt")
LAYER_WEIGHTS = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from converters import convert
    root = tmp_path_factory.mktemp("imatrix")
    out = {}
    for model in ["stories260K", "pycode-30m"]:
        path = str(root / f"{model}-f32.lowbit")
        convert(os.path.join(SHARED, "models", model), path, "f32" if model == "stories260K" else "f16",
                progress=False, log=lambda m: None)
        out[model] = path
    return out


def quiet(*a, **k):
    pass


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "lowbit.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_names_shapes_and_file(files, tmp_path):
    out = str(tmp_path / "stories.imatrix")
    p = run_cli("imatrix", files["stories260K"], "--text", STORIES_TEXT, "-o", out, "-c", "64", "--chunks", "3")
    assert p.returncode == 0, p.stderr
    m = lowbit.load(files["stories260K"])
    c = m.config
    with LowbitFile(out) as f:
        meta = f.metadata["imatrix"]
        assert meta == {"source_model": os.path.basename(files["stories260K"]), "text": "tinystories-sample.txt",
                        "chunks": 3, "tokens": 192, "n_ctx": 64}
        want = {f"blk.{i}.{w}.weight" for i in range(c.num_layers) for w in LAYER_WEIGHTS} | {"token_embd.weight"}
        assert set(f.tensors) == want          # tied: the output projection is token_embd.weight
        for name, info in f.tensors.items():
            assert info.type == "f32"
            ins = c.intermediate_size if "ffn_down" in name else (
                c.num_heads * c.head_dim if "attn_output" in name else c.hidden_size)
            assert info.shape == (ins,), name
    stats = imatrix.load(out)
    assert all((v > 0).all() for v in stats.values())
    # q, k and v see the same input; so do gate and up
    np.testing.assert_array_equal(stats["blk.1.attn_q.weight"], stats["blk.1.attn_v.weight"])
    np.testing.assert_array_equal(stats["blk.1.ffn_gate.weight"], stats["blk.1.ffn_up.weight"])


def test_untied_model_records_output_weight(files):
    m = lowbit.load(files["pycode-30m"])
    stats, info = imatrix.compute(m, os.path.join(SHARED, "data", "pycode-calib.txt"), 32, 1, log=quiet)
    assert "output.weight" in stats and "token_embd.weight" not in stats
    assert stats["output.weight"].shape == (m.config.hidden_size,)
    assert info["tokens"] == 32


def test_matches_direct_computation_for_layer0(files):
    m = lowbit.load(files["stories260K"])
    stats, info = imatrix.compute(m, STORIES_TEXT, 64, 2, log=quiet)
    # the model is unwrapped again
    assert isinstance(m.transformer.layers[0].wq, Linear) and isinstance(m.transformer.output, Linear)
    from lowbit import perplexity
    chunks = perplexity.make_chunks(m, m.tokenize(open(STORIES_TEXT).read()), 64, 2)
    emb = m.file.dequantize("token_embd.weight").astype(np.float64)
    g = m.file.dequantize("blk.0.attn_norm.weight").astype(np.float64)
    x = emb[chunks.reshape(-1)]
    h = x / np.sqrt((x * x).mean(axis=1, keepdims=True) + m.config.rms_norm_eps) * g
    np.testing.assert_allclose(stats["blk.0.attn_q.weight"], (h * h).mean(axis=0), rtol=1e-4)
    # the output projection sees every position of every chunk, like the other layers
    with imatrix.observing(m.transformer) as obs:
        m.logits(chunks[0])
        assert obs["token_embd.weight"].count == obs["blk.0.attn_q.weight"].count == 64
    assert stats["token_embd.weight"].shape == (m.config.hidden_size,)


def test_bad_inputs(files, tmp_path):
    p = run_cli("imatrix", files["stories260K"], "--text", str(tmp_path / "none.txt"), "-o", str(tmp_path / "o"))
    assert p.returncode == 1 and "none.txt: text file not found" in p.stderr and "Traceback" not in p.stderr
    assert not os.path.exists(tmp_path / "o")
    short = tmp_path / "short.txt"
    short.write_text("Once upon a time.")
    p = run_cli("imatrix", files["stories260K"], "--text", str(short), "-o", str(tmp_path / "o"), "-c", "64")
    assert p.returncode == 1 and "fewer than one chunk" in p.stderr
    with pytest.raises(FormatError, match="not an imatrix file"):
        imatrix.load(files["stories260K"])
    with pytest.raises(LowbitError, match="not found"):
        imatrix.load(str(tmp_path / "missing.imatrix"))


def _sensitivities_by_whole_forward(model, chunks, rel=0.1, seed=0):
    """The definition: every noisy run is a whole forward pass with one weight's output noisy."""
    from lowbit.perplexity import log_softmax
    t = model.transformer
    saved, t.native = t.native, None
    rng = np.random.default_rng(seed)
    clean = [log_softmax(t.forward(ch, t.new_cache(), all_logits=True)) for ch in chunks]

    def kld(noisy):
        kl = sum(float(np.maximum((np.exp(lp) * (lp - log_softmax(t.forward(ch, t.new_cache(), all_logits=True))))
                                  .sum(axis=1), 0).sum()) for ch, lp in zip(chunks, clean))
        return kl / sum(lp.shape[0] for lp in clean) / (noisy.energy / noisy.count)

    out = {}
    for obj, attr in [(L, a) for L in t.layers for a in imatrix.LINEARS] + [(t, "output")]:
        lin = getattr(obj, attr)
        setattr(obj, attr, imatrix.Noisy(lin, rel, rng))
        out[lin.name] = kld(getattr(obj, attr))
        setattr(obj, attr, lin)
    noisy = imatrix.Noisy(None, rel, rng)
    orig = t.embed
    t.embed = lambda tokens: noisy.add(orig(tokens))
    out[imatrix.LOOKUP] = kld(noisy)
    del t.embed
    t.native = saved
    return out


def test_sensitivities_match_whole_forward_passes(files):
    """The noisy runs start at the noisy weight's layer from the clean stream: same numbers as
    whole forward passes (up to the threaded kernels' run-to-run rounding, ~5e-6)."""
    from lowbit import perplexity
    m = lowbit.load(files["stories260K"])
    chunks = perplexity.make_chunks(m, m.tokenize(open(STORIES_TEXT).read()), 64, 2)
    got = imatrix.sensitivities(m, chunks, log=quiet)
    want = _sensitivities_by_whole_forward(m, chunks)
    assert set(got) == set(want) and len(got) == 7 * m.config.num_layers + 2
    for k in want:
        assert got[k] == pytest.approx(want[k], rel=1e-4), k
    assert isinstance(m.transformer.layers[0].wq, Linear) and isinstance(m.transformer.output, Linear)


@pytest.mark.parametrize("backend", ["", "numba"])
def test_gram_matrix_on_both_backends(monkeypatch, backend):
    """X^T X of the covariance observers, native f32 matmul or (LOWBIT_BACKEND=numba) NumPy."""
    monkeypatch.setenv("LOWBIT_BACKEND", backend)
    x = np.random.default_rng(3).standard_normal((77, 40)).astype(np.float32) * 3
    g = imatrix._gram(x[:, :]) if backend else imatrix._gram(np.asfortranarray(x))
    want = x.astype(np.float64).T @ x.astype(np.float64)
    assert g.dtype == np.float32 and g.shape == (40, 40)
    np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-4 * np.abs(want).max())
