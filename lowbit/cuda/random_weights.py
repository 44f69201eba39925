"""Random but valid quantized blocks (finite fp16 scales of a plausible size, random quant bits)
for the GPU benchmark's multi-gigabyte stand-in models, where running the real quantizers would
take minutes: uint8 (rows, row_bytes) in the registry's layout of each type (q8_0, q2_k..q6_k).
Rows that end in a k-quant tail block are quantized from random floats with the registry's own
quantizer instead (tails only occur in small test shapes)."""
import numpy as np

from .. import quants

# fp16 fields of each block: (offset, scale of a plausible value); dmin ~ d * (mean quant) keeps
# the affine types' weights roughly zero-mean
_FP16 = {
    "q8_0": (34, [(0, 1e-3)]),
    "q2_k": (84, [(80, 2e-3), (82, 2e-3 * 1.5)]),
    "q3_k": (110, [(108, 1e-3)]),
    "q4_k": (144, [(0, 2e-3), (2, 2e-3 * 7.5)]),
    "q5_k": (176, [(0, 1e-3), (2, 1e-3 * 15.5)]),
    "q6_k": (210, [(208, 2e-4)]),
}


def random_blocks(qtype: str, rows: int, cols: int, rng) -> np.ndarray:
    qt = quants.get(qtype)
    if qtype not in _FP16:
        raise ValueError(f"no random block generator for {qtype}")
    if cols % qt.block_size:
        w = rng.standard_normal((rows, cols), dtype=np.float32) * 0.05
        return qt.quantize(w, None)
    block_bytes, fields = _FP16[qtype]
    nb = rows * (cols // qt.block_size)
    blk = np.frombuffer(rng.bytes(nb * block_bytes), np.uint8).reshape(nb, block_bytes).copy()
    base = None
    for off, scale in fields:
        u = rng.random(nb, dtype=np.float32)
        if base is None:
            base = u
            v = (base * 0.9 + 0.1) * scale
        else:   # dmin tied to d (0.8..1.2 of the zero-mean value)
            v = (base * 0.9 + 0.1) * scale * (0.8 + 0.4 * u)
        blk[:, off:off + 2] = v.astype("<f2")[:, None].view(np.uint8)
    return blk.reshape(rows, -1)
