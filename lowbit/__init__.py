"""lowbit: a small self-describing low-bit model file format and its runtime."""
__version__ = "0.1.0"

from . import _jit_cache  # noqa: E402
_jit_cache.configure()   # before any Numba function is defined

from .errors import ConvertError, FormatError, LowbitError  # noqa: E402


def __getattr__(name):
    # the runtime API is imported on first use, so `import lowbit.quants` (the type table, which the
    # native and CUDA builds read to generate lowbit_types.h) needs only numpy and Numba
    if name in ("Model", "load"):
        from . import api
        return getattr(api, name)
    raise AttributeError(f"module 'lowbit' has no attribute {name!r}")

__all__ = ["load", "Model", "LowbitError", "FormatError", "ConvertError", "__version__"]
