"""Tensor -> C weight bindings of the native CPU kernels: lb_weight views of a tensor's bytes (every
type the C library runs, codebook side data, Huffman-coded `<base>.h` decoders), and the
single-matmul / row-lookup / dequantize entry points the rest of lowbit uses."""
import numpy as np

from .. import quants
from .loader import library


def _c_types() -> dict:
    """{type name: the C kernels' type id} for every type whose stored bytes a C kernel reads: the
    type table's kernel types and the types that share their bytes (q4_ke runs as q4_k). `.h`
    types are not here: they run as their base after decoding (huff_base)."""
    out = {}
    for name, qt in quants.TYPES.items():
        if qt.coded_base is None and qt.kernel_type is not None:
            out[name] = quants.get(qt.kernel_type).id
    return out


C_TYPES = _c_types()
# types with side data in the tensor's prefix (codebook, row scales): lb_weight's own fields get them
CODEBOOK_TYPES = tuple(n for n in C_TYPES if quants.get(n).prefix_bytes is not None)


class NativeMatmul:
    """kernels["c"] of a QuantType: y[n, rows] = x[n, cols] @ W^T (+ bias), fused dequant + dot."""

    def __init__(self, type_name: str, level: str = None):
        self.type_name, self.type_id, self.level = type_name, C_TYPES[type_name], level

    def available(self) -> bool:
        return library(self.level) is not None

    def weight(self, raw: np.ndarray, cols: int, bias: np.ndarray = None, bound=None):
        """The C view of one weight (keeps what it points at alive in ._keep). Codebook types: raw
        is the whole tensor's bytes (or `bound`, its vq.Bound, is given)."""
        ffi, lib = library(self.level)
        rows_raw = raw
        if self.type_name in CODEBOOK_TYPES:
            bound = bound if bound is not None else bind_codebook(self.type_name, raw, cols)
            rows_raw = bound.raw
        rows = rows_raw.shape[0]
        if lib.lb_row_bytes(self.type_id, cols) * rows != rows_raw.nbytes:
            raise ValueError(f"{self.type_name}: {rows_raw.nbytes} bytes do not hold {rows} rows of {cols}")
        w = ffi.new("lb_weight *")
        keep = []
        fill_weight(ffi, w, self.type_name, raw, cols, bias, keep, bound=bound, level=self.level)
        return _Weight(w, keep)

    def __call__(self, raw, x, y, cols=None, bias=None, accumulate=False):
        ffi, lib = library(self.level)
        x = np.ascontiguousarray(x, np.float32)
        cols = cols or x.shape[1]
        w = self.weight(np.ascontiguousarray(raw), cols, bias)
        if y.dtype != np.float32 or not y.flags.c_contiguous or y.shape != (x.shape[0], w.ptr.rows):
            raise ValueError("y must be a C-contiguous float32 array of shape (n, rows)")
        rc = lib.lb_matmul(w.ptr, ffi.cast("const float *", ffi.from_buffer(x)),
                           ffi.cast("float *", ffi.from_buffer(y)), x.shape[0], int(accumulate))
        if rc != 0:
            raise ValueError(f"native matmul rejected its arguments ({self.type_name}, {raw.shape}, {x.shape})")
        return y


def bind_codebook(type_name: str, raw: np.ndarray, cols: int):
    """vq.Bound of a codebook tensor given as its flat bytes: rows follow from the size (the format
    layer has checked it against the shape; a size that fits no row count is refused here)."""
    from ..quants import vq
    D, B, learned = vq.PARAMS[type_name]
    flat = np.ascontiguousarray(raw).reshape(-1)
    cbb, rb = (vq.K * D * 2 if learned else 0), cols // B * (1 + B // D)
    rows, extra = divmod(flat.nbytes - cbb, 2 + rb) if cols > 0 and cols % B == 0 else (0, 1)
    if rows < 1 or extra:
        raise ValueError(f"{type_name}: {flat.nbytes} bytes do not hold a tensor of rows of {cols}")
    return vq.Bound(type_name, flat, (rows, cols))


def fill_codebook(ffi, lib, w, type_id, bound, cols, keep):
    """Point lb_weight's codebook and row scales at the bound tensor's float copies, after checking
    their sizes against the rows (C reads 256 x D points and one scale per row, nothing else)."""
    from ..quants import vq
    D = bound.cb.shape[1]
    rows = bound.raw.shape[0]
    if (bound.cb.shape != (vq.K, D) or bound.cb.dtype != np.float32 or bound.dr.shape != (rows,)
            or bound.dr.dtype != np.float32 or lib.lb_row_bytes(type_id, cols) * rows != bound.raw.nbytes):
        raise ValueError("codebook tensor's parts do not match its rows")
    cb, dr = np.ascontiguousarray(bound.cb), np.ascontiguousarray(bound.dr)
    w.codebook = ffi.cast("const float *", ffi.from_buffer(cb))
    w.row_scale = ffi.cast("const float *", ffi.from_buffer(dr))
    keep += [cb, dr]


class _Weight:
    def __init__(self, ptr, keep):
        self.ptr, self._keep = ptr, keep


