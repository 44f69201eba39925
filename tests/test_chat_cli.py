"""`lowbit chat` driven as a person would, through a pseudo-terminal (pexpect), and
`lowbit run --chat` as a script would."""
import json
import os
import re
import subprocess
import sys

import pexpect
import pytest

import converters
import lowbit
from lowbit.chat import encode_rendered

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(ROOT, "..", "shared")
FLATTEN = "Write a Python function `flatten(items)`: Flatten a nested list into a flat list."
SECOND = "Write a Python function `is_even(n)`: Return True if n is even."
TIMEOUT = 180     # generous: the suite may run on a small, busy machine
TURN_LINE = re.compile(r"\[(\d+) new prompt tokens \((\d+) reused\), first token [\d.]+ s, (\d+) tokens at "
                       r"[\d.]+ tokens/s, stop: ([a-z ]+)\]")


@pytest.fixture(scope="module")
def model_path(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("chatcli") / "pychat-f16.lowbit")
    converters.convert(os.path.join(SHARED, "models", "pychat-30m"), path, "f16")
    return path


def env(home):
    e = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""), HOME=str(home),
             TERM="dumb", PYTHONUNBUFFERED="1")
    e.pop("LOWBIT_HISTORY", None)
    return e


def spawn(model_path, home, *extra):
    child = pexpect.spawn(sys.executable, ["-m", "lowbit.cli", "chat", model_path, *extra], cwd=ROOT,
                          env=env(home), encoding="utf-8", timeout=TIMEOUT, dimensions=(50, 200))
    child.expect("Type /help for commands")
    child.expect_exact(">>> ")
    return child


def turn(child, message):
    """Send a message; return (streamed reply, new tokens, reused tokens, generated, stop reason)."""
    child.sendline(message)
    child.expect(TURN_LINE)
    text = child.before
    new, reused, generated, stop = child.match.groups()
    child.expect_exact(">>> ")
    return text, int(new), int(reused), int(generated), stop


