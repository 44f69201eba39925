"""Read a Hugging Face checkpoint folder: config.json (transformers 4.x and 5.x styles), sharded
safetensors, tokenizer files, chat template and generation defaults."""
import glob
import hashlib
import json
import os
import re

from lowbit.config import ModelConfig
from lowbit.errors import ConvertError, FormatError

from .safetensors_reader import SafetensorsFile

ARCHITECTURES = {"LlamaForCausalLM": "llama", "Qwen2ForCausalLM": "qwen2"}
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
ROPE_TYPES = ("default", "linear", "llama3")

# Hugging Face tensor names -> lowbit tensor names (GGUF's naming, so export is a rename-free copy)
LAYER_MAP = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight", "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight", "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight", "self_attn.o_proj.bias": "attn_output.bias",
    "mlp.gate_proj.weight": "ffn_gate.weight", "mlp.gate_proj.bias": "ffn_gate.bias",
    "mlp.up_proj.weight": "ffn_up.weight", "mlp.up_proj.bias": "ffn_up.bias",
    "mlp.down_proj.weight": "ffn_down.weight", "mlp.down_proj.bias": "ffn_down.bias",
}
GLOBAL_MAP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
              "lm_head.weight": "output.weight"}
IGNORED = re.compile(r".*rotary_emb\.inv_freq$")


def _read_json(path, required=True):
    if not os.path.exists(path):
        if required:
            raise ConvertError(f"{path}: missing (a Hugging Face checkpoint folder needs it)")
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise ConvertError(f"{path}: not valid JSON ({e})") from None


def hf_tensor_name(name: str):
    """Map a Hugging Face tensor name to lowbit's, or None for buffers to skip."""
    if name in GLOBAL_MAP:
        return GLOBAL_MAP[name]
    m = re.fullmatch(r"model\.layers\.(\d+)\.(.+)", name)
    if m and m.group(2) in LAYER_MAP:
        return f"blk.{int(m.group(1))}.{LAYER_MAP[m.group(2)]}"
    if IGNORED.match(name):
        return None
    raise ConvertError(f"tensor {name!r} is not part of a supported Llama/Qwen2 checkpoint")


