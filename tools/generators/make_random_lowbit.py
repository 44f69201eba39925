"""Write a lowbit file with random quantized weights (valid fp16 scales, random quant bits) in a
given model shape: the GPU benchmark's Llama-2-7B stand-in, made on the machine that runs it.

    python -m tools.generators.make_random_lowbit out.lowbit --type q4_k_m   # or q2_k (mix), q8_0, f16, bf16, f32, q2_k..q6_k,
                                                               # q4_ke, cbk2, cbk4, d4l2 and the .h types via --type
    python -m tools.generators.make_random_lowbit small.lowbit --type q8_0 --dim 512 --layers 2 --heads 8 --ffn 1024 --vocab 1000
"""
import argparse
import os
import time

import numpy as np

from lowbit.format import TensorSpec, write_lowbit
from tools.generators.random_weights import random_blocks

HTYPES = ("q4_k.h", "q4_ke.h", "cbk2.h", "cbk4.h", "d4l2.h")   # Huffman-coded: the base's random bytes, coded
LLAMA2_7B = dict(dim=4096, layers=32, heads=32, kv_heads=32, ffn=11008, vocab=32000)


def use_more_bits(i, n):
    """llama.cpp's Q4_K_M rule for which layers' attn_v / ffn_down get Q6_K."""
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def tensor_type(mix, name, layer, n_layers):
    """llama.cpp's q4_k_m and q2_k mixes (as in converters/recipes.py); any other name: one type."""
    if mix == "q2_k":
        if name == "output.weight":
            return "q6_k"
        return "q3_k" if name.endswith(("attn_v.weight", "ffn_down.weight")) else "q2_k"
    if mix != "q4_k_m":
        return mix
    if name == "output.weight":
        return "q6_k"
    if name.endswith(("attn_v.weight", "ffn_down.weight")) and use_more_bits(layer, n_layers):
        return "q6_k"
    return "q4_k"


def random_tensor(qtype, rows, cols, rng, from_floats=False):
    """Random bytes with valid scales (fast, for the 7B stand-ins), or, with from_floats, N(0, 0.05)
    weights run through the registry's quantizer (well-conditioned activations, for the tests)."""
    if qtype in ("q8_0", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k", "q4_ke", "cbk2", "cbk4", "d4l2") + HTYPES \
            and not from_floats:
        return random_blocks(qtype, rows, cols, rng)
    w = (rng.standard_normal((rows, cols), dtype=np.float32) * 0.05)
    from lowbit import quants
    return quants.get(qtype).quantize(w, None)


def make(path, mix="q4_k_m", dim=4096, layers=32, heads=32, kv_heads=None, ffn=11008, vocab=32000,
         seed=0, ctx=4096, bias=False, tied=False, from_floats=False):
    rng = np.random.default_rng(seed)
    kv_heads = kv_heads or heads
    hd = dim // heads
    arch = dict(arch="qwen2" if bias else "llama", vocab_size=vocab, hidden_size=dim, intermediate_size=ffn,
                num_layers=layers, num_heads=heads, num_kv_heads=kv_heads, head_dim=hd, context_length=ctx,
                rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=tied, attention_bias=bias)
    specs = []

    def mat(name, rows, cols, layer=0):
        t = tensor_type(mix, name, layer, layers)
        specs.append(TensorSpec(name, t, (rows, cols), lambda: random_tensor(t, rows, cols, rng, from_floats)))

    def vec(name, n, scale=1.0, base=0.0):
        specs.append(TensorSpec(name, "f32", (n,), lambda: (base + scale * rng.standard_normal(n)).astype(np.float32)))

    mat("token_embd.weight", vocab, dim)
    for i in range(layers):
        p = f"blk.{i}."
        vec(p + "attn_norm.weight", dim, 0.1, 1.0)
        vec(p + "ffn_norm.weight", dim, 0.1, 1.0)
        for nm, r, c in (("attn_q", heads * hd, dim), ("attn_k", kv_heads * hd, dim), ("attn_v", kv_heads * hd, dim),
                         ("attn_output", dim, heads * hd), ("ffn_gate", ffn, dim), ("ffn_up", ffn, dim), ("ffn_down", dim, ffn)):
            mat(p + nm + ".weight", r, c, i)
        if bias:
            for nm, r in (("attn_q", heads * hd), ("attn_k", kv_heads * hd), ("attn_v", kv_heads * hd)):
                vec(p + nm + ".bias", r, 0.1)
    vec("output_norm.weight", dim, 0.1, 1.0)
    if not tied:
        mat("output.weight", vocab, dim)
    write_lowbit(path, {"architecture": arch, "note": f"random weights ({mix}), for benchmarks and tests"}, specs)
    return path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out")
    ap.add_argument("--type", default="q4_k_m", help="q4_k_m (llama.cpp's mix of q4_k/q6_k), or one type for all matrices")
    for k, v in LLAMA2_7B.items():
        ap.add_argument(f"--{k.replace('_', '-')}", type=int, default=None if k == "kv_heads" else v)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    t0 = time.time()
    make(a.out, a.type, a.dim, a.layers, a.heads, a.kv_heads, a.ffn, a.vocab, a.seed)
    print(f"wrote {a.out}: {os.path.getsize(a.out) / 1e9:.2f} GB in {time.time() - t0:.1f} s")


if __name__ == "__main__":
    main()