def test_interactive_session(model_path, tmp_path):
    child = spawn(model_path, tmp_path, "--temperature", "0", "-n", "64", "--verbose")
    try:
        # turn 1: a fenced Python block, streamed, ending at <|im_end|>
        text, new1, reused1, gen1, stop1 = turn(child, FLATTEN)
        assert "```python" in text and "def flatten(items" in text
        assert text.rstrip().endswith("```")
        assert stop1 == "end of turn" and reused1 == 0
        assert "<|im_end|>" not in text and "<|im_start|>" not in text and "<|endoftext|>" not in text

        # turn 2: only its own tokens are processed
        _, new2, reused2, _, _ = turn(child, SECOND)
        tok = lowbit.load(model_path).tokenizer
        turn_text = "<|im_end|>\n<|im_start|>user\n" + SECOND + "<|im_end|>\n<|im_start|>assistant\n"
        assert reused2 == new1 + gen1 - 1          # prompt 1 + reply 1 (its end token is never fed)
        assert new2 == len(encode_rendered(tok, turn_text))

        child.sendline("/stats")
        child.expect(r"context: (\d+) / 2048 tokens")
        child.expect(r"last turn: prompt (\d+) tokens, (\d+) new \((\d+) reused")
        assert [int(g) for g in child.match.groups()] == [new2 + reused2, new2, reused2]
        child.expect_exact(">>> ")

        # Ctrl-C stops a long reply; the session goes on
        child.sendline("/set max_tokens=1500 temperature=0.7 seed=1")
        child.expect_exact("set max_tokens=1500 temperature=0.7 seed=1")
        child.expect_exact(">>> ")
        child.sendline("Write a Python function `parse_config(text)`: Parse an INI-style configuration.")
        child.expect_exact("```")
        child.sendintr()
        child.expect_exact("[interrupted]")
        child.expect(TURN_LINE)
        assert child.match.group(4) == "interrupted" and int(child.match.group(3)) < 1500
        child.expect_exact(">>> ")
        assert child.isalive()

        # Ctrl-C at the prompt does not exit either
        child.sendintr()
        child.expect_exact("use /bye or Ctrl-D to exit")
        child.expect_exact(">>> ")

        # multi-line input: a trailing backslash, and a """ block
        child.sendline("/set max_tokens=8")
        child.expect_exact(">>> ")
        child.sendline("Write a Python function `inc(x)`: \\")
        child.expect_exact("... ")
        child.sendline("Add one to x.")
        child.expect(TURN_LINE)
        child.expect_exact(">>> ")
        child.sendline('"""')
        child.expect_exact("... ")
        child.sendline("first line")
        child.expect_exact("... ")
        child.sendline('second line"""')
        child.expect(TURN_LINE)
        child.expect_exact(">>> ")

        # /save writes the conversation as JSON messages; /load gives clear errors, then loads
        saved = tmp_path / "conv.json"
        child.sendline(f"/save {saved}")
        child.expect_exact(f"saved 10 messages to {saved}")
        child.expect_exact(">>> ")
        msgs = json.loads(saved.read_text(encoding="utf-8"))["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant"] * 5
        assert msgs[0]["content"] == FLATTEN and "def flatten" in msgs[1]["content"]
        assert msgs[6]["content"] == "Write a Python function `inc(x)`: \nAdd one to x."
        assert msgs[8]["content"] == "first line\nsecond line"

        bad = tmp_path / "bad.json"
        bad.write_text("{oops")
        child.sendline(f"/load {bad}")
        child.expect_exact(f"error: {bad}: not valid JSON")
        child.expect_exact(">>> ")
        child.sendline(f"/load {tmp_path / 'missing.json'}")
        child.expect_exact("cannot read")
        child.expect_exact(">>> ")
        child.sendline("/set temperature=hot")
        child.expect_exact("error: temperature needs a number")
        child.expect_exact(">>> ")
        child.sendline("/system You are terse.")
        child.expect_exact("system prompt set")
        child.expect_exact(">>> ")
        child.sendline(f"/load {saved}")
        child.expect_exact(f"loaded 10 messages from {saved}")
        child.expect_exact(">>> ")
        child.sendline("/reset")
        child.expect_exact("conversation cleared")
        child.expect_exact(">>> ")
        child.sendline("/help")
        child.expect_exact("/stats")
        child.expect_exact(">>> ")
        child.sendline("/bye")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0


def test_ctrl_d_exits_and_history_is_kept(model_path, tmp_path):
    child = spawn(model_path, tmp_path, "-n", "4")
    try:
        child.sendline("/stats")
        child.expect_exact("no replies yet")
        child.expect_exact(">>> ")
        child.sendeof()
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert "/stats" in (tmp_path / ".lowbit_history").read_text()


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "lowbit.cli", *args], cwd=ROOT, env=env(ROOT), capture_output=True,
                          text=True, timeout=TIMEOUT)


def test_run_chat_json_answers_one_message(model_path):
    with open(os.path.join(ROOT, "tests", "data", "pychat_greedy_replies.json"), encoding="utf-8") as fh:
        case = json.load(fh)["cases"][17]
    r = run_cli("run", model_path, "--chat", "-p", case["messages"][0]["content"], "--temperature", "0", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["reply"] == case["reply"] and out["token_ids"] == case["reply_ids"]
    assert out["stop_reason"] == "end of turn"
    assert out["prompt_tokens"] == len(case["prompt_ids"]) and out["generated_tokens"] == len(case["reply_ids"])
    assert out["ttft_seconds"] > 0 and out["decode_tokens_per_second"] > 0

    r = run_cli("run", model_path, "--chat", "-p", case["messages"][0]["content"], "--temperature", "0")
    assert r.returncode == 0 and r.stdout == case["reply"] + "\n"


def test_run_chat_rejects_bad_options(model_path):
    r = run_cli("run", model_path, "--system", "x", "-p", "hi")
    assert r.returncode == 1 and "--system needs --chat" in r.stderr and "Traceback" not in r.stderr
    r = run_cli("run", model_path, "--chat", "-p", "hi", "--top-p", "0")
    assert r.returncode == 1 and "top_p" in r.stderr and "Traceback" not in r.stderr
