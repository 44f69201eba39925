"""Perplexity and KL divergence the way llama.cpp's llama-perplexity computes them, so the
numbers are comparable with its tables:

- the whole text is tokenized once (BOS first when the model's tokenizer adds one; special
  tokens such as <|im_start|> in the text are parsed as the tokenizer does);
- the token stream is cut into non-overlapping chunks of n_ctx tokens (the tail is dropped);
- each chunk is evaluated in a fresh context, its first token replaced by BOS when the model
  uses one;
- only the second half is scored: the logits at positions n_ctx/2 .. n_ctx-2 predict the
  tokens at n_ctx/2+1 .. n_ctx-1 (n_ctx - 1 - n_ctx/2 tokens per chunk).

KL divergence: a base run saves the tokens and, for every scored token, the base model's final
normalized hidden state (format_spec/kld_base.md); a later run of another file over the same
tokens recomputes the base's logits exactly from those states and the base file's output
matrix, and reports KL(base || this) over the full vocabulary per token, its mean and 99th
percentile, and how often both pick the same most likely token.
"""
import hashlib
import json
import math
import os
import time
import zipfile
from dataclasses import dataclass, field

import numpy as np

from .errors import FormatError, LowbitError
from .atomic import atomic_output
from .format import LowbitFile
from .model import Linear

KLD_BASE_FORMAT = "lowbit-kld-base"
KLD_BASE_VERSION = 1


# ----------------------------------------------------------------------------- chunks

