"""`lowbit convert --target-bpw`: the allocation is optimal on its convex hull, files land at or
under the target and load and run, the choice is recorded, bad requests give clear errors, and
the measurement cache gives the same files without measuring again."""
import itertools
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import lowbit
from converters import convert, measure_cache, target_bpw
from converters.target_bpw import _hull, allocate
from lowbit import imatrix
from lowbit.errors import ConvertError
from lowbit.format import LowbitFile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
STORIES = os.path.join(SHARED, "models", "stories260K")
STORIES_TEXT = os.path.join(SHARED, "data", "tinystories-sample.txt")


@pytest.fixture(autouse=True, scope="module")
def private_measure_cache(tmp_path_factory):
    """This module's conversions measure into their own cache, not the user's."""
    mp = pytest.MonkeyPatch()
    mp.setenv("LOWBIT_MEASURE_CACHE", str(tmp_path_factory.mktemp("measure-cache")))
    yield
    mp.undo()


def test_hull_drops_dominated_and_concave_points():
    pts = [(100, 10.0, "a"), (150, 9.9, "b"), (200, 4.0, "c"), (250, 5.0, "d"), (300, 1.0, "e")]
    assert [p[2] for p in _hull(pts)] == ["a", "c", "e"]


def test_allocation_matches_brute_force_on_convex_problems():
    rng = np.random.default_rng(0)
    for trial in range(30):
        measured = {}
        for k in range(4):
            sizes = np.cumsum(rng.integers(10, 40, 4))
            errs = np.sort(rng.uniform(0, 10, 4))[::-1]
            # convex in size: decreasing error decrements per byte
            errs = errs[0] * np.exp(-np.linspace(0, 3, 4) * rng.uniform(0.5, 2))
            measured[f"t{k}"] = {f"q{j}": (int(sizes[j]), float(errs[j]), None) for j in range(4)}
        budget = int(rng.integers(sum(m["q0"][0] for m in measured.values()),
                                  sum(m["q3"][0] for m in measured.values()) + 1))
        got = allocate(measured, budget)
        used = sum(measured[n][t][0] for n, t in got.items())
        assert used <= budget
        err = sum(measured[n][t][1] for n, t in got.items())
        best = min(sum(measured[n][t][1] for n, t in zip(measured, combo))
                   for combo in itertools.product(["q0", "q1", "q2", "q3"], repeat=4)
                   if sum(measured[n][t][0] for n, t in zip(measured, combo)) <= budget)
        # greedy on hull steps is optimal up to the last step that did not fit
        max_step = max(m["q3"][1] for m in measured.values()) + max(
            m["q0"][1] - m["q3"][1] for m in measured.values())
        assert err <= best + max_step
    with pytest.raises(ConvertError, match="target is too low"):
        allocate(measured, 10)


def test_allocation_is_exact_on_non_convex_problems():
    """The knapsack finds the brute-force optimum (budgets under 100,000 bytes: no rounding), also
    where greedy hull steps stall or the best point is off the hull."""
    # greedy: a's only hull step (a2 -> a4, 100 bytes) does not fit after b's; the optimum is a3, off a's hull
    m = {"a": {"a2": (100, 10.0, None), "a3": (150, 8.0, None), "a4": (200, 0.5, None)},
         "b": {"b1": (10, 1.0, None), "b2": (60, 0.0, None)}}
    assert target_bpw._greedy(m, 170) == {"a": "a2", "b": "b2"}
    assert allocate(m, 170) == {"a": "a3", "b": "b1"}
    rng = np.random.default_rng(1)
    for trial in range(40):
        measured = {f"t{k}": {f"q{j}": (int(rng.integers(5, 200)), float(rng.uniform(0, 10)), None) for j in range(4)}
                    for k in range(4)}
        budget = int(rng.integers(sum(min(v[0] for v in m.values()) for m in measured.values()), 700))
        got = allocate(measured, budget)
        assert sum(measured[n][t][0] for n, t in got.items()) <= budget
        best = min(sum(measured[n][t][1] for n, t in zip(measured, combo))
                   for combo in itertools.product(["q0", "q1", "q2", "q3"], repeat=4)
                   if sum(measured[n][t][0] for n, t in zip(measured, combo)) <= budget)
        assert sum(measured[n][t][1] for n, t in got.items()) == pytest.approx(best, abs=1e-12)


