"""What every quant type provides. A type owns its block layout, its quantizer, its row
dequantizer (Numba) and optionally fused kernels per backend; nothing else in the runtime
knows a block layout."""
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np


@dataclass(frozen=True)
class QuantType:
    name: str                  # the type's name in the file ("q8_0")
    block_size: int            # weights per block along a row (1 for plain floats)
    block_bytes: int           # bytes per block
    quantize: Callable         # (w: float32[rows, cols], imatrix: float32[cols] | None) -> uint8[rows, row_bytes]
    dequant_row: Callable      # Numba: (raw: uint8[row_bytes], out: float32[cols]) -> None
    description: str = ""
    ggml_type: Optional[int] = None   # GGML type id when the block layout is byte-identical to GGML's
    kernels: dict = field(default_factory=dict)  # backend name -> fused kernel, when a type has one
    # Optional vectorized NumPy dequantizer (raw uint8[rows, row_bytes] -> float32[rows, cols]): used for
    # small tensors and row gathers, where compiling a Numba driver would cost more than it saves.
    np_dequantize: Optional[Callable] = None
    # Types that store a row's last `cols % block_size` weights in a shorter tail block give its size
    # here: (remainder) -> bytes. None: rows must be whole blocks. (A row with a tail block is a
    # lowbit-only layout even when the type's whole blocks are byte-identical to GGML's.)
    tail_bytes: Optional[Callable] = None

    def fits(self, cols: int) -> bool:
        """Whether a row of `cols` weights can be stored in this type."""
        return cols % self.block_size == 0 or (self.tail_bytes is not None and cols >= 1)

    def row_bytes(self, cols: int) -> int:
        if not self.fits(cols):
            raise ValueError(f"{self.name}: row length {cols} is not a multiple of {self.block_size}")
        rem = cols % self.block_size
        return cols // self.block_size * self.block_bytes + (self.tail_bytes(rem) if rem else 0)

    def ggml_compatible(self, cols: int) -> bool:
        """Whether rows of `cols` weights are byte-identical to GGML's layout of this type."""
        return self.ggml_type is not None and cols % self.block_size == 0

    def nbytes(self, shape) -> int:
        shape = tuple(int(s) for s in shape)
        if not shape:
            return self.block_bytes if self.block_size == 1 else 0
        rows = 1
        for s in shape[:-1]:
            rows *= s
        return rows * self.row_bytes(shape[-1])

    def dequantize(self, raw: np.ndarray, shape) -> np.ndarray:
        """Dequantize a whole tensor (for tools and tests; the runtime works row by row)."""
        from ..kernels import dequantize_rows
        shape = tuple(int(s) for s in shape)
        cols = shape[-1] if shape else 1
        rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
        raw2 = np.ascontiguousarray(raw).reshape(rows, self.row_bytes(cols))
        if self.np_dequantize is not None:
            return self.np_dequantize(raw2).reshape(shape)
        out = np.empty((rows, cols), np.float32)
        dequantize_rows(self.dequant_row, raw2, out)
        return out.reshape(shape)
