"""Importance matrix: per linear layer, the mean squared input activation of each input channel
over calibration text (format_spec/imatrix.md). Quantizers weight each column's rounding error
by it, so the channels that carry large activations are kept more precisely.

With `hessian=True` it also records, once per distinct linear input, the full second-moment
matrix X^T X / n (the Hessian of the layer's squared output error), which GPTQ-style error
feedback (converters/gptq.py) uses.

Activations are observed through the reference forward's hooks (model.Transformer.observer and
.perturb), which see every matmul's input and may replace its output; while a hook is set the
forward runs the reference path, whose matmuls are the same kernels the C block forward calls."""
import os
import time
from contextlib import contextmanager

import numpy as np
from numba import njit, prange

from . import ops
from .errors import FormatError, LowbitError
from .format import LowbitFile, TensorSpec, write_lowbit
from .perplexity import make_chunks, tokenize_text

LINEARS = ("wq", "wk", "wv", "wo", "w_gate", "w_up", "w_down")
# the first Linear of each group sharing one input, and the group's covariance tensor suffix
COV_GROUPS = {"wq": ("attn_input", ("wq", "wk", "wv")), "wo": ("attn_output_input", ("wo",)),
              "w_gate": ("ffn_input", ("w_gate", "w_up")), "w_down": ("ffn_down_input", ("w_down",))}
COV_PREFIX = "cov."


class Observer:
    """Accumulates sum(x^2) per input channel and the row count of one weight's inputs (and, with
    `cov`, X^T X)."""

    def __init__(self, name: str, in_features: int, cov: bool = False):
        self.name = name
        self.sum_sq = np.zeros(in_features, np.float64)
        self.count = 0
        # X^T X, accumulated in float64 over per-call float32 products (one BLAS call per chunk)
        self.sum_xx = np.zeros((in_features, in_features), np.float64) if cov else None

    def add(self, x):
        x64 = x.astype(np.float64)
        self.sum_sq += np.einsum("ti,ti->i", x64, x64)
        self.count += x.shape[0]
        if self.sum_xx is not None:
            self.sum_xx += _gram(x)


def _gram(x: np.ndarray) -> np.ndarray:
    """X^T X in float32. Through the native f32 matmul when there is one (X^T as the weight):
    it runs on lowbit's own thread pool, where BLAS's threads would spin against it (measured
    on 2 busy cores: 4 chunks of pycode-30m's --hessian pass 18-23 s -> 12.6 s)."""
    from . import backend, quants
    xt = np.ascontiguousarray(np.asarray(x, np.float32).T)
    mm = quants.get("f32").kernels.get("c") if backend.native_kernels() else None
    if mm is None:
        return xt @ xt.T
    y = np.empty((xt.shape[0], xt.shape[0]), np.float32)
    return mm(xt.view(np.uint8), xt, y, cols=xt.shape[1])


@contextmanager
def observing(transformer, hessian: bool = False):
    """Observe the input of every linear layer (and of the output projection) of the reference
    `transformer` for the duration of the block; yields {weight name: Observer}. With `hessian`,
    the first Linear of each input-sharing group (and the output) also accumulates X^T X."""
    observers = {}
    for L in transformer.layers:
        for attr in LINEARS:
            lin = getattr(L, attr)
            observers.setdefault(lin.name, Observer(lin.name, lin.in_features, hessian and attr in COV_GROUPS))
    out = transformer.output
    observers.setdefault(out.name, Observer(out.name, out.in_features, hessian))
    saved = transformer.observer
    transformer.observer = lambda name, x: observers[name].add(x)
    try:
        yield observers
    finally:
        transformer.observer = saved


def covariance_groups(transformer) -> dict:
    """{covariance tensor name: [weight names sharing that input]} for a loaded Transformer."""
    groups = {}
    for i, L in enumerate(transformer.layers):
        for first, (suffix, members) in COV_GROUPS.items():
            groups[f"{COV_PREFIX}blk.{i}.{suffix}"] = [getattr(L, a).name for a in members]
    groups[f"{COV_PREFIX}output_input"] = [transformer.output.name]
    return groups


class Noisy:
    """Adds Gaussian noise of `rel` times each token's output RMS to a weight's output (add(y),
    through Transformer.perturb; or standing in for a Linear when called) and counts the noise
    energy per token."""

    def __init__(self, linear, rel, rng):
        self.linear, self.rel, self.rng = linear, rel, rng
        self.energy, self.count = 0.0, 0

    def __call__(self, x):
        return self.add(self.linear(x))

    def add(self, y):
        rms = np.sqrt((y.astype(np.float64) ** 2).mean(axis=1, keepdims=True))
        noise = self.rng.standard_normal(y.shape) * (self.rel * rms)
        self.energy += float((noise * noise).sum())
        self.count += y.shape[0]
        return (y + noise).astype(np.float32)

    def __getattr__(self, attr):
        return getattr(self.linear, attr)


