"""lowbit run: generate text from a prompt, streamed to stdout."""
import sys

from .common import add_sampling_args, sampling_overrides


def register(sub):
    p = sub.add_parser("run", help="generate text from a prompt",
                       description="Load a .lowbit file (memory-mapped) and stream a continuation of the prompt.")
    p.add_argument("model", help="a .lowbit file")
    p.add_argument("-p", "--prompt", help="prompt text (default: read standard input)")
    p.add_argument("-n", "--max-tokens", type=int, default=256, help="tokens to generate at most (default 256)")
    p.add_argument("--stop", action="append", default=[], help="stop before this text (repeatable)")
    p.add_argument("--ctx", type=int, help="context length (default: the model's)")
    p.add_argument("--device", choices=("cpu", "cuda", "auto"), default="cpu",
                   help="where to run: cpu (default), cuda (NVIDIA GPU; falls back to the CPU with a message) or auto")
    p.add_argument("--verbose", "-v", action="store_true", help="print timings to stderr")
    add_sampling_args(p)
    p.set_defaults(func=run)


def run(args):
    import lowbit
    prompt = args.prompt if args.prompt is not None else sys.stdin.read()
    if args.max_tokens < 0:
        raise ValueError("--max-tokens must be >= 0")
    model = lowbit.load(args.model, n_ctx=args.ctx, device=args.device)
    sys.stdout.write(prompt)
    sys.stdout.flush()
    for piece in model.generate(prompt, max_tokens=args.max_tokens, stop=args.stop, **sampling_overrides(args)):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    s = model.last_stats
    if args.verbose and s:
        print(f"prompt: {s.prompt_tokens} tokens, {s.prefill_tps:.1f} tokens/s; generated: {s.generated_tokens} "
              f"tokens, {s.decode_tps:.1f} tokens/s; stop: {s.stop_reason}", file=sys.stderr)
    return 0