@pytest.fixture(scope="module")
def stories_imatrix(tmp_path_factory):
    root = tmp_path_factory.mktemp("tbpw")
    f32 = str(root / "stories-f32.lowbit")
    convert(STORIES, f32, "f32", progress=False, log=lambda m: None)
    stats, info = imatrix.compute(lowbit.load(f32), STORIES_TEXT, 64, 3, log=lambda *a, **k: None, hessian=True,
                                  sensitivity_chunks=2)
    path = str(root / "stories-h.imatrix")
    imatrix.save(path, stats, "stories-f32.lowbit", "tinystories-sample.txt", info)
    plain = str(root / "stories-plain.imatrix")
    imatrix.save(plain, stats, "stories-f32.lowbit", "tinystories-sample.txt",
                 {k: info[k] for k in ("chunks", "tokens", "n_ctx")})
    return {"hessian": path, "plain": plain, "root": root}


@pytest.mark.parametrize("kind", ["hessian", "plain"])
def test_target_bpw_files_land_under_target_and_run(stories_imatrix, tmp_path, kind):
    """stories260K's tokenizer blobs and norms alone are ~1.3 bits per weight: targets are high."""
    ref = np.load(os.path.join(SHARED, "reference", "stories260K.npz"), allow_pickle=False)
    results = []
    for target in (5.0, 8.0):
        out = str(tmp_path / f"t{target}.lowbit")
        s = convert(STORIES, out, "ignored", progress=False, log=lambda m: None, imatrix=stories_imatrix[kind],
                    target_bpw=target)
        assert s["bits_per_weight"] <= target
        assert s["bits_per_weight"] > target - 0.8      # the budget is used, not wasted
        recipe = LowbitFile(out).metadata["provenance"]["recipe"]
        assert recipe["type"] == "target_bpw" and recipe["target_bpw"]["target"] == target
        assert set(recipe["types"].values()) <= {"q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q8_0"}
        assert ("KL divergence" in recipe["target_bpw"]["error_measure"]) == (kind == "hessian")
        assert (recipe["gptq"] is not None) == (kind == "hessian")
        logits = lowbit.load(out).logits(ref["ids"].tolist())
        assert np.isfinite(logits).all()
        results.append((recipe["target_bpw"]["error"], np.linalg.norm(logits - ref["logits"])))
    # more bits: less estimated error and logits closer to the reference
    assert results[1][0] < results[0][0] and results[1][1] < results[0][1]


def test_target_bpw_errors(stories_imatrix, tmp_path):
    out = str(tmp_path / "o.lowbit")
    with pytest.raises(ConvertError, match="needs --imatrix"):
        convert(STORIES, out, "q4_k", progress=False, log=lambda m: None, target_bpw=4.0)
    with pytest.raises(ConvertError, match="target is too low"):
        convert(STORIES, out, "q4_k", progress=False, log=lambda m: None, imatrix=stories_imatrix["plain"],
                target_bpw=1.5)
    with pytest.raises(ConvertError, match="expected a number of bits per weight"):
        convert(STORIES, out, "q4_k", progress=False, log=lambda m: None, imatrix=stories_imatrix["plain"],
                target_bpw=-1)
    assert not os.path.exists(out)


