"""Atheris harness for the Python reader: any input must open cleanly or raise FormatError;
opened files must list, dequantize every known tensor and verify CRCs without other errors.

    pip install atheris
    mkdir -p /tmp/fuzz-py && cp format_spec/vectors/*.lowbit /tmp/fuzz-py/
    timeout 700 python -m tools.fuzz.fuzz_python /tmp/fuzz-py \
        -max_total_time=600 -max_len=8192 -artifact_prefix=/tmp/fuzz-py-crash-
"""
import os
import sys
import struct
import tempfile
import zlib

import atheris
import numpy  # noqa: F401  (imported uninstrumented: atheris' hooks break Numba's compiled kernels)
from lowbit import kernels, quants  # noqa: F401
from lowbit.errors import FormatError

from lowbit import config, format
from tools.fuzz import h_mode


def _instrument(module):
    """Coverage for the pure-Python parsing code only (lowbit imports it before any harness
    could wrap the import, and Numba must see its kernels uninstrumented)."""
    import inspect
    for name, obj in list(vars(module).items()):
        if inspect.isfunction(obj) and obj.__module__ == module.__name__:
            setattr(module, name, atheris.instrument_func(obj))
        elif inspect.isclass(obj) and obj.__module__ == module.__name__:
            for mname, m in list(vars(obj).items()):
                if inspect.isfunction(m):
                    setattr(obj, mname, atheris.instrument_func(m))


for _m in (format, config):
    _instrument(_m)

PATH = os.path.join(tempfile.mkdtemp(prefix="lowbit-fuzz-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None), "input.lowbit")


def check(data: bytes):
    with open(PATH, "wb") as fh:
        fh.write(data)
    try:
        f = format.LowbitFile(PATH)
    except FormatError:
        return
    with f:
        for name, t in f.tensors.items():
            if t.type in format.quants.TYPES:
                out = f.dequantize(name)
                assert out.size == t.rows * t.cols
            else:
                try:
                    f.qtype(name)
                    raise AssertionError("unknown type accepted")
                except FormatError:
                    pass
        f.verify()
        try:
            config.ModelConfig.from_json(PATH, f.metadata.get("architecture"))
        except FormatError:
            pass


def repaired(data: bytes):
    """The input with its header CRC and data_len made consistent, so that mutations of the JSON
    reach the parser and the table checks instead of stopping at the checksum."""
    if len(data) < 48:
        return None
    hl = int.from_bytes(data[16:24], "little")
    if not 0 < hl <= len(data) - 48:
        return None
    off = (48 + hl + 63) // 64 * 64
    if off > len(data):
        data = data + b"\0" * (off - len(data))
    b = bytearray(data)
    b[24:32] = off.to_bytes(8, "little")
    b[32:40] = (len(b) - off).to_bytes(8, "little")
    b[40:44] = zlib.crc32(b[48:48 + hl]).to_bytes(4, "little")
    return bytes(b)


def from_header(data: bytes):
    """Structure-aware mode: an input starting with '{' is a JSON header, then NUL, then the data
    region; it gets a valid prefix, so every mutation of the JSON reaches the parser and the table."""
    header, _, region = data.partition(b"\0")
    off = (48 + len(header) + 63) // 64 * 64
    prefix = struct.pack("<8sIIQQQII", b"\x89LOWBIT\n", 1, 0, len(header), off, len(region), zlib.crc32(header), 0)
    return prefix + header + b"\0" * (off - 48 - len(header)) + region


def TestOneInput(data: bytes):
    if data[:1] == b"H":   # one entropy-coded tensor (h_mode.py; fuzz_reader.c maps it the same way)
        f = h_mode.to_file(data)
        if f is not None:
            check(f)
            return
    if data[:1] == b"{":
        check(from_header(data))
        return
    check(data)
    fixed = repaired(data)
    if fixed is not None and fixed != data:
        check(fixed)


if __name__ == "__main__":
    atheris.Setup(sys.argv, TestOneInput)
    atheris.Fuzz()
