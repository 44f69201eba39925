"""Random but valid quantized blocks (finite fp16 scales of a plausible size, random quant bits)
for the GPU benchmark's multi-gigabyte stand-in models, where running the real quantizers would
take minutes: uint8 (rows, row_bytes) in the registry's layout of each type (q8_0, q2_k..q6_k).
Rows that end in a k-quant tail block are quantized from random floats with the registry's own
quantizer instead (tails only occur in small test shapes). Codebook types (cbk2, cbk4, d4l2): a
random fp16 codebook, fp16 row scales, scale bytes and indices (flat tensor bytes, prefix first);
q4_ke: q4_k's blocks; `<base>.h`: the base type's random bytes, Huffman-coded."""
import numpy as np

from lowbit import quants

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
    if qtype.endswith(".h"):
        from lowbit.quants import huffcoded
        base = qtype[:-2]
        bq = quants.get(base)
        if base == "q4_k":   # q4_k.h codes q4_k's quant bytes (huffcoded's own view of the base)
            import dataclasses
            bq = dataclasses.replace(bq, index_positions=huffcoded.q4_k_index_positions)
        return huffcoded.encode(bq, random_blocks(base, rows, cols, rng), (rows, cols))
    if qtype == "q4_ke":
        qtype = "q4_k"
    from lowbit.quants import vq
    if qtype in vq.PARAMS:
        return _random_vq(qtype, rows, cols, rng)
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


def _random_vq(name, rows, cols, rng):
    """Flat tensor bytes: codebook ~N(0, 1) (learned types), d_row ~0.02, scale bytes 200..255
    (block scales 0.09..1 of d_row, a few 0: a zero block), uniform random indices."""
    from lowbit.quants import vq
    D, B, learned = vq.PARAMS[name]
    cbb, prefix, rb, _ = vq.layout(name, (rows, cols))
    out = np.empty(prefix + rows * rb, np.uint8)
    if learned:
        out[:cbb] = rng.standard_normal(256 * D).astype("<f2").view(np.uint8)
    d = (0.01 + 0.02 * rng.random(rows)) / (1.0 if learned else 2.0)
    out[cbb:prefix] = d.astype("<f2").view(np.uint8)
    body = out[prefix:].reshape(rows, cols // B, 1 + B // D)
    body[:, :, 1:] = np.frombuffer(rng.bytes(body[:, :, 1:].size), np.uint8).reshape(body[:, :, 1:].shape)
    s = rng.integers(200, 256, body.shape[:2])
    s[rng.random(s.shape) < 0.01] = 0
    body[:, :, 0] = s
    return out
