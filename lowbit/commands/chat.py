"""lowbit chat: an interactive conversation in the terminal, streamed, with line editing,
history, multi-line input, slash commands and Ctrl-C to stop a reply."""
import os
import signal
import sys

from .common import add_sampling_args, sampling_overrides

HELP = """\
Commands:
  /help                 this help
  /reset                forget the conversation (the system prompt stays)
  /system TEXT          set the system prompt (/system alone clears it)
  /save FILE            save the conversation as JSON ({"messages": [...]})
  /load FILE            load a conversation saved by /save (or a JSON list of messages)
  /set KEY=VALUE ...    sampling: temperature top_k top_p min_p repetition_penalty
                        presence_penalty repeat_last_n seed max_tokens (/set alone shows them)
  /stats                tokens, speed and context use
  /bye                  exit (also Ctrl-D)
Input: end a line with \\ to continue it; a line of \"\"\" starts and ends a multi-line block.
Ctrl-C stops the reply being written; the conversation goes on."""

SET_ALIASES = {"temp": "temperature", "repeat_penalty": "repetition_penalty", "n": "max_tokens",
               "top-k": "top_k", "top-p": "top_p", "min-p": "min_p"}
INT_KEYS = {"top_k", "repeat_last_n", "seed", "max_tokens"}


def register(sub):
    p = sub.add_parser("chat", help="chat with a model in the terminal",
                       description="An interactive conversation using the chat template embedded in the file. "
                                   "Turns reuse the KV cache, so only each new message is processed. "
                                   "Type /help in the session for its commands.")
    p.add_argument("model", help="a .lowbit file")
    p.add_argument("--system", "-s", help="system prompt")
    p.add_argument("-n", "--max-tokens", type=int, help="tokens per reply at most (default: the model's "
                                                         "generation_config, else 1024)")
    p.add_argument("--ctx", type=int, help="context length (default: the model's)")
    p.add_argument("--load", metavar="FILE", help="start from a conversation saved with /save")
    p.add_argument("--verbose", "-v", action="store_true", help="print timings after each reply")
    p.add_argument("--no-history", action="store_true", help="do not read or write the input history file "
                                                             "(default ~/.lowbit_history, or $LOWBIT_HISTORY)")
    add_sampling_args(p)
    p.set_defaults(func=run)


def run(args):
    import lowbit
    from ..chat import ChatSession
    model = lowbit.load(args.model, n_ctx=args.ctx)
    session = ChatSession(model, system=args.system, max_tokens=args.max_tokens, **sampling_overrides(args))
    if args.load:
        session.load(args.load)
        if args.system:
            session.set_system(args.system)
    session.warm_up()
    Repl(session, args).loop()
    return 0


