"""Differential replay: feed every input of a fuzz corpus (in the forms the harnesses read: as is,
'{' structure-aware, 'H' entropy-coded tensor) to both the Python reader and the C reference reader;
they must both reject it or both accept it and dequantize it identically.

    python -m tools.fuzz.replay_both /tmp/fuzz-c [more corpus dirs]
"""
import os
import struct
import sys
import tempfile
import zlib
from pathlib import Path

from tests.test_hostile import repair, same_verdict
from tools.fuzz import h_mode


def forms(data: bytes):
    if data[:1] == b"H":
        f = h_mode.to_file(data)
        if f is not None:
            return [f]
    if data[:1] == b"{":
        h, _, region = data.partition(b"\0")
        off = (48 + len(h) + 63) // 64 * 64
        return [struct.pack("<8sIIQQQII", b"\x89LOWBIT\n", 1, 0, len(h), off, len(region), zlib.crc32(h), 0)
                + h + b"\0" * (off - 48 - len(h)) + region]
    return [data, repair(data)] if len(data) >= 48 else [data]


def main(dirs):
    tmp = Path(tempfile.mkdtemp(prefix="lowbit-replay-"))
    n = accepted = 0
    for d in dirs:
        for name in sorted(os.listdir(d)):
            data = open(os.path.join(d, name), "rb").read()
            for f in forms(data):
                try:
                    accepted += bool(same_verdict(tmp, f))
                except AssertionError as e:
                    print(f"DISAGREE {os.path.join(d, name)}: {e}")
                    raise
                n += 1
    print(f"{n} files: {accepted} accepted by both readers, the rest rejected by both")


if __name__ == "__main__":
    main(sys.argv[1:])
