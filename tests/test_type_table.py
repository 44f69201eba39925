"""The one type table (lowbit/quants): ids, layouts and the generated lowbit_types.h agree with what
the C kernels compute, and the table's own references are consistent."""
import os
import re
import subprocess

import numpy as np
import pytest

from lowbit import native, quants
from lowbit.quants import ctypes_header


def test_ids_are_unique_and_references_resolve():
    ids = [qt.id for qt in quants.TYPES.values()]
    assert len(set(ids)) == len(ids) and min(ids) >= 0
    for qt in quants.TYPES.values():
        for ref in (qt.same_bytes_as, qt.coded_base, qt.fallback):
            assert ref is None or ref in quants.TYPES, (qt.name, ref)
        if qt.same_bytes_as:   # shares the bytes: same blocks, same rows
            owner = quants.get(qt.same_bytes_as)
            assert (qt.block_size, qt.block_bytes) == (owner.block_size, owner.block_bytes)
            assert all(qt.row_bytes(c) == owner.row_bytes(c) for c in (256, 384, 1000))
        if qt.kernel_type is not None:
            assert quants.get(qt.kernel_type).has_kernels
        assert qt.candidate in (None, "default", "opt-in")


def test_fallback_chains_end_in_a_type_that_stores_any_row():
    for qt in quants.TYPES.values():
        seen, t = [], qt.name
        while t is not None and not quants.get(t).fits(7):
            assert t not in seen, f"fallback loop {seen}"
            seen.append(t)
            t = quants.get(t).fallback
        assert qt.fallback is None or t is not None, f"{qt.name}: fallback chain {seen} ends without a type"


def _header_values(tmp_path):
    """Compile a program against the generated header; return {macro: value} as C sees them."""
    hdir = tmp_path / "inc"
    ctypes_header.write(str(hdir))
    text = ctypes_header.text()
    names = re.findall(r"^\s+(LB_[A-Z0-9_]+) = ", text, re.M)
    names += re.findall(r"^#define (LB_[A-Z0-9_]+_BLOCK_(?:SIZE|BYTES)) ", text, re.M)
    src = tmp_path / "t.c"
    src.write_text('#include <stdio.h>\n#include "lowbit_types.h"\nint main(void) {\n' +
                   "".join(f'    printf("{n} %d\\n", (int){n});\n' for n in names) + "    return 0;\n}\n")
    exe = tmp_path / "t"
    try:
        subprocess.run(["cc", "-std=c11", "-Wall", "-Werror", "-I", str(hdir), str(src), "-o", str(exe)],
                       check=True, capture_output=True)
    except FileNotFoundError:
        pytest.fail("no C compiler (cc): the native kernels need one too")
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    return dict((k, int(v)) for k, v in (line.split() for line in out.splitlines()))


def test_generated_header_matches_the_table(tmp_path):
    vals = _header_values(tmp_path)
    for qt in quants.TYPES.values():
        m = "LB_" + qt.name.upper().replace(".", "_")
        assert vals[m] == qt.id
        if qt.has_kernels:
            assert vals[m + "_BLOCK_SIZE"] == qt.block_size and vals[m + "_BLOCK_BYTES"] == qt.block_bytes
        else:
            assert m + "_BLOCK_SIZE" not in vals


def test_native_row_sizes_match_the_table():
    lib = native.library()
    assert lib is not None, "the native library did not build"
    lib = lib[1]
    for qt in quants.TYPES.values():
        if not qt.has_kernels:
            continue
        for cols in (32, 64, 96, 128, 256, 300, 512, 4096):
            want = qt.row_bytes(cols) if qt.fits(cols) and not qt.prefix_bytes else None
            if qt.prefix_bytes:     # codebook rows: whole blocks only (the prefix is bound separately)
                want = qt.row_bytes(cols) if cols % qt.block_size == 0 else -1
            got = lib.lb_row_bytes(qt.id, cols)
            assert got == (want if want is not None else -1), (qt.name, cols, got, want)