def test_cli_target_bpw_with_override(stories_imatrix, tmp_path):
    out = str(tmp_path / "cli.lowbit")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", "lowbit.cli", "convert", STORIES, "-o", out, "--target-bpw", "6",
                        "--imatrix", stories_imatrix["plain"], "--override", r"blk\.0\.attn_v\.weight=q8_0",
                        "--json"], capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout)["bits_per_weight"] <= 6
    assert LowbitFile(out).metadata["provenance"]["recipe"]["types"]["blk.0.attn_v.weight"] == "q8_0"
    p = subprocess.run([sys.executable, "-m", "lowbit.cli", "convert", STORIES, "-o", out, "--target-bpw", "6"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 1 and "needs --imatrix" in p.stderr and "Traceback" not in p.stderr


def _same_file(a, b):
    """Same tensors byte for byte and the same metadata apart from the creation time."""
    fa, fb = LowbitFile(a), LowbitFile(b)
    ma, mb = fa.metadata, fb.metadata
    ma["provenance"].pop("created")
    mb["provenance"].pop("created")
    assert ma == mb
    assert list(fa.tensors) == list(fb.tensors)
    for name in fa.tensors:
        assert np.array_equal(fa.raw(name), fb.raw(name)), name


def test_measure_cache_reuses_measurements_and_gives_identical_files(stories_imatrix, tmp_path, monkeypatch):
    monkeypatch.setenv("LOWBIT_MEASURE_CACHE", str(tmp_path / "cache"))
    imat = stories_imatrix["hessian"]
    first = str(tmp_path / "first.lowbit")
    convert(STORIES, first, "ignored", progress=False, log=lambda m: None, imatrix=imat, target_bpw=6.0)
    entries = sorted((tmp_path / "cache").rglob("*.json"))
    assert len(entries) == 7 * 5 + 1       # one per 2-D weight: 5 layers x 7 matrices + the tied embedding
    # a second conversion, at this and at another target, must not measure anything
    def no_measuring(*a, **k):
        raise AssertionError("measured although every measurement is cached")
    monkeypatch.setattr(measure_cache, "output_error", no_measuring)
    logs = []
    for target in (6.0, 8.0):
        out = str(tmp_path / f"cached{target}.lowbit")
        convert(STORIES, out, "ignored", progress=True, log=logs.append, imatrix=imat, target_bpw=target)
    assert any("(cached)" in m for m in logs) and not any("warning" in m for m in logs)
    monkeypatch.undo()
    # the same files as conversions without a cache
    monkeypatch.setenv("LOWBIT_MEASURE_CACHE", "off")
    for target in (6.0, 8.0):
        fresh = str(tmp_path / f"fresh{target}.lowbit")
        convert(STORIES, fresh, "ignored", progress=False, log=lambda m: None, imatrix=imat, target_bpw=target)
        _same_file(fresh, str(tmp_path / f"cached{target}.lowbit"))
    _same_file(first, str(tmp_path / "cached6.0.lowbit"))
    assert LowbitFile(str(tmp_path / "cached8.0.lowbit")).metadata["provenance"]["recipe"]["types"] != \
        LowbitFile(first).metadata["provenance"]["recipe"]["types"]


def test_measure_cache_keys_on_imatrix_and_options(stories_imatrix, tmp_path, monkeypatch):
    monkeypatch.setenv("LOWBIT_MEASURE_CACHE", str(tmp_path / "cache"))
    for kw in ({"imatrix": stories_imatrix["hessian"]}, {"imatrix": stories_imatrix["hessian"], "gptq": False},
               {"imatrix": stories_imatrix["plain"]}):
        before = len(list((tmp_path / "cache").rglob("*.json")))
        convert(STORIES, str(tmp_path / "o.lowbit"), "ignored", progress=False, log=lambda m: None,
                target_bpw=6.0, **kw)
        assert len(list((tmp_path / "cache").rglob("*.json"))) == before + 36, kw   # nothing shared


def test_measure_cache_ignores_corrupt_entries(stories_imatrix, tmp_path, monkeypatch):
    monkeypatch.setenv("LOWBIT_MEASURE_CACHE", str(tmp_path / "cache"))
    imat = stories_imatrix["plain"]
    ref = str(tmp_path / "ref.lowbit")
    convert(STORIES, ref, "ignored", progress=False, log=lambda m: None, imatrix=imat, target_bpw=6.0)
    entries = sorted((tmp_path / "cache").rglob("*.json"))
    good = json.loads(entries[1].read_text())
    entries[0].write_bytes(b"\x00garbage{")                                         # not JSON
    entries[1].write_text(json.dumps({**good, "types": {"q4_k": {"bytes": 10, "error": float("nan")}}}))
    entries[2].write_text(json.dumps({**good, "key": "0" * 64}))                     # another key's entry
    logs = []
    out = str(tmp_path / "again.lowbit")
    convert(STORIES, out, "ignored", progress=False, log=logs.append, imatrix=imat, target_bpw=6.0)
    warned = [m for m in logs if m.startswith("warning: ignoring")]
    assert len(warned) == 3 and all(any(str(e) in m for m in warned) for e in entries[:3])
    _same_file(ref, out)
    # the entries were measured again and rewritten: no warnings the next time
    logs.clear()
    convert(STORIES, out, "ignored", progress=False, log=logs.append, imatrix=imat, target_bpw=6.0)
    assert not [m for m in logs if "warning" in m]
    assert measure_cache.load(good["key"]) and json.loads(entries[1].read_text()) == good


def test_parse_candidates():
    p = target_bpw.parse_candidates
    assert p(None) == target_bpw.CANDIDATES
    assert p("+q4_ke.h,+cbk4") == target_bpw.CANDIDATES + ["q4_ke.h", "cbk4"]
    assert p("+cbk2, -q8_0") == ["q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "cbk2"]
    assert p("q2_k,cbk2.h,q2_k") == ["q2_k", "cbk2.h"]
    assert p(["q4_k", "+d4l2"]) == ["q4_k", "d4l2"]
    assert p("all") == target_bpw.CANDIDATES + target_bpw.OPT_IN
    assert set(target_bpw.OPT_IN) <= set(lowbit.quants.TYPES)
    with pytest.raises(ConvertError, match="unknown type '\\+q9_k'"):
        p("+q9_k")
    with pytest.raises(ConvertError, match="leaves no candidate"):
        p("q4_k,-q4_k")
    with pytest.raises(ConvertError, match="expected a comma-separated list"):
        p(" , ")


def test_target_bpw_with_opt_in_candidates(stories_imatrix, tmp_path, monkeypatch):
    """The new types are chosen where they pay; every chosen .h tensor holds exactly the bytes
    that were measured (its encoded size depends on the tensor), and the file loads and runs."""
    monkeypatch.setenv("LOWBIT_MEASURE_CACHE", str(tmp_path / "cache"))
    ref = np.load(os.path.join(SHARED, "reference", "stories260K.npz"), allow_pickle=False)
    imat = stories_imatrix["hessian"]
    out = str(tmp_path / "ext.lowbit")
    cands = "+q4_ke,+q4_ke.h,+cbk4,+cbk4.h,+cbk2,+cbk2.h,+d4l2,+d4l2.h"
    s = convert(STORIES, out, "ignored", progress=False, log=lambda m: None, imatrix=imat, target_bpw=5.5,
                candidates=cands)
    assert s["bits_per_weight"] <= 5.5
    f = LowbitFile(out)
    recipe = f.metadata["provenance"]["recipe"]
    assert recipe["target_bpw"]["candidates"] == target_bpw.parse_candidates(cands)
    chosen = recipe["types"]
    assert {n: f.tensors[n].type for n in chosen} == chosen          # the file holds its recorded mix
    assert set(chosen.values()) & set(target_bpw.OPT_IN), chosen     # a new type is used somewhere
    assert recipe["target_bpw"]["weight_bytes"] == sum(f.tensors[n].nbytes for n in chosen)
    logits = lowbit.load(out).logits(ref["ids"].tolist())
    default = str(tmp_path / "default.lowbit")
    convert(STORIES, default, "ignored", progress=False, log=lambda m: None, imatrix=imat, target_bpw=5.5)
    err_default = LowbitFile(default).metadata["provenance"]["recipe"]["target_bpw"]["error"]
    assert recipe["target_bpw"]["error"] <= err_default      # a superset of candidates never does worse
    assert np.linalg.norm(logits - ref["logits"]) < 0.5 * np.linalg.norm(ref["logits"])

    # only Huffman-coded types: every tensor .h (cbk2.h fits the 64-wide rows only; q4_ke.h stores any)
    only_h = str(tmp_path / "only_h.lowbit")
    s = convert(STORIES, only_h, "ignored", progress=False, log=lambda m: None, imatrix=imat, target_bpw=8.0,
                candidates="q4_ke.h,cbk2.h")
    f = LowbitFile(only_h)
    recipe = f.metadata["provenance"]["recipe"]
    assert set(recipe["types"].values()) == {"q4_ke.h", "cbk2.h"} or set(recipe["types"].values()) == {"q4_ke.h"}
    assert recipe["target_bpw"]["weight_bytes"] == sum(f.tensors[n].nbytes for n in recipe["types"])
    # the encoded size is the tensor's own: same-shape weights code to different byte counts
    sizes = {f.tensors[f"blk.{i}.attn_q.weight"].nbytes for i in range(5)
             if f.tensors[f"blk.{i}.attn_q.weight"].type == "q4_ke.h"}
    assert len(sizes) > 1
    assert np.isfinite(lowbit.load(only_h).logits(ref["ids"].tolist())).all()


def test_measure_cache_keeps_measurements_per_candidate(stories_imatrix, tmp_path, monkeypatch):
    """Adding candidates measures only the new types; a cached .h entry keeps its per-tensor bytes."""
    monkeypatch.setenv("LOWBIT_MEASURE_CACHE", str(tmp_path / "cache"))
    imat = stories_imatrix["hessian"]
    convert(STORIES, str(tmp_path / "a.lowbit"), "ignored", progress=False, log=lambda m: None, imatrix=imat,
            target_bpw=6.0)
    measured = []
    real = measure_cache.output_error

    def spy(qtype, *a, **k):
        measured.append(qtype)
        return real(qtype, *a, **k)
    monkeypatch.setattr(measure_cache, "output_error", spy)
    first = str(tmp_path / "b.lowbit")
    convert(STORIES, first, "ignored", progress=False, log=lambda m: None, imatrix=imat, target_bpw=6.0,
            candidates="+q4_ke.h")
    assert set(measured) == {"q4_ke.h"}
    measured.clear()
    again = str(tmp_path / "c.lowbit")
    convert(STORIES, again, "ignored", progress=False, log=lambda m: None, imatrix=imat, target_bpw=6.0,
            candidates="+q4_ke.h")
    assert measured == []
    _same_file(first, again)
    with pytest.raises(ConvertError, match="--candidates applies to --target-bpw only"):
        convert(STORIES, str(tmp_path / "d.lowbit"), "q4_k", progress=False, log=lambda m: None, candidates="+cbk4")


def test_cli_candidates(stories_imatrix, tmp_path):
    out = str(tmp_path / "cli.lowbit")
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    p = subprocess.run([sys.executable, "-m", "lowbit.cli", "convert", STORIES, "-o", out, "--target-bpw", "6",
                        "--imatrix", stories_imatrix["plain"], "--candidates", "q2_k,cbk4", "--json"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stderr
    types = set(LowbitFile(out).metadata["provenance"]["recipe"]["types"].values())
    assert types <= {"q2_k", "cbk4"} and "cbk4" in types
    p = subprocess.run([sys.executable, "-m", "lowbit.cli", "convert", STORIES, "-o", out, "--target-bpw", "6",
                        "--imatrix", stories_imatrix["plain"], "--candidates", "+q9_k"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 1 and "unknown type '+q9_k'" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-m", "lowbit.cli", "convert", STORIES, "-o", out, "--target-bpw", "6",
                        "--imatrix", stories_imatrix["plain"], "--candidates", "cbk2"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 1 and "fits none of the candidate types" in p.stderr and "Traceback" not in p.stderr
