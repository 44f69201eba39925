"""Importance matrix: per linear layer, the mean squared input activation of each input channel
over calibration text (format_spec/imatrix.md). Quantizers weight each column's rounding error
by it, so the channels that carry large activations are kept more precisely.

Activations are observed by temporarily wrapping the model's Linear objects; the forward pass
itself is untouched."""
import os
import time
from contextlib import contextmanager

import numpy as np

from .errors import FormatError, LowbitError
from .format import LowbitFile, TensorSpec, write_lowbit
from .perplexity import make_chunks, tokenize_text

LINEARS = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")


class Observer:
    """Stands in for a Linear: accumulates sum(x^2) per input channel and the row count, then
    calls the wrapped Linear."""

    def __init__(self, linear):
        self.linear = linear
        self.name = linear.name
        self.sum_sq = np.zeros(linear.in_features, np.float64)
        self.count = 0

    def __call__(self, x):
        x64 = x.astype(np.float64)
        self.sum_sq += np.einsum("ti,ti->i", x64, x64)
        self.count += x.shape[0]
        return self.linear(x)

    def __getattr__(self, attr):   # anything else (shape, qtype, ...) is the Linear's
        return getattr(self.linear, attr)


@contextmanager
def observing(transformer):
    """Wrap every linear layer (and the output projection) of `transformer` with an Observer
    for the duration of the block; yields {weight name: Observer}."""
    saved, observers = [], {}
    try:
        # the native runtime runs a whole block in one C call, past the Linear objects: observe
        # through the per-matmul path instead (its matmuls still use the fused kernels)
        saved.append((transformer, "native", getattr(transformer, "native", None)))
        transformer.native = None
        for L in transformer.layers:
            for attr in LINEARS:
                lin = getattr(L, attr)
                saved.append((L, attr, lin))
                setattr(L, attr, observers.setdefault(lin.name, Observer(lin)))
        saved.append((transformer, "output", transformer.output))
        transformer.output = observers.setdefault(transformer.output.name, Observer(transformer.output))
        yield observers
    finally:
        for obj, attr, lin in reversed(saved):
            setattr(obj, attr, lin)


def compute(model, text_path, n_ctx: int = 512, n_chunks: int = None, log=print) -> dict:
    """{weight name: float32[in_features]} mean squared inputs, and run statistics."""
    ids = tokenize_text(model, text_path)
    chunks = make_chunks(model, ids, n_ctx, n_chunks, source=str(text_path))
    t = model.transformer
    t0 = time.perf_counter()
    log(f"imatrix: {len(ids)} tokens, {len(chunks)} chunks of {n_ctx}")
    with observing(t) as observers:
        for i, chunk in enumerate(chunks):
            # all_logits: the output projection sees every position, as the other layers do
            t.forward(chunk, t.new_cache(), all_logits=True)
            if i == 0:
                dt = time.perf_counter() - t0
                log(f"imatrix: {dt:.2f} seconds per chunk - ETA {dt * len(chunks) / 60:.2f} minutes")
            log(f"[{i + 1}]", end="")
    log("")
    stats = {name: (o.sum_sq / max(o.count, 1)).astype(np.float32) for name, o in observers.items()}
    info = {"chunks": int(len(chunks)), "tokens": int(chunks.size), "n_ctx": int(n_ctx),
            "seconds": time.perf_counter() - t0}
    return stats, info


def save(path, stats: dict, source_model: str, text: str, info: dict):
    meta = {"imatrix": {"source_model": source_model, "text": text, "chunks": info["chunks"],
                        "tokens": info["tokens"], "n_ctx": info["n_ctx"]}}
    specs = [TensorSpec(name, "f32", (v.shape[0],), (lambda v=v: np.ascontiguousarray(v, np.float32)))
             for name, v in sorted(stats.items())]
    write_lowbit(path, meta, specs)


def load(path) -> dict:
    """{weight name: float32[in_features]} from an imatrix file, validated."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise LowbitError(f"{path}: imatrix file not found")
    with LowbitFile(path) as f:
        if not isinstance(f.metadata.get("imatrix"), dict):
            raise FormatError(path, "not an imatrix file (metadata.imatrix is missing)")
        out = {}
        for name, info in f.tensors.items():
            if info.type != "f32" or len(info.shape) != 1:
                raise FormatError(path, f"imatrix tensor {name!r} must be a 1-D f32 vector, is {info.type} {list(info.shape)}")
            v = np.array(f.dequantize(name), dtype=np.float32)
            if not np.isfinite(v).all() or (v < 0).any():
                raise FormatError(path, f"imatrix tensor {name!r} has negative or non-finite values")
            out[name] = v
    return out
