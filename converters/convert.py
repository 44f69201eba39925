"""Hugging Face checkpoint folder -> lowbit file."""
import datetime
import os
import sys
import time

import numpy as np

from lowbit import __version__, quants
from lowbit.errors import ConvertError
from lowbit.format import TensorSpec, write_lowbit

from . import recipes
from .hf import Checkpoint

# When a row does not fit a block type, the next type in this chain that fits is used.
FALLBACK = {"q8_0": "f16", "cbk2": "q2_k", "cbk2.h": "q2_k", "d4l2": "q2_k", "d4l2.h": "q2_k",
            "cbk4": "q4_k", "cbk4.h": "q4_k", "q4_k.h": "q4_k"}


def choose_type(name: str, shape, requested: str):
    """(type, reason for a fallback or None) for one tensor."""
    if len(shape) == 1:
        return "f32", None          # norms and biases stay full precision: tiny and sensitive
    qt = quants.get(requested)
    t = requested
    while not quants.get(t).fits(shape[-1]):
        nxt = FALLBACK.get(t)
        if nxt is None:
            raise ConvertError(f"{name}: row length {shape[-1]} fits no fallback of {requested}")
        t = nxt
    if t != requested:
        return t, f"row length {shape[-1]} is not a multiple of {qt.name}'s block size {qt.block_size}"
    return t, None


def load_imatrix(path, shapes: dict) -> dict:
    """{weight name: float32[in_features]} from an importance-matrix file (a lowbit container of
    f32 vectors named like the weights they apply to), checked against the checkpoint's shapes."""
    import hashlib
    from lowbit.errors import FormatError
    from lowbit.format import LowbitFile
    try:
        f = LowbitFile(path)
    except FormatError as e:
        raise ConvertError(f"importance matrix {e}") from None
    vectors = {}
    with f:
        for name, info in f.tensors.items():
            if name not in shapes or len(shapes[name]) != 2:
                raise ConvertError(f"{path}: importance matrix has tensor {name!r}, which is not a weight matrix of "
                                   "this checkpoint (made for another model?)")
            want = shapes[name][1]
            if info.shape != (want,):
                raise ConvertError(f"{path}: importance vector {name!r} has shape {list(info.shape)}, but the weight "
                                   f"{list(shapes[name])} needs [{want}] (made for another model?)")
            v = np.array(f.dequantize(name), dtype=np.float32)
            if not np.isfinite(v).all() or (v < 0).any():
                raise ConvertError(f"{path}: importance vector {name!r} has negative, NaN or infinite values")
            vectors[name] = v
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 22), b""):
                h.update(chunk)
    if not vectors:
        raise ConvertError(f"{path}: importance matrix holds no vectors")
    return {"vectors": vectors, "file": os.path.basename(str(path)), "sha256": h.hexdigest()}


def tokenizer_metadata(ck: Checkpoint, blobs: dict) -> dict:
    tc, gc, cfg = ck.tokenizer_config, ck.generation_config, ck.config_json

    def token_text(v):
        return v.get("content") if isinstance(v, dict) else v

    bos_token, eos_token = token_text(tc.get("bos_token")), token_text(tc.get("eos_token"))
    if "tokenizer.json" in blobs:
        from tokenizers import Tokenizer
        tok = Tokenizer.from_str(blobs["tokenizer.json"].decode("utf-8"))
        kind, tensor = "hf_tokenizers", "tokenizer.json"
        to_id = tok.token_to_id
        special = [i for i, t in tok.get_added_tokens_decoder().items() if t.special]
        bos_id = to_id(bos_token) if bos_token else None
        probe = tok.encode("a", add_special_tokens=True).ids
        add_bos = bos_id is not None and bool(probe) and probe[0] == bos_id
    else:
        import sentencepiece as spm
        sp = spm.SentencePieceProcessor(model_proto=blobs["tokenizer.model"])
        kind, tensor = "sentencepiece", "tokenizer.model"

        def to_id(s):
            i = sp.piece_to_id(s)
            return None if sp.id_to_piece(i) != s else i
        special = [i for i in range(sp.get_piece_size()) if sp.is_control(i) or sp.is_unknown(i)]
        bos_id = sp.bos_id() if sp.bos_id() >= 0 else None
        if bos_token and to_id(bos_token) is not None:
            bos_id = to_id(bos_token)
        add_bos = bool(tc.get("add_bos_token", True)) and bos_id is not None
    eos = []
    for src in (gc.get("eos_token_id"), cfg.get("eos_token_id"), to_id(eos_token) if eos_token else None):
        for i in (src if isinstance(src, list) else [src]):
            if isinstance(i, int) and i >= 0 and i not in eos:
                eos.append(i)
    return {"kind": kind, "tensor": tensor, "bos_id": bos_id, "eos_ids": eos, "add_bos": add_bos,
            "bos_token": bos_token, "eos_token": eos_token, "special_ids": sorted(int(i) for i in special),
            "chat_template": ck.chat_template()}