LOOKUP = "token_embd.lookup"     # sensitivity key of the embedding lookup (its output: the residual stream)


@njit(parallel=True, cache=True)
def _kl_rows(lp, z, out):
    """out[t] = max(KL(p || q), 0) per row: p from the clean log-probs lp (float64), q the
    softmax of the noisy logits z; one pass over each row instead of NumPy's many."""
    for t in prange(z.shape[0]):
        m = -np.inf
        for j in range(z.shape[1]):
            m = max(m, np.float64(z[t, j]))
        s = 0.0
        for j in range(z.shape[1]):
            s += np.exp(np.float64(z[t, j]) - m)
        ls = np.log(s)
        acc = 0.0
        for j in range(z.shape[1]):
            lq = (np.float64(z[t, j]) - m) - ls
            acc += np.exp(lp[t, j]) * (lp[t, j] - lq)
        out[t] = max(acc, 0.0)


def _run_from(t, x, start: int, keep: list = None) -> np.ndarray:
    """Logits of every position when the residual stream entering layer `start` is x (changed
    in place): layers start.. and the output head, as Transformer.forward computes them on the
    reference path. `keep` receives a copy of the stream entering each layer and the last."""
    cache = t.new_cache()
    h = np.empty_like(x)
    for li in range(start, len(t.layers)):
        if keep is not None:
            keep.append(x.copy())
        t.layer_forward(li, x, h, cache, 0)
    if keep is not None:
        keep.append(x.copy())
    out = np.empty_like(x)
    ops.rmsnorm(x, t.output_norm, t.config.rms_norm_eps, out)
    return t.linear(t.output, out)


def sensitivities(model, chunks, rel: float = 0.1, seed: int = 0, log=print) -> dict:
    """{weight name: mean KL(clean || noisy) per unit of per-token output noise energy} for every
    linear layer and the output projection, plus LOOKUP for the embedding rows: how much one unit
    of squared output error of that weight costs in KL divergence of the next-token distribution
    (noise of `rel` x output RMS, small enough for the quadratic regime).

    The layers before the noisy weight compute what the clean run computed: each noisy run starts
    from the clean residual stream entering the noisy weight's layer (kept from the clean run),
    which gives the same numbers as a whole forward pass for about half of the layer work."""
    from .perplexity import log_softmax
    t = model.transformer
    saved_perturb = t.perturb
    rng = np.random.default_rng(seed)
    out = {}
    try:
        streams, clean = [], []           # per chunk: the clean stream entering each layer, log-probs
        for ch in chunks:
            keep = []
            clean.append(log_softmax(_run_from(t, t.embed(np.asarray(ch, np.int64)), 0, keep)))
            streams.append(keep)

        def kld_with(noisy, start, first=None):
            kl, n = 0.0, 0
            for keep, lp in zip(streams, clean):
                x = keep[start].copy() if first is None else first(keep[0])
                rows = np.empty(lp.shape[0])
                _kl_rows(lp, _run_from(t, x, start), rows)
                kl += float(rows.sum())
                n += lp.shape[0]
            return (kl / n) / max(noisy.energy / max(noisy.count, 1), 1e-30)

        targets = [(getattr(L, attr), li) for li, L in enumerate(t.layers) for attr in LINEARS]
        targets.append((t.output, len(t.layers)))
        for lin, start in targets:   # noise on this weight's output only
            noisy = Noisy(lin, rel, rng)
            t.perturb = lambda name, y, target=lin.name, noisy=noisy: noisy.add(y) if name == target else y
            out[lin.name] = kld_with(noisy, start)
            t.perturb = saved_perturb
            log(".", end="")
        noisy = Noisy(None, rel, rng)
        out[LOOKUP] = kld_with(noisy, 0, first=noisy.add)      # noise on the looked-up rows
        log("")
    finally:
        t.perturb = saved_perturb
    return out


