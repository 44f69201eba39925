"""Chat: the model's own template (rendered the way transformers renders it), end-of-turn
detection, and a multi-turn session that keeps its KV cache between turns.

A turn renders the whole conversation, finds how many leading tokens the cache already holds and
feeds only the rest, so the cost of a turn is its new tokens, not the conversation so far. When
the context fills, the oldest user/assistant turns leave the window (the system prompt stays)
and the rest is prefilled again (see ChatSession.fit)."""
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime

from .errors import LowbitError
from .generate import GenerationStats, generate_ids, stream_text
from .sampling import Sampler

ROLES = ("system", "user", "assistant")

# Used when a model carries no chat template: plain "Role: text" paragraphs.
FALLBACK_TEMPLATE = (
    "{% for m in messages %}{{ m['role'] | capitalize }}: {{ m['content'] }}\n\n{% endfor %}"
    "{% if add_generation_prompt %}Assistant:{% endif %}")
FALLBACK_STOPS = ("\nUser:", "\nSystem:")

# End-of-turn tokens of common template families, used when the file has them as special tokens.
KNOWN_END_OF_TURN = ("<|im_end|>", "<|eot_id|>", "<|eom_id|>", "<end_of_turn>", "<|end|>", "<|endoftext|>",
                     "<|end_of_text|>", "</s>")

MAX_CONVERSATION_FILE = 16 << 20


class ChatTemplate:
    """A Jinja chat template in transformers' environment: sandboxed, trim_blocks, lstrip_blocks,
    the `raise_exception`, `strftime_now` globals and a `tojson` filter that keeps non-ASCII."""

    def __init__(self, source: str, bos_token=None, eos_token=None, builtin: bool = False, origin: str = "model"):
        import jinja2
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        def raise_exception(message):
            raise jinja2.exceptions.TemplateError(message)

        def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=["jinja2.ext.loopcontrols"])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
        self.origin = origin
        self.builtin = builtin
        self.source = source
        try:
            self._template = env.from_string(source)
        except jinja2.exceptions.TemplateError as e:
            raise LowbitError(f"{origin}: the chat template does not compile: {e}") from None
        self.special = {k: v for k, v in (("bos_token", bos_token), ("eos_token", eos_token)) if v is not None}

    @classmethod
    def for_model(cls, model) -> "ChatTemplate":
        tok = model.tokenizer
        if isinstance(tok.chat_template, str) and tok.chat_template.strip():
            return cls(tok.chat_template, tok.bos_token, tok.eos_token, origin=str(model.path))
        return cls(FALLBACK_TEMPLATE, tok.bos_token, tok.eos_token, builtin=True, origin="built-in fallback")

    def render(self, messages, add_generation_prompt: bool = True) -> str:
        import jinja2
        try:
            return self._template.render(messages=list(messages), tools=None, documents=None,
                                         add_generation_prompt=add_generation_prompt, **self.special)
        except jinja2.exceptions.TemplateError as e:
            raise LowbitError(f"{self.origin}: the chat template refused the conversation: {e}") from None
        except Exception as e:   # a template may fail in arbitrary ways on odd input
            raise LowbitError(f"{self.origin}: the chat template failed: {type(e).__name__}: {e}") from None


def end_of_turn(tokenizer, template: ChatTemplate):
    """(ids, stop strings) that end an assistant reply: the model's EOS ids, the special token the
    template writes right after an assistant message, and known end-of-turn tokens the vocabulary
    has as special tokens. Text that is not one special token becomes a stop string."""
    ids = set(tokenizer.eos_ids)
    stops = list(FALLBACK_STOPS) if template.builtin else []
    sentinel = "\x00lowbit-sentinel\x00"
    try:
        text = template.render([{"role": "user", "content": "hi"}, {"role": "assistant", "content": sentinel}],
                               add_generation_prompt=False)
    except LowbitError:
        text = ""
    after = text.split(sentinel, 1)[1].lstrip() if sentinel in text else ""
    marker = after.split()[0] if after.split() else ""
    if marker:
        i = tokenizer.token_to_id(marker)
        if i is not None and int(i) in tokenizer.special_ids:
            ids.add(int(i))
        elif not template.builtin:
            stops.append(marker)
    for name in KNOWN_END_OF_TURN:
        i = tokenizer.token_to_id(name)
        if i is not None and int(i) in tokenizer.special_ids:
            ids.add(int(i))
    return ids, stops


