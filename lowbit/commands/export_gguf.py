"""lowbit export-gguf: .lowbit file -> GGUF file for llama.cpp."""
import json
import os
import sys


def register(sub):
    p = sub.add_parser("export-gguf", help="write a .lowbit file as a GGUF file for llama.cpp",
                       description="Write the weights of a .lowbit file as a GGUF file that llama.cpp loads, with "
                                   "the hyperparameters, tokenizer vocabulary and chat template it needs. Tensors "
                                   "already in GGML's layout are copied byte for byte; rows in a lowbit-only layout "
                                   "(k-quant rows that are not a multiple of 256) are requantized to the nearest "
                                   "GGML type and listed. The output is written atomically.")
    p.add_argument("source", help=".lowbit file")
    p.add_argument("-o", "--output", help="output file (default: the source name with .gguf)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args):
    from converters.gguf_export import export_gguf
    out = args.output or os.path.splitext(os.path.basename(args.source))[0] + ".gguf"
    summary = export_gguf(args.source, out)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"wrote {summary['path']}: {summary['bytes']:,} bytes; {len(summary['copied'])} tensors copied byte for "
              f"byte, {len(summary['requantized'])} requantized", file=sys.stderr)
    return 0
