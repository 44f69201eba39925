"""Generic Numba drivers over a type's row dequantizer. They take the dequantizer as an argument,
which Numba cannot cache across processes (a cached entry keyed by another process's dispatcher
fails to load), so they are compiled once per process and are not marked cache=True. Weights are read row by row straight
from the memory map; only one row of floats per thread exists at a time."""
import numpy as np
from numba import njit, prange


@njit(parallel=True)
def dequantize_rows(dequant_row, raw, out):
    for r in prange(raw.shape[0]):
        dequant_row(raw[r], out[r])


@njit(parallel=True, fastmath=True)
def matmul(dequant_row, raw, x, y):
    """y[t, r] = dot(W[r], x[t]) for every token t: each weight row is dequantized once into a
    thread-local buffer and reused for all tokens of the batch."""
    rows = raw.shape[0]
    n, k = x.shape
    for r in prange(rows):
        w = np.empty(k, np.float32)
        dequant_row(raw[r], w)
        for t in range(n):
            s = np.float32(0.0)
            for i in range(k):
                s += w[i] * x[t, i]
            y[t, r] = s
