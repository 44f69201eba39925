"""Hugging Face checkpoint folder -> lowbit file."""
import datetime
import os
import sys
import time

import numpy as np

from lowbit import __version__, quants
from lowbit.errors import ConvertError
from lowbit.format import TensorSpec, write_lowbit

from .hf import Checkpoint

# When a row does not fit a block type, the next type in this chain that fits is used.
FALLBACK = {"q8_0": "f16"}


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


def convert(src, out, qtype: str = "q8_0", progress: bool = True, log=None) -> dict:
    """Convert the checkpoint folder `src` to the lowbit file `out`. Returns a summary."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if qtype not in quants.TYPES or qtype == "u8":
        raise ConvertError(f"unknown type {qtype!r}; choose one of: {', '.join(t for t in quants.TYPES if t != 'u8')}")
    t0 = time.perf_counter()
    ck = Checkpoint(src)
    blobs = ck.tokenizer_blobs()
    names = ck.ordered_names()
    types, fallbacks = {}, {}
    for name in names:
        shape = ck.names[name][0].shape(ck.names[name][1])
        types[name], reason = choose_type(name, shape, qtype)
        if reason:
            fallbacks[name] = {"type": types[name], "reason": reason}
    for name, info in fallbacks.items():
        log(f"fallback: {name} stored as {info['type']} ({info['reason']})")

    specs = []
    for name in names:
        shape = ck.names[name][0].shape(ck.names[name][1])
        qt = quants.get(types[name])
        specs.append(TensorSpec(name, qt.name, shape, lambda n=name, q=qt: q.quantize(ck.tensor(n))))
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
            "recipe": {"type": qtype, "tensor_types": counts, "fallbacks": fallbacks},
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
