"""lowbit imatrix: mean squared input activations per linear layer over calibration text."""
import os
import sys


def register(sub):
    p = sub.add_parser("imatrix", help="compute an importance matrix over calibration text",
                       description="Run the model over calibration text (chunks of -c tokens, BOS first when the "
                                   "model uses one) and record, for every linear layer, the mean squared input "
                                   "activation of each input channel. The output is a lowbit container of f32 "
                                   "vectors named like the weights they apply to (format_spec/imatrix.md), read "
                                   "by 'lowbit convert --imatrix'.")
    p.add_argument("model", help="a .lowbit file (F16 or BF16 recommended)")
    p.add_argument("--text", "-f", required=True, help="calibration text, e.g. ../shared/data/pycode-calib.txt")
    p.add_argument("-o", "--output", required=True, help="output imatrix file")
    p.add_argument("-c", "--ctx-size", dest="n_ctx", type=int, default=512, help="tokens per chunk (default 512)")
    p.add_argument("--chunks", type=int, help="use at most this many chunks (default all)")
    p.add_argument("--hessian", action="store_true",
                   help="also record, per distinct linear input, the full second-moment matrix X^T X / n "
                        "(used by 'lowbit convert --imatrix' for GPTQ-style error feedback; about 80 MB for "
                        "pycode-30m) and, measured on the first 4 chunks by noise injection, each weight's "
                        "KL-divergence sensitivity (used by 'lowbit convert --target-bpw')")
    p.add_argument("--quiet", "-q", action="store_true", help="no per-chunk progress")
    p.set_defaults(func=run)


def run(args):
    import lowbit
    from .. import imatrix
    model = lowbit.load(args.model)

    def log(msg, end="\n"):
        if not args.quiet:
            print(msg, end=end, file=sys.stderr, flush=True)

    stats, info = imatrix.compute(model, args.text, args.n_ctx, args.chunks, log=log, hessian=args.hessian)
    imatrix.save(args.output, stats, os.path.basename(model.path), os.path.basename(args.text), info)
    extra = f" + {len(info['covariances'])} covariance matrices" if args.hessian else ""
    print(f"wrote {args.output}: {len(stats)} tensors{extra} from {info['tokens']} tokens ({info['chunks']} chunks "
          f"of {info['n_ctx']}), {info['seconds']:.1f} s", file=sys.stderr)
    return 0
