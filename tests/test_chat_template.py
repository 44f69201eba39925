"""Chat templates, end-of-turn detection and conversation files (no generation: fast)."""
import json
import os

import pytest

import converters
import lowbit
from lowbit.chat import (ChatSession, ChatTemplate, FALLBACK_TEMPLATE, encode_rendered, end_of_turn,
                         load_conversation, save_conversation)
from lowbit.errors import LowbitError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared")
REFERENCE = os.path.join(ROOT, "tests", "data", "pychat_greedy_replies.json")


@pytest.fixture(scope="module")
def pychat(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("chat") / "pychat-f16.lowbit")
    converters.convert(os.path.join(SHARED, "models", "pychat-30m"), path, "f16")
    return lowbit.load(path)


@pytest.fixture(scope="module")
def reference():
    with open(REFERENCE, encoding="utf-8") as fh:
        return json.load(fh)


def test_renders_and_tokenizes_like_transformers(pychat, reference):
    """All 50 prompts: the same text and the same ids as transformers' apply_chat_template."""
    tmpl = ChatTemplate.for_model(pychat)
    assert not tmpl.builtin
    assert len(reference["cases"]) == 50
    for case in reference["cases"]:
        text = tmpl.render(case["messages"], add_generation_prompt=True)
        assert text == case["prompt"]
        assert encode_rendered(pychat.tokenizer, text) == case["prompt_ids"]


def test_chatml_rendering_of_a_conversation(pychat):
    tmpl = ChatTemplate.for_model(pychat)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"}]
    assert tmpl.render(msgs, add_generation_prompt=False) == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n"
        "<|im_start|>assistant\nhello<|im_end|>\n")
    assert tmpl.render(msgs[:2]).endswith("<|im_start|>assistant\n")


def test_end_of_turn_tokens_of_pychat(pychat):
    ids, stops = end_of_turn(pychat.tokenizer, ChatTemplate.for_model(pychat))
    tok = pychat.tokenizer
    assert tok.token_to_id("<|im_end|>") in ids and tok.token_to_id("<|endoftext|>") in ids
    assert stops == []


def test_template_environment_matches_transformers(pychat):
    tok = pychat.tokenizer
    t = ChatTemplate("{% if messages|length > 1 %}{{ raise_exception('only one message') }}{% endif %}"
                     "{{ bos_token }}[{{ eos_token }}]\n  {% for m in messages %}\n{{ m | tojson }}{% endfor %}",
                     bos_token="<s>", eos_token="</s>")
    # trim_blocks drops the newline after a block tag, lstrip_blocks the spaces before one
    assert t.render([{"role": "user", "content": "é"}]) == '<s>[</s>]\n{"role": "user", "content": "é"}'
    with pytest.raises(LowbitError, match="only one message"):
        t.render([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    assert tok.bos_token is None      # pychat's template gets no bos_token, as in transformers


def test_template_sandbox_refuses_python_internals():
    t = ChatTemplate("{{ messages.__class__.__mro__[1].__subclasses__() }}")
    with pytest.raises(LowbitError, match="chat template"):
        t.render([{"role": "user", "content": "x"}])


def test_broken_template_is_a_clear_error():
    with pytest.raises(LowbitError, match="does not compile"):
        ChatTemplate("{% for m in messages %}")


def test_model_without_template_uses_the_fallback(tmp_path):
    path = str(tmp_path / "stories.lowbit")
    converters.convert(os.path.join(SHARED, "models", "stories260K"), path, "f32")
    m = lowbit.load(path)
    assert not m.tokenizer.chat_template
    s = ChatSession(m, temperature=0, max_tokens=8)
    assert s.template.builtin and s.template.source == FALLBACK_TEMPLATE
    assert "\nUser:" in s.stop_strings
    s.ask("Once upon a time")
    assert s.last.generated_tokens >= 1
    assert s.template.render(s.conversation(), True).startswith("User: Once upon a time\n\nAssistant:")


def test_conversation_file_roundtrip(tmp_path):
    msgs = [{"role": "system", "content": "sys"}, {"role": "user", "content": "é\nx"},
            {"role": "assistant", "content": "ok"}]
    p = tmp_path / "c.json"
    save_conversation(p, msgs)
    assert json.loads(p.read_text(encoding="utf-8")) == {"messages": msgs}
    assert load_conversation(str(p)) == msgs
    (tmp_path / "list.json").write_text(json.dumps(msgs[1:]))
    assert load_conversation(str(tmp_path / "list.json")) == msgs[1:]


@pytest.mark.parametrize("content,error", [
    (None, "cannot read"),
    ("{not json", "not valid JSON"),
    (b"\xff\xfe\x00", "not UTF-8"),
    ('{"messages": 3}', "expected a JSON list"),
    ('[{"role": "user"}]', "message 0 is not an object"),
    ('[{"role": "robot", "content": "x"}]', "role 'robot'"),
    ('[{"role": "user", "content": "x"}, {"role": "system", "content": "y"}]', "only the first message"),
    ("[" * 100000 + "]" * 100000, "nested too deeply|not valid JSON"),
])
def test_bad_conversation_files_give_clear_errors(tmp_path, content, error):
    p = tmp_path / "bad.json"
    if isinstance(content, bytes):
        p.write_bytes(content)
    elif content is not None:
        p.write_text(content)
    with pytest.raises(LowbitError, match=error) as e:
        load_conversation(str(p))
    assert str(p) in str(e.value)


def test_save_to_an_unwritable_place_is_a_clear_error(tmp_path):
    with pytest.raises(LowbitError, match="cannot write"):
        save_conversation(tmp_path / "no" / "such" / "dir.json", [])
