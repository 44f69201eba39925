"""The registry of tensor types. Adding a type = one module with a QuantType + one line here
+ its section in format_spec/SPEC.md."""
from .base import QuantType
from . import floats, kquants, q8_0, q4ke, vq, huffcoded

TYPES: dict = {}


def register(qt: QuantType) -> QuantType:
    if qt.name in TYPES:
        raise ValueError(f"quant type {qt.name!r} registered twice")
    TYPES[qt.name] = qt
    return qt


for _module in (floats, q8_0, kquants, q4ke, vq):
    for _qt in _module.TYPES:
        register(_qt)
for _qt in huffcoded.make_types(TYPES):   # entropy-coded variants of index-based types
    register(_qt)


# fused native kernels (built lazily on first use): QuantType.kernels["c"]
from .. import native as _native  # noqa: E402
_native.register(TYPES)


def get(name: str) -> QuantType:
    try:
        return TYPES[name]
    except KeyError:
        raise KeyError(f"unknown tensor type {name!r} (known: {', '.join(TYPES)})") from None
