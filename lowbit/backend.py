"""Which forward pass runs a file, and why: the one place that reads LOWBIT_BACKEND and device=.

Three backends:
- "cpu-native": the C block forward (lowbit.native: one C call per transformer block), used when
  the C library loads and every weight the forward multiplies by has a native kernel;
- "cpu-reference": the forward of lowbit/model.py, the reference and the tests' oracle. Its
  matmuls call a type's fused C kernel when the C kernels are on (native_kernels()) and the
  Numba/NumPy kernels otherwise, so a file with one type the C block forward lacks still runs
  its other matmuls in C;
- "cuda": lowbit/cuda's forward on an NVIDIA GPU, when device='cuda' or 'auto' finds one usable.

select(file, device) returns a Choice(name, reason); lowbit.load (api.py) builds the transformer
of that choice. The C kernels are off when LOWBIT_BACKEND is "numba" or "python", the
C library cannot be built, or inside reference_only() (lowbit bench --backend numba)."""
import os
import sys
from contextlib import contextmanager
from dataclasses import dataclass

CPU_NATIVE, CPU_REFERENCE, CUDA = "cpu-native", "cpu-reference", "cuda"
DEVICES = ("cpu", "cuda", "auto")
REFERENCE_VALUES = ("numba", "python")   # LOWBIT_BACKEND values that turn the C kernels off

_forced = []   # reasons given to reference_only(), innermost last


@dataclass(frozen=True)
class Choice:
    name: str     # CPU_NATIVE, CPU_REFERENCE or CUDA
    reason: str   # one line for a user: why this backend

    def __str__(self):
        return f"{self.name}: {self.reason}"


@contextmanager
def reference_only(reason: str):
    """Inside this block the C kernels are off, as with LOWBIT_BACKEND=numba: models loaded in it
    run the reference forward with Numba/NumPy matmuls, and so do the matmuls it makes."""
    _forced.append(reason)
    try:
        yield
    finally:
        _forced.pop()


def native_off_reason():
    """Why the C kernels are off now (one line), or None when they are on. Read at every call, so
    that LOWBIT_BACKEND set after a model is loaded (as the tests do) switches its matmuls."""
    if _forced:
        return _forced[-1]
    env = os.environ.get("LOWBIT_BACKEND", "")
    if env.lower() in REFERENCE_VALUES:
        return f"LOWBIT_BACKEND={env}"
    from . import native
    if native.library() is None:
        return f"no native library (no C compiler?): {native.load_error() or 'unknown error'}"
    return None


def native_kernels() -> bool:
    """Whether a matmul may call a type's fused C kernel now (the per-matmul path of the reference
    forward, the Huffman types' decoders, imatrix's X^T X)."""
    return native_off_reason() is None


def select_device(device: str) -> str:
    """'cpu' or 'cuda' for device= 'cpu', 'cuda' or 'auto'. Without a usable GPU or nvcc, 'cuda'
    says why on stderr and runs on the CPU; 'auto' falls back silently."""
    return _device(device)[0]


def _device(device: str):
    """(device, reason) for device= 'cpu', 'cuda' or 'auto'."""
    if device not in DEVICES:
        raise ValueError(f"unknown device {device!r} (choose cpu, cuda or auto)")
    if device == "cpu":
        return "cpu", None
    from . import cuda
    ok, why = cuda.available()
    if ok:
        return "cuda", f"device={device!r}: {why}"
    if device == "cuda":
        print(f"lowbit: CUDA is not usable ({why}); running on the CPU", file=sys.stderr)
    return "cpu", None


def select(f, device: str = "cpu") -> Choice:
    """The backend that runs the LowbitFile `f` on `device` ('cpu', 'cuda' or 'auto'), and why.
    Reads nothing but the header: a file the model cannot load still gets a choice here, and the
    load reports what is wrong with it."""
    dev, reason = _device(device)
    if dev == "cuda":
        return Choice(CUDA, reason)
    off = native_off_reason()
    if off is not None:
        return Choice(CPU_REFERENCE, off)
    from . import native
    for name in _matmul_weights(f):
        info = f.tensors.get(name)
        if info is not None and not native.supported(info.type):
            return Choice(CPU_REFERENCE, f"tensor {name} of type {info.type} has no native kernel")
    ffi, lib = native.library()
    return Choice(CPU_NATIVE, f"every weight type has a native kernel ({ffi.string(lib.lb_level_name()).decode()})")


def _matmul_weights(f) -> list:
    """Names of the weights the forward multiplies by or looks up: the embedding, the output
    projection and every block's seven matrices (model.Layer's)."""
    from .config import ModelConfig
    from .errors import LowbitError
    try:
        c = ModelConfig.from_json(f.path, f.metadata.get("architecture"))
    except (LowbitError, ValueError, TypeError):
        return []   # the load says what is wrong with the architecture
    names = ["token_embd.weight", "token_embd.weight" if c.tie_word_embeddings else "output.weight"]
    for i in range(c.num_layers):
        names += [f"blk.{i}.{w}.weight" for w in ("attn_q", "attn_k", "attn_v", "attn_output",
                                                   "ffn_gate", "ffn_up", "ffn_down")]
    return names
