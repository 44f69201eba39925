"""Converters into the lowbit format (installed with lowbit; used by `lowbit convert`)."""
from .convert import convert  # noqa: F401
