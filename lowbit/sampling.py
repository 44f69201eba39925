"""Choosing the next token from logits: penalties, then greedy or temperature sampling with
top-k, top-p and min-p filtering (the order transformers and llama.cpp use)."""
from dataclasses import dataclass, fields
from typing import Optional

import numpy as np


@dataclass
class SamplingParams:
    temperature: float = 0.8
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05
    repetition_penalty: float = 1.0    # >1 discourages tokens already seen (transformers' rule)
    presence_penalty: float = 0.0      # subtracted once from every token already seen
    repeat_last_n: int = 64            # how far back the penalties look (0: whole context)
    seed: Optional[int] = None

    def validate(self):
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if self.top_k < 0:
            raise ValueError("top_k must be >= 0 (0 disables it)")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if not 0 <= self.min_p < 1:
            raise ValueError("min_p must be in [0, 1)")
        if self.repetition_penalty <= 0:
            raise ValueError("repetition_penalty must be > 0")
        return self

    @classmethod
    def names(cls):
        return [f.name for f in fields(cls)]


class Sampler:
    def __init__(self, params: SamplingParams):
        self.p = params.validate()
        self.rng = np.random.default_rng(params.seed)

    def __call__(self, logits: np.ndarray, history=()) -> int:
        p = self.p
        logits = np.asarray(logits, dtype=np.float32).reshape(-1)
        if (p.repetition_penalty != 1.0 or p.presence_penalty) and len(history):
            recent = np.unique(np.asarray(history[-p.repeat_last_n:] if p.repeat_last_n else history, dtype=np.int64))
            logits = logits.copy()
            seen = logits[recent]
            logits[recent] = np.where(seen > 0, seen / p.repetition_penalty, seen * p.repetition_penalty) - p.presence_penalty
        if p.temperature == 0:
            return int(np.argmax(logits))
        z = logits.astype(np.float64) / p.temperature
        if 0 < p.top_k < z.size:
            idx = np.argpartition(-z, p.top_k - 1)[:p.top_k]
        else:
            idx = np.arange(z.size)
        idx = idx[np.argsort(-z[idx], kind="stable")]
        probs = np.exp(z[idx] - z[idx[0]])
        probs /= probs.sum()
        if p.top_p < 1.0:
            keep = int(np.searchsorted(np.cumsum(probs), p.top_p)) + 1
            idx, probs = idx[:keep], probs[:keep]
        if p.min_p > 0:
            keep = probs >= p.min_p * probs[0]
            idx, probs = idx[keep], probs[keep]
        probs /= probs.sum()
        return int(idx[self.rng.choice(len(idx), p=probs)])
