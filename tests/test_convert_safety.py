"""Conversion safety: an interrupted conversion (exception, SIGINT, SIGKILL) never leaves a file at
the target path; pickle checkpoints are refused; a corrupt or truncated safetensors shard is a
ConvertError naming the shard and the tensor."""
import glob
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

import converters
from converters.safetensors_reader import SafetensorsFile
from lowbit.errors import ConvertError
from lowbit.format import LowbitFile, TensorSpec, write_lowbit

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared", "models")
ENV = {**os.environ, "PYTHONPATH": ROOT}


def copy_model(name, dst):
    """A writable copy of a shared model folder (the shared files are read-only)."""
    os.makedirs(dst)
    for f in os.listdir(os.path.join(SHARED, name)):
        shutil.copyfile(os.path.join(SHARED, name, f), os.path.join(dst, f))
    return str(dst)


def leftovers(d):
    return sorted(glob.glob(os.path.join(str(d), ".lowbit-*.tmp")))


def specs(n=5, fail_at=None):
    def produce(i):
        if i == fail_at:
            raise RuntimeError("boom while producing tensor %d" % i)
        return np.full((4, 32), i, np.float32)
    return [TensorSpec(f"t{i}", "f32", (4, 32), lambda i=i: produce(i)) for i in range(n)]


def test_exception_midway_leaves_nothing(tmp_path):
    target = tmp_path / "out.lowbit"
    with pytest.raises(RuntimeError, match="boom"):
        write_lowbit(target, {}, specs(fail_at=3))
    assert not target.exists() and leftovers(tmp_path) == []


def test_exception_midway_keeps_previous_file(tmp_path):
    target = tmp_path / "out.lowbit"
    write_lowbit(target, {"v": 1}, specs())
    before = target.read_bytes()
    with pytest.raises(RuntimeError):
        write_lowbit(target, {"v": 2}, specs(fail_at=2))
    assert target.read_bytes() == before and leftovers(tmp_path) == []


def test_convert_failing_tensor_leaves_nothing(tmp_path, monkeypatch):
    from converters import hf
    real = hf.Checkpoint.tensor

    def tensor(self, name):
        if name == "blk.2.ffn_up.weight":
            raise ConvertError("simulated failure reading blk.2.ffn_up.weight")
        return real(self, name)
    monkeypatch.setattr(hf.Checkpoint, "tensor", tensor)
    target = tmp_path / "s.lowbit"
    with pytest.raises(ConvertError, match="simulated"):
        converters.convert(os.path.join(SHARED, "stories260K"), str(target), "q8_0", progress=False, log=lambda m: None)
    assert not target.exists() and leftovers(tmp_path) == []


BLOCKING_WRITER = r"""
import os, sys, time, numpy as np
from lowbit.format import TensorSpec, write_lowbit
marker, target = sys.argv[1], sys.argv[2]
def produce(i):
    if i == 3:
        open(marker, "w").close()   # two tensors are on disk in the temporary file
        time.sleep(60)
    return np.full((64, 64), i, np.float32)
write_lowbit(target, {}, [TensorSpec(f"t{i}", "f32", (64, 64), lambda i=i: produce(i)) for i in range(6)])
"""


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_signal_mid_write(tmp_path, sig):
    marker, target = tmp_path / "marker", tmp_path / "out.lowbit"
    p = subprocess.Popen([sys.executable, "-c", BLOCKING_WRITER, str(marker), str(target)], env=ENV,
                         stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 60
        while not marker.exists():
            assert p.poll() is None and time.time() < deadline, "writer did not reach the midpoint"
            time.sleep(0.01)
        assert len(leftovers(tmp_path)) == 1   # the partial file is a hidden temporary beside the target
        p.send_signal(sig)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    assert not target.exists()
    if sig == signal.SIGINT:
        assert leftovers(tmp_path) == []        # KeyboardInterrupt: the writer removes its temporary
    else:
        # SIGKILL cannot be caught: the temporary stays, under a name no reader looks for
        left = leftovers(tmp_path)
        assert len(left) == 1 and os.path.basename(left[0]).startswith(".lowbit-")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL])
