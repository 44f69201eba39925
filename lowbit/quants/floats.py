"""Plain floating-point types: F32, F16, BF16 (little-endian, row-major, no blocks)."""
import numpy as np
from numba import njit

from .base import QuantType
from .fp16 import f16_bits_to_f32


def _as_rows(a: np.ndarray) -> np.ndarray:
    return a.reshape(a.shape[0], -1).view(np.uint8) if a.ndim > 1 else a.reshape(1, -1).view(np.uint8)


def quantize_f32(w, imatrix=None):
    return _as_rows(np.ascontiguousarray(w, dtype="<f4"))


def quantize_f16(w, imatrix=None):
    return _as_rows(np.ascontiguousarray(w, dtype=np.float32).astype("<f2"))


def quantize_bf16(w, imatrix=None):
    # round to nearest even on the upper 16 bits, as torch and GGML do (NaN kept as a quiet NaN)
    u = np.ascontiguousarray(w, dtype="<f4").view(np.uint32).astype(np.uint64)
    rounded = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(np.asarray(w, dtype=np.float32))
    rounded[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return _as_rows(rounded.astype("<u2"))


@njit(cache=True)
def dequant_row_f32(raw, out):
    out[:] = raw.view(np.float32)


@njit(cache=True)
def dequant_row_f16(raw, out):
    for i in range(out.shape[0]):
        out[i] = f16_bits_to_f32(np.uint32(raw[2 * i]) | (np.uint32(raw[2 * i + 1]) << 8))


@njit(cache=True)
def dequant_row_bf16(raw, out):
    bits = out.view(np.uint32)
    for i in range(out.shape[0]):
        bits[i] = (np.uint32(raw[2 * i]) << 16) | (np.uint32(raw[2 * i + 1]) << 24)


def quantize_u8(w, imatrix=None):
    return _as_rows(np.ascontiguousarray(w, dtype=np.uint8))


@njit(cache=True)
def dequant_row_u8(raw, out):
    for i in range(out.shape[0]):
        out[i] = np.float32(raw[i])


def np_dequant(dtype):
    return lambda raw: raw.view(dtype).astype(np.float32)


def np_dequant_bf16(raw):
    return (raw.view("<u2").astype(np.uint32) << 16).view(np.float32)


# U8 holds opaque byte blobs (embedded tokenizer files) as one-dimensional tensors.
U8 = QuantType("u8", 1, 1, quantize_u8, dequant_row_u8, "raw bytes (embedded blobs)", id=13,
               np_dequantize=np_dequant(np.uint8))
F32 = QuantType("f32", 1, 4, quantize_f32, dequant_row_f32, "IEEE binary32", ggml_type=0, id=0, has_kernels=True, np_dequantize=np_dequant("<f4"))
F16 = QuantType("f16", 1, 2, quantize_f16, dequant_row_f16, "IEEE binary16", ggml_type=1, id=1, has_kernels=True, np_dequantize=np_dequant("<f2"))
BF16 = QuantType("bf16", 1, 2, quantize_bf16, dequant_row_bf16, "bfloat16 (upper half of binary32)", ggml_type=30,
                id=2, has_kernels=True,
                np_dequantize=np_dequant_bf16)
TYPES = [F32, F16, BF16, U8]
