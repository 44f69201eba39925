"""Multi-turn sessions on pychat-30m (F16): KV-cache reuse, the context policy, interruption,
sampling, and greedy replies equal to transformers' (tests/data/pychat_greedy_replies.json,
made by tools/generators/chat_reference.py)."""
import json
import os

import pytest

import converters
import lowbit
from lowbit.chat import ChatSession, encode_rendered
from lowbit.errors import LowbitError
from lowbit.generate import GenerationStats, generate_ids
from lowbit.sampling import Sampler, SamplingParams

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared")
REFERENCE = os.path.join(ROOT, "tests", "data", "pychat_greedy_replies.json")
FLATTEN = "Write a Python function `flatten(items)`: Flatten a nested list into a flat list."
ADD = "Write a Python function `add(a, b)`: Add two numbers."

# Greedy replies checked by default: the prompts with the smallest top-1/top-2 logit gaps on the
# reference path (11, 21) and replies that end on <|im_end|> (17, 35, 44). LOWBIT_CHAT_ALL=1
# checks all 50 (about 4,500 tokens: minutes on a small machine).
GREEDY_SUBSET = [11, 17, 21, 35, 44]


@pytest.fixture(scope="module")
def pychat(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("chat") / "pychat-f16.lowbit")
    converters.convert(os.path.join(SHARED, "models", "pychat-30m"), path, "f16")
    return lowbit.load(path)


def fresh_greedy(model, ids, max_tokens):
    """The reply to `ids` from an empty cache: the oracle for what reuse must reproduce."""
    stats = GenerationStats()
    cache = model.transformer.new_cache()
    sampler = Sampler(SamplingParams(temperature=0.0))
    return list(generate_ids(model.transformer, cache, ids, sampler, max_tokens, model.eos_ids | {2}, stats))


def test_second_turn_processes_only_its_new_tokens(pychat):
    s = ChatSession(pychat, system="You write Python.", max_tokens=64, temperature=0)
    reply1 = s.ask(FLATTEN)
    t1 = s.last
    assert t1.reused_tokens == 0 and t1.new_tokens == t1.prompt_tokens
    assert t1.stop_reason == "end of turn" and "```python" in reply1 and "<|im_end|>" not in reply1
    s.ask(ADD)
    t2 = s.last
    # the cache holds prompt 1 and reply 1 (its end token was sampled, never fed)
    assert t2.reused_tokens == t1.prompt_tokens + t1.generated_tokens - 1
    turn_text = "<|im_end|>\n<|im_start|>user\n" + ADD + "<|im_end|>\n<|im_start|>assistant\n"
    assert t2.new_tokens == len(encode_rendered(pychat.tokenizer, turn_text))
    assert t2.prompt_tokens == t2.reused_tokens + t2.new_tokens
    # the prompt is the rendered conversation (reply 1 as the model's own tokens), and reuse
    # changes nothing: the same reply as a fresh prefill of that prompt
    ids2 = s.cached_ids[:t2.prompt_tokens]
    rendered = s.template.render(s.conversation()[:-1], True)
    assert pychat.tokenizer._hf.decode(ids2, skip_special_tokens=False) == rendered
    assert t2.token_ids == fresh_greedy(pychat, ids2, 64)


def test_reset_keeps_the_cached_system_prompt(pychat):
    s = ChatSession(pychat, system="You write Python.", max_tokens=4, temperature=0)
    s.ask(FLATTEN)
    s.reset()
    assert s.conversation() == [{"role": "system", "content": "You write Python."}]
    s.ask("Thanks.")
    sys_ids = encode_rendered(pychat.tokenizer, "<|im_start|>system\nYou write Python.<|im_end|>\n<|im_start|>user\n")
    assert s.last.reused_tokens == len(sys_ids)


