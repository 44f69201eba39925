"""Time to first token per turn of a multi-turn chat, with KV-cache reuse (lowbit's ChatSession)
and without it (the whole conversation prefilled from an empty cache, what a stateless server or
a naive loop does). Prints a Markdown table.

    python -m tools.bench.chat_ttft FILE.lowbit [--turns 10] [--max-tokens 96] [--ctx N]

The user messages are the first prompts of ../shared/data/pychat-prompts.jsonl; replies are greedy.
"""
import argparse
import json
import os
import sys
import time

from tools._paths import SHARED


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--turns", type=int, default=10)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--ctx", type=int)
    ap.add_argument("--prompts", default=os.path.join(SHARED, "data", "pychat-prompts.jsonl"))
    ap.add_argument("--no-baseline", action="store_true", help="skip the no-reuse prefill timing")
    args = ap.parse_args(argv)

    import lowbit
    from lowbit.chat import ChatSession, encode_rendered

    with open(args.prompts, encoding="utf-8") as fh:
        messages = [json.loads(line)["messages"][-1]["content"] for line in fh if line.strip()]
    model = lowbit.load(args.model, n_ctx=args.ctx)
    session = ChatSession(model, system="You are a helpful Python assistant.", max_tokens=args.max_tokens,
                          temperature=0)
    session.ask("warm-up")      # compile/load the kernels outside the measurement
    session.reset()
    session.cache.pos = 0

    print(f"model {os.path.basename(args.model)}, context {session.n_ctx}, {args.turns} turns, greedy, "
          f"<= {args.max_tokens} tokens per reply, NUMBA_NUM_THREADS={os.environ.get('NUMBA_NUM_THREADS', 'default')}")
    print()
    print("| turn | prompt tokens | reused | new | TTFT with reuse (s) | TTFT without reuse (s) | reply tokens | "
          "decode tok/s | window |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for i in range(args.turns):
        msg = messages[i % len(messages)]
        session.ask(msg)
        t = session.last
        base = ""
        if not args.no_baseline:
            ids = encode_rendered(model.tokenizer, session.template.render(session.conversation(window=True)[:-1], True))
            cache = model.transformer.new_cache()
            t0 = time.perf_counter()
            model.transformer.forward(ids, cache)
            base = f"{time.perf_counter() - t0:.3f}"
        window = f"{session.first} messages dropped" if session.first else "all"
        print(f"| {i + 1} | {t.prompt_tokens} | {t.reused_tokens} | {t.new_tokens} | {t.ttft_seconds:.3f} | {base} | "
              f"{t.generated_tokens} | {t.decode_tps:.1f} | {window} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
