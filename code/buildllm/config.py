"""The model's configuration: every size and switch of a GPT, checked once, here.

Explained in the chapter "The GPT model"; the options that are off by default (rotary
positions, RMSNorm, SwiGLU, grouped-query attention, QK-norm, an untied head, no biases) in
"From GPT-2 to today's LLMs". Every other module may import this one, and it imports none of
them: the layers take a checked :class:`GPTConfig` and need not check their sizes again.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

CHOICES = {
    "pos_encoding": ("learned", "sinusoidal", "rope"),
    "norm": ("layernorm", "rmsnorm"),
    "mlp": ("gelu", "relu", "swiglu", "relu2"),
}
POSITIVE = ("vocab_size", "block_size", "n_layer", "n_head", "n_embd")


@dataclass
class GPTConfig:
    """Every size and switch of the model. The defaults are GPT-2 small (124M parameters)."""

    vocab_size: int = 50257
    block_size: int = 1024  # the longest context, in tokens
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in linear layers and LayerNorms
    # Chapter "From GPT-2 to today's LLMs": each off by default, so GPT-2 stays GPT-2.
    pos_encoding: str = "learned"  # "learned" | "sinusoidal" | "rope"
    norm: str = "layernorm"  # "layernorm" | "rmsnorm"
    mlp: str = "gelu"  # "gelu" | "relu" | "swiglu" | "relu2" (relu(x) squared)
    mlp_hidden: int | None = None  # default 4 * n_embd (2/3 of that, rounded, for SwiGLU)
    n_kv_head: int | None = None  # None: one key/value head per query head
    qk_norm: bool = False
    tie_weights: bool = True  # the output head shares the token embedding matrix
    rope_base: float = 10000.0
    norm_eps: float = 1e-5
    logit_softcap: float | None = None  # logits = cap * tanh(logits / cap), as in Gemma 2
    value_embed: bool = False  # each block adds a token embedding of its own to the values

    def __post_init__(self):
        for name, allowed in CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in POSITIVE:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not isinstance(self.dropout, (int, float)) or not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        cap = self.logit_softcap
        if cap is not None and (isinstance(cap, bool) or not isinstance(cap, (int, float))
                                or not 0 < cap < math.inf):
            raise ValueError(f"logit_softcap must be a positive number (or None), got {cap!r}")
        self._check_heads()

    def _check_heads(self) -> None:
        """Heads split the width evenly; query heads split evenly among key/value heads."""
        if self.n_embd % self.n_head:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head "
                             f"({self.n_head}): each head gets n_embd / n_head dimensions")
        kv = self.n_kv_head if self.n_kv_head is not None else self.n_head
        if isinstance(kv, bool) or not isinstance(kv, int) or kv <= 0 or self.n_head % kv:
            raise ValueError(f"n_head ({self.n_head}) must be a multiple of n_kv_head ({kv}): "
                             f"each key/value head serves the same number of query heads")
        paired = {"sinusoidal": ("n_embd", self.n_embd), "rope": ("head_dim", self.head_dim)}
        if self.pos_encoding in paired and paired[self.pos_encoding][1] % 2:
            name, size = paired[self.pos_encoding]
            raise ValueError(f"{self.pos_encoding} positions pair dimensions two by two (sin "
                             f"and cos), so {name} must be even, got {size}")

    @property
    def head_dim(self) -> int:
        """The width of one attention head."""
        return self.n_embd // self.n_head

    @property
    def kv_heads(self) -> int:
        """How many key/value heads: ``n_kv_head``, or one per query head."""
        return self.n_kv_head or self.n_head

    @property
    def hidden_dim(self) -> int:
        """The feed-forward network's inner width."""
        if self.mlp_hidden is not None:
            return self.mlp_hidden
        if self.mlp == "swiglu":  # three matrices instead of two: keep the parameter count
            return 64 * math.ceil(2 * 4 * self.n_embd / 3 / 64)
        return 4 * self.n_embd

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> GPTConfig:
        """A configuration from a dict such as :meth:`to_dict` writes; unknown keys are an
        error that lists the known ones."""
        if not isinstance(d, dict):
            raise ValueError(f"a model configuration is a JSON object of fields, got "
                             f"{type(d).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        if unknown := set(d) - known:
            raise ValueError(f"unknown GPTConfig field(s) {sorted(unknown)}; "
                             f"known: {sorted(known)}")
        return cls(**d)


PRESETS: dict[str, dict] = {
    # GPT-2 small: 124,439,808 parameters with the tied head.
    "gpt2": dict(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768),
    # The book's model: trains on two CPU cores in minutes.
    "book": dict(vocab_size=1024, block_size=128, n_layer=4, n_head=4, n_embd=128),
    # The book's model with Llama's parts (chapter "From GPT-2 to today's LLMs"): rotary
    # positions, RMSNorm, SwiGLU, two query heads per key/value head, untied head, no biases.
    "llama": dict(vocab_size=1024, block_size=128, n_layer=4, n_head=4, n_embd=128,
                  pos_encoding="rope", norm="rmsnorm", mlp="swiglu", n_kv_head=2,
                  tie_weights=False, bias=False),
}


def preset(name: str, **overrides) -> GPTConfig:
    """A named configuration (see :data:`PRESETS`), with fields overridden by keyword."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return GPTConfig(**{**PRESETS[name], **overrides})
