"""Weights on the GPU: how each tensor type is laid out for the kernels (GpuLayout), the host side
of loading a tensor whose file bytes are not what the kernels read, and GpuMatrix (one uploaded
matrix, described by an lb_mat for the kernels). No GPU is needed for the first two (tests/
test_cuda.py checks them without one).

Layout: the kernel's type code and the optional repack that splits each block into a 16-byte
aligned body (bytes body_off..body_off+body_len) and a tail (the block's other bytes, in order).
q8_0 has its own repack (its body is also permuted, see kernels/q8_floats.cu). One entry per type
with a CUDA kernel; adding a type = an entry here + its functions in the family file under kernels/.

Codebook types (cbk2, cbk4, d4l2; format_spec/types/codebook.md): the tensor's prefix (codebook
256 x D fp16, then the fp16 row scales; d4l2's fixed D4 lattice is written out as fp16 in front)
goes to lb_mat.xtra as the kernel's side data (codebook_side_data); each block (scale byte, then
B/D index bytes) is split by lb_repack_vq into body = the row's index bytes, each full chunk of 512
vectors permuted so that lane l's 16 bytes hold vectors l, l+32, ... (vq_pos in kernels/codebook.cu:
the warp's x loads are then contiguous), and tail = the scale bytes. gemv_vq_kernel holds the
codebook in shared memory as float. (Repack below gives the block split's byte counts; the
permutation is lb_repack_vq's.)

Huffman-coded types `<base>.h` (format_spec/types/huffman.md) have no layout of their own: at load
each tensor's index stream is decoded on the host with huffcoded's own decoder, ROW_BLOCK rows at a
time, back into the base type's exact bytes in one uint8 array of the base tensor's size (never
floats, never more than the one tensor: base_tensor_bytes), which are uploaded and run the base
type's kernel. The GPU holds the base type's bytes (the .h saving is a file-size and disk/RAM
saving, not a VRAM one)."""
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .. import quants
from ..errors import FormatError, LowbitError
from ..format import LowbitFile
from ..quants import vq

# The kernel types with CUDA kernels (kernels/, by family). A tensor runs as its type's kernel type
# (QuantType.kernel_type: q4_ke as q4_k, `<base>.h` as its base after decoding), whose id is the
# type code the kernels see (lowbit_types.h).
CUDA_TYPES = tuple(n for n, qt in quants.TYPES.items() if qt.has_kernels)
KQUANTS = {quants.get(n).id for n in CUDA_TYPES if quants.get(n).tail_bytes}       # rows may end in a tail block
CODEBOOK = {quants.get(n).id for n in CUDA_TYPES if quants.get(n).prefix_bytes}    # side data (codebook, row scales) in lb_mat.xtra
FLOATS = {quants.get(n).id for n in CUDA_TYPES if quants.get(n).block_size == 1}
# kernels/common.cuh T_SCALAR: a float matrix whose rows are not 16-byte multiples gets the code
# SCALAR_BASE + its id (scalar loads)
SCALAR_BASE = 128


@dataclass(frozen=True)
class Repack:
    """The split of each block into a 16-byte aligned body (bytes body_off..body_off+body_len) and
    a tail (the block's other bytes, in order)."""
    body_off: int
    body_len: int


# q8_0 block: fp16 d at 0, 32 int8 at 2 -> body = quants (permuted), tail = d
# q2_k block: 16 scale bytes, 64 bytes qs, d, dmin -> body = qs, tail = scales, d, dmin
# q3_k block: hmask 32, qs 64, 12 scale bytes, d -> body = hmask + qs, tail = scales, d
# q6_k block: ql|qh|scales (208 bytes), fp16 d at 208 -> body = first 208 bytes, tail = d
# codebook blocks: scale byte, then the index bytes -> body = indices, tail = scale byte
# q4_k (144 bytes), q5_k (176) and the floats are kept as in the file.
REPACKS = {
    "q8_0": Repack(2, 32), "q2_k": Repack(16, 64), "q3_k": Repack(0, 96), "q6_k": Repack(0, 208),
    "cbk2": Repack(1, 16), "cbk4": Repack(1, 16), "d4l2": Repack(1, 8),
}


@dataclass(frozen=True)
class GpuLayout:
    """A kernel type's layout on the GPU: its id and block geometry come from its QuantType."""
    qtype: quants.QuantType
    repack: Optional[Repack] = None

    @property
    def code(self):
        return self.qtype.id

    @property
    def block_size(self):
        return self.qtype.block_size

    @property
    def block_bytes(self):
        return self.qtype.block_bytes

    @property
    def tail_len(self):
        return self.qtype.block_bytes - self.repack.body_len


LAYOUTS = {n: GpuLayout(quants.get(n), REPACKS.get(n)) for n in CUDA_TYPES}


def layout_of(qtype: str):
    """The GPU layout a file's tensor type runs as (None: no CUDA kernel reads it)."""
    qt = quants.TYPES.get(qtype)
    return LAYOUTS.get(qt.kernel_type) if qt is not None else None


ROW_BLOCK = 256


def base_type(qtype: str) -> str:
    """The type whose bytes a tensor of `qtype` holds once loaded (`<base>.h`: its base)."""
    qt = quants.TYPES.get(qtype)
    return qt.coded_base if qt is not None and qt.coded_base else qtype


