"""Random-weight checkpoints in Hugging Face layout at real model shapes (speed only): config.json,
safetensors shards, and a real tokenizer copied at run time from ../shared (never into the repo).

  python -m tools.generators.make_random_checkpoint tinyllama-1.1b /tmp/tinyllama-random
  python -m lowbit.cli convert /tmp/tinyllama-random -t q8_0 -o /tmp/tinyllama-q8_0.lowbit
"""
import argparse
import json
import os
import shutil
import sys

import numpy as np

from tools._paths import SHARED

SHAPES = {   # name: (hidden, layers, heads, kv heads, ffn, vocab, context, rope theta)
    "stories110m": (768, 12, 12, 12, 2048, 32000, 1024, 10000.0),
    "tinyllama-1.1b": (2048, 22, 32, 4, 5632, 32000, 2048, 10000.0),
    "llama-2-7b": (4096, 32, 32, 32, 11008, 32000, 4096, 10000.0),
}
SHARD_BYTES = 2 << 30


def tensors(shape_name, rng):
    dim, layers, heads, kvh, ffn, vocab, _, _ = SHAPES[shape_name]
    hd = dim // heads

    def rand(*shape):   # bf16 is what real checkpoints ship; std 0.02 like HF's initializer
        w = (rng.standard_normal(shape, dtype=np.float32) * 0.02).view(np.uint32)
        return ((w + 0x7FFF + ((w >> 16) & 1)) >> 16).astype(np.uint16)

    yield "model.embed_tokens.weight", rand(vocab, dim)
    for i in range(layers):
        p = f"model.layers.{i}."
        for n, shape in (("self_attn.q_proj", (heads * hd, dim)), ("self_attn.k_proj", (kvh * hd, dim)),
                         ("self_attn.v_proj", (kvh * hd, dim)), ("self_attn.o_proj", (dim, heads * hd)),
                         ("mlp.gate_proj", (ffn, dim)), ("mlp.up_proj", (ffn, dim)), ("mlp.down_proj", (dim, ffn))):
            yield p + n + ".weight", rand(*shape)
        for n in ("input_layernorm", "post_attention_layernorm"):
            yield p + n + ".weight", np.full(dim, 0x3F80, np.uint16)   # 1.0 in bf16
    yield "model.norm.weight", np.full(dim, 0x3F80, np.uint16)
    yield "lm_head.weight", rand(vocab, dim)


def write(shape_name, out, seed=0):
    dim, layers, heads, kvh, ffn, vocab, ctx, theta = SHAPES[shape_name]
    tok = os.path.join(SHARED, "models", "pycode-30m", "tokenizer.model")
    if not os.path.exists(tok):
        raise SystemExit(f"{tok} not found: the tokenizer is copied from ../shared at run time")
    os.makedirs(out, exist_ok=True)
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": dim,
           "num_hidden_layers": layers, "num_attention_heads": heads, "num_key_value_heads": kvh,
           "head_dim": dim // heads, "intermediate_size": ffn, "vocab_size": vocab, "max_position_embeddings": ctx,
           "rms_norm_eps": 1e-5, "rope_theta": theta, "rope_scaling": None, "tie_word_embeddings": False,
           "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2, "torch_dtype": "bfloat16",
           "attention_bias": False}
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    shutil.copyfile(tok, os.path.join(out, "tokenizer.model"))
    rng = np.random.default_rng(seed)
    shards, cur, cur_bytes, index = [], {}, 0, {}

    def flush():
        nonlocal cur, cur_bytes
        if cur:
            name = f"model-{len(shards) + 1:05d}.safetensors"
            _write_safetensors_bf16(os.path.join(out, name), cur)
            shards.append(name)
            for k in cur:
                index[k] = name
            cur, cur_bytes = {}, 0

    for name, t in tensors(shape_name, rng):
        if cur_bytes + t.nbytes > SHARD_BYTES:
            flush()
        cur[name] = t
        cur_bytes += t.nbytes
    flush()
    with open(os.path.join(out, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {}, "weight_map": index}, f, indent=1)
    return out


def _write_safetensors_bf16(path, arrays):
    """safetensors with BF16 tensors (given as uint16 bits; safetensors.numpy has no bf16)."""
    header, off = {}, 0
    for k, a in arrays.items():
        header[k] = {"dtype": "BF16", "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        off += a.nbytes
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(path + ".tmp", "wb") as f:
        f.write(len(h).to_bytes(8, "little"))
        f.write(h)
        for a in arrays.values():
            f.write(np.ascontiguousarray(a).tobytes())
    os.replace(path + ".tmp", path)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shape", choices=sorted(SHAPES))
    ap.add_argument("out", help="output folder")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    print(write(args.shape, args.out, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