def test_interrupted_reply_stays_in_the_conversation(pychat):
    s = ChatSession(pychat, max_tokens=200, temperature=0)
    count = {"n": 0}

    def stop_after_five():
        count["n"] += 1
        return count["n"] >= 5

    partial = "".join(s.reply(FLATTEN, should_stop=stop_after_five))
    assert s.last.stop_reason == "interrupted" and s.last.generated_tokens == 5
    assert s.messages[-1] == {"role": "assistant", "content": partial} and partial.startswith("```")
    # closing the stream early (a consumer that stops reading) also ends the turn cleanly
    gen = s.reply(ADD)
    next(gen)
    gen.close()
    assert s.last.stop_reason == "interrupted" and len(s.messages) == 4
    s.set_sampling(max_tokens=8)
    s.ask("Thanks.")
    assert s.last.reused_tokens > 0 and s.last.stop_reason in ("max tokens", "end of turn")


def test_full_context_drops_oldest_turns_and_keeps_the_system_prompt(pychat):
    model = lowbit.load(pychat.path, n_ctx=160)
    s = ChatSession(model, system="Answer in Python.", max_tokens=24, temperature=0)
    for msg in (FLATTEN, ADD, "Write a Python function `mul(a, b)`: Multiply.", FLATTEN, ADD):
        s.ask(msg)
        assert s.cache.pos <= s.n_ctx
    assert s.first > 0, "the conversation should have outgrown 160 tokens"
    window = s.conversation(window=True)
    assert window[0] == {"role": "system", "content": "Answer in Python."}
    assert window[-1]["role"] == "assistant" and window[-2] == {"role": "user", "content": ADD}
    assert len(s.conversation()) == 11       # /save still has every message
    # one message longer than the context is refused, and the session goes on
    with pytest.raises(LowbitError, match="does not fit the context"):
        s.ask("word " * 400)
    assert len(s.messages) == 10
    s.ask(ADD)
    assert s.last.generated_tokens > 0


def test_same_seed_same_reply(pychat):
    def sample(seed):
        s = ChatSession(pychat, max_tokens=16, temperature=1.0, top_k=0, top_p=1.0, min_p=0.0, seed=seed)
        return s.ask(ADD), s.last.token_ids
    a, b = sample(1234), sample(1234)
    assert a == b
    assert sample(99)[1] != a[1]


def test_set_sampling_validates_and_takes_effect(pychat):
    s = ChatSession(pychat, max_tokens=4)
    s.set_sampling(temperature=0.0, top_k=5, max_tokens=12)
    assert s.params.temperature == 0.0 and s.params.top_k == 5 and s.max_tokens == 12
    with pytest.raises(ValueError):
        s.set_sampling(top_p=0.0)
    with pytest.raises(ValueError):
        s.set_sampling(max_tokens=0)
    with pytest.raises(TypeError):
        s.set_sampling(bogus=1)


def test_presence_penalty_changes_greedy_output(pychat):
    plain = ChatSession(pychat, max_tokens=24, temperature=0)
    plain.ask(FLATTEN)
    penalized = ChatSession(pychat, max_tokens=24, temperature=0, presence_penalty=5.0)
    penalized.ask(FLATTEN)
    ids = penalized.last.token_ids
    assert ids != plain.last.token_ids
    assert len(set(ids)) == len(ids), "a large presence penalty forbids any repeat within the window"


def greedy_cases():
    with open(REFERENCE, encoding="utf-8") as fh:
        ref = json.load(fh)
    picked = range(len(ref["cases"])) if os.environ.get("LOWBIT_CHAT_ALL") == "1" else GREEDY_SUBSET
    return [pytest.param(ref, i, id=f"prompt{i}") for i in picked]


@pytest.mark.parametrize("ref,index", greedy_cases())
def test_greedy_reply_equals_transformers(pychat, ref, index):
    case = ref["cases"][index]
    s = ChatSession(pychat, max_tokens=ref["max_new_tokens"], temperature=0)
    for m in case["messages"][:-1]:
        s.load_messages(s.conversation() + [m])
    reply = s.ask(case["messages"][-1]["content"])
    assert s.last.prompt_tokens == len(case["prompt_ids"])
    assert s.last.token_ids == case["reply_ids"]
    assert reply == case["reply"]
    assert (s.last.stop_reason == "end of turn") == case["ended_on_eos"]