def register(types: dict):
    """Give every type the C library knows a kernels['c'] entry (lazy: nothing is built here)."""
    for name, qt in types.items():
        if name in C_TYPES:
            qt.kernels.setdefault("c", NativeMatmul(name))


def get_rows(type_name: str, raw: np.ndarray, ids: np.ndarray, cols: int) -> np.ndarray:
    """Rows `ids` of a [rows, cols] tensor of `type_name`, dequantized in C (only those rows are read)."""
    ffi, lib = library()
    w = NativeMatmul(type_name).weight(np.ascontiguousarray(raw), cols)
    ids = np.ascontiguousarray(ids, np.int64).reshape(-1)
    out = np.empty((ids.shape[0], cols), np.float32)
    if lib.lb_get_rows(w.ptr, ffi.cast("const int64_t *", ffi.from_buffer(ids)), ids.shape[0],
                       ffi.cast("float *", ffi.from_buffer(out))) != 0:
        raise ValueError(f"row id out of range 0..{w.ptr.rows - 1}")
    return out


def dequantize(type_name: str, raw: np.ndarray, shape) -> np.ndarray:
    """Whole small tensor (norm weights, biases) to float32 in C: keeps Numba (and LLVM, tens of
    MiB of RSS and seconds of load) out of loading a model that runs natively."""
    ffi, lib = library()
    shape = tuple(int(s) for s in shape)
    cols = shape[-1] if shape else 1
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    raw2 = np.ascontiguousarray(raw).reshape(rows, -1)
    w = NativeMatmul(type_name).weight(raw2, cols)
    out = np.empty((rows, cols), np.float32)
    ids = np.arange(rows, dtype=np.int64)
    if lib.lb_get_rows(w.ptr, ffi.cast("const int64_t *", ffi.from_buffer(ids)), rows,
                       ffi.cast("float *", ffi.from_buffer(out))) != 0:
        raise ValueError(f"cannot dequantize a {type_name} tensor of shape {list(shape)}")
    return out.reshape(shape)


# ---------------------------------------------------------------- Huffman-coded types (`<base>.h`)
# A `<base>.h` weight runs on its base type's C kernel: the C side decodes each 4-row tile's
# Huffman chunks into per-thread scratch in the base layout (kernels/huffman.c). Bases with side
# data (a codebook and row scales in the tensor's prefix) also need their C fields filled from it:
# SIDE_FILL[base] = fn(ffi, lib, w, bound, keep list), where bound is the huffcoded.Bound (.prefix:
# the base's prefix bytes verbatim; .vqb: a vq.Bound of them for the codebook bases), registered by
# the base type's native support.
SIDE_FILL = {}


def huff_base(type_name: str):
    """The base type name of a `<base>.h` type that the C library runs, else None."""
    if not type_name.endswith(".h"):
        return None
    base = type_name[:-2]
    if base not in C_TYPES:
        return None
    from ..quants import get
    if get(base).prefix_bytes and base not in SIDE_FILL:
        return None
    return base


def supported(type_name: str) -> bool:
    """Whether the native runtime runs weights of this type."""
    return type_name in C_TYPES or huff_base(type_name) is not None


def _runs(rb: int, ip) -> np.ndarray:
    """The base row as (is_index, length) runs in position order (uint32 pairs)."""
    is_idx = np.zeros(rb, np.int8)
    is_idx[np.asarray(ip, np.int64)] = 1
    cut = np.flatnonzero(np.diff(is_idx)) + 1
    starts = np.concatenate([[0], cut])
    lens = np.diff(np.concatenate([starts, [rb]]))
    return np.ascontiguousarray(np.stack([is_idx[starts], lens], 1).astype(np.uint32).reshape(-1))


