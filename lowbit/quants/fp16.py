"""Scalar IEEE half <-> float helpers usable inside Numba kernels (block scales are fp16)."""
import numpy as np
from numba import njit


@njit(inline="always", cache=True)
def f16_bits_to_f32(h):
    """Convert the bits of an IEEE binary16 value (as an integer) to float32, exactly."""
    h = np.uint32(h)
    sign = -1.0 if (h & 0x8000) else 1.0
    exp = (h >> 10) & 0x1F
    mant = h & 0x3FF
    if exp == 0:
        return np.float32(sign * mant * 5.960464477539063e-08)   # subnormal: mant * 2^-24
    if exp == 31:
        return np.float32(sign * np.inf) if mant == 0 else np.float32(np.nan)
    return np.float32(sign * (1.0 + mant / 1024.0) * 2.0 ** (np.int64(exp) - 15))


@njit(inline="always", cache=True)
def read_f16(raw, offset):
    """The fp16 value stored little-endian at raw[offset:offset+2], as float32."""
    return f16_bits_to_f32(np.uint32(raw[offset]) | (np.uint32(raw[offset + 1]) << 8))