def compute(model, text_path, n_ctx: int = 512, n_chunks: int = None, log=print, hessian: bool = False,
            sensitivity_chunks: int = 4):
    """{weight name: float32[in_features]} mean squared inputs, and run statistics. With
    `hessian`, info["covariances"] = {cov tensor name: float32[k, k]} and info["groups"] =
    {cov tensor name: [weight names]}."""
    ids = tokenize_text(model, text_path)
    chunks = make_chunks(model, ids, n_ctx, n_chunks, source=str(text_path))
    t = model.transformer
    t0 = time.perf_counter()
    log(f"imatrix: {len(ids)} tokens, {len(chunks)} chunks of {n_ctx}")
    groups = covariance_groups(t) if hessian else {}
    with observing(t, hessian) as observers:
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
    if hessian:
        covs = {}
        for cname, members in groups.items():
            o = observers[members[0]]
            c = o.sum_xx / max(o.count, 1)
            covs[cname] = (0.5 * (c + c.T)).astype(np.float32)
        info["covariances"], info["groups"] = covs, groups
        if sensitivity_chunks:
            ts = time.perf_counter()
            log(f"sensitivity: noise on each weight's output, {min(sensitivity_chunks, len(chunks))} chunks")
            info["sensitivity"] = sensitivities(model, chunks[:sensitivity_chunks], log=log)
            info["sensitivity_chunks"] = int(min(sensitivity_chunks, len(chunks)))
            info["seconds"] += time.perf_counter() - ts
    return stats, info


def save(path, stats: dict, source_model: str, text: str, info: dict):
    meta = {"imatrix": {"source_model": source_model, "text": text, "chunks": info["chunks"],
                        "tokens": info["tokens"], "n_ctx": info["n_ctx"]}}
    specs = [TensorSpec(name, "f32", (v.shape[0],), (lambda v=v: np.ascontiguousarray(v, np.float32)))
             for name, v in sorted(stats.items())]
    covs = info.get("covariances")
    if covs:
        meta["imatrix"]["covariances"] = {c: list(info["groups"][c]) for c in sorted(covs)}
    if info.get("sensitivity"):
        meta["imatrix"]["sensitivity"] = {k: float(v) for k, v in sorted(info["sensitivity"].items())}
        meta["imatrix"]["sensitivity_chunks"] = info["sensitivity_chunks"]
        specs += [TensorSpec(c, "f32", tuple(m.shape), (lambda m=m: np.ascontiguousarray(m, np.float32)))
                  for c, m in sorted(covs.items())]
    write_lowbit(path, meta, specs)


def load(path) -> dict:
    """{weight name: float32[in_features]} from an imatrix file, validated."""
    return load_full(path)[0]


def load_full(path):
    """(vectors, covariances) from an imatrix file, validated: vectors = {weight name:
    float32[in_features]}; covariances = {weight name: float32[k, k]} (one array object shared
    by the weights of a group; empty for a file without them)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise LowbitError(f"{path}: imatrix file not found")
    with LowbitFile(path) as f:
        meta = f.metadata.get("imatrix")
        if not isinstance(meta, dict):
            raise FormatError(path, "not an imatrix file (metadata.imatrix is missing)")
        groups = meta.get("covariances", {})
        if not isinstance(groups, dict) or not all(
                isinstance(k, str) and isinstance(v, list) and v and all(isinstance(n, str) for n in v)
                for k, v in groups.items()):
            raise FormatError(path, "metadata.imatrix.covariances must map tensor names to lists of weight names")
        out, covs = {}, {}
        for name, info in f.tensors.items():
            if name in groups:
                continue
            if info.type != "f32" or len(info.shape) != 1:
                raise FormatError(path, f"imatrix tensor {name!r} must be a 1-D f32 vector, is {info.type} {list(info.shape)}")
            v = np.array(f.dequantize(name), dtype=np.float32)
            if not np.isfinite(v).all() or (v < 0).any():
                raise FormatError(path, f"imatrix tensor {name!r} has negative or non-finite values")
            out[name] = v
        for cname, members in groups.items():
            if cname not in f.tensors:
                raise FormatError(path, f"covariance {cname!r} is listed in metadata but has no tensor")
            info = f.tensors[cname]
            if info.type != "f32" or len(info.shape) != 2 or info.shape[0] != info.shape[1]:
                raise FormatError(path, f"covariance {cname!r} must be a square f32 matrix, is {info.type} "
                                        f"{list(info.shape)}")
            m = np.array(f.dequantize(cname), dtype=np.float32)
            k = info.shape[0]
            if not np.isfinite(m).all() or (np.diag(m) < 0).any():
                raise FormatError(path, f"covariance {cname!r} has non-finite values or a negative diagonal")
            if not np.allclose(m, m.T, rtol=1e-5, atol=1e-6 * max(float(np.abs(np.diag(m)).max()), 1e-30)):
                raise FormatError(path, f"covariance {cname!r} is not symmetric")
            for w in members:
                if w in covs:
                    raise FormatError(path, f"weight {w!r} is listed under two covariances")
                v = out.get(w)
                if v is None or v.shape[0] != k:
                    raise FormatError(path, f"covariance {cname!r} ({k}x{k}) lists weight {w!r}, which has "
                                            f"{'no importance vector' if v is None else f'a vector of {v.shape[0]}'}")
                covs[w] = m
    return out, covs
