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
    # Per-tensor side data (SPEC.md 5.1): bytes at the start of the tensor before its rows (a learned
    # codebook, per-row scales): (shape) -> bytes. Types with side data also give `bind`.
    prefix_bytes: Optional[Callable] = None
    # Self-sized types (SPEC.md 5.2; entropy-coded streams): nbytes follows from a header inside the
    # tensor's bytes, not from the shape. `check(flat uint8, shape)` validates that header (raises
    # ValueError naming the problem).
    self_sized: bool = False
    check: Optional[Callable] = None
    # (flat uint8 tensor bytes, shape) -> object with .matmul(x, y), .gather(ids) -> float32[n, cols]
    # and .dequantize() -> float32[rows, cols]: for types whose rows cannot be decoded alone.
    bind: Optional[Callable] = None
    # Byte positions within a row that hold quant indices (entropy-codable): (cols) -> int64 array.
    index_positions: Optional[Callable] = None
    # The type's one numeric id, shared by Python, the C kernels and the CUDA kernels through the
    # generated lowbit_types.h (ctypes_header.py). Stable: an id is never reused for another layout.
    id: int = -1
    # Whether the C and CUDA kernels read this type's own bytes (its id is then a kernel type).
    has_kernels: bool = False
    # A type whose exact bytes this one writes with another quantizer (q4_ke -> q4_k): it runs on
    # that type's kernels and exports as that type.
    same_bytes_as: Optional[str] = None
    # `<base>.h` types: the base type whose bytes the decoded stream gives back.
    coded_base: Optional[str] = None
    # The type that stores a row this one cannot (row length not a multiple of the block size).
    fallback: Optional[str] = None
    # As a --target-bpw candidate: "default" (always considered), "opt-in" (--candidates +NAME) or None.
    candidate: Optional[str] = None
    # GPTQ-style error feedback: (w float32[rows, cols], U = inverse_cholesky(H), importance
    # float[cols]) -> uint8 tensor bytes in the type's ordinary layout; None: no GPTQ routine.
    gptq: Optional[Callable] = None

    @property
    def kernel_type(self) -> Optional[str]:
        """The type whose kernels run these bytes (the type itself, the owner of its bytes, or the
        base of a `.h` type after decoding); None when no kernel reads them."""
        if self.has_kernels:
            return self.name
        if self.same_bytes_as is not None or self.coded_base is not None:
            from . import get
            return get(self.same_bytes_as or self.coded_base).kernel_type
        return None

    @property
    def whole_tensor(self) -> bool:
        """True when the runtime must go through `bind` (side data or a self-sized stream)."""
        return self.bind is not None

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
        if self.self_sized:
            raise ValueError(f"{self.name}: a self-sized type's size comes from its own header")
        shape = tuple(int(s) for s in shape)
        if not shape:
            return self.block_bytes if self.block_size == 1 else 0
        rows = 1
        for s in shape[:-1]:
            rows *= s
        return rows * self.row_bytes(shape[-1]) + (self.prefix_bytes(shape) if self.prefix_bytes else 0)

    def dequantize(self, raw: np.ndarray, shape) -> np.ndarray:
        """Dequantize a whole tensor (for tools and tests; the runtime works row by row)."""
        from ..kernels import dequantize_rows
        shape = tuple(int(s) for s in shape)
        if self.bind is not None:
            return self.bind(np.ascontiguousarray(raw).reshape(-1), shape).dequantize().reshape(shape)
        cols = shape[-1] if shape else 1
        rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
        raw2 = np.ascontiguousarray(raw).reshape(rows, self.row_bytes(cols))
        if self.np_dequantize is not None:
            return self.np_dequantize(raw2).reshape(shape)
        out = np.empty((rows, cols), np.float32)
        dequantize_rows(self.dequant_row, raw2, out)
        return out.reshape(shape)
