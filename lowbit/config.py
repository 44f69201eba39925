"""Model hyperparameters as stored in the file's metadata ("architecture"), validated on load so
that a hostile file cannot ask for absurd allocations."""
from dataclasses import dataclass, asdict, field
from typing import Optional

from .errors import FormatError

ARCHITECTURES = ("llama", "qwen2")
DEFAULT_CTX = 4096   # context used when none is asked for, if the model's is longer (as llama.cpp)
MAX_KV_FRACTION = 0.5   # a KV cache may take at most this share of physical memory


def context_size(path, c: "ModelConfig", n_ctx=None) -> int:
    """The context to allocate: the one asked for, else the model's capped at DEFAULT_CTX. The file's
    context_length is not backed by any tensor bytes, so it must not size allocations by itself."""
    import os
    n = int(n_ctx) if n_ctx else min(c.context_length, DEFAULT_CTX)
    if not 1 <= n <= LIMITS["context_length"]:
        raise ValueError(f"context length {n} is outside 1..{LIMITS['context_length']}")
    kv_bytes = 2 * 4 * c.num_layers * n * c.num_kv_heads * c.head_dim
    try:
        phys = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        phys = 1 << 36
    if kv_bytes > phys * MAX_KV_FRACTION:
        raise ValueError(f"{path}: a KV cache for a context of {n} tokens needs {kv_bytes / 2**30:.1f} GiB, more "
                         f"than half of this machine's memory; ask for a smaller context (--ctx)")
    return n
LIMITS = {"vocab_size": 1 << 22, "hidden_size": 1 << 16, "intermediate_size": 1 << 18,
          "num_layers": 1024, "num_heads": 1024, "num_kv_heads": 1024, "head_dim": 1024,
          "context_length": 1 << 20}


@dataclass
class ModelConfig:
    arch: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    context_length: int
    rms_norm_eps: float
    rope_theta: float
    rope_scaling: Optional[dict] = None     # transformers' rope_scaling / rope_parameters, minus theta
    tie_word_embeddings: bool = False
    attention_bias: bool = False            # q/k/v projections carry biases (Qwen2)
    hidden_act: str = "silu"
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, path, d) -> "ModelConfig":
        if not isinstance(d, dict):
            raise FormatError(path, "metadata.architecture is missing or not an object")
        try:
            cfg = cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})
        except TypeError as e:
            raise FormatError(path, f"metadata.architecture is incomplete: {e}") from None
        cfg.validate(path)
        return cfg

    def validate(self, path):
        if self.arch not in ARCHITECTURES:
            raise FormatError(path, f"architecture {self.arch!r} is not supported (supported: {', '.join(ARCHITECTURES)})")
        for k, cap in LIMITS.items():
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= cap:
                raise FormatError(path, f"metadata.architecture.{k} = {v!r} is outside 1..{cap}")
        if self.num_heads % self.num_kv_heads:
            raise FormatError(path, f"num_heads {self.num_heads} is not a multiple of num_kv_heads {self.num_kv_heads}")
        if self.head_dim % 2:
            raise FormatError(path, f"head_dim {self.head_dim} must be even for RoPE")
        for k in ("rms_norm_eps", "rope_theta"):
            v = getattr(self, k)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not v > 0:
                raise FormatError(path, f"metadata.architecture.{k} = {v!r} must be a positive number")
        if self.hidden_act != "silu":
            raise FormatError(path, f"activation {self.hidden_act!r} is not supported (only silu)")
        if self.rope_scaling is not None:
            self._validate_rope_scaling(path, self.rope_scaling)

    @staticmethod
    def _validate_rope_scaling(path, rs):
        """SPEC 3.2: null, linear {factor} or llama3 {factor, low/high_freq_factor, original_max_position_embeddings};
        checked here so that a hostile value is a FormatError, not a division by zero at load."""
        where = "metadata.architecture.rope_scaling"
        if not isinstance(rs, dict):
            raise FormatError(path, f"{where} must be an object or null")
        rtype = rs.get("rope_type", rs.get("type", "default"))
        if rtype not in ("default", "linear", "llama3"):
            raise FormatError(path, f"{where}.rope_type {str(rtype)[:40]!r} is not supported (linear, llama3)")

        def positive(key, default=None):
            v = rs.get(key, default)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < float("inf"):
                raise FormatError(path, f"{where}.{key} = {str(v)[:40]} must be a positive number")
            return v
        if rtype in ("linear", "llama3"):
            positive("factor")
        if rtype == "llama3":
            if not positive("low_freq_factor", 1.0) < positive("high_freq_factor", 4.0):
                raise FormatError(path, f"{where}: low_freq_factor must be below high_freq_factor")
            positive("original_max_position_embeddings", 8192)
