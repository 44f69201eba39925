"""Hugging Face checkpoint folder -> lowbit file."""
import datetime
import math
import os
import sys
import time

import numpy as np

from lowbit import __version__, quants
from lowbit.errors import ConvertError
from lowbit.format import TensorSpec, write_lowbit

from . import recipes
from .gptq import DEFAULT_DAMP
from .hf import Checkpoint


def choose_type(name: str, shape, requested: str):
    """(type, reason for a fallback or None) for one tensor."""
    if len(shape) == 1:
        return "f32", None          # norms and biases stay full precision: tiny and sensitive
    qt = quants.get(requested)
    t = requested
    while not quants.get(t).fits(shape[-1]):   # the type's fallback chain (QuantType.fallback)
        nxt = quants.get(t).fallback
        if nxt is None:
            raise ConvertError(f"{name}: row length {shape[-1]} fits no fallback of {requested}")
        t = nxt
    if t != requested:
        return t, f"row length {shape[-1]} is not a multiple of {qt.name}'s block size {qt.block_size}"
    return t, None


def load_imatrix(path, shapes: dict) -> dict:
    """{weight name: float32[in_features]} from an importance-matrix file (a lowbit container of
    f32 vectors named like the weights they apply to), checked against the checkpoint's shapes;
    plus, when the file has them (`lowbit imatrix --hessian`), the input covariance matrices
    {weight name: float32[in, in]}."""
    import hashlib
    from lowbit.errors import FormatError
    from lowbit.format import LowbitFile
    try:
        f = LowbitFile(path)
    except FormatError as e:
        raise ConvertError(f"importance matrix {e}") from None
    vectors = {}
    with f:
        meta = f.metadata.get("imatrix")
        groups = meta.get("covariances", {}) if isinstance(meta, dict) else {}
        for name, info in f.tensors.items():
            if isinstance(groups, dict) and name in groups:
                continue
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
    covs = {}
    if groups:
        from lowbit import imatrix as imx
        try:
            _, covs = imx.load_full(path)     # validates shapes, symmetry and membership
        except FormatError as e:
            raise ConvertError(f"importance matrix {e}") from None
    sens = meta.get("sensitivity", {}) if isinstance(meta, dict) else {}
    if not isinstance(sens, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            and v >= 0 for k, v in sens.items()):
        raise ConvertError(f"{path}: metadata.imatrix.sensitivity must map weight names to finite numbers >= 0")
    return {"vectors": vectors, "covariances": covs, "sensitivity": sens, "file": os.path.basename(str(path)), "sha256": h.hexdigest()}


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


