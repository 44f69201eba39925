"""GGUF file (llama or qwen2, tensors of types lowbit has) -> .lowbit file, without requantizing:
tensor bytes are copied (llama q/k rows put back in Hugging Face order). The tokenizer is rebuilt
from the GGUF vocabulary: a 'llama' (sentencepiece) vocabulary becomes a sentencepiece BPE model
proto, a 'gpt2' (byte-level BPE) vocabulary with a pre-tokenizer lowbit knows (gguf_io.PRE_TOKENIZERS)
becomes a tokenizer.json."""
import datetime
import json
import os
import sys
import time
from types import SimpleNamespace

import numpy as np

from lowbit import __version__, quants
from lowbit.config import ModelConfig
from lowbit.errors import ConvertError, FormatError
from lowbit.format import TensorSpec, write_lowbit

from . import gguf_io
from .hf import Checkpoint

# token texts llama.cpp treats as end-of-generation besides tokenizer.ggml.eos_token_id
EOG_TEXTS = ("<|endoftext|>", "<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<|end|>", "<end_of_turn>", "</s>")


def _f32(v) -> float:
    """A GGUF float32 key as the shortest decimal that rounds to it (1e-05, not 9.99999974e-06)."""
    return float(str(np.float32(v)))


class _Keys:
    def __init__(self, reader, path):
        self.fields, self.path = reader.fields, path

    def get(self, key, default=None):
        f = self.fields.get(key)
        if f is None:
            return default
        try:
            return f.contents()
        except Exception as e:   # a malformed value
            raise ConvertError(f"{self.path}: GGUF key {key!r} cannot be read ({e})") from None

    def need(self, key):
        v = self.get(key)
        if v is None:
            raise ConvertError(f"{self.path}: GGUF key {key!r} is missing")
        return v