def encode_rendered(tokenizer, text: str) -> list:
    """Token ids of a rendered template: special tokens written as text become their ids, and no
    BOS is added (templates write it themselves), as transformers' apply_chat_template does."""
    if tokenizer.kind != "sentencepiece":
        return tokenizer.encode(text, add_bos=False)
    # sentencepiece does not parse control pieces in text: split on them
    pieces = sorted({tokenizer.id_to_piece(i) for i in tokenizer.special_ids}, key=len, reverse=True)
    ids, i, start = [], 0, 0
    while i < len(text):
        hit = next((p for p in pieces if p and text.startswith(p, i)), None)
        if hit:
            if i > start:
                ids += tokenizer.encode(text[start:i], add_bos=False)
            ids.append(tokenizer.token_to_id(hit))
            i = start = i + len(hit)
        else:
            i += 1
    if start < len(text):
        ids += tokenizer.encode(text[start:], add_bos=False)
    return ids


def common_prefix(a, b) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


@dataclass
class TurnStats:
    prompt_tokens: int = 0        # the whole rendered conversation
    reused_tokens: int = 0        # of those, already in the KV cache
    new_tokens: int = 0           # processed this turn (prompt_tokens - reused_tokens)
    generated_tokens: int = 0
    ttft_seconds: float = 0.0     # from the turn's start to the first generated token
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    stop_reason: str = ""         # "end of turn", "max tokens", "context full", "stop string", "interrupted"
    dropped_turns: int = 0        # turns that left the context window before this one
    context_used: int = 0
    token_ids: list = field(default_factory=list)

    @property
    def decode_tps(self):
        steps = max(self.generated_tokens - 1, 0)
        return steps / self.decode_seconds if self.decode_seconds else 0.0

    @property
    def prefill_tps(self):
        return self.new_tokens / self.prefill_seconds if self.prefill_seconds else 0.0

    def to_json(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "reused_tokens": self.reused_tokens,
                "new_tokens": self.new_tokens, "generated_tokens": self.generated_tokens,
                "ttft_seconds": round(self.ttft_seconds, 4), "prefill_seconds": round(self.prefill_seconds, 4),
                "decode_seconds": round(self.decode_seconds, 4), "prefill_tokens_per_second": round(self.prefill_tps, 2),
                "decode_tokens_per_second": round(self.decode_tps, 2), "stop_reason": self.stop_reason,
                "context_used": self.context_used}


