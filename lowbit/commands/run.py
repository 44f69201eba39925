"""lowbit run: generate text from a prompt (or answer one chat message), streamed to stdout."""
import json
import sys
import time

from .common import add_sampling_args, sampling_overrides


def register(sub):
    p = sub.add_parser("run", help="generate text from a prompt",
                       description="Load a .lowbit file (memory-mapped) and stream a continuation of the prompt.")
    p.add_argument("model", help="a .lowbit file")
    p.add_argument("-p", "--prompt", help="prompt text (default: read standard input)")
    p.add_argument("-n", "--max-tokens", type=int, default=256, help="tokens to generate at most (default 256)")
    p.add_argument("--chat", action="store_true", help="treat the prompt as one user message: render it with the "
                                                       "model's chat template and print only the reply")
    p.add_argument("--system", help="system prompt (with --chat)")
    p.add_argument("--json", action="store_true", help="print one JSON object: the reply (or continuation), "
                                                       "token counts and timings")
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
    if args.system is not None and not args.chat:
        raise ValueError("--system needs --chat")
    model = lowbit.load(args.model, n_ctx=args.ctx, device=args.device)
    if args.chat:
        return run_chat(model, prompt, args)
    if args.json:
        t0 = time.perf_counter()
        text = "".join(model.generate(prompt, max_tokens=args.max_tokens, stop=args.stop, **sampling_overrides(args)))
        s = model.last_stats
        print(json.dumps({"prompt": prompt, "text": text, "prompt_tokens": s.prompt_tokens,
                          "generated_tokens": s.generated_tokens, "stop_reason": s.stop_reason,
                          "seconds": round(time.perf_counter() - t0, 4), "prefill_seconds": round(s.prefill_seconds, 4),
                          "decode_seconds": round(s.decode_seconds, 4),
                          "prefill_tokens_per_second": round(s.prefill_tps, 2),
                          "decode_tokens_per_second": round(s.decode_tps, 2), "token_ids": s.token_ids},
                         ensure_ascii=False))
        return 0
    sys.stdout.write(prompt)
    sys.stdout.flush()
    for piece in model.generate(prompt, max_tokens=args.max_tokens, stop=args.stop, **sampling_overrides(args)):
        sys.stdout.write(piece)
        sys.stdout.flush()
    sys.stdout.write("\n")
    s = model.last_stats
    if args.verbose and s:
        print(f"backend {model.backend}", file=sys.stderr)
        print(f"prompt: {s.prompt_tokens} tokens, {s.prefill_tps:.1f} tokens/s; generated: {s.generated_tokens} "
              f"tokens, {s.decode_tps:.1f} tokens/s; stop: {s.stop_reason}", file=sys.stderr)
    return 0


def run_chat(model, message, args):
    """One user message through the chat template; the reply streams (or comes as JSON)."""
    from ..chat import ChatSession
    if args.max_tokens < 1:
        raise ValueError("--max-tokens must be >= 1 with --chat")
    session = ChatSession(model, system=args.system, max_tokens=args.max_tokens, **sampling_overrides(args))
    session.stop_strings += [s for s in args.stop if s]
    t0 = time.perf_counter()
    pieces = []
    for piece in session.reply(message):
        pieces.append(piece)
        if not args.json:
            sys.stdout.write(piece)
            sys.stdout.flush()
    t = session.last
    if args.json:
        out = {"reply": "".join(pieces), **t.to_json(), "seconds": round(time.perf_counter() - t0, 4),
               "token_ids": t.token_ids}
        print(json.dumps(out, ensure_ascii=False))
        return 0
    sys.stdout.write("\n")
    if args.verbose:
        print(f"backend {model.backend}", file=sys.stderr)
        print(f"prompt: {t.prompt_tokens} tokens, {t.prefill_tps:.1f} tokens/s; first token after "
              f"{t.ttft_seconds:.2f} s; generated: {t.generated_tokens} tokens, {t.decode_tps:.1f} tokens/s; "
              f"stop: {t.stop_reason}", file=sys.stderr)
    return 0
