"""Mixes, overrides and importance matrices through the real converter and CLI."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import lowbit
from converters import convert
from converters.recipes import MIXES, assign_types
from lowbit.errors import ConvertError
from lowbit.format import LowbitFile, TensorSpec, write_lowbit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
PYCHAT_WEIGHTS = 31_468_928


def model_dir(name):
    return os.path.join(SHARED, "models", name)


def ref_error(path, model):
    ref = np.load(os.path.join(SHARED, "reference", f"{model}.npz"), allow_pickle=False)
    logits = lowbit.load(path).logits(ref["ids"].tolist())
    return float(np.linalg.norm(logits - ref["logits"]) / np.linalg.norm(ref["logits"]))


def pychat_shapes():
    from converters.hf import Checkpoint
    ck = Checkpoint(model_dir("pychat-30m"))
    return {n: tuple(ck.names[n][0].shape(ck.names[n][1])) for n in ck.names}, ck.config


def test_q4_k_m_gives_sensitive_tensors_more_bits():
    shapes, c = pychat_shapes()
    t = assign_types("q4_k_m", shapes, c.num_layers, c.tie_word_embeddings)
    more = {0, 3, 6, 7}   # 8 layers: first and last eighth, and every third between
    for i in range(c.num_layers):
        want = "q6_k" if i in more else "q4_k"
        assert t[f"blk.{i}.attn_v.weight"] == want and t[f"blk.{i}.ffn_down.weight"] == want
        assert t[f"blk.{i}.attn_q.weight"] == "q4_k"
        assert t[f"blk.{i}.attn_q.bias"] == "f32" and t[f"blk.{i}.attn_norm.weight"] == "f32"
    assert t["token_embd.weight"] == MIXES["q4_k_m"].tied_embd
    untied = assign_types("q4_k_m", dict(shapes, **{"output.weight": shapes["token_embd.weight"]}), 8, False)
    assert untied["output.weight"] == "q6_k" and untied["token_embd.weight"] == "q4_k"


def test_overrides_first_match_wins_and_errors():
    shapes, c = pychat_shapes()
    t = assign_types("q4_k_m", shapes, 8, True, [r"blk\.0\..*=q8_0", r"blk\..*\.attn_k\.weight=q6_k"])
    assert t["blk.0.attn_k.weight"] == "q8_0" and t["blk.0.ffn_up.weight"] == "q8_0"
    assert t["blk.1.attn_k.weight"] == "q6_k" and t["blk.0.attn_norm.weight"] == "f32"
    with pytest.raises(ConvertError, match="unknown type 'q9_k'"):
        assign_types("q4_k", shapes, 8, True, ["blk.*=q9_k"])
    with pytest.raises(ConvertError, match="invalid regular expression"):
        assign_types("q4_k", shapes, 8, True, ["blk.(=q4_k"])
    with pytest.raises(ConvertError, match="matches no weight"):
        assign_types("q4_k", shapes, 8, True, [r"blk\.99\..*=q4_k"])
    with pytest.raises(ConvertError, match="unknown type or mix 'q4_k_x'"):
        assign_types("q4_k_x", shapes, 8, True)


def write_imatrix(path, model, scale=1.0, bad=None):
    """An importance matrix as `lowbit imatrix` writes it: f32 [in_features] per weight."""
    from converters.hf import Checkpoint
    ck = Checkpoint(model_dir(model))
    rng = np.random.default_rng(0)
    specs = []
    for n in ck.ordered_names():
        shape = ck.names[n][0].shape(ck.names[n][1])
        if len(shape) == 2:
            cols = shape[1] + (1 if n == bad else 0)
            v = (rng.lognormal(0, 1, cols) * scale).astype(np.float32)
            specs.append(TensorSpec(n, "f32", (cols,), lambda v=v: v))
    write_lowbit(path, {"kind": "imatrix"}, specs)


def test_stories_mix_override_imatrix_end_to_end(tmp_path):
    im = tmp_path / "stories.imatrix"
    write_imatrix(im, "stories260K")
    out = tmp_path / "s.lowbit"
    s = convert(model_dir("stories260K"), out, "q4_k_m", progress=False, log=lambda m: None,
                overrides=[r"blk\.0\.attn_q\.weight=q8_0"], imatrix=str(im))
    recipe = LowbitFile(out).metadata["provenance"]["recipe"]
    assert recipe["type"] == "q4_k_m" and recipe["mix"] is True
    assert recipe["overrides"] == [r"blk\.0\.attn_q\.weight=q8_0"]
    assert recipe["imatrix"]["file"] == "stories.imatrix" and recipe["imatrix"]["tensors"] == 5 * 7 + 1
    assert recipe["types"]["blk.0.attn_q.weight"] == "q8_0" and recipe["types"]["blk.1.ffn_down.weight"] == "q4_k"
    assert s["tensor_types"]["q6_k"] == 4     # attn_v and ffn_down of layers 2 and 4 (5 layers)
    assert ref_error(out, "stories260K") < 0.15


def test_imatrix_for_another_model_is_refused(tmp_path):
    im = tmp_path / "bad.imatrix"
    write_imatrix(im, "stories260K", bad="blk.1.ffn_down.weight")
    with pytest.raises(ConvertError, match=r"bad\.imatrix: importance vector 'blk\.1\.ffn_down\.weight' has shape \[173\]"):
        convert(model_dir("stories260K"), tmp_path / "x.lowbit", "q4_k", progress=False, imatrix=str(im))
    with pytest.raises(ConvertError, match=r"'token_embd\.weight' has shape \[64\].*made for another model"):
        convert(model_dir("pycode-30m"), tmp_path / "x.lowbit", "q4_k", progress=False, imatrix=str(im))
    assert not os.path.exists(tmp_path / "x.lowbit")
    stray = tmp_path / "stray.imatrix"
    write_lowbit(stray, {}, [TensorSpec("blk.0.attn_q.bias", "f32", (64,), lambda: np.ones(64, np.float32))])
    with pytest.raises(ConvertError, match="'blk.0.attn_q.bias', which is not a weight matrix of this checkpoint"):
        convert(model_dir("stories260K"), tmp_path / "x.lowbit", "q4_k", progress=False, imatrix=str(stray))


@pytest.mark.parametrize("mix,max_bpw,max_err", [("q2_k", 3.5, 0.35), ("q4_k_m", 5.5, 0.09)])
def test_pychat_size_targets_and_logits(tmp_path, mix, max_bpw, max_err):
    out = tmp_path / f"pychat-{mix}.lowbit"
    convert(model_dir("pychat-30m"), out, mix, progress=False, log=lambda m: None)
    bpw = os.path.getsize(out) * 8 / PYCHAT_WEIGHTS
    assert bpw < max_bpw
    assert ref_error(out, "pychat-30m") < max_err


def cli(*args):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run([sys.executable, "-m", "lowbit.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def test_cli_convert_mix_and_clear_errors(tmp_path):
    out = tmp_path / "s.lowbit"
    p = cli("convert", model_dir("stories260K"), "-o", str(out), "--type", "q3_k_m", "--override",
            r"blk\.0\..*=q8_0", "--json")
    assert p.returncode == 0, p.stderr
    summary = json.loads(p.stdout)
    assert summary["tensor_types"]["q8_0"] == 6    # blk.0's ffn_down rows (172) do not fit q8_0
    assert "fallback: blk.0.ffn_down.weight stored as f16" in p.stderr
    p = cli("convert", model_dir("stories260K"), "-o", str(tmp_path / "y.lowbit"), "--type", "q7_k")
    assert p.returncode != 0 and "unknown type or mix 'q7_k'" in p.stderr and "Traceback" not in p.stderr
    p = cli("convert", model_dir("stories260K"), "-o", str(tmp_path / "y.lowbit"), "--imatrix", str(tmp_path / "none"))
    assert p.returncode != 0 and "none" in p.stderr and "Traceback" not in p.stderr
