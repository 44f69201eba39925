"""The C reference reader (format_spec/reference/) against the Python runtime on the real shared
models: identical float32 bytes for every tensor of every model at every type."""
import os
import subprocess
import sys

import numpy as np
import pytest

import converters
from converters import recipes
from lowbit import quants
from lowbit.format import LowbitFile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "models")
sys.path.insert(0, os.path.join(ROOT, "format_spec", "reference"))
from lowbit_ctypes import CReader, build  # noqa: E402

# Every type and mix a model can be converted to. ("q2_k" and "q6_k" name mixes; the plain q2_k and
# q6_k types are what those mixes are mostly made of.)
NAMES = list(dict.fromkeys([t for t in quants.TYPES if t != "u8"] + list(recipes.MIXES)))
# stories260K (rows of 64 and 172: tail blocks everywhere) and pychat-30m (rows of 384: block + tail)
# at every type and mix; pycode-30m (rows of 512 and 1280: whole super-blocks only) at a subset that
# still holds every k-quant type, to keep this file near 2 minutes.
PYCODE = ["bf16", "q8_0", "q2_k", "q4_k", "q3_k_m", "q5_k_m"]
# Codebook types and mixes cost about a minute each to quantize on pychat-30m (k-means): there it
# runs one learned codebook with Huffman-coded indices, the lattice, and q4_k.h; stories260K runs
# them all (and format_spec/vectors pins every decoder bit for bit).
CODEBOOK = {n for n in NAMES if n.split(".")[0] in ("cbk2", "cbk4", "d4l2")
            or (n in recipes.MIXES and recipes.MIXES[n].base.split(".")[0] in ("cbk2", "cbk4", "d4l2"))}
PYCHAT_CODEBOOK = {"cbk2.h", "d4l2"}
CASES = ([("stories260K", q) for q in NAMES] + [("pychat-30m", q) for q in NAMES if q not in CODEBOOK or q in PYCHAT_CODEBOOK]
         + [("pycode-30m", q) for q in PYCODE])


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    d = tmp_path_factory.mktemp("c_reader")
    cache = {}

    def get(model, qtype):
        if (model, qtype) not in cache:
            out = str(d / f"{model}-{qtype}.lowbit")
            converters.convert(os.path.join(SHARED, model), out, qtype, progress=False, log=lambda m: None)
            cache[model, qtype] = out
        return cache[model, qtype]
    return get


@pytest.mark.parametrize("model,qtype", CASES)
def test_c_dequantize_identical_to_python(converted, model, qtype):
    path = converted(model, qtype)
    seen, with_tail = set(), set()
    with LowbitFile(path) as f, CReader.open(path) as r:
        ctensors = {t["name"]: t for t in r.tensors()}
        assert list(ctensors) == list(f.tensors)
        assert [(t["type"], t["shape"], t["offset"], t["nbytes"], t["crc32"]) for t in ctensors.values()] == \
               [(t.type, list(t.shape), t.offset, t.nbytes, t.crc32) for t in f.tensors.values()]
        import json
        assert json.loads(r.metadata_json()) == f.metadata
        for name in f.tensors:
            a, b = f.dequantize(name), r.dequantize(name)
            assert a.dtype == b.dtype == np.float32 and a.shape == b.shape
            assert a.tobytes() == b.tobytes(), f"{model} {qtype} {name}"
            r.check_crc(name)
            t = f.tensors[name]
            seen.add(t.type)
            if t.shape[-1] % quants.TYPES[t.type].block_size:
                with_tail.add(t.type)
    main = recipes.MIXES[qtype].base if qtype in recipes.MIXES else qtype
    assert main in seen, (main, seen)
    if model != "pycode-30m":   # every k-quant of these models was compared on rows that end in a tail block
        assert {t for t in seen if quants.TYPES[t].tail_bytes is not None} <= with_tail, (seen, with_tail)


def test_dump_cli_on_a_model(converted):
    path = converted("stories260K", "q8_0")
    dump = build()[1]
    listing = subprocess.run([dump, path], capture_output=True, text=True, check=True).stdout
    assert "tensors: 49" in listing and "token_embd.weight q8_0 [512,64]" in listing
    raw = subprocess.run([dump, path, "blk.0.ffn_down.weight"], capture_output=True, check=True).stdout
    with LowbitFile(path) as f:
        assert raw == f.dequantize("blk.0.ffn_down.weight").astype("<f4").tobytes()
    assert subprocess.run([dump, "--verify", path], capture_output=True).returncode == 0
