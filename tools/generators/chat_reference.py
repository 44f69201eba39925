"""Greedy chat replies from transformers, the oracle for lowbit's chat path.

For every prompt in ../shared/data/pychat-prompts.jsonl: render the model's chat template with
transformers (add_generation_prompt=True), tokenize it, and decode greedily in float32 for at most
--max-new-tokens tokens, stopping on generation_config's EOS ids. Writes the rendered prompt, its
token ids, the reply ids (the end-of-turn id included when one was produced) and the smallest
top-1/top-2 logit gap met along the way (a near-tie explains a divergence, should one appear).

A tool-only dependency on torch and transformers (pip install torch==2.13.0 transformers); the
tests read the committed JSON and never import torch.

    python -m tools.generators.chat_reference [--model ../shared/models/pychat-30m] \
        [--prompts ../shared/data/pychat-prompts.jsonl] [-o tests/data/pychat_greedy_replies.json]
"""
import argparse
import json
import os
import sys
import time

from tools._paths import ROOT, SHARED


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=os.path.join(SHARED, "models", "pychat-30m"))
    ap.add_argument("--prompts", default=os.path.join(SHARED, "data", "pychat-prompts.jsonl"))
    ap.add_argument("-o", "--output", default=os.path.join(ROOT, "tests", "data", "pychat_greedy_replies.json"))
    ap.add_argument("--max-new-tokens", type=int, default=96)
    args = ap.parse_args(argv)

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(args.model)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32).eval()
    gen = GenerationConfig.from_pretrained(args.model)
    eos = gen.eos_token_id if isinstance(gen.eos_token_id, list) else [gen.eos_token_id]

    with open(args.prompts, encoding="utf-8") as fh:
        prompts = [json.loads(line) for line in fh if line.strip()]
    cases = []
    t0 = time.time()
    for i, p in enumerate(prompts):
        text = tok.apply_chat_template(p["messages"], add_generation_prompt=True, tokenize=False)
        ids = tok(text, add_special_tokens=False).input_ids
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 do_sample=False, max_new_tokens=args.max_new_tokens, eos_token_id=eos,
                                 pad_token_id=eos[-1], output_scores=True, return_dict_in_generate=True)
        reply = out.sequences[0, len(ids):].tolist()
        gaps = [float(s[0].topk(2).values[0] - s[0].topk(2).values[1]) for s in out.scores]
        cases.append({"index": i, "messages": p["messages"], "prompt": text, "prompt_ids": ids,
                      "reply_ids": reply, "reply": tok.decode(reply, skip_special_tokens=True),
                      "ended_on_eos": bool(reply) and reply[-1] in eos, "min_top2_gap": min(gaps)})
        print(f"{i:3d}: {len(ids)} prompt + {len(reply)} reply tokens, eos {cases[-1]['ended_on_eos']}, "
              f"min gap {min(gaps):.4f}", file=sys.stderr)
    doc = {"model": "pychat-30m", "source": os.path.relpath(os.path.abspath(args.model), ROOT),
           "prompts": os.path.relpath(os.path.abspath(args.prompts), ROOT),
           "max_new_tokens": args.max_new_tokens, "eos_ids": eos, "dtype": "float32",
           "transformers": transformers.__version__, "torch": torch.__version__,
           "seconds": round(time.time() - t0, 1), "cases": cases}
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    tmp = args.output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(doc, fh, indent=1, ensure_ascii=False)
        fh.write("\n")
    os.replace(tmp, args.output)
    print(f"wrote {args.output}: {len(cases)} prompts", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
