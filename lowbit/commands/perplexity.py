"""lowbit perplexity: llama-perplexity's method (chunks of -c tokens, BOS first, second half
scored) and KL divergence against a saved base run."""
import json
import sys


def register(sub):
    p = sub.add_parser("perplexity", help="perplexity and KL divergence over a text (llama.cpp's method)",
                       description="Tokenize the text, cut it into non-overlapping chunks of -c tokens, evaluate "
                                   "each in a fresh context (first token = BOS when the model uses one) and score "
                                   "the second half of each chunk, as llama-perplexity does. With "
                                   "--kl-divergence-base FILE alone, also save the tokens and the scored positions' "
                                   "final hidden states to FILE (the base logits are recomputed from them and this "
                                   "file's output matrix); with --kl-divergence, compare this model against that saved base.")
    p.add_argument("model", help="a .lowbit file")
    p.add_argument("-f", "--file", dest="text", help="text file (not needed with --kl-divergence: the base "
                                                     "file holds the tokens)")
    p.add_argument("-c", "--ctx-size", dest="n_ctx", type=int, default=None,
                   help="tokens per chunk (default 512, or the base file's)")
    p.add_argument("--chunks", type=int, help="evaluate at most this many chunks (default all)")
    p.add_argument("--kl-divergence-base", dest="kld_base", metavar="FILE",
                   help="base log-probs file: written by this run, or read with --kl-divergence")
    p.add_argument("--kl-divergence", dest="kld", action="store_true",
                   help="report KL(base || this model) and top-1 agreement against --kl-divergence-base")
    p.add_argument("--json", action="store_true", help="print the result as JSON on stdout at the end")
    p.add_argument("--quiet", "-q", action="store_true", help="no per-chunk progress")
    p.set_defaults(func=run)


def run(args):
    import lowbit
    from .. import perplexity
    if args.kld and not args.kld_base:
        raise ValueError("--kl-divergence needs --kl-divergence-base FILE (written by a base run)")
    if not args.kld and not args.text:
        raise ValueError("a text file is needed: -f FILE")
    model = lowbit.load(args.model)

    def log(msg, end="\n"):
        if not args.quiet:
            print(msg, end=end, file=sys.stderr, flush=True)

    r = perplexity.run(model, args.text if not args.kld else None,
                       n_ctx=args.n_ctx if args.n_ctx is not None else (None if args.kld else 512),
                       n_chunks=args.chunks,
                       save_base_path=args.kld_base if not args.kld else None,
                       kld_base_path=args.kld_base if args.kld else None, log=log)
    print(perplexity.format_summary(r), file=sys.stderr if args.json else sys.stdout)
    if args.kld_base and not args.kld:
        print(f"saved the base run over {r.scored.count} tokens to {args.kld_base}", file=sys.stderr)
    print(f"{r.n_chunks} chunks, {r.scored.count} scored tokens, {r.seconds:.1f} s", file=sys.stderr)
    if args.json:
        print(json.dumps({"model": model.path, **r.to_json()}, indent=2))
    return 0