def base_tensor_bytes(f, name):
    """(base type name, prefix uint8[...], rows uint8[rows, row_bytes]) of tensor `name` of LowbitFile
    `f` in its base type's layout: the file's own bytes (a view of the map) unless the type is .h."""
    info = f.info(name)
    qt = f.qtype(name)
    bname = base_type(info.type)
    base = quants.get(bname)
    shape = tuple(info.shape)
    cols = shape[-1]
    rows = int(np.prod(shape[:-1], dtype=np.int64)) if len(shape) > 1 else 1
    if info.type.endswith(".h"):
        bound = qt.bind(np.ascontiguousarray(f.raw(name)).reshape(-1), shape)
        out = np.empty((rows, bound.rb), np.uint8)
        for r0 in range(0, rows, ROW_BLOCK):
            out[r0:r0 + ROW_BLOCK] = bound.raw_rows(np.arange(r0, min(r0 + ROW_BLOCK, rows)))
        return bname, np.asarray(bound.prefix), out
    raw = f.raw(name)
    if base.prefix_bytes:   # whole-tensor bytes: prefix, then the rows
        pb = base.prefix_bytes(shape)
        return bname, raw[:pb], raw[pb:].reshape(rows, base.row_bytes(cols))
    return bname, raw[:0].reshape(-1), raw


def codebook_side_data(bname: str, prefix: np.ndarray) -> np.ndarray:
    """The codebook kernels' side data (uint8): codebook [256][D] fp16, then fp16 d per row."""
    D, _, learned = vq.PARAMS[bname]
    if learned:
        return np.ascontiguousarray(prefix)
    cb = vq.D4_CODEBOOK.astype("<f2")   # small integers: exact in fp16
    return np.concatenate([cb.reshape(-1).view(np.uint8), np.asarray(prefix, np.uint8)])


class GpuMatrix:
    """One weight matrix on the GPU, described by an lb_mat for the kernels."""

    def __init__(self, model, f: LowbitFile, name: str, shape, bias: str = None):
        rt = model.rt
        info = f.info(name)
        if tuple(info.shape) != tuple(shape):
            raise FormatError(f.path, f"tensor {name!r} has shape {list(info.shape)}, the architecture needs {list(shape)}")
        layout = layout_of(info.type)
        if layout is None:
            raise LowbitError(f"{f.path}: tensor {name!r} has type {info.type!r}, which has no CUDA kernel yet "
                              f"(CUDA types: {', '.join(LAYOUTS)}, and the types that run as those: q4_ke, the .h "
                              f"variants); use --device cpu")
        rows, cols = shape
        f.qtype(name)   # (an unknown type: the file's own error)
        bname, prefix, raw = base_tensor_bytes(f, name)   # .h: decoded to the base type's bytes here
        self.nbytes = prefix.nbytes + raw.nbytes   # bytes the GPU reads (.h: the decoded base bytes)
        nfull = cols // layout.block_size            # whole blocks per row
        rem = cols - nfull * layout.block_size
        if rem and layout.code not in KQUANTS:
            raise LowbitError(f"{f.path}: tensor {name!r} ({info.type}, rows of {cols}) does not fill whole blocks")
        m = self.mat = rt.ffi.new("lb_mat*")
        m.rows, m.cols, m.type = rows, cols, layout.code
        m.xtra, m.xtra_row = 0, 0
        if layout.code in CODEBOOK:   # codebook and row scales: the kernels' side data
            m.xtra = model.upload(codebook_side_data(bname, prefix))
        if rem:   # k-quant rows ending in a tail block: tail blocks go to their own array
            fb = nfull * layout.block_bytes
            m.xtra, m.xtra_row = model.upload(np.ascontiguousarray(raw[:, fb:])), raw.shape[1] - fb
            raw = np.ascontiguousarray(raw[:, :fb])
        row_bytes = raw.shape[1]
        if layout.repack is None:
            body = model.alloc(raw.nbytes)
            if raw.nbytes:
                rt.htod(body, raw)
            m.body, m.body_row, m.tail, m.tail_row = body, row_bytes, 0, 0
            if row_bytes % 16 and layout.code in FLOATS:
                m.type = SCALAR_BASE + layout.code
        else:
            p = layout.repack
            nblocks = rows * nfull
            body, tail = model.alloc(nblocks * p.body_len), model.alloc(nblocks * layout.tail_len)
            if nblocks:
                scratch = model.scratch(raw.nbytes)
                rt.htod(scratch, raw)
                if layout.qtype.name == "q8_0":
                    rt.call("lb_repack_q8", scratch, body, tail, rows, cols)
                elif layout.code in CODEBOOK:
                    rt.call("lb_repack_vq", scratch, body, tail, rows, cols, layout.code)
                else:
                    rt.call("lb_repack", scratch, body, tail, nblocks, layout.block_bytes, p.body_off, p.body_len)
                rt.call("lb_sync")
            m.body, m.body_row = body, nfull * p.body_len
            m.tail, m.tail_row = tail, nfull * layout.tail_len
        m.bias = 0
        if bias is not None and bias in f.tensors:
            if f.info(bias).shape != (rows,):
                raise FormatError(f.path, f"tensor {bias!r} has shape {list(f.info(bias).shape)}, expected [{rows}]")
            m.bias = model.upload(f.dequantize(bias).astype(np.float32))
