"""Decoding: prefill the prompt in one batch, then one token at a time, streaming text and
stopping on EOS ids, stop strings or the token budget."""
import time
from dataclasses import dataclass, field

from .sampling import Sampler, SamplingParams
from .tokenizer import StreamDecoder


@dataclass
class GenerationStats:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0
    stop_reason: str = ""
    token_ids: list = field(default_factory=list)

    @property
    def prefill_tps(self):
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds else 0.0

    @property
    def decode_tps(self):
        # the first token comes from the prefill; the rest from decode steps
        steps = max(self.generated_tokens - 1, 0)
        return steps / self.decode_seconds if self.decode_seconds else 0.0


def generate_ids(transformer, cache, prompt_ids, sampler: Sampler, max_tokens, eos_ids, stats: GenerationStats):
    """Yield generated token ids. The cache may already hold a prefix (chat turns): only
    `prompt_ids` (the new tokens) are processed."""
    history = list(prompt_ids)
    if cache.pos + len(prompt_ids) >= cache.n_ctx:
        raise ValueError(f"the prompt ({len(prompt_ids)} tokens after {cache.pos} in the cache) does not fit "
                         f"the context of {cache.n_ctx} tokens; use a shorter prompt or a larger --ctx")
    t0 = time.perf_counter()
    logits = transformer.forward(prompt_ids, cache)[-1]
    stats.prompt_tokens += len(prompt_ids)
    stats.prefill_seconds += time.perf_counter() - t0
    t0 = time.perf_counter()
    # greedy, on a runtime that picks tokens itself (CUDA: decode_greedy pipelines the steps)
    p = getattr(sampler, "p", None)
    greedy = getattr(transformer, "decode_greedy", None)
    if p is None or p.temperature != 0 or p.repetition_penalty != 1.0 or p.presence_penalty:
        greedy = None
    ahead = None
    try:
        for i in range(max_tokens):
            tok = sampler(logits, history) if ahead is None else next(ahead)
            history.append(tok)
            stats.generated_tokens += 1
            stats.token_ids.append(tok)
            if tok in eos_ids:
                stats.stop_reason = "eos"
                stats.decode_seconds += time.perf_counter() - t0
                yield tok
                return
            yield tok
            if i == max_tokens - 1:
                break
            if cache.pos >= cache.n_ctx:
                stats.stop_reason = "context"
                stats.decode_seconds += time.perf_counter() - t0
                return
            if greedy is None:
                logits = transformer.forward([tok], cache)[-1]
            elif ahead is None:
                ahead = greedy(tok, cache, max_tokens - 1 - i)
    finally:
        if ahead is not None:
            ahead.close()
    stats.stop_reason = stats.stop_reason or "length"
    stats.decode_seconds += time.perf_counter() - t0


def stream_text(tokenizer, id_stream, context_ids=(), stop=()):
    """Text pieces from a stream of ids, cut before the first stop string. Text that might be
    the start of a stop string is held back until it is known not to be."""
    decoder = StreamDecoder(tokenizer, context_ids)
    stop = [s for s in stop if s]
    pending = ""
    for tok in id_stream:
        pending += decoder.push(tok)
        if stop:
            hits = [pending.find(s) for s in stop if s in pending]
            if hits:
                yield pending[:min(hits)]
                id_stream.close()
                return
            hold = max((k for s in stop for k in range(1, len(s)) if pending.endswith(s[:k])), default=0)
            if len(pending) > hold:
                yield pending[:len(pending) - hold]
                pending = pending[len(pending) - hold:]
        elif pending:
            yield pending
            pending = ""
    pending += decoder.flush()
    if pending:
        yield pending


def default_sampling(metadata: dict) -> SamplingParams:
    """llama.cpp's defaults, overridden by the model's generation_config.json."""
    params = SamplingParams()
    gen = metadata.get("generation") or {}
    for key, attr in (("temperature", "temperature"), ("top_k", "top_k"), ("top_p", "top_p"),
                      ("min_p", "min_p"), ("repetition_penalty", "repetition_penalty")):
        v = gen.get(key)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            setattr(params, attr, type(getattr(params, attr))(v))
    if gen.get("do_sample") is False:
        params.temperature = 0.0
    return params
