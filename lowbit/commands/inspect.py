"""lowbit inspect: the header, metadata and tensor table of a .lowbit file."""
import json


def register(sub):
    p = sub.add_parser("inspect", help="show a file's header, metadata and tensors",
                       description="Validate a .lowbit file's header and print its metadata and tensor table.")
    p.add_argument("file", help="a .lowbit file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--tensors", action="store_true", help="list every tensor (default: a summary by type)")
    p.set_defaults(func=run)


def summarize(f) -> dict:
    """Sizes and bits per weight: over the model's weights (blobs excluded) and the whole file."""
    weights = [t for t in f.tensors.values() if t.type != "u8"]
    n = sum(t.rows * t.cols for t in weights)
    wbytes = sum(t.nbytes for t in weights)
    by_type = {}
    for t in weights:
        e = by_type.setdefault(t.type, {"tensors": 0, "weights": 0, "bytes": 0})
        e["tensors"] += 1
        e["weights"] += t.rows * t.cols
        e["bytes"] += t.nbytes
    return {"file_bytes": f.size, "header_bytes": f.data_offset, "weights": n, "weight_bytes": wbytes,
            "bits_per_weight": wbytes * 8 / n if n else 0.0, "file_bits_per_weight": f.size * 8 / n if n else 0.0,
            "by_type": by_type}


def run(args):
    from ..format import LowbitFile
    with LowbitFile(args.file) as f:
        summary = summarize(f)
        meta = dict(f.metadata)
        if args.json:
            print(json.dumps({"file": f.path, "version": 1, "summary": summary, "metadata": meta,
                              "tensors": [t.to_json() for t in f.tensors.values()]}, indent=2, ensure_ascii=False))
            return 0
        a, tok, prov = meta.get("architecture", {}), meta.get("tokenizer", {}), meta.get("provenance", {})
        print(f"file:          {f.path}")
        print(f"format:        lowbit v1, {summary['file_bytes']:,} bytes ({summary['header_bytes']:,} header)")
        print(f"architecture:  {a.get('arch')}  layers {a.get('num_layers')}, dim {a.get('hidden_size')}, "
              f"ffn {a.get('intermediate_size')}, heads {a.get('num_heads')}/{a.get('num_kv_heads')} (kv), "
              f"head_dim {a.get('head_dim')}, vocab {a.get('vocab_size')}, ctx {a.get('context_length')}")
        print(f"               rope theta {a.get('rope_theta')}, scaling {a.get('rope_scaling')}, "
              f"rms eps {a.get('rms_norm_eps')}, tied embeddings {a.get('tie_word_embeddings')}, "
              f"qkv bias {a.get('attention_bias')}")
        print(f"tokenizer:     {tok.get('kind')} ({tok.get('tensor')}), bos {tok.get('bos_id')} "
              f"(added: {tok.get('add_bos')}), eos {tok.get('eos_ids')}, chat template: "
              f"{'yes' if tok.get('chat_template') else 'no'}")
        print(f"generation:    {meta.get('generation') or {}}")
        print(f"provenance:    {prov.get('source')} ({prov.get('source_dtype')}), {prov.get('converter')}, "
              f"{prov.get('created')}")
        print(f"recipe:        {json.dumps(prov.get('recipe', {}).get('type'))}, "
              f"{len(prov.get('recipe', {}).get('fallbacks', {}))} fallbacks")
        print(f"weights:       {summary['weights']:,} in {summary['weight_bytes']:,} bytes: "
              f"{summary['bits_per_weight']:.3f} bits/weight ({summary['file_bits_per_weight']:.3f} over the whole file)")
        print()
        print(f"{'type':<8} {'tensors':>8} {'weights':>14} {'bytes':>14} {'bits/weight':>12}")
        for t, e in sorted(summary["by_type"].items()):
            print(f"{t:<8} {e['tensors']:>8} {e['weights']:>14,} {e['bytes']:>14,} {e['bytes'] * 8 / e['weights']:>12.3f}")
        if args.tensors:
            print()
            print(f"{'name':<32} {'type':<6} {'shape':<16} {'offset':>12} {'bytes':>12}  crc32")
            for t in f.tensors.values():
                print(f"{t.name:<32} {t.type:<6} {'x'.join(map(str, t.shape)):<16} {t.offset:>12} {t.nbytes:>12}  {t.crc32}")
        else:
            print(f"\n{len(f.tensors)} tensors (--tensors lists them)")
    return 0
