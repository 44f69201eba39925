"""Named quantization mixes (like llama.cpp's Q4_K_M etc.): which type each weight gets, by how
sensitive it is, plus user overrides `REGEX=TYPE`. format_spec/types/kquants.md documents them.

Roles: attn_v and ffn_down matter most among layer weights; the output matrix matters most of all
(it is token_embd when embeddings are tied, 60% of pychat-30m's weights, so its type is chosen
per mix with the file size in mind: `tied_embd`)."""
import re
from dataclasses import dataclass

from lowbit import quants
from lowbit.errors import ConvertError


@dataclass(frozen=True)
class Mix:
    base: str                 # every 2-D weight not named below
    roles: dict               # role -> type, or (type on chosen layers, type elsewhere[, layer rule])
    tied_embd: str            # token_embd.weight when it is also the output matrix
    description: str


MORE_BITS = "first and last eighth of the layers and every third layer between"


def use_more_bits(layer: int, n_layers: int) -> bool:
    """The layers that get more bits in *_m mixes (llama.cpp's rule)."""
    return layer < n_layers // 8 or layer >= 7 * n_layers // 8 or (layer - n_layers // 8) % 3 == 2


def first_layers(k: int):
    """Rule: the first k layers."""
    return lambda layer, n_layers: layer < k


def first_part(d: int):
    """Rule: the first n_layers/d layers (at least none)."""
    return lambda layer, n_layers: layer < n_layers // d


MIXES = {
    "q2_k": Mix("q2_k", {"attn_v": "q3_k", "ffn_down": "q3_k", "attn_output": "q3_k", "output": "q6_k"}, "q2_k",
                "q2_k; attn_v, ffn_down, attn_output q3_k; output q6_k"),
    "q3_k_s": Mix("q3_k", {"output": "q6_k"}, "q3_k", "q3_k; output q6_k"),
    "q3_k_m": Mix("q3_k", {"attn_v": ("q5_k", "q4_k", first_layers(2)), "ffn_down": ("q5_k", "q4_k", first_part(16)),
                           "attn_output": "q4_k", "output": "q6_k"}, "q4_k",
                  "q3_k; attn_v q5_k (first 2 layers) else q4_k; ffn_down q5_k (first 1/16 of the layers) else "
                  "q4_k; attn_output q4_k; output q6_k"),
    "q4_k_s": Mix("q4_k", {"attn_v": ("q5_k", "q4_k", first_layers(4)), "ffn_down": ("q5_k", "q4_k", first_part(8)),
                           "output": "q6_k"}, "q4_k",
                  "q4_k; attn_v q5_k (first 4 layers); ffn_down q5_k (first 1/8 of the layers); output q6_k"),
    "q4_k_m": Mix("q4_k", {"attn_v": ("q6_k", "q4_k"), "ffn_down": ("q6_k", "q4_k"), "output": "q6_k"}, "q4_k",
                  f"q4_k; attn_v, ffn_down q6_k ({MORE_BITS}); output q6_k"),
    "q5_k_s": Mix("q5_k", {"output": "q6_k"}, "q5_k", "q5_k; output q6_k"),
    "q5_k_m": Mix("q5_k", {"attn_v": ("q6_k", "q5_k"), "ffn_down": ("q6_k", "q5_k"), "output": "q6_k"}, "q5_k",
                  f"q5_k; attn_v, ffn_down q6_k ({MORE_BITS}); output q6_k"),
    "q6_k": Mix("q6_k", {}, "q6_k", "q6_k everywhere"),
    # Codebook mixes (format_spec/types/codebook.md): 2-bit learned codebooks, more bits where it matters.
    "cb2_s": Mix("cbk2", {"attn_v": "cbk4.h", "output": "q4_k"}, "cbk2.h", "cbk2; attn_v cbk4.h; output q4_k"),
    "cb2_m": Mix("cbk2", {"attn_v": "cbk4.h", "ffn_down": ("cbk4.h", "cbk2"), "output": "q4_k"}, "cbk2.h",
                 f"cbk2; attn_v cbk4.h; ffn_down cbk4.h ({MORE_BITS}); output q4_k"),
    "cb3_m": Mix("cbk2", {"attn_v": "cbk4", "ffn_down": "cbk4.h", "attn_output": "cbk4.h", "output": "q5_k"}, "cbk4.h",
                 "cbk2; attn_v cbk4; ffn_down, attn_output cbk4.h; output q5_k"),
}


def parse_overrides(specs) -> list:
    """['REGEX=TYPE', ...] -> [(compiled regex, type)]; the regex must match the whole tensor name."""
    out = []
    for spec in specs or ():
        pattern, sep, typ = str(spec).rpartition("=")
        if not sep or not pattern:
            raise ConvertError(f"override {spec!r}: expected REGEX=TYPE, e.g. 'blk\\.0\\..*=q8_0'")
        if typ not in quants.TYPES or typ == "u8":
            raise ConvertError(f"override {spec!r}: unknown type {typ!r} (known: {', '.join(t for t in quants.TYPES if t != 'u8')})")
        try:
            out.append((re.compile(pattern), typ))
        except re.error as e:
            raise ConvertError(f"override {spec!r}: invalid regular expression ({e})") from None
    return out


def _role(name: str):
    m = re.fullmatch(r"blk\.(\d+)\.(\w+)\.weight", name)
    if m:
        return m.group(2), int(m.group(1))
    return name.split(".")[0], None


def is_known(requested: str) -> bool:
    return requested in MIXES or (requested in quants.TYPES and requested != "u8")


def assign_types(requested: str, shapes: dict, n_layers: int, tied: bool, overrides=()) -> dict:
    """{tensor name: type} for every tensor. `requested` is a plain type or a mix name; 1-D
    tensors (norms, biases) stay f32; an override (first match wins) beats the mix."""
    if not is_known(requested):
        raise ConvertError(f"unknown type or mix {requested!r}; types: {', '.join(t for t in quants.TYPES if t != 'u8')}; "
                           f"mixes: {', '.join(MIXES)}")
    rules = parse_overrides(overrides) if overrides and not isinstance(overrides[0], tuple) else list(overrides)
    used = [False] * len(rules)
    mix = MIXES.get(requested)
    types = {}
    for name, shape in shapes.items():
        if len(shape) == 1:
            types[name] = "f32"
            continue
        t = requested
        if mix is not None:
            role, layer = _role(name)
            if role == "token_embd" and tied:
                t = mix.tied_embd
            else:
                t = mix.roles.get(role, mix.base)
                if isinstance(t, tuple):
                    rule = t[2] if len(t) > 2 else use_more_bits
                    t = t[0] if layer is not None and rule(layer, n_layers) else t[1]
        for i, (rx, typ) in enumerate(rules):
            if rx.fullmatch(name):
                t, used[i] = typ, True
                break
        types[name] = t
    for (rx, typ), u in zip(rules, used):
        if not u:
            raise ConvertError(f"override {rx.pattern}={typ} matches no weight tensor of this model")
    return types
