"""What GGUF export and import share, and what tools/bench/bench_side_by_side.py uses to write GGUF from
a Hugging Face checkpoint: the q/k row permutation, hyperparameter keys and tokenizer keys.

Why the permutation: lowbit (like Hugging Face) pairs RoPE dimensions i and i + head_dim/2
("rotate half"); llama.cpp's `llama` architecture pairs 2i and 2i+1. Qwen2 uses NEOX RoPE in
llama.cpp, which is rotate-half: no permutation."""
import json

import numpy as np

from lowbit.errors import ConvertError

ARCHITECTURES = ("llama", "qwen2")

# GGUF token types (llama_token_type) = sentencepiece ModelProto.SentencePiece.Type numbers
NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6

# tokenizer.json pre-tokenizers llama.cpp knows by name (tokenizer.ggml.pre). Only these are
# exported under their name and imported back; the regex of each is llama.cpp's for that name.
_BYTELEVEL = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}
_QWEN2_REGEX = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
                r"\s*[\r\n]+|\s+(?!\S)|\s+")
PRE_TOKENIZERS = {
    "smollm": {"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": True}, _BYTELEVEL]},
    "gpt2": _BYTELEVEL,
    "qwen2": {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": _QWEN2_REGEX}, "behavior": "Isolated", "invert": False},
        dict(_BYTELEVEL, use_regex=False)]},
}


def need_gguf():
    """The gguf package (an optional dependency: pip install 'lowbit[gguf]'), or a clear error."""
    try:
        import gguf
    except ImportError:
        raise ConvertError("GGUF export and import need the gguf package: pip install 'lowbit[gguf]' "
                           "(gguf and protobuf)") from None
    if not hasattr(gguf.gguf_reader.ReaderField, "contents"):
        raise ConvertError(f"the installed gguf package ({getattr(gguf, '__version__', 'old')}) is too old; "
                           "pip install 'gguf>=0.16'")
    return gguf


def sentencepiece_pb2():
    """sentencepiece's ModelProto classes (they need the protobuf package)."""
    try:
        from sentencepiece import sentencepiece_model_pb2
    except ImportError as e:
        raise ConvertError(f"reading or writing a sentencepiece model proto needs the protobuf package ({e}): "
                           "pip install protobuf") from None
    return sentencepiece_model_pb2


def permute_qk(w, n_head):
    """Rows of a q/k weight (or bias): Hugging Face rotate-half order -> llama.cpp's interleaved pairs
    (convert_hf_to_gguf's permute). Works on float rows and on rows of quantized bytes alike."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def unpermute_qk(w, n_head):
    """The inverse of permute_qk."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def qk_heads(name: str, config):
    """Heads to permute a tensor's rows over for llama.cpp's `llama` architecture, or None."""
    if config.arch != "llama":
        return None
    if name.endswith((".attn_q.weight", ".attn_q.bias")):
        return config.num_heads
    if name.endswith((".attn_k.weight", ".attn_k.bias")):
        return config.num_kv_heads
    return None


def llama3_rope_factors(config) -> np.ndarray:
    """rope_freqs.weight for llama3 RoPE scaling: per frequency, the divisor llama.cpp applies."""
    from lowbit.ops import inv_freq
    unscaled = inv_freq(config.head_dim, config.rope_theta, None)
    return (unscaled / inv_freq(config.head_dim, config.rope_theta, config.rope_scaling)).astype(np.float32)


def write_hparams(writer, config, name: str):
    """The general/architecture keys llama.cpp reads for llama and qwen2."""
    import gguf
    c = config
    if c.arch not in ARCHITECTURES:
        raise ConvertError(f"architecture {c.arch!r} cannot be exported to GGUF (supported: {', '.join(ARCHITECTURES)})")
    writer.add_name(name)
    writer.add_context_length(c.context_length)
    writer.add_embedding_length(c.hidden_size)
    writer.add_block_count(c.num_layers)
    writer.add_feed_forward_length(c.intermediate_size)
    writer.add_head_count(c.num_heads)
    writer.add_head_count_kv(c.num_kv_heads)
    writer.add_key_length(c.head_dim)
    writer.add_value_length(c.head_dim)
    writer.add_rope_dimension_count(c.head_dim)
    writer.add_rope_freq_base(c.rope_theta)
    writer.add_layer_norm_rms_eps(c.rms_norm_eps)
    writer.add_vocab_size(c.vocab_size)
    s = c.rope_scaling
    if s and s.get("rope_type") == "linear":
        writer.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        writer.add_rope_scaling_factor(float(s["factor"]))
    elif s and s.get("rope_type") == "llama3":
        if c.arch != "llama":
            raise ConvertError("llama3 RoPE scaling is exported for the llama architecture only")
        # llama.cpp applies llama3 scaling through the rope_freqs.weight tensor (export adds it)
    elif s:
        raise ConvertError(f"RoPE scaling {s.get('rope_type')!r} cannot be exported to GGUF")


