"""The real `lowbit` program, as a user runs it."""
import json
import os
import shutil

from conftest import cli, model_dir


def test_convert_run_inspect(tmp_path):
    out = tmp_path / "s.lowbit"
    r = cli("convert", model_dir("stories260K"), "-o", str(out), "--type", "q8_0")
    assert r.returncode == 0, r.stderr
    assert "fallback: blk.0.ffn_down.weight stored as f16" in r.stderr
    r = cli("run", str(out), "-p", "Once upon a time", "-n", "16", "--temp", "0")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("Once upon a time, there was a little girl named Lily")
    r = cli("inspect", str(out))
    assert r.returncode == 0 and "architecture:  llama" in r.stdout and "q8_0" in r.stdout
    info = json.loads(cli("inspect", str(out), "--json").stdout)
    types = {t["name"]: t["type"] for t in info["tensors"]}
    assert types["blk.0.ffn_down.weight"] == "f16" and types["blk.0.ffn_up.weight"] == "q8_0"
    fb = info["metadata"]["provenance"]["recipe"]["fallbacks"]
    assert set(fb) == {f"blk.{i}.ffn_down.weight" for i in range(5)}


def test_errors_are_one_clear_line(tmp_path):
    bad = tmp_path / "bad.lowbit"
    bad.write_bytes(b"not a model at all, just text")
    for args, needle in [(("run", str(bad), "-p", "x"), "not a lowbit file"),
                         (("inspect", str(tmp_path / "missing.lowbit")), "cannot open"),
                         (("convert", str(tmp_path), "-o", str(tmp_path / "o.lowbit")), "config.json: missing")]:
        r = cli(*args)
        assert r.returncode == 1 and needle in r.stderr, r.stderr
        assert "Traceback" not in r.stderr


def test_convert_refuses_pickle_and_unknown_architectures(tmp_path):
    src = tmp_path / "ckpt"
    src.mkdir()
    shutil.copy(os.path.join(model_dir("stories260K"), "config.json"), src)
    (src / "pytorch_model.bin").write_bytes(b"\x80\x04pickle")
    r = cli("convert", str(src), "-o", str(tmp_path / "o.lowbit"))
    assert r.returncode == 1 and "pickle" in r.stderr and "safetensors" in r.stderr
    cfg = json.loads((src / "config.json").read_text())
    cfg["architectures"] = ["MambaForCausalLM"]
    (src / "config.json").write_text(json.dumps(cfg))
    r = cli("convert", str(src), "-o", str(tmp_path / "o.lowbit"))
    assert r.returncode == 1 and "MambaForCausalLM" in r.stderr and "not supported" in r.stderr
    assert not (tmp_path / "o.lowbit").exists()


def test_help_explains_commands():
    r = cli("--help")
    assert r.returncode == 0 and "convert" in r.stdout and "inspect" in r.stdout
    r = cli("run", "--help")
    assert "--temperature" in r.stdout and "--top-p" in r.stdout and "--seed" in r.stdout
