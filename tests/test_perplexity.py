"""lowbit perplexity: llama.cpp's chunking and scoring, checked against an independent
computation from Model.logits; KL divergence against a saved base; clear errors."""
import json
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
from lowbit import perplexity  # noqa: E402
from lowbit.errors import FormatError, LowbitError  # noqa: E402

STORIES_TEXT = os.path.join(SHARED, "data", "tinystories-sample.txt")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    from converters import convert
    root = tmp_path_factory.mktemp("ppl")
    out = {}
    for model, qtype in [("stories260K", "f16"), ("stories260K", "q8_0"), ("pycode-30m", "f16")]:
        path = str(root / f"{model}-{qtype}.lowbit")
        convert(os.path.join(SHARED, "models", model), path, qtype, progress=False, log=lambda m: None)
        out[model, qtype] = path
    return out


def run_cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "lowbit.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def quiet(*a, **k):
    pass


def independent_ppl(model, text_path, n_ctx, n_chunks):
    """llama.cpp's method written out plainly: whole text tokenized with BOS, windows of n_ctx,
    BOS in front of each, full-window logits, positions n_ctx/2 .. n_ctx-2 scored."""
    ids = [model.tokenizer.bos_id] + model.tokenizer.encode(open(text_path, encoding="utf-8").read(), add_bos=False)
    nll = []
    for c in range(n_chunks):
        window = list(ids[c * n_ctx:(c + 1) * n_ctx])
        window[0] = model.tokenizer.bos_id
        logits = model.logits(window).astype(np.float64)
        for pos in range(n_ctx // 2, n_ctx - 1):
            row = logits[pos]
            lse = row.max() + np.log(np.exp(row - row.max()).sum())
            nll.append(lse - row[window[pos + 1]])
    return float(np.exp(np.mean(nll))), len(nll)


def test_ppl_equals_independent_computation(files):
    m = lowbit.load(files["stories260K", "f16"])
    assert m.tokenizer.add_bos
    r = perplexity.run(m, STORIES_TEXT, n_ctx=64, n_chunks=3, log=quiet)
    want, count = independent_ppl(m, STORIES_TEXT, 64, 3)
    assert r.scored.count == count == 3 * 31
    assert r.scored.ppl == pytest.approx(want, rel=1e-5)
    assert 1.5 < r.scored.ppl < 20
    assert r.running_ppl[-1] == r.scored.ppl


def test_ppl_pycode_two_chunks(files):
    m = lowbit.load(files["pycode-30m", "f16"])
    text = os.path.join(SHARED, "data", "pycode-eval.txt")
    r = perplexity.run(m, text, n_ctx=128, n_chunks=2, log=quiet)
    want, _ = independent_ppl(m, text, 128, 2)
    assert r.scored.ppl == pytest.approx(want, rel=1e-5)


def test_chunks_replace_first_token_with_bos(files):
    m = lowbit.load(files["stories260K", "f16"])
    ids = m.tokenize("Once upon a time there was a dog. " * 20)
    ch = perplexity.make_chunks(m, ids, 16, None)
    assert ch.shape == (len(ids) // 16, 16)
    assert (ch[:, 0] == m.tokenizer.bos_id).all()
    assert (ch[1, 1:] == ids[17:32]).all()
    assert len(perplexity.make_chunks(m, ids, 16, 2)) == 2


def test_special_tokens_are_parsed_in_chat_text():
    # pychat's text holds <|im_start|>/<|im_end|>: they must become single special ids
    from lowbit.format import LowbitFile  # noqa: F401
    path = os.path.join(SHARED, "models", "pychat-30m", "tokenizer.json")
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(path)
    text = open(os.path.join(SHARED, "data", "pychat-eval.txt"), encoding="utf-8").read(2000)
    ids = tok.encode(text, add_special_tokens=False).ids
    assert tok.token_to_id("<|im_start|>") in ids


def test_kld_of_file_against_itself_is_zero(files, tmp_path):
    m = lowbit.load(files["stories260K", "f16"])
    base = str(tmp_path / "base.npz")
    r0 = perplexity.run(m, STORIES_TEXT, n_ctx=64, n_chunks=4, save_base_path=base, log=quiet)
    r = perplexity.run(m, None, n_ctx=None, kld_base_path=base, log=quiet)
    assert r.scored.ppl == pytest.approx(r0.scored.ppl, rel=1e-9)
    assert r.kld["mean"] < 1e-7 and r.kld["p99"] < 1e-6
    assert r.kld["same_top"] == 1.0
    assert r.kld["ppl_base"] == pytest.approx(r0.scored.ppl, rel=1e-9)


def test_kld_q8_0_matches_full_distribution(files, tmp_path):
    """The saved-base KLD against KL(F16 || Q8_0) computed directly from both files' logits."""
    f16, q8 = lowbit.load(files["stories260K", "f16"]), lowbit.load(files["stories260K", "q8_0"])
    base = str(tmp_path / "base.npz")
    perplexity.run(f16, STORIES_TEXT, n_ctx=64, n_chunks=4, save_base_path=base, log=quiet)
    r = perplexity.run(q8, None, n_ctx=64, kld_base_path=base, log=quiet)
    chunks = perplexity.make_chunks(f16, f16.tokenize(open(STORIES_TEXT).read()), 64, 4)
    kl, same = [], 0
    for ch in chunks:
        p = perplexity.log_softmax(perplexity.scored_logits(f16, ch))
        q = perplexity.log_softmax(perplexity.scored_logits(q8, ch))
        kl.append((np.exp(p) * (p - q)).sum(axis=1))
        same += int((p.argmax(1) == q.argmax(1)).sum())
    kl = np.concatenate(kl)
    assert kl.mean() > 1e-6
    assert r.kld["mean"] == pytest.approx(kl.mean(), rel=1e-6)
    assert r.kld["p99"] == pytest.approx(np.percentile(kl, 99), rel=1e-6)
    assert r.kld["same_top"] == pytest.approx(same / kl.size, abs=1e-9)


def test_cli_perplexity_and_kld(files, tmp_path):
    base = str(tmp_path / "b.npz")
    p = run_cli("perplexity", files["stories260K", "f16"], "-f", STORIES_TEXT, "-c", "64", "--chunks", "2",
                "--kl-divergence-base", base)
    assert p.returncode == 0, p.stderr
    assert "Final estimate: PPL = " in p.stdout and "[2]" in p.stderr
    p = run_cli("perplexity", files["stories260K", "q8_0"], "--kl-divergence", "--kl-divergence-base", base, "--json")
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout)
    assert d["chunks"] == 2 and d["scored_tokens"] == 62 and 0 < d["kld"]["mean"] < 0.1
    assert "Mean    KLD" in p.stderr and "99.0%   KLD" in p.stderr


def test_missing_text_file_is_a_clear_error(files, tmp_path):
    p = run_cli("perplexity", files["stories260K", "f16"], "-f", str(tmp_path / "nope.txt"))
    assert p.returncode == 1 and "nope.txt: text file not found" in p.stderr and "Traceback" not in p.stderr


def test_text_shorter_than_one_chunk(files, tmp_path):
    short = tmp_path / "short.txt"
    short.write_text("Once upon a time.")
    p = run_cli("perplexity", files["stories260K", "f16"], "-f", str(short), "-c", "64")
    assert p.returncode == 1 and "fewer than one chunk of 64" in p.stderr and "Traceback" not in p.stderr
    m = lowbit.load(files["stories260K", "f16"])
    with pytest.raises(LowbitError, match="fewer than one chunk"):
        perplexity.run(m, str(short), n_ctx=64, log=quiet)


def test_base_from_another_model_is_refused(files, tmp_path):
    base = str(tmp_path / "stories.npz")
    perplexity.run(lowbit.load(files["stories260K", "f16"]), STORIES_TEXT, n_ctx=64, n_chunks=1,
                   save_base_path=base, log=quiet)
    with pytest.raises(FormatError, match="vocabulary of 512 tokens.*another model"):
        perplexity.run(lowbit.load(files["pycode-30m", "f16"]), None, n_ctx=None, kld_base_path=base, log=quiet)
    p = run_cli("perplexity", files["pycode-30m", "f16"], "--kl-divergence", "--kl-divergence-base", base)
    assert p.returncode == 1 and "another model" in p.stderr and "Traceback" not in p.stderr


def test_bad_base_files(files, tmp_path):
    m = lowbit.load(files["stories260K", "f16"])
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(FormatError, match="junk.npz"):
        perplexity.run(m, None, n_ctx=None, kld_base_path=str(junk), log=quiet)
    np.savez(tmp_path / "other.npz", a=np.zeros(3))
    with pytest.raises(FormatError, match="not a lowbit KLD base file"):
        perplexity.run(m, None, n_ctx=None, kld_base_path=str(tmp_path / "other.npz"), log=quiet)
    with pytest.raises(LowbitError, match="not found"):
        perplexity.run(m, None, n_ctx=None, kld_base_path=str(tmp_path / "missing.npz"), log=quiet)
    base = str(tmp_path / "b.npz")
    perplexity.run(m, STORIES_TEXT, n_ctx=64, n_chunks=1, save_base_path=base, log=quiet)
    with np.load(base) as z:
        arrays = {k: z[k] for k in z.files}
    bad = dict(arrays, tokens=arrays["tokens"].copy())   # a token id outside the vocabulary
    bad["tokens"][0, 5] = 9999
    np.savez(base, **bad)
    with pytest.raises(FormatError, match="outside the vocabulary"):
        perplexity.run(m, None, n_ctx=None, kld_base_path=base, log=quiet)
    np.savez(base, **dict(arrays, hidden=arrays["hidden"][:, :3]))   # truncated array
    with pytest.raises(FormatError, match="where .* was expected"):
        perplexity.run(m, None, n_ctx=None, kld_base_path=base, log=quiet)
    np.savez(base, **arrays)
    p = run_cli("perplexity", files["stories260K", "f16"], "--kl-divergence", "--kl-divergence-base", base, "-c", "32")
    assert p.returncode == 1 and "computed with -c 64" in p.stderr and "Traceback" not in p.stderr


def test_base_model_changed_or_missing(files, tmp_path):
    import shutil
    src = str(tmp_path / "m.lowbit")
    shutil.copy(files["stories260K", "f16"], src)
    base = str(tmp_path / "b.npz")
    perplexity.run(lowbit.load(src), STORIES_TEXT, n_ctx=64, n_chunks=1, save_base_path=base, log=quiet)
    shutil.copy(files["stories260K", "q8_0"], src)    # another file at the same path
    m = lowbit.load(files["stories260K", "f16"])
    with pytest.raises(FormatError, match="has changed since the base run"):
        perplexity.run(m, None, n_ctx=None, kld_base_path=base, log=quiet)
    os.unlink(src)
    with pytest.raises(FormatError, match="is missing"):
        perplexity.run(m, None, n_ctx=None, kld_base_path=base, log=quiet)
