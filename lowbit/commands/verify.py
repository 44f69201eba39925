"""lowbit verify: check a file completely: header and tensor table (as every open does), every
tensor's CRC-32, and what running it needs (architecture valid, tokenizer loads, required tensors
present with the right shapes and known types). Reports every problem; exit 1 if any."""
import sys


def register(sub):
    p = sub.add_parser("verify", help="check a file's header, every tensor checksum and what running it needs",
                       description="Validate a .lowbit file completely: the header and tensor table, the CRC-32 "
                                   "of every tensor, the architecture metadata, the embedded tokenizer and the "
                                   "presence and shapes of the tensors the architecture needs. Exit 1 on any problem.")
    p.add_argument("file", help="a .lowbit file")
    p.add_argument("--quiet", "-q", action="store_true", help="print problems only")
    p.set_defaults(func=run)


def required_tensors(c) -> dict:
    """SPEC.md section 4: name -> shape for an architecture."""
    D, F, V = c.hidden_size, c.intermediate_size, c.vocab_size
    Q, K = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim
    need = {"token_embd.weight": (V, D), "output_norm.weight": (D,)}
    if not c.tie_word_embeddings:
        need["output.weight"] = (V, D)
    for i in range(c.num_layers):
        p = f"blk.{i}."
        need.update({p + "attn_norm.weight": (D,), p + "ffn_norm.weight": (D,), p + "attn_q.weight": (Q, D),
                     p + "attn_k.weight": (K, D), p + "attn_v.weight": (K, D), p + "attn_output.weight": (D, Q),
                     p + "ffn_gate.weight": (F, D), p + "ffn_up.weight": (F, D), p + "ffn_down.weight": (D, F)})
    return need


def optional_biases(c) -> dict:
    Q, K, D, F = c.num_heads * c.head_dim, c.num_kv_heads * c.head_dim, c.hidden_size, c.intermediate_size
    out = {}
    for i in range(c.num_layers):
        p = f"blk.{i}."
        out.update({p + "attn_q.bias": (Q,), p + "attn_k.bias": (K,), p + "attn_v.bias": (K,), p + "attn_output.bias": (D,),
                    p + "ffn_gate.bias": (F,), p + "ffn_up.bias": (F,), p + "ffn_down.bias": (D,)})
    return out


def verify(path) -> tuple:
    """(problems, summary lines). Problems are strings naming what is wrong."""
    from .. import quants
    from ..config import ModelConfig
    from ..errors import FormatError
    from ..format import LowbitFile
    from ..tokenizer import Tokenizer
    problems, notes = [], []
    try:
        f = LowbitFile(path)
    except FormatError as e:
        return [e.problem], notes
    with f:
        notes.append(f"header: ok ({len(f.tensors)} tensors, {f.size:,} bytes)")
        bad = f.verify()
        problems += [f"tensor {n!r}: CRC-32 mismatch (data corrupt)" for n in bad]
        if not bad:
            notes.append(f"checksums: all {len(f.tensors)} tensors ok")
        try:
            cfg = ModelConfig.from_json(f.path, f.metadata.get("architecture"))
            notes.append(f"architecture: {cfg.arch}, {cfg.num_layers} layers, dim {cfg.hidden_size}, vocab {cfg.vocab_size}")
        except FormatError as e:
            problems.append(e.problem)
            cfg = None
        if cfg is not None:
            need = required_tensors(cfg)
            for name, shape in {**need, **{k: v for k, v in optional_biases(cfg).items() if k in f.tensors}}.items():
                t = f.tensors.get(name)
                if t is None:
                    problems.append(f"tensor {name!r} is missing (the architecture needs it, shape {list(shape)})")
                elif tuple(t.shape) != shape:
                    problems.append(f"tensor {name!r} has shape {list(t.shape)}, the architecture needs {list(shape)}")
                elif t.type not in quants.TYPES:
                    problems.append(f"tensor {name!r} has type {t.type!r}, which this version of lowbit cannot read")
            if not any(p.startswith("tensor ") and "architecture" in p for p in problems):
                notes.append(f"tensors: all {len(need)} required tensors present with the right shapes")
        try:
            tok = Tokenizer(f)
            notes.append(f"tokenizer: {tok.kind}, {tok.vocab_size} tokens")
            if cfg is not None:
                if tok.vocab_size > cfg.vocab_size:
                    problems.append(f"tokenizer has {tok.vocab_size} tokens, more than vocab_size {cfg.vocab_size}")
                ids = tok.eos_ids + ([int(tok.bos_id)] if tok.bos_id is not None else [])
                if any(i >= cfg.vocab_size for i in ids):
                    problems.append(f"tokenizer bos/eos ids {ids} are not all below vocab_size {cfg.vocab_size}")
        except FormatError as e:
            problems.append(e.problem)
    return problems, notes


def run(args):
    problems, notes = verify(args.file)
    if not args.quiet:
        for n in notes:
            print(n)
    for p in problems:
        print(f"lowbit verify: {args.file}: {p}", file=sys.stderr)
    if problems:
        print(f"{args.file}: FAILED ({len(problems)} problem{'s' if len(problems) != 1 else ''})", file=sys.stderr)
        return 1
    print(f"{args.file}: OK")
    return 0