def convert(src, out, qtype: str = "q8_0", progress: bool = True, log=None, overrides=(), imatrix=None,
            gptq: bool = True, target_bpw: float = None, candidates=None) -> dict:
    """Convert the checkpoint folder `src` to the lowbit file `out`. `qtype` is a tensor type or a
    mix name (converters/recipes.py); `overrides` are 'REGEX=TYPE' strings; `imatrix` is the path of
    an importance-matrix file; when it holds covariances, k-quant weights get GPTQ error feedback
    (converters/gptq.py) unless `gptq` is False. `target_bpw` (needs `imatrix`) chooses a type per
    weight for a file of at most that many bits per checkpoint weight (converters/target_bpw.py);
    `qtype` is then ignored; `candidates` (a --candidates value, target_bpw.parse_candidates) the
    types it chooses among. Returns a summary."""
    log = log or (lambda msg: print(msg, file=sys.stderr))
    if os.path.isfile(src) and str(src).lower().endswith(".gguf"):
        from .gguf_import import import_gguf   # GGUF: tensors are copied as they are, never requantized
        if overrides or imatrix or target_bpw or candidates:
            raise ConvertError(f"{src}: a GGUF file is imported without requantizing; --override/--imatrix/--target-bpw/--candidates do not apply")
        if qtype != "q8_0":
            log(f"note: {src} is imported as it is; type {qtype!r} does not apply to a GGUF source")
        return import_gguf(src, out, log=log)
    if target_bpw is not None:
        if not imatrix:
            raise ConvertError("--target-bpw needs --imatrix: the per-tensor errors it allocates bits by are "
                               "weighted by the importance matrix")
        if not (0 < float(target_bpw) < 64):
            raise ConvertError(f"--target-bpw {target_bpw}: expected a number of bits per weight, e.g. 3.5")
        qtype = "target_bpw"
        from . import target_bpw as tbm
        cand_list = tbm.parse_candidates(candidates)
    elif candidates is not None:
        raise ConvertError("--candidates applies to --target-bpw only")
    elif not recipes.is_known(qtype):
        raise ConvertError(f"unknown type or mix {qtype!r}; types: {', '.join(t for t in quants.TYPES if t != 'u8')}; "
                           f"mixes: {', '.join(recipes.MIXES)}")
    rules = recipes.parse_overrides(overrides)
    t0 = time.perf_counter()
    ck = Checkpoint(src)
    blobs = ck.tokenizer_blobs()
    names = ck.ordered_names()
    shapes = {name: tuple(ck.names[name][0].shape(ck.names[name][1])) for name in names}
    im = load_imatrix(imatrix, shapes) if imatrix else None
    covs = im["covariances"] if im and gptq else {}
    tb = None
    if target_bpw is not None:
        from . import target_bpw as tbm
        fixed = {}
        for name in names:
            for rx, typ in rules:
                if len(shapes[name]) == 2 and rx.fullmatch(name):
                    fixed[name] = typ
                    break
        measured = tbm.measure(names, shapes, ck.tensor, im["vectors"], covs, ck.config.tie_word_embeddings,
                               use_gptq=bool(covs), candidates=cand_list, fixed=fixed, sensitivity=im["sensitivity"],
                               log=log if progress else None, warn=log)
        n_weights = sum(int(np.prod(shapes[n])) for n in names)
        # bytes that are not 2-D weights: vectors, tokenizer blobs, and a generous header estimate
        other = sum(4 * int(np.prod(shapes[n])) for n in names if len(shapes[n]) != 2)
        other += sum(len(d) for d in blobs.values()) + 64 * (len(names) + len(blobs))
        import json    # header: metadata (recipe lists every tensor) and the tensor table
        other += len(json.dumps(tokenizer_metadata(ck, blobs))) + len(json.dumps(ck.config.to_json()))
        other += 300 * (len(names) + len(blobs)) + 8192
        budget = int(float(target_bpw) * n_weights / 8) - other
        wanted = {n: ("f32" if len(shapes[n]) == 1 else None) for n in names}
        wanted.update(tbm.allocate(measured, budget))
        tb = {"target": float(target_bpw), "measured": measured, "budget": budget}
    else:
        wanted = recipes.assign_types(qtype, shapes, ck.config.num_layers, ck.config.tie_word_embeddings, rules)
    types, fallbacks = {}, {}
    for name in names:
        types[name], reason = choose_type(name, shapes[name], wanted[name])
        if reason:
            fallbacks[name] = {"type": types[name], "reason": reason}
    for name, info in fallbacks.items():
        log(f"fallback: {name} stored as {info['type']} ({info['reason']})")
    vectors = im["vectors"] if im else {}

    from .gptq import gptq_quantize, inverse_cholesky
    factor = {}                     # the Cholesky factor of the group being quantized (q/k/v share one)
    n_gptq = sum(1 for n in names if n in covs and quants.get(types[n]).gptq is not None)

    def quantize(name, qt):
        if tb is not None and types[name] in tb["measured"].get(name, {}):
            raw = tb["measured"][name][types[name]][2]     # None: measured earlier (cache), quantize now
            if raw is not None:
                return raw
        w = ck.tensor(name)
        if name in covs and qt.gptq is not None:
            H = covs[name]
            if id(H) not in factor:
                factor.clear()
                factor[id(H)] = inverse_cholesky(H)
            return gptq_quantize(qt.name, w, H, vectors.get(name), U=factor[id(H)])
        return qt.quantize(w, vectors.get(name))

    specs = []
    for name in names:
        shape = ck.names[name][0].shape(ck.names[name][1])
        qt = quants.get(types[name])
        specs.append(TensorSpec(name, qt.name, shape, lambda n=name, q=qt: quantize(n, q)))
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
                       "description": (recipes.MIXES[qtype].description if qtype in recipes.MIXES else
                                       "per-tensor types chosen for the target size (converters/target_bpw.py)"
                                       if tb else None),
                       "overrides": [f"{rx.pattern}={t}" for rx, t in rules],
                       "imatrix": ({"file": im["file"], "sha256": im["sha256"], "tensors": len(vectors)}
                                   if im else None),
                       "gptq": ({"tensors": n_gptq, "damp": DEFAULT_DAMP, "method": "GPTQ error feedback, "
                                 "super-block scales fitted on the error-updated weights"} if n_gptq else None),
                       "target_bpw": ({"target": tb["target"], "candidates": cand_list,
                                       "error_measure": ("estimated KL divergence: " if im["sensitivity"] else "") +
                                                ("sum over weights of tr(E H E^T) (squared layer output error "
                                                 "per calibration token)" if covs else
                                                 "sum over weights of sum(E^2 * imatrix)") +
                                                (" x the weight's measured sensitivity" if im["sensitivity"]
                                                 else ""),
                                       **tbm.summary(tb["measured"], {n: t for n, t in types.items()
                                                                      if n in tb["measured"]})}
                                      if tb else None),
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
    if tb and size * 8 / n_weights > tb["target"]:   # the header estimate above was too small
        os.remove(out)
        raise ConvertError(f"{out}: {size * 8 / n_weights:.4f} bits/weight is over the target {tb['target']} "
                           "(metadata larger than estimated); file removed")
    return {"path": str(out), "bytes": size, "weights": n_weights, "bits_per_weight": size * 8 / n_weights,
            "seconds": time.perf_counter() - t0, "tensor_types": counts, "fallbacks": fallbacks}
