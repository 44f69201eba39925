"""Seed corpus for both fuzz harnesses: every vector of format_spec/vectors as is, plus its
structure-aware form (JSON header, NUL, data region) that the harnesses turn back into a file, plus
each small entropy-coded tensor as an 'H' input (h_mode.py).

    python -m tools.fuzz.seeds /tmp/fuzz-corpus
"""
import json
import os
import sys

from tools._paths import ROOT
from tools.fuzz import h_mode

VECTORS = os.path.join(ROOT, "format_spec", "vectors")


def main(out):
    os.makedirs(out, exist_ok=True)
    n = 0
    for name in sorted(os.listdir(VECTORS)):
        if not name.endswith(".lowbit"):
            continue
        data = open(os.path.join(VECTORS, name), "rb").read()
        open(os.path.join(out, name), "wb").write(data)
        n += 1
        if len(data) >= 48:
            hl = int.from_bytes(data[16:24], "little")
            off = int.from_bytes(data[24:32], "little")
            if 0 < hl <= len(data) - 48 and data[48:49] == b"{" and off <= len(data):
                open(os.path.join(out, name + ".json"), "wb").write(data[48:48 + hl] + b"\0" + data[off:])
                n += 1
                table = json.loads(data[48:48 + hl])["tensors"] if name.endswith("_h.lowbit") or name.startswith("huffman") else []
                for t in table:   # entropy-coded tensors of the valid vectors: 'H' inputs
                    s = h_mode.seed(t["type"], t["shape"], data[off + t["offset"]:off + t["offset"] + t["nbytes"]])
                    if s is not None:
                        open(os.path.join(out, f"{name}.{t['name']}.h"), "wb").write(s)
                        n += 1
    print(f"{n} seeds in {out}")


if __name__ == "__main__":
    main(sys.argv[1])