GENERATION_KEYS = ("do_sample", "temperature", "top_k", "top_p", "min_p", "repetition_penalty", "max_new_tokens")


def convert(src, out, qtype: str = "q8_0", progress: bool = True, log=None, overrides=(), imatrix=None) -> dict:
    """Convert the checkpoint folder `src` to the lowbit file `out`. `qtype` is a tensor type or a
    mix name (converters/recipes.py); `overrides` are 'REGEX=TYPE' strings; `imatrix` is the path of
    an importance-matrix file. Returns a summary."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if not recipes.is_known(qtype):
        raise ConvertError(f"unknown type or mix {qtype!r}; types: {', '.join(t for t in quants.TYPES if t != 'u8')}; "
                           f"mixes: {', '.join(recipes.MIXES)}")
    rules = recipes.parse_overrides(overrides)
    t0 = time.perf_counter()
    ck = Checkpoint(src)
    blobs = ck.tokenizer_blobs()
    names = ck.ordered_names()
    shapes = {name: tuple(ck.names[name][0].shape(ck.names[name][1])) for name in names}
    im = load_imatrix(imatrix, shapes) if imatrix else None
    wanted = recipes.assign_types(qtype, shapes, ck.config.num_layers, ck.config.tie_word_embeddings, rules)
    types, fallbacks = {}, {}
    for name in names:
        types[name], reason = choose_type(name, shapes[name], wanted[name])
        if reason:
            fallbacks[name] = {"type": types[name], "reason": reason}
    for name, info in fallbacks.items():
        log(f"fallback: {name} stored as {info['type']} ({info['reason']})")
    vectors = im["vectors"] if im else {}

    specs = []
    for name in names:
        shape = ck.names[name][0].shape(ck.names[name][1])
        qt = quants.get(types[name])
        specs.append(TensorSpec(name, qt.name, shape,
                                lambda n=name, q=qt: q.quantize(ck.tensor(n), vectors.get(n))))
    for fname, data in blobs.items():
        specs.append(TensorSpec(fname, "u8", (len(data),), lambda d=data: np.frombuffer(d, np.uint8)))

    counts = {}
    for t in types.values():
        counts[t] = counts.get(t, 0) + 1
    gen = {k: ck.generation_config[k] for k in GENERATION_KEYS if k in ck.generation_config}
    metadata = {
        "architecture": ck.config.to_json(),
        "tokenizer": tokenizer_metadata(ck, blobs),
        "generation": gen,
        "provenance": {
            "source": os.path.basename(ck.folder.rstrip(os.sep)),
            "source_dtype": ck.source_dtype(),
            "files": ck.file_hashes(),
            "converter": f"lowbit {__version__}",
            "created": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "recipe": {"type": qtype, "mix": qtype in recipes.MIXES,
                       "description": recipes.MIXES[qtype].description if qtype in recipes.MIXES else None,
                       "overrides": [f"{rx.pattern}={t}" for rx, t in rules],
                       "imatrix": ({"file": im["file"], "sha256": im["sha256"], "tensors": len(vectors)}
                                   if im else None),
                       "tensor_types": counts, "types": {n: t for n, t in types.items() if len(shapes[n]) > 1},
                       "fallbacks": fallbacks},
        },
    }
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(specs), unit="tensor", desc=f"converting to {qtype}", file=sys.stderr,
                   disable=None, leave=False)
    try:
        write_lowbit(out, metadata, specs, progress=(lambda s: bar.update(1)) if bar else None)
    finally:
        if bar:
            bar.close()
    n_weights = sum(int(np.prod(ck.names[n][0].shape(ck.names[n][1]))) for n in names)
    size = os.path.getsize(out)
    return {"path": str(out), "bytes": size, "weights": n_weights, "bits_per_weight": size * 8 / n_weights,
            "seconds": time.perf_counter() - t0, "tensor_types": counts, "fallbacks": fallbacks}
