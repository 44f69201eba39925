"""lowbit bench: runs end to end on a real checkpoint, both backends, and reports what it promises."""
import json
import os

import pytest

from lowbit.cli import main

SHARED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared")


@pytest.fixture(scope="module")
def stories(tmp_path_factory):
    from converters import convert
    path = str(tmp_path_factory.mktemp("bench") / "stories260K-f32.lowbit")
    convert(os.path.join(SHARED, "models", "stories260K"), path, "f32")
    return path


@pytest.mark.parametrize("backend", ["c", "numba"])
def test_bench_json(stories, capsys, backend):
    assert main(["bench", stories, "-p", "16", "-n", "8", "-r", "2", "-t", "2", "--backend", backend, "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["backend"] == backend
    assert [t["test"] for t in r["tests"]] == ["pp16", "tg8"]
    for t in r["tests"]:
        assert len(t["runs"]) == 2 and all(v > 0 for v in t["runs"]) and t["median"] > 0
    assert r["kv_cache_bytes"] == 2 * 5 * 16 * 4 * 8 * 4      # layers x ctx x kv heads x head_dim x f32, k and v
    assert r["peak_rss_bytes"] > 0 and r["load_s"] > 0
    if backend == "c":
        assert r["level"] in ("avx512vnni", "avx2", "scalar") and r["py_overhead_us_per_token"] is not None


def test_bench_table_and_bad_args(stories, capsys):
    assert main(["bench", stories, "-p", "8", "-n", "0", "-r", "1"]) == 0
    out = capsys.readouterr().out
    assert "| pp8 |" in out and "tg" not in out.split("\n")[2] and "KV cache" in out
    assert main(["bench", stories, "-r", "0"]) == 1
    assert main(["bench", "/nonexistent.lowbit"]) == 1
