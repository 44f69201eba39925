"""The Python API: lowbit.load(path) -> Model."""
import numpy as np

from . import backend
from .format import LowbitFile
from .model import Transformer
from .generate import GenerationStats, default_sampling, generate_ids, stream_text
from .sampling import Sampler, SamplingParams


class Model:
    """A lowbit model, memory-mapped: nothing of the weights is copied at load. `backend` is the
    lowbit.backend.Choice (name, reason) that runs it."""

    def __init__(self, path, n_ctx: int = None, device: str = "cpu"):
        self.file = LowbitFile(path)
        self.path = self.file.path
        self.backend = backend.select(self.file, device)   # backend.Choice: the name and the reason
        self.transformer = _build(self.file, self.backend, n_ctx)
        self.device = "cuda" if self.backend.name == backend.CUDA else "cpu"
        self.config = self.transformer.config
        self.tokenizer = self.transformer.tokenizer
        self.metadata = self.file.metadata
        self.last_stats = None

    @property
    def eos_ids(self):
        return set(self.tokenizer.eos_ids)

    def tokenize(self, text: str, add_bos: bool = None) -> list:
        return self.tokenizer.encode(text, add_bos=add_bos)

    def detokenize(self, ids) -> str:
        return self.tokenizer.decode(ids)

    def logits(self, ids) -> np.ndarray:
        """float32 logits (len(ids), vocab) for `ids` in a fresh context."""
        ids = list(ids)
        cache = self.transformer.new_cache() if len(ids) <= self.transformer.n_ctx else None
        if cache is None:
            raise ValueError(f"{len(ids)} tokens exceed the context length {self.transformer.n_ctx}")
        return self.transformer.forward(ids, cache, all_logits=True)

    def sampling(self, **overrides) -> SamplingParams:
        params = default_sampling(self.metadata)
        for k, v in overrides.items():
            if v is not None:
                if k not in SamplingParams.names():
                    raise TypeError(f"unknown sampling parameter {k!r}")
                setattr(params, k, v)
        return params.validate()

    def generate_ids(self, prompt, max_tokens: int = 256, stop_on_eos: bool = True, **sampling) -> list:
        ids = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        stats = GenerationStats()
        eos = self.eos_ids if stop_on_eos else set()
        out = list(generate_ids(self.transformer, self.transformer.new_cache(), ids,
                                Sampler(self.sampling(**sampling)), max_tokens, eos, stats))
        self.last_stats = stats
        return out

    def generate(self, prompt, max_tokens: int = 256, stop=(), **sampling):
        """Yield text pieces as they are generated. `prompt` is text or token ids."""
        ids = self.tokenize(prompt) if isinstance(prompt, str) else list(prompt)
        stats = self.last_stats = GenerationStats()
        stream = generate_ids(self.transformer, self.transformer.new_cache(), ids,
                              Sampler(self.sampling(**sampling)), max_tokens, self.eos_ids, stats)
        yield from stream_text(self.tokenizer, stream, context_ids=ids, stop=stop)


def _build(f: LowbitFile, choice, n_ctx):
    """The forward pass of the backend `choice` names: the CUDA forward, or the reference forward
    with the C block forward attached (cpu-native) or not (cpu-reference)."""
    if choice.name == backend.CUDA:
        from .cuda.model import CudaTransformer
        return CudaTransformer(f, n_ctx=n_ctx)
    t = Transformer(f, n_ctx=n_ctx)
    if choice.name == backend.CPU_NATIVE:
        from .native.model import NativeTransformer
        t.native = NativeTransformer(t)
    return t


_select_device = backend.select_device   # the earlier name (tests/test_cuda.py)


def load(path, n_ctx: int = None, device: str = "cpu") -> Model:
    return Model(path, n_ctx=n_ctx, device=device)
