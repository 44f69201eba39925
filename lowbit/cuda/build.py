"""Build the CUDA kernels (kernels/lowbit_cuda.cu, one compilation unit that includes the family
files beside it) into a shared library with nvcc, for the GPU present (sm_XY machine code plus PTX
so newer GPUs can JIT it), cached under ~/.cache/lowbit/cuda (or $LOWBIT_CACHE) per CUDA version,
architecture and a hash of every kernel source. `python -m lowbit.cuda.build` prebuilds it."""
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import LowbitError

KERNELS = Path(__file__).with_name("kernels")
SOURCE = KERNELS / "lowbit_cuda.cu"
LIB_NAME = "liblowbit_cuda.so"


class CudaUnavailable(LowbitError):
    """No usable GPU, driver or nvcc: the CPU runtime is used instead."""


def find_nvcc():
    for cand in (os.environ.get("LOWBIT_NVCC"), shutil.which("nvcc"),
                 os.path.join(os.environ.get("CUDA_HOME", "/usr/local/cuda"), "bin", "nvcc")):
        if cand and os.path.isfile(cand) and os.access(cand, os.X_OK):
            return cand
    return None


def gpu_arch():
    """Compute capability of GPU 0 as an integer (90 for Hopper), read with nvidia-smi."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        raise CudaUnavailable("no NVIDIA driver found (nvidia-smi is not on PATH)")
    try:
        out = subprocess.run([smi, "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise CudaUnavailable(f"nvidia-smi failed: {e}") from None
    caps = re.findall(r"(\d+)\.(\d+)", out.stdout)
    if out.returncode != 0 or not caps:
        raise CudaUnavailable(f"no CUDA GPU found (nvidia-smi: {(out.stderr or out.stdout).strip()[:200]})")
    major, minor = caps[0]
    return int(major) * 10 + int(minor)


def cuda_version(nvcc):
    out = subprocess.run([nvcc, "--version"], capture_output=True, text=True, timeout=60).stdout
    m = re.search(r"release (\d+\.\d+)", out)
    return m.group(1) if m else "unknown"


def cache_dir():
    return Path(os.environ.get("LOWBIT_CACHE") or Path.home() / ".cache" / "lowbit") / "cuda"


def source_hash(source: Path = SOURCE) -> str:
    """Hash of what the build reads: for the kernels every file in kernels/ (the family files are
    #included, so an edit to any of them must rebuild), else the one source file."""
    source = Path(source)
    files = sorted(KERNELS.iterdir()) if source == SOURCE else [source]
    h = hashlib.sha256()
    for f in files:
        if f.is_file():
            h.update(f.name.encode() + b"\0" + f.read_bytes() + b"\0")
    if source == SOURCE:   # and the generated type header the kernels include
        from ..quants import ctypes_header
        h.update(b"lowbit_types.h\0" + ctypes_header.text().encode())
    return h.hexdigest()[:16]


def library(verbose=False, source: Path = SOURCE, name: str = LIB_NAME) -> Path:
    """Path of the built library, building it first when the cache has none. `source`/`name`: another
    single-file .cu built the same way (tools/cuda_d2d.cu for tools/bench/bench_cuda.py)."""
    arch = gpu_arch()
    nvcc = find_nvcc()
    if nvcc is None:
        raise CudaUnavailable("nvcc (the CUDA compiler) was not found: install the CUDA toolkit or set LOWBIT_NVCC")
    key = source_hash(source)
    out = cache_dir() / f"cuda{cuda_version(nvcc)}-sm{arch}-{key}" / name
    if out.exists():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".build-", suffix=".so", dir=out.parent)
    os.close(fd)
    include = out.parent / "include"   # lowbit_types.h, generated from the type table for this build
    from ..quants import ctypes_header
    ctypes_header.write(str(include))
    cmd = [nvcc, "-O3", "-std=c++17", "-shared", "-Xcompiler", "-fPIC", "-lineinfo",
           f"-gencode=arch=compute_{arch},code=sm_{arch}", f"-gencode=arch=compute_{arch},code=compute_{arch}",
           "-I", str(include), "-o", tmp, str(source)]
    if verbose:
        print("lowbit: building the CUDA kernels:", " ".join(cmd), file=sys.stderr)
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise CudaUnavailable(f"nvcc failed to build {Path(source).name}:\n{r.stderr[-4000:]}")
        os.replace(tmp, out)   # atomic: a concurrent or interrupted build never leaves half a library
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


if __name__ == "__main__":
    try:
        print(library(verbose=True))
    except CudaUnavailable as e:
        print(f"lowbit: {e}", file=sys.stderr)
        sys.exit(1)
