"""The GPT model: embeddings, a stack of transformer blocks, a final norm and the output head.

Explained in the chapter "The GPT model"; the options of :class:`GPTConfig` that are off by
default (rotary positions, RMSNorm, SwiGLU, grouped-query attention, QK-norm, an untied head, no
biases) are explained in "From GPT-2 to today's LLMs". With the defaults, the model is GPT-2,
and its parameter names follow Hugging Face's GPT-2 so that weights convert one to one.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from buildllm.attention import KVCache
from buildllm.embeddings import SinusoidalPositionalEncoding
from buildllm.layers import Block, make_norm

_CHOICES = {
    "pos_encoding": ("learned", "sinusoidal", "rope"),
    "norm": ("layernorm", "rmsnorm"),
    "mlp": ("gelu", "relu", "swiglu"),
}


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
    mlp: str = "gelu"  # "gelu" | "relu" | "swiglu"
    mlp_hidden: int | None = None  # default 4 * n_embd (2/3 of that, rounded, for SwiGLU)
    n_kv_head: int | None = None  # None: one key/value head per query head
    qk_norm: bool = False
    tie_weights: bool = True  # the output head shares the token embedding matrix
    rope_base: float = 10000.0
    norm_eps: float = 1e-5

    def __post_init__(self):
        for name, allowed in _CHOICES.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name in ("vocab_size", "block_size", "n_layer", "n_head", "n_embd"):
            value = getattr(self, name)
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")

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
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(
                f"unknown GPTConfig field(s) {sorted(unknown)}; known: {sorted(known)}"
            )
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


class GPT(nn.Module):
    """A decoder-only transformer: token ids ``(B, T)`` -> next-token logits ``(B, T, V)``."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        if config.pos_encoding == "learned":
            self.wpe = nn.Embedding(config.block_size, config.n_embd)
        elif config.pos_encoding == "sinusoidal":
            self.wpe = SinusoidalPositionalEncoding(config.block_size, config.n_embd)
        else:  # rope: positions enter inside attention
            self.wpe = None
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = make_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale the residual projections down
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache: list[KVCache] | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``(B, T, vocab_size)`` and, given ``targets`` ``(B, T)``, the mean cross-entropy.

        Targets equal to -1 are ignored. With ``cache`` (from :meth:`new_cache`), ``idx`` holds
        only the new tokens, which follow the ``cache[0].length`` tokens already seen.
        """
        if idx.dim() != 2:
            raise ValueError(f"idx must be token ids of shape (B, T), got {tuple(idx.shape)}; "
                             f"for a single sequence add a batch dimension: idx[None]")
        B, T = idx.shape
        offset = cache[0].length if cache is not None else 0
        if offset + T > self.config.block_size:
            raise ValueError(
                f"sequence of {offset + T} tokens is longer than the model's context "
                f"(block_size={self.config.block_size}); crop the input to its last "
                f"{self.config.block_size} tokens"
            )
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(offset, offset + T, device=idx.device))  # + (T, C)
        x = self.drop(x)
        for i, block in enumerate(self.h):
            x = block(x, cache[i] if cache is not None else None)
        x = self.ln_f(x)
        logits = self.lm_head(x)  # (B, T, vocab_size)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.view(-1, logits.size(-1)), targets.reshape(-1),
                                   ignore_index=-1)
        return logits, loss

    def new_cache(self, batch_size: int, max_len: int | None = None) -> list[KVCache]:
        """An empty key/value cache for every layer, for up to ``max_len`` positions."""
        attn = self.h[0].attn
        p = self.wte.weight
        return [KVCache(batch_size, attn.n_kv_head, max_len or self.config.block_size,
                        attn.head_dim, dtype=p.dtype, device=p.device) for _ in self.h]

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component: embeddings, attention, feed-forward, norms, output head.

        A tied head shares the embedding matrix, so it adds nothing; the total counts each
        tensor once.
        """
        counts = {"embeddings": 0, "attention": 0, "feed-forward": 0, "norms": 0, "head": 0}
        seen = set()
        for name, p in self.named_parameters():
            if id(p) in seen:
                continue
            seen.add(id(p))
            if name.startswith(("wte.", "wpe.")):
                counts["embeddings"] += p.numel()
            elif ".attn." in name and "_norm." not in name:
                counts["attention"] += p.numel()
            elif ".mlp." in name:
                counts["feed-forward"] += p.numel()
            elif name.startswith("lm_head."):
                counts["head"] += p.numel()
            else:
                counts["norms"] += p.numel()
        counts["total"] = sum(counts.values())
        return counts