class ChatSession:
    """A conversation with one model. `reply(text)` streams the assistant's answer; the KV cache
    persists across turns and only tokens it does not already hold are processed."""

    def __init__(self, model, system: str = None, max_tokens: int = None, **sampling):
        self.model = model
        self.transformer = model.transformer
        self.tokenizer = model.tokenizer
        self.template = ChatTemplate.for_model(model)
        self.end_ids, self.stop_strings = end_of_turn(self.tokenizer, self.template)
        self.system = system or None
        self.messages = []            # user/assistant messages, oldest first (the system prompt apart)
        self.first = 0                # index of the oldest message still in the context window
        self.cache = self.transformer.new_cache()
        self.cached_ids = []          # token ids whose keys/values are in cache[0:cache.pos]
        self._reuse = ("", [])        # (text, ids): the rendered prompt + reply of the last turn, as cached
        gen = model.metadata.get("generation") or {}
        default_max = gen.get("max_new_tokens") if isinstance(gen.get("max_new_tokens"), int) else 1024
        self.max_tokens = int(max_tokens) if max_tokens is not None else default_max
        if self.max_tokens < 1:
            raise ValueError("max tokens must be >= 1")
        self.params = model.sampling(**sampling)
        self.sampler = Sampler(self.params)
        self.last = None
        self.totals = {"turns": 0, "new_tokens": 0, "reused_tokens": 0, "generated_tokens": 0,
                       "prefill_seconds": 0.0, "decode_seconds": 0.0}

    @property
    def n_ctx(self):
        return self.cache.n_ctx

    # -- conversation ------------------------------------------------------------------------
    def conversation(self, window: bool = False) -> list:
        sys_msg = [{"role": "system", "content": self.system}] if self.system else []
        return sys_msg + [dict(m) for m in self.messages[self.first if window else 0:]]

    def reset(self):
        """Forget the conversation, keep the system prompt (and its cached tokens)."""
        self.messages, self.first = [], 0

    def set_system(self, text):
        self.system = text or None

    def set_sampling(self, **changes):
        """Change sampling parameters (and max_tokens); a new sampler starts from `seed`."""
        changes = dict(changes)
        if "max_tokens" in changes:
            mt = int(changes.pop("max_tokens"))
            if mt < 1:
                raise ValueError("max_tokens must be >= 1")
            self.max_tokens = mt
        current = {k: getattr(self.params, k) for k in type(self.params).names()}
        current.update(changes)
        params = self.model.sampling(**current)
        if "seed" in changes and changes["seed"] is None:
            params.seed = None
        self.params, self.sampler = params, Sampler(params)

    def load_messages(self, messages):
        messages = validate_messages(messages, "conversation")
        self.system = messages[0]["content"] if messages and messages[0]["role"] == "system" else self.system
        self.messages = [m for m in messages if m["role"] != "system"]
        self.first = 0

    def save(self, path):
        save_conversation(path, self.conversation())

    def load(self, path):
        msgs = load_conversation(path)
        self.system = None
        self.load_messages(msgs)

    # -- prompt --------------------------------------------------------------------------------
    def prompt_ids(self) -> list:
        return self.encode(self.template.render(self.conversation(window=True), True))

    def encode(self, text: str) -> list:
        """Token ids of a rendered conversation. When it extends the text of the last turn, the
        ids the cache holds for that text (the model's own reply tokens) are kept and only the
        rest is tokenized: re-tokenizing a reply can split it differently from how it was
        generated, which would force a re-prefill from the first difference."""
        done_text, done_ids = self._reuse
        if done_text and text.startswith(done_text):
            return list(done_ids) + encode_rendered(self.tokenizer, text[len(done_text):])
        return encode_rendered(self.tokenizer, text)

    def fit(self) -> list:
        """The prompt ids of the conversation window. When they would leave less than
        min(max_tokens, n_ctx/4) tokens for the reply, the oldest turns leave the window until the
        rest fills at most half the context (so the re-prefill this costs is rare). The system
        prompt and the newest user message always stay; if they alone do not fit, it is an error."""
        reserve = min(self.max_tokens, max(self.n_ctx // 4, 1))
        dropping = False
        while True:
            ids = self.prompt_ids()
            if len(ids) + reserve <= self.n_ctx and (not dropping or len(ids) <= self.n_ctx // 2):
                return ids
            # once turns must go, go down to half the context so the next turns reuse the cache
            dropping = True
            if self.first + 1 < len(self.messages):
                # drop the oldest user message and the assistant reply after it
                self.first += 2 if self.messages[self.first]["role"] == "user" and \
                    self.first + 2 < len(self.messages) else 1
                continue
            if len(ids) < self.n_ctx:
                return ids
            raise LowbitError(f"the message does not fit the context: the prompt is {len(ids)} tokens, the "
                              f"context {self.n_ctx} (use a shorter message or system prompt, or a larger --ctx)")

    def warm_up(self):
        """Run the model once before the first message (the kernels load on first use), on the
        system prompt when there is one, so that its tokens are already cached."""
        text = ""
        if self.system:
            try:
                text = self.template.render(self.conversation(window=True), add_generation_prompt=False)
            except LowbitError:
                text = ""
        ids = encode_rendered(self.tokenizer, text) if text else []
        self.cache.pos = 0
        if 0 < len(ids) <= self.n_ctx // 2:
            self.transformer.forward(ids, self.cache)
            self.cached_ids, self._reuse = list(ids), (text, list(ids))
        else:
            self.transformer.forward([0], self.cache)
            self.cache.pos, self.cached_ids = 0, []

    # -- a turn --------------------------------------------------------------------------------
    def reply(self, text: str, should_stop=None):
        """Add a user message and yield the reply's text as it is generated. `should_stop()` is
        polled between tokens (Ctrl-C); closing the generator early also ends the turn. The reply,
        complete or not, joins the conversation."""
        if not isinstance(text, str):
            raise TypeError("a message is text")
        self.messages.append({"role": "user", "content": text})
        t_start = time.perf_counter()
        try:
            ids = self.fit()
            prompt_text = self.template.render(self.conversation(window=True), True)
        except Exception:
            self.messages.pop()
            raise
        valid = self.cached_ids[:self.cache.pos]
        n = common_prefix(valid, ids)
        n = min(n, len(ids) - 1)          # the last prompt token must run to give logits
        self.cache.pos = n
        self.cached_ids = list(ids)
        ts = TurnStats(prompt_tokens=len(ids), reused_tokens=n, new_tokens=len(ids) - n, dropped_turns=self.first)
        gs = GenerationStats()
        budget = max(1, min(self.max_tokens, self.n_ctx - len(ids)))
        state = {"first": None, "interrupted": False}
        ids_stream = generate_ids(self.transformer, self.cache, ids[n:], self.sampler, budget, self.end_ids, gs)

        def tracked():
            for tok in ids_stream:
                if state["first"] is None:
                    state["first"] = time.perf_counter()
                self.cached_ids.append(tok)
                yield tok
                if should_stop is not None and should_stop():
                    state["interrupted"] = True
                    ids_stream.close()
                    return

        pieces = []
        done = False
        try:
            for piece in stream_text(self.tokenizer, tracked(), context_ids=ids, stop=self.stop_strings):
                pieces.append(piece)
                yield piece
            done = True
        finally:
            ids_stream.close()
            reply = "".join(pieces)
            self.messages.append({"role": "assistant", "content": reply})
            if state["interrupted"] or not done:
                ts.stop_reason = "interrupted"
            elif gs.stop_reason == "eos":
                ts.stop_reason = "end of turn"
            elif gs.stop_reason == "length":
                ts.stop_reason = "context full" if budget < self.max_tokens else "max tokens"
            elif gs.stop_reason == "context":
                ts.stop_reason = "context full"
            else:
                ts.stop_reason = "stop string"
            ts.generated_tokens = gs.generated_tokens
            ts.token_ids = list(gs.token_ids)
            ts.prefill_seconds, ts.decode_seconds = gs.prefill_seconds, gs.decode_seconds
            ts.ttft_seconds = (state["first"] - t_start) if state["first"] else 0.0
            ts.context_used = self.cache.pos
            in_cache = self.cached_ids[len(ids):self.cache.pos]
            if self.cache.pos >= len(ids) and not any(i in self.tokenizer.special_ids for i in in_cache):
                self._reuse = (prompt_text + self.tokenizer.decode(in_cache), self.cached_ids[:self.cache.pos])
            self.last = ts
            t = self.totals
            t["turns"] += 1
            t["new_tokens"] += ts.new_tokens
            t["reused_tokens"] += ts.reused_tokens
            t["generated_tokens"] += ts.generated_tokens
            t["prefill_seconds"] += ts.prefill_seconds
            t["decode_seconds"] += ts.decode_seconds

    def ask(self, text: str) -> str:
        """The whole reply to `text` as one string."""
        return "".join(self.reply(text))


# -- conversation files --------------------------------------------------------------------------
def validate_messages(messages, origin) -> list:
    if isinstance(messages, dict) and "messages" in messages:
        messages = messages["messages"]
    if not isinstance(messages, list):
        raise LowbitError(f"{origin}: expected a JSON list of messages or an object with a \"messages\" list")
    out = []
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise LowbitError(f"{origin}: message {i} is not an object with string \"role\" and \"content\"")
        if m["role"] not in ROLES:
            raise LowbitError(f"{origin}: message {i} has role {m['role']!r}; expected one of {', '.join(ROLES)}")
        if m["role"] == "system" and i != 0:
            raise LowbitError(f"{origin}: message {i} is a system message; only the first message may be one")
        out.append({"role": m["role"], "content": m["content"]})
    return out


def load_conversation(path) -> list:
    try:
        size = os.path.getsize(path)
        if size > MAX_CONVERSATION_FILE:
            raise LowbitError(f"{path}: {size} bytes is too large for a conversation file "
                              f"(limit {MAX_CONVERSATION_FILE >> 20} MiB)")
        with open(path, encoding="utf-8") as fh:
            doc = json.load(fh)
    except OSError as e:
        raise LowbitError(f"{path}: cannot read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise LowbitError(f"{path}: not UTF-8 text") from None
    except json.JSONDecodeError as e:
        raise LowbitError(f"{path}: not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise LowbitError(f"{path}: JSON nested too deeply") from None
    return validate_messages(doc, path)


def save_conversation(path, messages):
    """Write {"messages": [...]} atomically (a temporary file renamed over the target)."""
    path = os.fspath(path)
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump({"messages": messages}, fh, indent=1, ensure_ascii=False)
            fh.write("\n")
        os.replace(tmp, path)
    except OSError as e:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise LowbitError(f"{path}: cannot write: {e.strerror or e}") from None
