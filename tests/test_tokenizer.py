"""Tokenizers embedded in the file reproduce the reference ids; streaming decode is exact."""
import pytest

import lowbit
from conftest import MODELS, reference
from lowbit.generate import stream_text
from lowbit.tokenizer import StreamDecoder


@pytest.mark.parametrize("model", MODELS)
def test_tokenize_matches_reference(model, converted):
    ref = reference(model)
    m = lowbit.load(converted(model, "q8_0"))
    assert m.tokenize(str(ref["prompt"])) == ref["ids"].tolist()


@pytest.mark.parametrize("model,kind", [("stories260K", "hf_tokenizers"), ("pycode-30m", "sentencepiece"),
                                        ("pychat-30m", "hf_tokenizers")])
def test_tokenizer_kind_and_specials(model, kind, converted):
    m = lowbit.load(converted(model, "q8_0"))
    assert m.tokenizer.kind == kind
    if model == "pychat-30m":
        assert m.tokenizer.bos_id is None and not m.tokenizer.add_bos
        assert set(m.tokenizer.eos_ids) == {0, 2}
        assert "<|im_start|>" in m.tokenizer.chat_template
    else:
        assert m.tokenizer.add_bos and m.tokenizer.bos_id == 1 and m.tokenizer.eos_ids == [2]


@pytest.mark.parametrize("model", ["pycode-30m", "pychat-30m"])
def test_stream_decoder_handles_multibyte_characters(model, converted):
    m = lowbit.load(converted(model, "q8_0"))
    text = "def größe(x):\n    return '日本語 ✓ 🚀' + x\n"
    ids = m.tokenize(text, add_bos=False)
    d = StreamDecoder(m.tokenizer)
    pieces = [d.push(i) for i in ids] + [d.flush()]
    assert "".join(pieces) == m.detokenize(ids)
    assert not any("\ufffd" in p for p in pieces)


def test_stream_text_keeps_leading_space_after_prompt(converted):
    m = lowbit.load(converted("pycode-30m", "q8_0"))
    full = m.tokenize("x = 1 + foo(bar)")
    prompt, cont = full[:5], full[5:]   # "<s> x = 1" | " + foo(bar)"
    expected = m.detokenize(full)[len(m.detokenize(prompt)):]
    assert expected.startswith(" ")   # the continuation begins with a space-carrying piece
    assert "".join(stream_text(m.tokenizer, iter(cont), context_ids=prompt)) == expected


def test_special_tokens_are_never_printed(converted):
    m = lowbit.load(converted("pychat-30m", "q8_0"))
    ids = m.tokenize("<|im_start|>assistant\nhi<|im_end|>")
    assert ids[0] == 1 and ids[-1] == 2
    assert "".join(stream_text(m.tokenizer, iter(ids))) == "assistant\nhi"
