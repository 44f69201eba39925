"""lowbit convert: Hugging Face checkpoint folder -> .lowbit file."""
import json
import os
import sys


def register(sub):
    from .. import quants
    from converters.recipes import MIXES
    from converters.target_bpw import CANDIDATES_HELP
    types = [t for t in quants.TYPES if t != "u8"]
    p = sub.add_parser("convert", help="convert a Hugging Face checkpoint folder to a .lowbit file",
                       description="Convert a Hugging Face checkpoint folder (config.json, *.safetensors, "
                                   "tokenizer.model or tokenizer.json) to one self-describing .lowbit file. "
                                   "The output is written atomically: an interrupted conversion leaves no file.")
    p.add_argument("source", help="checkpoint folder, e.g. ../shared/models/pycode-30m")
    p.add_argument("-o", "--output", help="output file (default: <folder name>-<type>.lowbit)")
    p.add_argument("-t", "--type", default="q8_0", metavar="TYPE",
                   help=f"weight type ({', '.join(types)}) or mix ({', '.join(MIXES)}); default q8_0")
    p.add_argument("--override", action="append", default=[], metavar="REGEX=TYPE",
                   help="store the weights whose full name matches REGEX as TYPE (repeatable; first match wins), "
                        "e.g. --override 'blk\\.0\\..*=q8_0'")
    p.add_argument("--imatrix", metavar="FILE",
                   help="importance matrix (from `lowbit imatrix`) weighting the quantization error per input channel")
    p.add_argument("--no-gptq", dest="gptq", action="store_false",
                   help="ignore the imatrix file's covariance matrices (plain per-block fits instead of GPTQ "
                        "error feedback)")
    p.add_argument("--target-bpw", type=float, metavar="X",
                   help="choose a type per weight (q2_k..q6_k, q8_0, or --candidates) for a file of at most X bits "
                        "per checkpoint weight, minimizing the measured output error; needs --imatrix; -t is ignored")
    p.add_argument("--candidates", metavar="LIST", help=CANDIDATES_HELP)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.set_defaults(func=run)


def run(args):
    from converters import convert
    tag = f"bpw{args.target_bpw:g}" if args.target_bpw is not None else args.type
    out = args.output or f"{os.path.basename(os.path.normpath(args.source))}-{tag}.lowbit"
    summary = convert(args.source, out, args.type, progress=True, overrides=args.override, imatrix=args.imatrix,
                      gptq=args.gptq, target_bpw=args.target_bpw, candidates=args.candidates)
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(f"wrote {summary['path']}: {summary['bytes']:,} bytes, {summary['bits_per_weight']:.3f} bits/weight, "
              f"{summary['seconds']:.1f} s; tensor types {summary['tensor_types']}", file=sys.stderr)
    return 0