class Repl:
    def __init__(self, session, args):
        self.s = session
        self.verbose = args.verbose
        self.tty = sys.stdin.isatty()
        self.history = None
        if self.tty:
            self._setup_readline(None if args.no_history else
                                 os.environ.get("LOWBIT_HISTORY", os.path.expanduser("~/.lowbit_history")))

    def _setup_readline(self, history):
        try:
            import readline
        except ImportError:    # no line editing on this platform; input() still works
            return
        if history:
            self.history = history
            try:
                readline.read_history_file(history)
            except OSError:
                pass
            readline.set_history_length(1000)

    def _save_history(self):
        if self.history:
            try:
                import readline
                readline.write_history_file(self.history)
            except (ImportError, OSError):
                pass

    def say(self, text):
        print(text, flush=True)

    def banner(self):
        s = self.s
        name = os.path.basename(s.model.path)
        tmpl = "the model's chat template" if not s.template.builtin else \
            "no chat template in this file: using a plain 'User:/Assistant:' fallback"
        ends = ", ".join(s.tokenizer.id_to_piece(i) for i in sorted(s.end_ids))
        self.say(f"lowbit chat: {name}, context {s.n_ctx} tokens, {tmpl}; replies end at {ends}")
        if self.tty:
            self.say("Type /help for commands, Ctrl-C to stop a reply, Ctrl-D or /bye to exit.")

    # -- input ---------------------------------------------------------------------------------
    def read_message(self):
        """One message: a line, lines joined by a trailing backslash, or a \"\"\" block. None at EOF."""
        line = self._input(">>> ")
        if line is None:
            return None
        if line.strip().startswith('"""'):
            first = line.strip()[3:]
            if first.endswith('"""') and len(first) >= 3:
                return first[:-3]
            lines = [first] if first else []
            while True:
                nxt = self._input("... ")
                if nxt is None:
                    return "\n".join(lines) if lines else None
                if nxt.rstrip().endswith('"""'):
                    lines.append(nxt.rstrip()[:-3])
                    return "\n".join(lines).rstrip("\n") if lines else ""
                lines.append(nxt)
        lines = []
        while line.endswith("\\"):
            lines.append(line[:-1])
            line = self._input("... ")
            if line is None:
                line = ""
                break
        lines.append(line)
        return "\n".join(lines)

    def _input(self, prompt):
        try:
            return input(prompt if self.tty else "")
        except EOFError:
            return None

    # -- the loop ------------------------------------------------------------------------------
    def loop(self):
        self.banner()
        try:
            while True:
                try:
                    text = self.read_message()
                except KeyboardInterrupt:
                    self.say("\n(Ctrl-C: use /bye or Ctrl-D to exit)")
                    continue
                if text is None:
                    if self.tty:
                        self.say("")
                    return
                if not text.strip():
                    continue
                if text.lstrip().startswith("/") and "\n" not in text.strip():
                    if self.command(text.strip()) == "exit":
                        return
                    continue
                self.answer(text)
        finally:
            self._save_history()

    def answer(self, text):
        from ..errors import LowbitError
        stop = {"hit": False}

        def on_sigint(signum, frame):
            stop["hit"] = True

        old = signal.signal(signal.SIGINT, on_sigint) if self._main_thread() else None
        wrote = ""
        try:
            for piece in self.s.reply(text, should_stop=lambda: stop["hit"]):
                sys.stdout.write(piece)
                sys.stdout.flush()
                wrote = piece or wrote
        except LowbitError as e:
            self.say(f"error: {e}")
            return
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)
        last = self.s.last
        if not wrote.endswith("\n"):
            sys.stdout.write("\n")
        if last.stop_reason == "interrupted":
            self.say("[interrupted]")
        elif last.stop_reason in ("max tokens", "context full"):
            self.say(f"[stopped: {last.stop_reason}]")
        if last.dropped_turns and last.reused_tokens < last.prompt_tokens // 2:
            self.say(f"[context full: the {last.dropped_turns} oldest messages left the window]")
        if self.verbose:
            self.say(self._turn_line(last))
        sys.stdout.flush()

    @staticmethod
    def _main_thread():
        import threading
        return threading.current_thread() is threading.main_thread()

    @staticmethod
    def _turn_line(t):
        return (f"[{t.new_tokens} new prompt tokens ({t.reused_tokens} reused), first token {t.ttft_seconds:.2f} s, "
                f"{t.generated_tokens} tokens at {t.decode_tps:.1f} tokens/s, stop: {t.stop_reason}]")

    # -- slash commands ------------------------------------------------------------------------
    def command(self, line):
        from ..errors import LowbitError
        name, _, arg = line.partition(" ")
        arg = arg.strip()
        name = name.lower()
        try:
            if name in ("/bye", "/exit", "/quit"):
                return "exit"
            if name in ("/help", "/?"):
                self.say(HELP)
            elif name == "/reset":
                self.s.reset()
                self.say("conversation cleared" + (" (system prompt kept)" if self.s.system else ""))
            elif name == "/system":
                self.s.set_system(arg)
                self.say("system prompt set" if arg else "system prompt cleared")
            elif name == "/save":
                if not arg:
                    raise LowbitError("/save needs a file name")
                self.s.save(arg)
                self.say(f"saved {len(self.s.conversation())} messages to {arg}")
            elif name == "/load":
                if not arg:
                    raise LowbitError("/load needs a file name")
                self.s.load(arg)
                self.say(f"loaded {len(self.s.conversation())} messages from {arg}")
            elif name == "/set":
                self.set(arg)
            elif name == "/stats":
                self.stats()
            else:
                self.say(f"unknown command {name}; /help lists the commands")
        except (LowbitError, ValueError, TypeError) as e:
            self.say(f"error: {e}")
        return None

    def set(self, arg):
        if not arg:
            p = self.s.params
            self.say(" ".join(f"{k}={getattr(p, k)}" for k in type(p).names()) + f" max_tokens={self.s.max_tokens}")
            return
        changes = {}
        for item in arg.replace(",", " ").split():
            key, eq, value = item.partition("=")
            key = SET_ALIASES.get(key.lower(), key.lower())
            if not eq or not value:
                raise ValueError(f"/set takes KEY=VALUE pairs, got {item!r}")
            if key not in INT_KEYS | {"temperature", "top_p", "min_p", "repetition_penalty", "presence_penalty"}:
                raise ValueError(f"unknown setting {key!r}; /help lists them")
            if key == "seed" and value.lower() in ("none", "random"):
                changes[key] = None
                continue
            try:
                changes[key] = int(value) if key in INT_KEYS else float(value)
            except ValueError:
                raise ValueError(f"{key} needs a {'whole ' if key in INT_KEYS else ''}number, got {value!r}") from None
        self.s.set_sampling(**changes)
        self.say("set " + " ".join(f"{k}={v}" for k, v in changes.items()))

    def stats(self):
        s, t, last = self.s, self.s.totals, self.s.last
        used = s.cache.pos
        self.say(f"context: {used} / {s.n_ctx} tokens ({100 * used / s.n_ctx:.0f}%); "
                 f"{len(s.conversation())} messages, {s.first} dropped from the window")
        if last is None:
            self.say("no replies yet")
            return
        self.say(f"last turn: prompt {last.prompt_tokens} tokens, {last.new_tokens} new ({last.reused_tokens} reused "
                 f"from the cache), first token after {last.ttft_seconds:.3f} s, prefill {last.prefill_tps:.1f} tokens/s")
        self.say(f"last reply: {last.generated_tokens} tokens, {last.decode_tps:.1f} tokens/s, stop: {last.stop_reason}")
        tps = (t["generated_tokens"] / t["decode_seconds"]) if t["decode_seconds"] else 0.0
        self.say(f"session: {t['turns']} turns, {t['new_tokens']} prompt tokens processed "
                 f"({t['reused_tokens']} reused), {t['generated_tokens']} generated ({tps:.1f} tokens/s)")
