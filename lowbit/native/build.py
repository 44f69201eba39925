"""Build the native kernels with cffi: one extension module per CPU feature level, from the same C
source. Used by setup.py (cffi_modules, at install time) and by the loader (first use, into a
per-user cache). Needs only gcc (or any C compiler setuptools finds)."""
import glob
import hashlib
import os

from cffi import FFI

HERE = os.path.dirname(os.path.abspath(__file__))


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


def source_hash() -> str:
    h = hashlib.sha256()
    for name in sources() + ["build.py"]:
        h.update(name.encode() + b"\0")   # a renamed or moved file changes the hash too
        with open(os.path.join(HERE, name), "rb") as f:
            h.update(f.read())
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


def make_ffi(level: str, module: str = None, src_dir: str = HERE, bench: bool = False) -> FFI:
    """src_dir: where the C sources are, as the build will see it (setuptools wants paths relative
    to setup.py; a build on first use passes absolute ones)."""
    flags, _ = LEVELS[level]
    ffi = FFI()
    ffi.cdef(cdef_text(bench))
    header = '#include "lowbit_bench.h"' if bench else '#include "lowbit_native.h"'
    ffi.set_source(module or module_name(level, bench), header,
                   sources=[os.path.join(src_dir, "lowbit_native.c")], include_dirs=[src_dir],
                   depends=[os.path.join(src_dir, name) for name in sources()],
                   extra_compile_args=(COMMON + flags + [f'-DLB_SOURCE_HASH="{source_hash()}"']
                                       + (["-DLB_BENCH"] if bench else [])),
                   libraries=["m"], extra_link_args=["-pthread"])
    return ffi


def build(level: str, outdir: str, bench: bool = False) -> str:
    """Compile one level (its bench build if `bench`) into outdir; returns the path of the module."""
    ffi = make_ffi(level, bench=bench)
    import shutil
    name = module_name(level, bench)
    tmp = os.path.join(outdir, f"build-{name}")
    try:
        built = ffi.compile(tmpdir=tmp, verbose=False, target=f"{name}.*")
        final = os.path.join(outdir, os.path.basename(built))
        os.replace(built, final)          # atomic: a concurrent reader sees no half-written module
        return final
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# setup.py's cffi_modules entries: built into the package at install time (run from the project
# root, so the sources are named relative to it)
_SETUP_DIR = os.path.join("lowbit", "native")
ffi_avx512vnni = make_ffi("avx512vnni", "lowbit.native._lowbit_avx512vnni", _SETUP_DIR)
ffi_avx2 = make_ffi("avx2", "lowbit.native._lowbit_avx2", _SETUP_DIR)
ffi_scalar = make_ffi("scalar", "lowbit.native._lowbit_scalar", _SETUP_DIR)

if __name__ == "__main__":
    import sys
    out = sys.argv[1] if len(sys.argv) > 1 else HERE
    for lvl in LEVELS:
        print(build(lvl, out))