def tokenize_text(model, text_path) -> list:
    """Token ids of the whole file, BOS first when the model's tokenizer adds one."""
    try:
        with open(text_path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        raise LowbitError(f"{text_path}: text file not found") from None
    except UnicodeDecodeError as e:
        raise FormatError(text_path, f"not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise LowbitError(f"{text_path}: cannot read: {e.strerror}") from None
    return model.tokenize(text)


def make_chunks(model, ids, n_ctx: int, n_chunks: int = None, source: str = "text") -> np.ndarray:
    """[n_chunk, n_ctx] int32 token ids as evaluated: consecutive non-overlapping windows of
    `ids`, the first token of each replaced by BOS when the model uses one."""
    if n_ctx < 4:
        raise ValueError(f"context size {n_ctx} is too small (at least 4)")
    if n_ctx > model.transformer.n_ctx:
        raise ValueError(f"context size {n_ctx} exceeds the model's context length {model.transformer.n_ctx}")
    if n_chunks is not None and n_chunks < 1:
        raise ValueError(f"--chunks must be >= 1 (got {n_chunks})")
    # llama.cpp refuses texts shorter than two contexts; one full chunk is all we need
    if len(ids) < n_ctx:
        raise LowbitError(f"{source}: tokenizes to only {len(ids)} tokens, fewer than one chunk of {n_ctx} "
                          f"(use a longer text or a smaller -c)")
    n = len(ids) // n_ctx
    if n_chunks is not None:
        n = min(n, n_chunks)
    chunks = np.asarray(ids[:n * n_ctx], dtype=np.int32).reshape(n, n_ctx).copy()
    if model.tokenizer.add_bos and model.tokenizer.bos_id is not None:
        chunks[:, 0] = int(model.tokenizer.bos_id)
    return chunks


def scored_logits(model, chunk: np.ndarray, hidden: bool = False):
    """float32 logits (n_ctx - 1 - n_ctx/2, vocab) at positions n_ctx/2 .. n_ctx-2 of a chunk
    evaluated in a fresh context (and, with `hidden`, the output projection's inputs there).
    The first half goes through without an output projection (only its keys and values
    matter), which saves most of the vocabulary matmul."""
    n_ctx = len(chunk)
    first = n_ctx // 2
    n = n_ctx - 1 - first
    t = model.transformer
    cache = t.new_cache()
    t.forward(chunk[:first], cache, all_logits=False)
    if not hidden:
        return t.forward(chunk[first:], cache, all_logits=True)[:n]
    logits, h = t.forward(chunk[first:], cache, all_logits=True, return_hidden=True)
    return logits[:n], h[:n]


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """float64 log-probabilities, row by row."""
    x = logits.astype(np.float64)
    x -= x.max(axis=1, keepdims=True)
    x -= np.log(np.exp(x).sum(axis=1, keepdims=True))
    return x


def tokenizer_fingerprint(model) -> str:
    """sha256 of the embedded tokenizer: base logits only compare with the same vocabulary."""
    meta = model.metadata.get("tokenizer", {})
    return hashlib.sha256(model.file.blob(meta["tensor"])).hexdigest()


# ----------------------------------------------------------------------------- results

@dataclass
class Running:
    """Sums over scored tokens, as llama.cpp keeps them."""
    count: int = 0
    nll: float = 0.0
    nll2: float = 0.0

    def add(self, nll: np.ndarray):
        self.count += nll.size
        self.nll += float(nll.sum())
        self.nll2 += float((nll * nll).sum())

    @property
    def ppl(self) -> float:
        return math.exp(self.nll / self.count)

    @property
    def ppl_uncertainty(self) -> float:
        """llama.cpp's: PPL x standard error of the mean NLL."""
        mean = self.nll / self.count
        var = self.nll2 / self.count - mean * mean
        return math.sqrt(var / (self.count - 1)) * self.ppl if var > 0 and self.count > 1 else 0.0


@dataclass
class Result:
    n_ctx: int
    n_chunks: int
    tokens_total: int
    scored: Running
    seconds: float
    running_ppl: list = field(default_factory=list)
    kld: dict = None          # filled with --kl-divergence

    def to_json(self) -> dict:
        d = {"n_ctx": self.n_ctx, "chunks": self.n_chunks, "text_tokens": self.tokens_total,
             "scored_tokens": self.scored.count, "ppl": self.scored.ppl,
             "ppl_uncertainty": self.scored.ppl_uncertainty, "seconds": self.seconds}
        if self.kld is not None:
            d["kld"] = self.kld
        return d


# ----------------------------------------------------------------------------- base logits file

def _meta_array(meta: dict) -> np.ndarray:
    return np.frombuffer(json.dumps(meta, sort_keys=True).encode("utf-8"), dtype=np.uint8)


def save_base(path, meta: dict, tokens, hidden, nll):
    """The base run as a .npz (no pickle): see format_spec/kld_base.md."""
    with atomic_output(path, prefix=".kld-") as f:
        np.savez(f, meta=_meta_array(meta), tokens=tokens, hidden=hidden, nll=nll)


def output_linear(f: LowbitFile, c):
    name = "token_embd.weight" if c.tie_word_embeddings else "output.weight"
    return name, Linear(f, name, (c.vocab_size, c.hidden_size))


@dataclass
class Base:
    meta: dict
    tokens: np.ndarray      # [n_chunk, n_ctx] int32, BOS already in place
    hidden: np.ndarray      # [n_chunk, n_scored, dim] float32 inputs of the base's output projection
    nll: np.ndarray         # [n_chunk, n_scored] base NLL of the actual next token
    output: object          # the base file's output projection (a Linear over its map)

    def log_probs(self, i: int) -> np.ndarray:
        """The base model's log-probs at chunk i's scored positions, recomputed exactly."""
        return log_softmax(self.output(np.ascontiguousarray(self.hidden[i])))


def load_base(path) -> Base:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise LowbitError(f"{path}: base logits file not found (write it first with --kl-divergence-base "
                          f"FILE and without --kl-divergence)")
    try:
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            need = {"meta", "tokens", "hidden", "nll"}
            if not need <= names:
                raise FormatError(path, f"not a lowbit KLD base file (missing {sorted(need - names)})")
            meta_raw = z["meta"]
            if meta_raw.dtype != np.uint8 or meta_raw.ndim != 1:
                raise FormatError(path, "meta is not a UTF-8 byte array")
            meta = json.loads(meta_raw.tobytes().decode("utf-8"))
            if not isinstance(meta, dict) or meta.get("format") != KLD_BASE_FORMAT:
                raise FormatError(path, "not a lowbit KLD base file (meta.format is not "
                                        f"{KLD_BASE_FORMAT!r})")
            arrays = {k: z[k] for k in ("tokens", "hidden", "nll")}
    except LowbitError:
        raise
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, KeyError, UnicodeDecodeError) as e:
        raise FormatError(path, f"not a readable KLD base file (.npz): {e}") from None
    if meta.get("version") != KLD_BASE_VERSION:
        raise FormatError(path, f"KLD base version {meta.get('version')!r} is not supported (expected {KLD_BASE_VERSION})")
    try:
        n_ctx, n_chunk, n_vocab, dim = (int(meta[x]) for x in ("n_ctx", "n_chunks", "n_vocab", "hidden_size"))
        model_path, out_meta = str(meta["base_model"]), dict(meta["output_tensor"])
    except (KeyError, TypeError, ValueError):
        raise FormatError(path, "meta lacks n_ctx / n_chunks / n_vocab / hidden_size / base_model / output_tensor") from None
    if n_chunk < 1 or n_ctx < 4:
        raise FormatError(path, f"bad sizes: {n_chunk} chunks of {n_ctx}")
    n_scored = n_ctx - 1 - n_ctx // 2
    tok, hid, nll = arrays["tokens"], arrays["hidden"], arrays["nll"]
    for a, shape, kinds in [(tok, (n_chunk, n_ctx), "iu"), (hid, (n_chunk, n_scored, dim), "f"),
                            (nll, (n_chunk, n_scored), "f")]:
        if a.shape != shape or a.dtype.kind not in kinds:
            raise FormatError(path, f"array of shape {list(a.shape)} {a.dtype} where {list(shape)} was expected")
    if tok.min() < 0 or tok.max() >= n_vocab:
        raise FormatError(path, f"token ids outside the vocabulary 0..{n_vocab - 1}")
    if not (np.isfinite(hid).all() and np.isfinite(nll).all()):
        raise FormatError(path, "hidden states or NLLs are not finite")
    # the base logits are recomputed from the base file's own output matrix: it must be unchanged
    if not os.path.exists(model_path):
        raise FormatError(path, f"its base model {model_path} is missing (it is needed to recompute the base logits)")
    f = LowbitFile(model_path)
    from .config import ModelConfig
    c = ModelConfig.from_json(f.path, f.metadata.get("architecture"))
    name, lin = output_linear(f, c)
    info = f.info(name).to_json()
    if (c.vocab_size, c.hidden_size) != (n_vocab, dim) or {k: info[k] for k in out_meta} != out_meta:
        raise FormatError(path, f"its base model {model_path} has changed since the base run "
                                f"(output matrix {info['name']} differs)")
    return Base(meta, tok.astype(np.int32), hid.astype(np.float32), nll.astype(np.float64), lin)


# ----------------------------------------------------------------------------- the run

def run(model, text_path=None, n_ctx: int = 512, n_chunks: int = None, save_base_path=None,
        kld_base_path=None, log=print, progress=None) -> Result:
    """Perplexity of `model` over `text_path` (or over the tokens of a KLD base file).
    `log(str, end=...)` receives llama.cpp-style progress lines."""
    t0 = time.perf_counter()
    base = None
    if kld_base_path is not None:
        base = load_base(kld_base_path)
        check_base_matches(base, model, kld_base_path, n_ctx)
        n_ctx = base.meta["n_ctx"]
        chunks = base.tokens if n_chunks is None else base.tokens[:n_chunks]
        if n_chunks is not None and n_chunks < 1:
            raise ValueError(f"--chunks must be >= 1 (got {n_chunks})")
        total = int(base.meta.get("text_tokens", chunks.size))
    else:
        if text_path is None:
            raise ValueError("a text file (-f) is needed")
        ids = tokenize_text(model, text_path)
        total = len(ids)
        chunks = make_chunks(model, ids, n_ctx, n_chunks, source=str(text_path))
    n_chunk, first = len(chunks), n_ctx // 2
    n_scored = n_ctx - 1 - first
    vocab = model.config.vocab_size
    if save_base_path is not None:
        hidden = np.zeros((n_chunk, n_scored, model.config.hidden_size), np.float32)
        base_nll = np.zeros((n_chunk, n_scored), np.float64)
    log(f"perplexity: {total} tokens, {n_chunk} chunks of {n_ctx}, scoring {n_scored} tokens per chunk"
        f" (BOS first: {'yes' if model.tokenizer.add_bos else 'no'})")

    scored = Running()
    kld_vals, same_top, nll_base_sum = [], 0, Running()
    running = []
    if base is not None:
        log("chunk        PPL              ln(PPL(Q)/PPL(base))    KL divergence           same top")
    for i in range(n_chunk):
        tc = time.perf_counter()
        if save_base_path is not None:
            logits, hidden[i] = scored_logits(model, chunks[i], hidden=True)
        else:
            logits = scored_logits(model, chunks[i])
        lp = log_softmax(logits)
        targets = chunks[i, first + 1:].astype(np.int64)
        nll = -lp[np.arange(n_scored), targets]
        scored.add(nll)
        running.append(scored.ppl)
        if save_base_path is not None:
            base_nll[i] = nll
        if i == 0:
            dt = time.perf_counter() - tc
            log(f"perplexity: {dt:.2f} seconds per pass - ETA {dt * n_chunk / 60:.2f} minutes")
        if base is not None:
            lp_base = base.log_probs(i)
            kl = (np.exp(lp_base) * (lp_base - lp)).sum(axis=1)
            kld_vals.append(np.maximum(kl, 0.0))
            same_top += int((lp.argmax(axis=1) == lp_base.argmax(axis=1)).sum())
            nll_base_sum.add(base.nll[i])
            allk = np.concatenate(kld_vals)
            log(f"{i + 1:4d}    {scored.ppl:9.4f} ± {scored.ppl_uncertainty:8.4f}    "
                f"{math.log(scored.ppl / nll_base_sum.ppl):9.5f}    "
                f"{allk.mean():10.6f} ± {_sem(allk):9.6f}    {100.0 * same_top / allk.size:7.3f} %")
        else:
            log(f"[{i + 1}]{scored.ppl:.4f},", end="")
        if progress is not None:
            progress(i + 1, n_chunk)
    if base is None:
        log("")
    result = Result(n_ctx, n_chunk, total, scored, time.perf_counter() - t0, running)
    if save_base_path is not None:
        c = model.config
        name, _ = output_linear(model.file, c)
        meta = {"format": KLD_BASE_FORMAT, "version": KLD_BASE_VERSION, "n_ctx": n_ctx, "n_chunks": n_chunk,
                "n_vocab": vocab, "hidden_size": c.hidden_size, "text_tokens": total,
                "text": os.path.abspath(text_path) if text_path else None,
                "base_model": os.path.abspath(model.path), "base_model_bytes": model.file.size,
                "output_tensor": model.file.info(name).to_json(),
                "tokenizer_sha256": tokenizer_fingerprint(model), "bos_first": bool(model.tokenizer.add_bos),
                "ppl": scored.ppl}
        save_base(save_base_path, meta, chunks.astype(np.int32), hidden, base_nll)
    if base is not None:
        allk = np.concatenate(kld_vals)
        result.kld = {"mean": float(allk.mean()), "mean_uncertainty": _sem(allk),
                      "p99": float(np.percentile(allk, 99.0)), "p99_9": float(np.percentile(allk, 99.9)),
                      "median": float(np.median(allk)), "max": float(allk.max()),
                      "same_top": same_top / allk.size, "ppl_base": nll_base_sum.ppl,
                      "base_file": os.fspath(kld_base_path), "base_model": base.meta["base_model"]}
    return result


def _sem(x: np.ndarray) -> float:
    return float(x.std(ddof=0) / math.sqrt(x.size - 1)) if x.size > 10 else 0.0


def check_base_matches(base: Base, model, path, n_ctx):
    m = base.meta
    if m["n_vocab"] != model.config.vocab_size:
        raise FormatError(path, f"base logits have a vocabulary of {m['n_vocab']} tokens, {model.path} has "
                                f"{model.config.vocab_size}: they come from another model")
    if m.get("tokenizer_sha256") != tokenizer_fingerprint(model):
        raise FormatError(path, f"base logits were computed with another tokenizer than {model.path}'s")
    if n_ctx is not None and n_ctx != m["n_ctx"]:
        raise FormatError(path, f"base logits were computed with -c {m['n_ctx']}, not {n_ctx}")
    if m["n_ctx"] > model.transformer.n_ctx:
        raise FormatError(path, f"base context {m['n_ctx']} exceeds the model's context length {model.transformer.n_ctx}")


def format_summary(r: Result) -> str:
    s = r.scored
    lines = [f"Final estimate: PPL = {s.ppl:.4f} +/- {s.ppl_uncertainty:.5f}"]
    if r.kld is not None:
        k = r.kld
        lines += ["",
                  "====== Perplexity statistics ======",
                  f"Mean PPL(Q)                   : {s.ppl:10.6f} ± {s.ppl_uncertainty:10.6f}",
                  f"Mean PPL(base)                : {k['ppl_base']:10.6f}",
                  f"Mean ln(PPL(Q)/PPL(base))     : {math.log(s.ppl / k['ppl_base']):10.6f}",
                  "",
                  "====== KL divergence statistics ======",
                  f"Mean    KLD: {k['mean']:10.6f} ± {k['mean_uncertainty']:10.6f}",
                  f"Maximum KLD: {k['max']:10.6f}",
                  f"99.9%   KLD: {k['p99_9']:10.6f}",
                  f"99.0%   KLD: {k['p99']:10.6f}",
                  f"Median  KLD: {k['median']:10.6f}",
                  "",
                  f"Same top p: {100 * k['same_top']:6.3f} %   (base: {k['base_model']} via {k['base_file']})"]
    return "\n".join(lines)
