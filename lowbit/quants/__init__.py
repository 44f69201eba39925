"""The registry of tensor types: the one type table. Adding a type = one module with a QuantType
(layout, quantizer, dequantizer, id, fallback, GPTQ routine) + one line here + its section in
format_spec/SPEC.md + its kernels in the family files of lowbit/native/kernels and lowbit/cuda/kernels,
which include the lowbit_types.h generated from this table (ctypes_header.py)."""
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

_ids = {}
for _qt in TYPES.values():
    if _qt.id < 0 or _qt.id in _ids:
        raise ValueError(f"quant type {_qt.name!r}: id {_qt.id} is missing or taken by {_ids.get(_qt.id)!r}")
    _ids[_qt.id] = _qt.name


def get(name: str) -> QuantType:
    try:
        return TYPES[name]
    except KeyError:
        raise KeyError(f"unknown tensor type {name!r} (known: {', '.join(TYPES)})") from None