def pre_tokenizer_name(tokenizer_json: dict):
    """llama.cpp's name for a tokenizer.json pre-tokenizer, or None when it is not one we know."""
    pre = tokenizer_json.get("pre_tokenizer")
    for name, spec in PRE_TOKENIZERS.items():
        if pre == spec:
            return name
    return None


def write_tokenizer(writer, meta: dict, blob: bytes, vocab_size: int, warn=None, kind=None):
    """tokenizer.ggml.* keys from lowbit's tokenizer metadata and a tokenizer blob of `kind` (default:
    the metadata's): tokenizer.model -> 'llama' vocab; tokenizer.json with a byte-level BPE -> 'gpt2'."""
    warn = warn or (lambda msg: None)
    kind = kind or meta.get("kind")
    if kind == "sentencepiece":
        proto = sentencepiece_pb2().ModelProto()
        proto.ParseFromString(blob)
        tokens = [p.piece.encode("utf-8") for p in proto.pieces]
        scores = [float(p.score) for p in proto.pieces]
        types = [int(p.type) for p in proto.pieces]
        writer.add_tokenizer_model("llama")
        writer.add_tokenizer_pre("default")
        writer.add_add_space_prefix(bool(proto.normalizer_spec.add_dummy_prefix))
        if proto.trainer_spec.unk_id >= 0:
            writer.add_unk_token_id(proto.trainer_spec.unk_id)
        if proto.trainer_spec.pad_id >= 0:
            writer.add_pad_token_id(proto.trainer_spec.pad_id)
    elif kind == "hf_tokenizers":
        tj = json.loads(blob.decode("utf-8"))
        model = tj.get("model") or {}
        if model.get("type") != "BPE" or not isinstance(model.get("vocab"), dict):
            raise ConvertError(f"tokenizer.json model {model.get('type')!r} cannot be exported to GGUF "
                               "(supported: byte-level BPE)")
        inv = {int(v): k for k, v in model["vocab"].items()}
        added = {int(t["id"]): t for t in tj.get("added_tokens", [])}
        for i, t in added.items():
            inv[i] = t["content"]
        n = max(inv) + 1 if inv else 0
        tokens = [inv.get(i, f"[PAD{i}]").encode("utf-8") for i in range(n)]
        scores = [0.0] * n
        types = [(CONTROL if added[i].get("special") else USER_DEFINED) if i in added
                 else NORMAL if i in inv else UNUSED for i in range(n)]
        merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
        if "ByteLevel" not in json.dumps([tj.get("pre_tokenizer"), tj.get("decoder")]):
            raise ConvertError("tokenizer.json is not a byte-level BPE (GGUF 'gpt2' vocabulary) and no tokenizer.model "
                               "is embedded; GGUF export supports sentencepiece models and byte-level BPE")
        pre = pre_tokenizer_name(tj)
        if pre is None:
            warn(f"tokenizer.json pre-tokenizer {json.dumps(tj.get('pre_tokenizer'))[:120]} is not one lowbit "
                 "knows a llama.cpp name for; writing 'default' (llama.cpp may split text differently)")
            pre = "default"
        writer.add_tokenizer_model("gpt2")
        writer.add_tokenizer_pre(pre)
        writer.add_token_merges(merges)
    else:
        raise ConvertError(f"tokenizer kind {kind!r} cannot be exported to GGUF")
    if len(tokens) > vocab_size:
        raise ConvertError(f"the tokenizer has {len(tokens)} tokens but the model's vocabulary is {vocab_size}")
    while len(tokens) < vocab_size:        # a larger embedding than the tokenizer: unused rows
        tokens.append(f"<unused{len(tokens)}>".encode())
        scores.append(-1e4)
        types.append(UNUSED)
    writer.add_token_list(tokens)
    writer.add_token_scores(scores)
    writer.add_token_types(types)
    if meta.get("bos_id") is not None:
        writer.add_bos_token_id(int(meta["bos_id"]))
    writer.add_add_bos_token(bool(meta.get("add_bos")))
    writer.add_add_eos_token(False)
    eos = list(meta.get("eos_ids") or [])
    if eos:
        writer.add_eos_token_id(int(eos[0]))
    if meta.get("chat_template"):
        writer.add_chat_template(meta["chat_template"])
