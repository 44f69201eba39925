"""Entropy-coded variants `<base>.h` of index-based types: the base type's index bytes are
canonical-Huffman coded, one independently decodable chunk per row, and every other byte is kept
as is, so dequantized weights are bit-identical to the base type's. format_spec/types/huffman.md
is normative.

Tensor bytes (little-endian):
    0    u32 rows            4  u32 index bytes per row     8  u32 other bytes per row
    12   u32 prefix bytes    16 u64 stream bytes
    24   u8[256] code lengths (0 = symbol absent, else 1..12)
    280  u32[rows + 1] chunk offsets into the stream (row r = stream[off[r]:off[r+1]])
    then the base type's prefix (side data), the other bytes of every row, the stream."""
import struct

import numpy as np
from numba import njit, prange

from . import huffman, vq
from .base import QuantType

HEAD = struct.Struct("<IIIIQ")
# Several tokens at once (a prompt): rows are decoded a block at a time (never the whole tensor)
# and multiplied with BLAS; a single token takes the fused decode-dot.
BLAS_TOKENS = 4
ROW_BLOCK = 256
FIXED = HEAD.size + 256     # 280


def _rows_cols(shape):
    cols = shape[-1]
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    return rows, cols


def _split(base: QuantType, shape):
    """(prefix bytes, row bytes, index positions, other positions) of the base layout."""
    rows, cols = _rows_cols(shape)
    prefix = base.prefix_bytes(shape) if base.prefix_bytes else 0
    rb = base.row_bytes(cols)
    ip = base.index_positions(cols)
    mask = np.ones(rb, bool)
    mask[ip] = False
    return prefix, rb, ip, np.flatnonzero(mask).astype(np.int64)


def encode(base: QuantType, raw: np.ndarray, shape) -> np.ndarray:
    """Base-type tensor bytes -> entropy-coded tensor bytes."""
    rows, cols = _rows_cols(shape)
    prefix, rb, ip, op = _split(base, shape)
    flat = np.ascontiguousarray(raw).reshape(-1)
    body = flat[prefix:].reshape(rows, rb)
    sym = np.ascontiguousarray(body[:, ip])
    lengths = huffman.code_lengths(np.bincount(sym.reshape(-1), minlength=256))
    offsets, stream = huffman.encode_rows(sym, lengths)
    head = HEAD.pack(rows, len(ip), len(op), prefix, len(stream))
    parts = [np.frombuffer(head, np.uint8), lengths, offsets.astype("<u4").view(np.uint8), flat[:prefix],
             np.ascontiguousarray(body[:, op]).reshape(-1), stream]
    return np.concatenate(parts)


def parse(base: QuantType, flat: np.ndarray, shape, name="tensor", pieces=True):
    """Validate the header against the shape and the buffer; returns the pieces (None with
    pieces=False: validation only, allocating nothing sized by the shape). Raises ValueError."""
    rows, cols = _rows_cols(shape)
    if flat.size < FIXED:
        raise ValueError(f"{flat.size} bytes is shorter than the {FIXED}-byte entropy-coding header")
    r, n_idx, n_other, prefix, slen = HEAD.unpack_from(bytes(flat[:HEAD.size]))
    # counts by arithmetic (index bytes lie in whole blocks only), so that a hostile shape cannot make
    # validation allocate position arrays the size of a huge row before the size check below
    eprefix = base.prefix_bytes(shape) if base.prefix_bytes else 0
    rb = base.row_bytes(cols)
    e_idx = cols // base.block_size * len(base.index_positions(base.block_size))
    if cols % base.block_size:   # a tail block's index bytes (q4_ke's packed quants; none for q4_k)
        e_idx += len(base.index_positions(cols % base.block_size))
    if (r, n_idx, n_other, prefix) != (rows, e_idx, rb - e_idx, eprefix):
        raise ValueError(f"header (rows {r}, index bytes {n_idx}, other bytes {n_other}, prefix {prefix}) does not "
                         f"match {base.name} {list(shape)} (expected {rows}, {e_idx}, {rb - e_idx}, {eprefix})")
    lengths = np.array(flat[HEAD.size:FIXED])
    if not huffman.kraft_ok(lengths) or (rows * n_idx > 0 and not lengths.any()):
        raise ValueError("code lengths do not form a complete prefix code of at most 12 bits")
    o = FIXED
    need = o + 4 * (rows + 1) + prefix + rows * n_other + slen
    if need != flat.size:
        raise ValueError(f"header describes {need} bytes but the tensor has {flat.size}")
    offsets = np.ascontiguousarray(flat[o:o + 4 * (rows + 1)]).view("<u4").astype(np.int64)
    o += 4 * (rows + 1)
    if offsets[0] != 0 or offsets[-1] != slen or (np.diff(offsets) < 0).any():
        raise ValueError("chunk offsets are not non-decreasing from 0 to the stream length")
    if not pieces:
        return None
    _, _, ip, op = _split(base, shape)
    pre = flat[o:o + prefix]
    o += prefix
    other = flat[o:o + rows * n_other].reshape(rows, n_other)
    o += rows * n_other
    stream = flat[o:o + slen]
    return dict(lengths=lengths, offsets=offsets, prefix=pre, other=other, stream=stream, ip=ip, op=op, rb=rb,
                rows=rows, cols=cols)