def model_config(cfg: dict, path: str) -> ModelConfig:
    archs = cfg.get("architectures") or []
    arch = next((ARCHITECTURES[a] for a in archs if a in ARCHITECTURES), None)
    if arch is None:
        raise ConvertError(f"{path}: architecture {archs or cfg.get('model_type')} is not supported; "
                           f"lowbit converts {', '.join(ARCHITECTURES)}")
    text = cfg.get("text_config", cfg)
    try:
        hidden = int(text["hidden_size"])
        heads = int(text["num_attention_heads"])
        layers = int(text["num_hidden_layers"])
        ffn = int(text["intermediate_size"])
        vocab = int(text["vocab_size"])
    except (KeyError, TypeError, ValueError) as e:
        raise ConvertError(f"{path}: config.json lacks a required field ({e})") from None
    # transformers 5.x keeps RoPE settings in rope_parameters; 4.x in rope_theta + rope_scaling
    params = dict(text.get("rope_parameters") or {})
    theta = float(params.pop("rope_theta", text.get("rope_theta", 10000.0)))
    scaling = params or text.get("rope_scaling") or None
    if scaling:
        scaling = dict(scaling)
        rtype = scaling.get("rope_type", scaling.get("type", "default"))
        if rtype not in ROPE_TYPES:
            raise ConvertError(f"{path}: RoPE scaling type {rtype!r} is not supported (supported: {', '.join(ROPE_TYPES)})")
        scaling["rope_type"] = rtype
        scaling.pop("type", None)
        if rtype == "default":
            scaling = None
    if arch == "qwen2" and text.get("use_sliding_window"):
        raise ConvertError(f"{path}: Qwen2 sliding-window attention is not supported")
    if text.get("hidden_act", "silu") != "silu":
        raise ConvertError(f"{path}: activation {text.get('hidden_act')!r} is not supported (only silu)")
    c = ModelConfig(
        arch=arch, vocab_size=vocab, hidden_size=hidden, intermediate_size=ffn, num_layers=layers,
        num_heads=heads, num_kv_heads=int(text.get("num_key_value_heads") or heads),
        head_dim=int(text.get("head_dim") or hidden // heads),
        context_length=int(text.get("max_position_embeddings", 2048)),
        rms_norm_eps=float(text.get("rms_norm_eps", 1e-6)), rope_theta=theta, rope_scaling=scaling,
        tie_word_embeddings=bool(text.get("tie_word_embeddings", cfg.get("tie_word_embeddings", False))),
        attention_bias=(arch == "qwen2") or bool(text.get("attention_bias", False)),
    )
    try:
        c.validate(path)
    except FormatError as e:
        raise ConvertError(str(e)) from None
    return c


class Checkpoint:
    """A Hugging Face checkpoint folder, opened and checked."""

    def __init__(self, folder):
        self.folder = os.path.abspath(os.fspath(folder))
        if not os.path.isdir(self.folder):
            raise ConvertError(f"{folder}: not a directory (expected a Hugging Face checkpoint folder)")
        self.config_json = _read_json(os.path.join(self.folder, "config.json"))
        self.config = model_config(self.config_json, os.path.join(self.folder, "config.json"))
        self.shard_paths = self._find_shards()
        self.shards = [SafetensorsFile(p) for p in self.shard_paths]
        self.names = {}   # lowbit name -> (shard, hf name)
        for shard in self.shards:
            for hf_name in shard.keys():
                name = hf_tensor_name(hf_name)
                if name is None:
                    continue
                if name in self.names:
                    raise ConvertError(f"{os.path.basename(shard.path)}: tensor {hf_name!r} appears in two shards")
                self.names[name] = (shard, hf_name)
        if "output.weight" not in self.names:
            self.config.tie_word_embeddings = True   # no lm_head: the embedding is the output matrix
        self._check_tensors()
        self.tokenizer_config = _read_json(os.path.join(self.folder, "tokenizer_config.json"), required=False) or {}
        self.generation_config = _read_json(os.path.join(self.folder, "generation_config.json"), required=False) or {}

    def _find_shards(self):
        shards = sorted(glob.glob(os.path.join(self.folder, "*.safetensors")))
        index_path = os.path.join(self.folder, "model.safetensors.index.json")
        if os.path.exists(index_path):
            index = _read_json(index_path)
            files = sorted(set((index.get("weight_map") or {}).values()))
            missing = [f for f in files if not os.path.exists(os.path.join(self.folder, f))]
            if missing:
                raise ConvertError(f"{index_path}: lists shards that are not in the folder: {', '.join(missing)}")
            shards = [os.path.join(self.folder, f) for f in files]
        if not shards:
            pickles = [f for f in os.listdir(self.folder) if f.endswith(PICKLE_SUFFIXES)]
            if pickles:
                raise ConvertError(
                    f"{self.folder}: only pickle checkpoints found ({', '.join(sorted(pickles))}). lowbit refuses to "
                    "load pickle files because unpickling can run arbitrary code. Re-save the model as safetensors "
                    "(transformers: model.save_pretrained(dir, safe_serialization=True)) and convert that.")
            raise ConvertError(f"{self.folder}: no *.safetensors files found")
        return shards

    def expected_shapes(self):
        c = self.config
        q, kv = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
        shapes = {"token_embd.weight": (c.vocab_size, c.hidden_size), "output_norm.weight": (c.hidden_size,)}
        if not c.tie_word_embeddings:
            shapes["output.weight"] = (c.vocab_size, c.hidden_size)
        for i in range(c.num_layers):
            p = f"blk.{i}."
            shapes.update({p + "attn_norm.weight": (c.hidden_size,), p + "ffn_norm.weight": (c.hidden_size,),
                           p + "attn_q.weight": (q, c.hidden_size), p + "attn_k.weight": (kv, c.hidden_size),
                           p + "attn_v.weight": (kv, c.hidden_size), p + "attn_output.weight": (c.hidden_size, q),
                           p + "ffn_gate.weight": (c.intermediate_size, c.hidden_size),
                           p + "ffn_up.weight": (c.intermediate_size, c.hidden_size),
                           p + "ffn_down.weight": (c.hidden_size, c.intermediate_size)})
            if c.attention_bias:
                shapes.update({p + "attn_q.bias": (q,), p + "attn_k.bias": (kv,), p + "attn_v.bias": (kv,)})
        return shapes

    def _check_tensors(self):
        expected = self.expected_shapes()
        missing = [n for n in expected if n not in self.names]
        if missing:
            raise ConvertError(f"{self.folder}: checkpoint lacks {len(missing)} tensors the config needs, e.g. {missing[0]}")
        for name, (shard, hf_name) in self.names.items():
            if name.endswith(".bias") and name not in expected:
                expected[name] = (shard.shape(hf_name)[0],)   # optional biases (Llama attention_bias/mlp_bias)
            if name not in expected:
                raise ConvertError(f"{os.path.basename(shard.path)}: tensor {hf_name!r} does not belong to a "
                                   f"{self.config.num_layers}-layer model")
            if tuple(shard.shape(hf_name)) != expected[name]:
                raise ConvertError(f"{os.path.basename(shard.path)}: tensor {hf_name!r} has shape "
                                   f"{list(shard.shape(hf_name))}, expected {list(expected[name])} from config.json")

    def ordered_names(self):
        """Tensors in forward-pass order: embedding, layers, final norm, output."""
        def key(n):
            m = re.match(r"blk\.(\d+)\.", n)
            return (1, int(m.group(1)), n) if m else ({"token_embd.weight": 0}.get(n, 2), 0, n)
        return sorted(self.names, key=key)

    def tensor(self, name):
        shard, hf_name = self.names[name]
        return shard.float32(hf_name)

    def source_dtype(self):
        return self.config_json.get("torch_dtype") or self.config_json.get("dtype") or "unknown"

    def file_hashes(self):
        out = {}
        for fname in sorted(os.listdir(self.folder)):
            p = os.path.join(self.folder, fname)
            if os.path.isfile(p) and (fname.endswith((".json", ".safetensors", ".model", ".jinja"))):
                h = hashlib.sha256()
                with open(p, "rb") as f:
                    for chunk in iter(lambda: f.read(1 << 22), b""):
                        h.update(chunk)
                out[fname] = {"sha256": h.hexdigest(), "bytes": os.path.getsize(p)}
        return out

    # ---------------------------------------------------------------- tokenizer and chat

    def tokenizer_blobs(self):
        blobs = {}
        for fname in ("tokenizer.model", "tokenizer.json"):
            p = os.path.join(self.folder, fname)
            if os.path.exists(p):
                with open(p, "rb") as f:
                    blobs[fname] = f.read()
        if not blobs:
            raise ConvertError(f"{self.folder}: no tokenizer.model or tokenizer.json found")
        return blobs

    def chat_template(self):
        t = self.tokenizer_config.get("chat_template")
        if isinstance(t, list):   # named templates: take "default"
            t = next((x.get("template") for x in t if isinstance(x, dict) and x.get("name") == "default"), None)
        jinja = os.path.join(self.folder, "chat_template.jinja")
        if t is None and os.path.exists(jinja):
            with open(jinja, encoding="utf-8") as f:
                t = f.read()
        return t if isinstance(t, str) else None
