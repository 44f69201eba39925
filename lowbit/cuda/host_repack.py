"""Host side of loading a tensor for the GPU, for the types whose file bytes are not what the
kernels read (no GPU needed; tests/test_cuda.py checks it without one):

- `<base>.h` (Huffman-coded indices, format_spec/types/huffman.md): the stream is decoded back into
  the base type's exact bytes with huffcoded's own decoder, ROW_BLOCK rows at a time into one uint8
  array of the base tensor's size (never floats, never more than the one tensor);
- codebook types (cbk2, cbk4, d4l2): the tensor's prefix (codebook, fp16 row scales) is split from
  its rows; d4l2's fixed lattice codebook is written out as fp16 in front of the row scales, so the
  kernels read every codebook type's side data the same way."""
import numpy as np

from .. import quants
from ..quants import vq

ROW_BLOCK = 256


def base_type(qtype: str) -> str:
    return qtype[:-2] if qtype.endswith(".h") else qtype


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