class HuffDecoder:
    """The C decoder of one `<base>.h` tensor (lb_huff), built once from a huffcoded.Bound; the
    decode table lives in it. Keeps the bound's buffers alive."""

    def __init__(self, bound, level: str = None, lib=None):
        """lib: the (ffi, lib) pair to build it with instead of library(level) (a tool's bench build)."""
        ffi, lib = self.ffi, self.lib = lib or library(level)
        self.bound = bound
        self.runs = _runs(bound.rb, bound.ip)
        self.lengths = np.ascontiguousarray(bound.lengths, np.uint8)
        self.offsets = np.ascontiguousarray(bound.offsets, "<u4")
        other = np.ascontiguousarray(bound.other).reshape(-1)
        stream = np.ascontiguousarray(bound.stream)
        self._keep = [other, stream]
        u8 = "const uint8_t *"
        h = lib.lb_huff_new(ffi.cast(u8, ffi.from_buffer(self.lengths)), bound.rows, bound.ip.shape[0],
                            bound.op.shape[0], ffi.cast(u8, ffi.from_buffer(other)) if other.size else ffi.NULL,
                            ffi.cast(u8, ffi.from_buffer(stream)) if stream.size else ffi.NULL, stream.size,
                            ffi.cast(u8, ffi.from_buffer(self.offsets)),
                            ffi.cast("const uint32_t *", ffi.from_buffer(self.runs)), self.runs.size // 2, bound.rb)
        if h == ffi.NULL:
            raise ValueError(f"{bound.base.name}.h: the native decoder rejected the tensor's header")
        self.ptr = ffi.gc(h, lib.lb_huff_free)

    def rows(self, ids) -> np.ndarray:
        """The base type's bytes of rows `ids` (uint8[n, row_bytes]), decoded in C."""
        ffi, lib = self.ffi, self.lib
        ids = np.ascontiguousarray(ids, np.int64).reshape(-1)
        out = np.empty((ids.shape[0], self.bound.rb), np.uint8)
        if lib.lb_huff_rows(self.ptr, ffi.cast("const int64_t *", ffi.from_buffer(ids)), ids.shape[0],
                            ffi.cast("uint8_t *", ffi.from_buffer(out))) != 0:
            raise ValueError(f"row id out of range 0..{self.bound.rows - 1}")
        return out


def fill_weight(ffi, w, type_name: str, raw, cols: int, bias, keep: list, bound=None, level: str = None):
    """Fill the C view `w` (lb_weight) of one weight; `bound` is the huffcoded.Bound of a `<base>.h`
    weight (its decoder is made once and cached on it). Appends what `w` points at to `keep`."""
    base = huff_base(type_name)
    if base is not None:
        dec = getattr(bound, "_native_decoder", None)
        if dec is None or dec.ffi is not ffi:
            dec = bound._native_decoder = HuffDecoder(bound, level)
        w.type, w.rows, w.cols = C_TYPES[base], bound.rows, cols
        w.huff = dec.ptr
        w.data = ffi.cast("const uint8_t *", dec.ptr)   # unused for a coded weight; must be non-NULL
        keep.append(dec)
        if base in SIDE_FILL:
            SIDE_FILL[base](ffi, library(level)[1], w, bound, keep)
    else:
        if type_name in CODEBOOK_TYPES:   # rows past the prefix; codebook and row scales as floats
            fill_codebook(ffi, library(level)[1], w, C_TYPES[type_name], bound, cols, keep)
            raw = bound.raw
        w.type, w.rows, w.cols = C_TYPES[type_name], raw.shape[0], cols
        w.data = ffi.cast("const uint8_t *", ffi.from_buffer(raw))
        keep.append(raw)
    if bias is not None:
        b = np.ascontiguousarray(bias, np.float32)
        w.bias = ffi.cast("const float *", ffi.from_buffer(b))
        keep.append(b)


def bound_weight(bound):
    """The C weight (HuffWeight) of a bound `<base>.h` tensor (huffcoded.Bound), made once and kept on
    the bound; None for other bound tensors and for bases the C library does not run."""
    from ..quants import huffcoded
    if not isinstance(bound, huffcoded.Bound) or huff_base(bound.base.name + ".h") is None:
        return None
    if getattr(bound, "_native_weight", None) is None:
        bound._native_weight = HuffWeight(bound)
    return bound._native_weight


class HuffWeight:
    """A `<base>.h` tensor as a C weight: matmul and row lookups in C (huffcoded.Bound uses it)."""

    def __init__(self, bound, level: str = None):
        self.ffi, self.lib = ffi, lib = library(level)
        self.bound, self._keep = bound, []
        self.w = ffi.new("lb_weight *")
        fill_weight(ffi, self.w, bound.base.name + ".h", None, bound.cols, None, self._keep, bound, level)

    def matmul(self, x, y, accumulate=False):
        ffi = self.ffi
        x = np.ascontiguousarray(x, np.float32)
        if y.dtype != np.float32 or not y.flags.c_contiguous or y.shape != (x.shape[0], self.bound.rows):
            raise ValueError("y must be a C-contiguous float32 array of shape (n, rows)")
        if self.lib.lb_matmul(self.w, ffi.cast("const float *", ffi.from_buffer(x)),
                              ffi.cast("float *", ffi.from_buffer(y)), x.shape[0], int(accumulate)) != 0:
            raise ValueError(f"native matmul rejected its arguments ({self.bound.base.name}.h, {x.shape})")
        return y

    def get_rows(self, ids) -> np.ndarray:
        ffi = self.ffi
        ids = np.ascontiguousarray(ids, np.int64).reshape(-1)
        out = np.empty((ids.shape[0], self.bound.cols), np.float32)
        if self.lib.lb_get_rows(self.w, ffi.cast("const int64_t *", ffi.from_buffer(ids)), ids.shape[0],
                                ffi.cast("float *", ffi.from_buffer(out))) != 0:
            raise ValueError(f"row id out of range 0..{self.bound.rows - 1}")
        return out


def _codebook_side(base):
    def fill(ffi, lib, w, hbound, keep):   # the .h tensor's prefix holds the codebook and row scales
        fill_codebook(ffi, lib, w, C_TYPES[base], hbound.vqb, hbound.cols, keep)
    return fill


for _b in CODEBOOK_TYPES:
    SIDE_FILL[_b] = _codebook_side(_b)