@njit(inline="always", cache=True)
def _rebuild(r, other, op, stream, offsets, table, ip, buf):
    for i in range(op.shape[0]):
        buf[op[i]] = other[r, i]
    huffman.decode_chunk(stream, offsets[r], offsets[r + 1], table, ip.shape[0], buf, ip)


@njit(parallel=True, cache=True)
def _rebuild_rows(other, op, stream, offsets, table, ip, ids, out):
    for t in prange(ids.shape[0]):
        _rebuild(ids[t], other, op, stream, offsets, table, ip, out[t])


@njit(parallel=True, fastmath=True, cache=True)
def _matmul_generic(dequant_row, rb, other, op, stream, offsets, table, ip, x, y):
    """Fused decode (Huffman -> the row's base bytes) - dequantize - dot, one row per thread."""
    n, cols = x.shape
    rows = other.shape[0]
    for c in prange((rows + 63) // 64):   # 64 rows per task: the buffers are allocated once per task
        buf = np.empty(rb, np.uint8)
        w = np.empty(cols, np.float32)
        for r in range(c * 64, min(rows, c * 64 + 64)):
            _rebuild(r, other, op, stream, offsets, table, ip, buf)
            dequant_row(buf, w)
            for t in range(n):
                s = np.float32(0.0)
                for i in range(cols):
                    s += w[i] * x[t, i]
                y[t, r] = s


@njit(parallel=True, fastmath=True, cache=True)
def _matmul_vq(cb, D, B, dr, rb, other, op, stream, offsets, table, ip, x, y):
    """Codebook base: Huffman decode of the row's index bytes, then the fused codebook dot."""
    n, cols = x.shape
    nb = cols // B
    nv = B // D
    for r in prange(other.shape[0]):
        buf = np.empty(rb, np.uint8)
        _rebuild(r, other, op, stream, offsets, table, ip, buf)
        for t in range(n):
            acc = np.float32(0.0)
            for b in range(nb):
                s = np.float32(0.0)
                base = b * (nv + 1) + 1
                for v in range(nv):
                    k = np.int64(buf[base + v])
                    o = b * B + v * D
                    for j in range(D):
                        s += cb[k, j] * x[t, o + j]
                acc += vq.SCALE_NB[buf[b * (nv + 1)]] * s
            y[t, r] = dr[r] * acc


class Bound:
    def __init__(self, base: QuantType, flat, shape):
        self.base, self.shape = base, tuple(shape)
        p = parse(base, flat, shape)
        self.__dict__.update(p)
        self._table = None
        self.vqb = None
        if base.name in vq.PARAMS:   # the codebook and row scales live in the prefix
            self.vqb = vq.Bound(base.name, np.concatenate([p["prefix"], np.zeros(p["rows"] * p["rb"], np.uint8)]),
                                shape)

    @property
    def table(self):
        """The Numba decoder's look-up table, built on first use (the native path has its own)."""
        if self._table is None:
            self._table = huffman.decode_table(self.lengths)
        return self._table

    def raw_rows(self, ids):
        out = np.empty((len(ids), self.rb), np.uint8)
        _rebuild_rows(self.other, self.op, self.stream, self.offsets, self.table, self.ip, np.asarray(ids, np.int64), out)
        return out

    def matmul(self, x, y):
        x = np.ascontiguousarray(x, np.float32)
        if x.shape[0] >= BLAS_TOKENS:   # a prompt: decode ROW_BLOCK rows at a time, multiply with BLAS
            for r0 in range(0, self.rows, ROW_BLOCK):
                ids = np.arange(r0, min(r0 + ROW_BLOCK, self.rows))
                y[:, r0:r0 + len(ids)] = x @ self.gather(ids).T   # (matmul into a strided out skips BLAS)
            return
        a = (self.rb, self.other, self.op, self.stream, self.offsets, self.table, self.ip, x, y)
        if self.vqb is not None:
            _matmul_vq(self.vqb.cb, self.vqb.D, self.vqb.B, self.vqb.dr, *a)
        else:
            _matmul_generic(self.base.dequant_row, *a)

    def gather(self, ids):
        ids = np.asarray(ids, np.int64)
        raw = self.raw_rows(ids)
        if self.vqb is not None:
            out = np.empty((len(ids), self.cols), np.float32)
            vq._dequant_rows(self.vqb.cb, self.vqb.D, self.vqb.B, self.vqb.dr[ids], raw, np.arange(len(ids)), out)
            return out
        return self.base.dequantize(raw, (len(ids), self.cols))

    def dequantize(self):
        return self.gather(np.arange(self.rows))

    def base_bytes(self):
        """The base type's tensor bytes (bit-identical to what was encoded)."""
        return np.concatenate([self.prefix, self.raw_rows(np.arange(self.rows)).reshape(-1)])


def make_type(base: QuantType, lam: float) -> QuantType:
    def quantize(w, imatrix=None, **kw):
        w = np.ascontiguousarray(w, np.float32)
        if base.name in vq.PARAMS and lam > 0:
            kw.setdefault("lam", lam)
        raw = base.quantize(w, imatrix, **kw)
        return encode(base, raw, w.shape)
    quantize.__name__ = f"quantize_{base.name}_h"

    def check(flat, shape):
        parse(base, flat, shape, pieces=False)

    gptq = None
    if base.gptq is not None and base.name != "q4_k":   # q4_k.h has no GPTQ path (never had: adding one is a change of its own)
        def gptq(w, U, imatrix):
            kw = {"lam": lam} if base.name in vq.PARAMS else {}
            return encode(base, base.gptq(w, U, imatrix, **kw), np.shape(w))

    return QuantType(base.name + ".h", base.block_size, base.block_bytes, quantize, base.dequant_row,
                     f"{base.name} with Huffman-coded indices (bit-identical weights)", tail_bytes=base.tail_bytes,
                     self_sized=True, check=check, bind=lambda flat, shape: Bound(base, flat, shape),
                     id=CODED_ID_BASE + base.id, coded_base=base.name, fallback=base.fallback or base.name,
                     candidate="opt-in", gptq=gptq)


# `<base>.h` ids: the base's id in a range of their own, so an id names one byte layout
CODED_ID_BASE = 64


def q4_k_index_positions(cols):
    """The quant-nibble bytes (qs, bytes 16..143) of every whole q4_k super-block; a tail block is kept as is."""
    p = np.arange(cols // 256 * 144, dtype=np.int64)
    return p[p % 144 >= 16]


# Entropy-constrained codebook assignment (lam, in squared-error units per bit relative to the mean
# weighted error of a vector) makes the indices compressible; k-quants are coded as they are.
LAMS = {"cbk2": 0.05, "cbk4": 0.02, "d4l2": 0.0, "q4_k": 0.0, "q4_ke": 0.0}


def make_types(registry):
    lams = LAMS
    import dataclasses
    bases = dict(registry)
    bases["q4_k"] = dataclasses.replace(registry["q4_k"], index_positions=q4_k_index_positions)
    return [make_type(bases[n], lam) for n, lam in lams.items()]
