"""Build the native kernels with cffi: one extension module per CPU feature level, from the same C
source. Used by setup.py (cffi_modules, at install time) and by the loader (first use, into a
per-user cache). Needs gcc (or any C compiler setuptools finds), and the type table
(lowbit.quants: numpy and Numba) to generate lowbit_types.h, which the build writes into an
include folder of its own next to the sources it compiles."""
import glob
import hashlib
import importlib
import os
import sys

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))   # the tree this file is in (lowbit/native/..)
TYPES_HEADER = "lowbit_types.h"


def sources() -> list:
    """Every file the build reads, relative to this folder: lowbit_native.c includes the family files
    under kernels/ (one compilation unit), so all of them go into the hash and the dependencies."""
    kernels = sorted(os.path.relpath(p, HERE) for p in glob.glob(os.path.join(HERE, "kernels", "*.[ch]")))
    return ["lowbit_native.h", "lowbit_bench.h", "lowbit_native.c"] + kernels


COMMON = ["-O3", "-std=gnu11", "-fno-math-errno", "-fno-trapping-math", "-fassociative-math",
          "-fno-signed-zeros", "-ffp-contract=fast", "-pthread"]
LEVELS = {   # name -> (compiler flags, lb_cpu_level() value it needs)
    "avx512vnni": (["-DLB_AVX512", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512vnni", "-mavx2",
                    "-mfma", "-mf16c", "-mbmi2"], 2),
    "avx2": (["-DLB_AVX2", "-mavx2", "-mfma", "-mf16c", "-mbmi2"], 1),
    "scalar": ([], 0),
}


def _ctypes_header():
    """lowbit.quants.ctypes_header of this tree (the generator of lowbit_types.h)."""
    if globals().get("__package__"):   # imported as lowbit.native.build
        from ..quants import ctypes_header
        return ctypes_header
    sys.path.insert(0, ROOT)   # run as a script, or by setup.py's cffi_modules: import it from this tree
    try:
        return importlib.import_module("lowbit.quants.ctypes_header")
    finally:
        sys.path.remove(ROOT)


def types_header() -> str:
    """lowbit_types.h's text (type ids, block sizes), generated from the type table of this tree."""
    return _ctypes_header().text()


def write_types_header(include_dir: str) -> str:
    """Write lowbit_types.h into include_dir (only when its text changed); returns include_dir."""
    _ctypes_header().write(include_dir)
    return include_dir


def source_hash() -> str:
    h = hashlib.sha256()
    for name in sources() + ["build.py"]:
        h.update(name.encode() + b"\0")   # a renamed or moved file changes the hash too
        with open(os.path.join(HERE, name), "rb") as f:
            h.update(f.read())
    h.update(TYPES_HEADER.encode() + b"\0" + types_header().encode())   # a new id or layout rebuilds
    return h.hexdigest()[:16]


def cdef_text(bench: bool = False) -> str:
    text = []
    for name in ["lowbit_native.h"] + (["lowbit_bench.h"] if bench else []):
        with open(os.path.join(HERE, name)) as f:
            text += [line for line in f.read().splitlines() if not line.lstrip().startswith("#")]
    return "\n".join(text)


def module_name(level: str, bench: bool = False) -> str:
    """The extension module's name: _lowbit_<level>, or _lowbit_bench_<level> for the bench build
    (the same kernels plus the tools' benchmark entry points of lowbit_bench.h, never installed)."""
    return f"_lowbit_bench_{level}" if bench else f"_lowbit_{level}"


def make_ffi(level: str, module: str, src_dir: str, include_dir: str, bench: bool = False) -> FFI:
    """src_dir: where the C sources are, as the build will see it (setuptools wants paths relative
    to setup.py; a build on first use passes absolute ones); include_dir: the folder holding the
    generated lowbit_types.h (write_types_header)."""
    flags, _ = LEVELS[level]
    ffi = FFI()
    ffi.cdef(cdef_text(bench))
    header = '#include "lowbit_bench.h"' if bench else '#include "lowbit_native.h"'
    ffi.set_source(module, header,
                   sources=[os.path.join(src_dir, "lowbit_native.c")], include_dirs=[src_dir, include_dir],
                   depends=[os.path.join(src_dir, name) for name in sources()] +
                           [os.path.join(include_dir, TYPES_HEADER)],
                   extra_compile_args=(COMMON + flags + [f'-DLB_SOURCE_HASH="{source_hash()}"']
                                       + (["-DLB_BENCH"] if bench else [])),
                   libraries=["m"], extra_link_args=["-pthread"])
    return ffi


def build(level: str, outdir: str, bench: bool = False) -> str:
    """Compile one level (its bench build if `bench`) into outdir; returns the path of the module."""
    import shutil
    name = module_name(level, bench)
    tmp = os.path.join(outdir, f"build-{name}")
    try:
        ffi = make_ffi(level, name, HERE, write_types_header(os.path.join(tmp, "include")), bench)
        built = ffi.compile(tmpdir=tmp, verbose=False, target=f"{name}.*")
        final = os.path.join(outdir, os.path.basename(built))
        os.replace(built, final)          # atomic: a concurrent reader sees no half-written module
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# setup.py's cffi_modules entries, built into the package at install time (run from the project
# root, so the sources are named relative to it; the generated header goes under build/). Functions,
# which cffi calls, so that importing this module at run time generates and parses nothing.
_SETUP_DIR = os.path.join("lowbit", "native")
_SETUP_INCLUDE = os.path.join("build", "lowbit-native-include")


def _setup_ffi(level: str) -> FFI:
    return make_ffi(level, f"lowbit.native.{module_name(level)}", _SETUP_DIR, write_types_header(_SETUP_INCLUDE))


def ffi_avx512vnni():
    return _setup_ffi("avx512vnni")


def ffi_avx2():
    return _setup_ffi("avx2")


def ffi_scalar():
    return _setup_ffi("scalar")


if __name__ == "__main__":
    out = sys.argv[1] if len(sys.argv) > 1 else HERE
    for lvl in LEVELS:
        print(build(lvl, out))
