"""lowbit: a small self-describing low-bit model file format and its runtime."""
__version__ = "0.1.0"

from .api import Model, load  # noqa: E402
from .errors import ConvertError, FormatError, LowbitError  # noqa: E402

__all__ = ["load", "Model", "LowbitError", "FormatError", "ConvertError", "__version__"]
