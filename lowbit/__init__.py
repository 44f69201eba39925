"""lowbit: a small self-describing low-bit model file format and its runtime."""
__version__ = "0.1.0"

from . import _jit_cache  # noqa: E402
_jit_cache.configure()   # before any Numba function is defined

from .api import Model, load  # noqa: E402
from .errors import ConvertError, FormatError, LowbitError  # noqa: E402

__all__ = ["load", "Model", "LowbitError", "FormatError", "ConvertError", "__version__"]