def test_cli_convert_killed(tmp_path, sig):
    """A real `lowbit convert` interrupted once its temporary file exists."""
    target = tmp_path / "pychat.lowbit"
    p = subprocess.Popen([sys.executable, "-m", "lowbit.cli", "convert", os.path.join(SHARED, "pychat-30m"), "-t", "bf16",
                          "-o", str(target)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 120
        while not leftovers(tmp_path):
            if p.poll() is not None or time.time() > deadline:
                pytest.fail(f"conversion ended before it could be interrupted: {p.stderr.read()[-500:]}")
            time.sleep(0.002)
        time.sleep(0.2)
        p.send_signal(sig)
        rc = p.wait(timeout=60)
        err = p.stderr.read().decode()
    finally:
        if p.poll() is None:
            p.kill()
    if os.path.exists(target):   # finished in the 0.2 s: then it must be complete and valid
        LowbitFile(str(target)).close()
        return
    if sig == signal.SIGINT:
        assert rc == 130 and "interrupted" in err and "Traceback" not in err
        assert leftovers(tmp_path) == []
    else:
        assert rc == -signal.SIGKILL


def test_pickle_refused(tmp_path):
    d = tmp_path / "pickled"
    d.mkdir()
    shutil.copyfile(os.path.join(SHARED, "stories260K", "config.json"), d / "config.json")
    (d / "pytorch_model.bin").write_bytes(b"\x80\x04\x95" + b"\0" * 64)   # a pickle stream: never opened
    with pytest.raises(ConvertError, match="pickle"):
        converters.convert(str(d), str(tmp_path / "x.lowbit"), "q8_0", progress=False, log=lambda m: None)
    assert not (tmp_path / "x.lowbit").exists()


def shard_layout(path):
    with open(path, "rb") as f:
        (hlen,) = struct.unpack("<Q", f.read(8))
        header = json.loads(f.read(hlen))
    header.pop("__metadata__", None)
    return hlen, header


def test_truncated_shard_names_shard_and_tensor(tmp_path):
    d = copy_model("pycode-30m", tmp_path / "m")
    shard = os.path.join(d, "model-00003-of-00006.safetensors")
    hlen, header = shard_layout(shard)
    last = max(header, key=lambda k: header[k]["data_offsets"][1])
    os.truncate(shard, os.path.getsize(shard) - 1000)
    with pytest.raises(ConvertError) as e:
        converters.convert(d, str(tmp_path / "x.lowbit"), "q8_0", progress=False, log=lambda m: None)
    msg = str(e.value)
    assert "model-00003-of-00006.safetensors" in msg and repr(last) in msg and "truncated" in msg
    assert not (tmp_path / "x.lowbit").exists()


def test_corrupt_shards(tmp_path):
    d = copy_model("stories260K", tmp_path / "m")
    shard = os.path.join(d, "model.safetensors")
    good = open(shard, "rb").read()
    hlen, header = shard_layout(shard)
    name = sorted(header)[0]

    def attempt(data, *expect):
        with open(shard, "wb") as f:
            f.write(data)
        with pytest.raises(ConvertError) as e:
            converters.convert(d, str(tmp_path / "x.lowbit"), "q8_0", progress=False, log=lambda m: None)
        for s in ("model.safetensors",) + expect:
            assert s in str(e.value), (s, str(e.value))
        assert not (tmp_path / "x.lowbit").exists()

    attempt(good[:4], "truncated")
    attempt(struct.pack("<Q", 2 ** 63) + good[8:], "header length")
    attempt(good[:8] + b"X" + good[9:], "not valid JSON")
    # a tensor's bytes turned into NaNs
    begin = 8 + hlen + header[name]["data_offsets"][0]
    attempt(good[:begin] + b"\xff" * 16 + good[begin + 16:], repr(name), "NaN")

    # offsets that disagree with the shape, or are not integers
    def with_entry(**kw):
        h = dict(shard_layout(shard)[1]) if False else json.loads(good[8:8 + hlen])
        h[name] = {**h[name], **kw}
        text = json.dumps(h).encode()
        text += b" " * (-len(text) % 8)
        return struct.pack("<Q", len(text)) + text + good[8 + hlen:]
    b, e = header[name]["data_offsets"]
    attempt(with_entry(data_offsets=[b, e + 4]), repr(name), "inconsistent")
    attempt(with_entry(data_offsets=[float(b), float(e)]), repr(name))
    attempt(with_entry(shape=[-1, 64]), repr(name))
    attempt(with_entry(dtype="I64"), repr(name), "dtype")


def test_safetensors_reader_direct_float_offsets(tmp_path):
    p = tmp_path / "x.safetensors"
    h = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0.0, 8.0]}}).encode()
    p.write_bytes(struct.pack("<Q", len(h)) + h + b"\0" * 8)
    with pytest.raises(ConvertError, match="'w'"):
        SafetensorsFile(str(p)).float32("w")