def model_config(keys: _Keys, tensors: dict) -> ModelConfig:
    arch = keys.need("general.architecture")
    if arch not in gguf_io.ARCHITECTURES:
        raise ConvertError(f"{keys.path}: GGUF architecture {arch!r} is not supported (supported: "
                           f"{', '.join(gguf_io.ARCHITECTURES)})")
    emb = tensors.get("token_embd.weight")
    if emb is None:
        raise ConvertError(f"{keys.path}: tensor token_embd.weight is missing")
    heads = int(keys.need(f"{arch}.attention.head_count"))
    hidden = int(keys.need(f"{arch}.embedding_length"))
    scaling = None
    stype = keys.get(f"{arch}.rope.scaling.type")
    if stype == "linear":
        scaling = {"rope_type": "linear", "factor": _f32(keys.need(f"{arch}.rope.scaling.factor"))}
    elif stype not in (None, "none"):
        raise ConvertError(f"{keys.path}: RoPE scaling {stype!r} is not supported for import")
    if "rope_freqs.weight" in tensors:
        raise ConvertError(f"{keys.path}: per-frequency RoPE factors (rope_freqs.weight, llama3 scaling) cannot be "
                           "imported: GGUF does not record the llama3 parameters lowbit needs")
    c = ModelConfig(
        arch=arch, vocab_size=int(emb.shape[1]) if len(emb.shape) == 2 else 0, hidden_size=hidden,
        intermediate_size=int(keys.need(f"{arch}.feed_forward_length")),
        num_layers=int(keys.need(f"{arch}.block_count")), num_heads=heads,
        num_kv_heads=int(keys.get(f"{arch}.attention.head_count_kv", heads)),
        head_dim=int(keys.get(f"{arch}.attention.key_length", hidden // heads)),
        context_length=int(keys.get(f"{arch}.context_length", 2048)),
        rms_norm_eps=_f32(keys.need(f"{arch}.attention.layer_norm_rms_epsilon")),
        rope_theta=_f32(keys.get(f"{arch}.rope.freq_base", 10000.0)), rope_scaling=scaling,
        tie_word_embeddings="output.weight" not in tensors,
        attention_bias=any(n.endswith(".attn_q.bias") for n in tensors))
    if int(keys.get(f"{arch}.rope.dimension_count", c.head_dim)) != c.head_dim:
        raise ConvertError(f"{keys.path}: partial RoPE (rope.dimension_count != head dim) is not supported")
    try:
        c.validate(keys.path)
    except FormatError as e:
        raise ConvertError(str(e)) from None
    return c


def sentencepiece_blob(keys, tokens, scores, types) -> bytes:
    """A sentencepiece BPE ModelProto with the GGUF pieces (llama.cpp's SPM tokenizer merges by
    score, as sentencepiece's BPE does). Normalization: identity, with the dummy prefix GGUF records."""
    pb = gguf_io.sentencepiece_pb2()
    m = pb.ModelProto()
    for tok, score, typ in zip(tokens, scores, types):
        p = m.pieces.add()
        p.piece, p.score = tok, float(score)
        p.type = typ if typ in (1, 2, 3, 4, 5, 6) else 1
    ts = m.trainer_spec
    ts.model_type = pb.TrainerSpec.BPE
    ts.vocab_size = len(tokens)
    ts.byte_fallback = gguf_io.BYTE in types
    ts.unk_id = int(keys.get("tokenizer.ggml.unknown_token_id", types.index(gguf_io.UNKNOWN)
                             if gguf_io.UNKNOWN in types else 0))
    ts.bos_id = int(keys.get("tokenizer.ggml.bos_token_id", -1))
    ts.eos_id = int(keys.get("tokenizer.ggml.eos_token_id", -1))
    ts.pad_id = int(keys.get("tokenizer.ggml.padding_token_id", -1))
    ns = m.normalizer_spec
    ns.name = "identity"
    ns.add_dummy_prefix = bool(keys.get("tokenizer.ggml.add_space_prefix", True))
    ns.remove_extra_whitespaces = False
    ns.escape_whitespaces = True
    blob = m.SerializeToString()
    import sentencepiece
    try:
        sentencepiece.SentencePieceProcessor(model_proto=blob)
    except Exception as e:
        raise ConvertError(f"{keys.path}: the GGUF 'llama' vocabulary does not make a valid sentencepiece model ({e})") from None
    return blob


def tokenizer_json_blob(keys, tokens, types) -> bytes:
    """A tokenizer.json (byte-level BPE) with the GGUF vocabulary, merges and pre-tokenizer."""
    pre = keys.get("tokenizer.ggml.pre", "default")
    if pre not in gguf_io.PRE_TOKENIZERS:
        raise ConvertError(f"{keys.path}: GGUF pre-tokenizer {pre!r} is not supported for import (supported: "
                           f"{', '.join(gguf_io.PRE_TOKENIZERS)})")
    merges = keys.get("tokenizer.ggml.merges")
    if not merges:
        raise ConvertError(f"{keys.path}: a 'gpt2' vocabulary needs tokenizer.ggml.merges")
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    added = [{"id": i, "content": t, "single_word": False, "lstrip": False, "rstrip": False, "normalized": False,
              "special": types[i] == gguf_io.CONTROL}
             for i, t in enumerate(tokens) if types[i] in (gguf_io.CONTROL, gguf_io.USER_DEFINED)]
    tj = {"version": "1.0", "truncation": None, "padding": None, "added_tokens": added, "normalizer": None,
          "pre_tokenizer": gguf_io.PRE_TOKENIZERS[pre], "post_processor": None,
          "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
          "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                    "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                    "vocab": vocab, "merges": list(merges)}}
    blob = json.dumps(tj, ensure_ascii=False).encode("utf-8")
    from tokenizers import Tokenizer
    try:
        Tokenizer.from_str(blob.decode("utf-8"))
    except Exception as e:
        raise ConvertError(f"{keys.path}: the GGUF 'gpt2' vocabulary does not make a valid tokenizer.json ({e})") from None
    return blob


def tokenizer(keys: _Keys, vocab_size: int):
    """(blob name, blob bytes, lowbit tokenizer metadata)."""
    model = keys.need("tokenizer.ggml.model")
    tokens = keys.need("tokenizer.ggml.tokens")
    n = len(tokens)
    types = [int(t) for t in keys.get("tokenizer.ggml.token_type", [gguf_io.NORMAL] * n)]
    if len(types) != n:
        raise ConvertError(f"{keys.path}: tokenizer.ggml.token_type has {len(types)} entries for {n} tokens")
    if n > vocab_size:
        raise ConvertError(f"{keys.path}: {n} tokens but token_embd.weight has only {vocab_size} rows")
    if model == "llama":
        scores = keys.get("tokenizer.ggml.scores", [0.0] * n)
        name, blob, kind = "tokenizer.model", sentencepiece_blob(keys, tokens, scores, types), "sentencepiece"
        add_bos_default = True
    elif model == "gpt2":
        name, blob, kind = "tokenizer.json", tokenizer_json_blob(keys, tokens, types), "hf_tokenizers"
        add_bos_default = False
    else:
        raise ConvertError(f"{keys.path}: tokenizer model {model!r} is not supported for import (supported: llama, gpt2)")

    def tid(key):
        v = keys.get(key)
        return int(v) if v is not None and 0 <= int(v) < n else None
    bos, eos = tid("tokenizer.ggml.bos_token_id"), tid("tokenizer.ggml.eos_token_id")
    eos_ids = [i for i in (eos, tid("tokenizer.ggml.eot_token_id"), tid("tokenizer.ggml.eom_token_id")) if i is not None]
    for i, t in enumerate(tokens):    # llama.cpp's end-of-generation tokens by text
        if types[i] == gguf_io.CONTROL and t in EOG_TEXTS and i not in eos_ids:
            eos_ids.append(i)
    eos_ids = list(dict.fromkeys(eos_ids))
    meta = {"kind": kind, "tensor": name, "bos_id": bos, "eos_ids": eos_ids,
            "add_bos": bool(keys.get("tokenizer.ggml.add_bos_token", add_bos_default)) and bos is not None,
            "bos_token": tokens[bos] if bos is not None else None, "eos_token": tokens[eos] if eos is not None else None,
            "special_ids": [i for i, t in enumerate(types) if t in (gguf_io.CONTROL, gguf_io.UNKNOWN)],
            "chat_template": keys.get("tokenizer.chat_template")}
    return name, blob, meta


def import_gguf(src, out, log=None) -> dict:
    """Convert the GGUF file `src` to the lowbit file `out` without requantizing."""
    gguf = gguf_io.need_gguf()
    log = log or (lambda msg: print(msg, file=sys.stderr))
    src, out = os.fspath(src), os.fspath(out)
    t0 = datetime.datetime.now(datetime.timezone.utc)
    start = time.perf_counter()
    try:
        reader = gguf.GGUFReader(src, "r")
    except Exception as e:   # the reader raises assorted types on malformed files
        raise ConvertError(f"{src}: not a readable GGUF file ({type(e).__name__}: {e})") from None
    keys = _Keys(reader, src)
    # a GGUF Q4_K tensor is q4_k: q4_ke writes the same bytes (same_bytes_as) with another quantizer
    by_ggml = {qt.ggml_type: name for name, qt in quants.TYPES.items()
               if qt.ggml_type is not None and qt.same_bytes_as is None}
    tensors = {}
    for t in reader.tensors:
        if t.name in tensors:
            raise ConvertError(f"{src}: tensor {t.name!r} appears twice")
        tensors[t.name] = t
    config = model_config(keys, tensors)
    expected = Checkpoint.expected_shapes(SimpleNamespace(config=config))
    unsupported = []
    specs, types = [], {}
    for name, t in tensors.items():
        shape = tuple(int(d) for d in reversed([int(x) for x in t.shape]))
        if name.endswith(".bias") and name not in expected:
            expected[name] = shape
        if name not in expected:
            raise ConvertError(f"{src}: tensor {name!r} is not part of a {config.num_layers}-layer {config.arch} model")
        if shape != tuple(expected[name]):
            raise ConvertError(f"{src}: tensor {name!r} has shape {list(shape)}, expected {list(expected[name])}")
        lt = by_ggml.get(int(t.tensor_type))
        if lt is None or not quants.TYPES[lt].ggml_compatible(shape[-1]):
            unsupported.append(f"{name} ({t.tensor_type.name})")
            continue
        qt = quants.TYPES[lt]
        if qt.nbytes(shape) != int(t.n_bytes):
            raise ConvertError(f"{src}: tensor {name!r} holds {t.n_bytes} bytes, {lt} {list(shape)} needs {qt.nbytes(shape)}")
        types[name] = lt
        specs.append(TensorSpec(name, lt, shape, lambda t=t, name=name, shape=shape: _tensor_bytes(t, name, shape, config)))
    if unsupported:
        raise ConvertError(f"{src}: {len(unsupported)} tensors have GGML types lowbit does not store "
                           f"(lowbit stores {', '.join(sorted(set(by_ggml.values()), key=str))}): "
                           f"{', '.join(unsupported[:6])}{' ...' if len(unsupported) > 6 else ''}")
    missing = [n for n in expected if n not in tensors]
    if missing:
        raise ConvertError(f"{src}: {len(missing)} tensors the model needs are missing, e.g. {missing[0]}")
    blob_name, blob, tok = tokenizer(keys, config.vocab_size)
    specs.append(TensorSpec(blob_name, "u8", (len(blob),), lambda: np.frombuffer(blob, np.uint8)))
    counts = {}
    for v in types.values():
        counts[v] = counts.get(v, 0) + 1
    metadata = {
        "architecture": config.to_json(),
        "tokenizer": tok,
        "generation": {},
        "provenance": {
            "source": os.path.basename(src), "source_dtype": f"gguf file_type {keys.get('general.file_type')}",
            "files": {}, "converter": f"lowbit {__version__}", "created": t0.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "recipe": {"type": "gguf", "mix": False, "description": "imported from GGUF without requantizing",
                       "overrides": [], "imatrix": None, "tensor_types": counts,
                       "types": {n: v for n, v in types.items() if len(expected[n]) > 1}, "fallbacks": {}},
        },
    }
    order = {n: i for i, n in enumerate(expected)}
    specs.sort(key=lambda s: order.get(s.name, len(order)))
    write_lowbit(out, metadata, specs)
    n_weights = sum(int(np.prod(expected[n])) for n in types)
    size = os.path.getsize(out)
    return {"path": out, "bytes": size, "weights": n_weights, "bits_per_weight": size * 8 / n_weights,
            "seconds": time.perf_counter() - start, "tensor_types": counts, "fallbacks": {},
            "architecture": config.arch}


def _tensor_bytes(t, name, shape, config):
    raw = np.asarray(t.data).reshape(-1).view(np.uint8).reshape(shape[0], -1)   # rows (or elements) of bytes
    heads = gguf_io.qk_heads(name, config)
    if heads:
        raw = gguf_io.unpermute_qk(raw, heads)
    return np.ascontiguousarray(raw)
