"""The parts of a transformer block besides attention, and the block: the feed-forward network,
and the block that joins attention and feed-forward with normalization and residual connections.

Explained in the chapter "The GPT model" (FeedForward, Block) and in "From GPT-2 to today's
LLMs" (SwiGLU, ReLU squared). A block takes the parts its configuration names
(:func:`make_attention`, :func:`make_mlp`, :func:`~buildllm.norms.make_norm`): GPT-2's by
default, those of the later chapter when its options are on.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from buildllm.config import GPTConfig
from buildllm.gqa import GroupedQueryAttention
from buildllm.kvcache import CachedSelfAttention
from buildllm.norms import make_norm


class FeedForward(nn.Module):
    """Position-wise feed-forward network: ``(B, T, C)`` -> ``(B, T, hidden)`` ->
    ``(B, T, C)``, with GPT-2's GELU (its tanh approximation), ReLU for ``mlp="relu"``, or
    the nonlinearity ``act`` given."""

    def __init__(self, config: GPTConfig, act: nn.Module | None = None):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.hidden_dim, bias=config.bias)
        relu = config.mlp == "relu"
        self.act = (act if act is not None else nn.ReLU() if relu
                    else nn.GELU(approximate="tanh"))
        self.c_proj = nn.Linear(config.hidden_dim, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class ReLUSquared(nn.Module):
    """``relu(x) ** 2``, entry by entry (So et al., 2021, "Primer"; used by
    modded-nanogpt)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x).square()


class SwiGLU(nn.Module):
    """Gated feed-forward network: ``down(silu(gate(x)) * up(x))``, as in Llama."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.gate = nn.Linear(config.n_embd, config.hidden_dim, bias=config.bias)
        self.up = nn.Linear(config.n_embd, config.hidden_dim, bias=config.bias)
        self.c_proj = nn.Linear(config.hidden_dim, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(F.silu(self.gate(x)) * self.up(x)))


def make_mlp(config: GPTConfig) -> nn.Module:
    """The feed-forward network ``config.mlp`` names: GELU (GPT-2's), ReLU, ReLU squared or
    SwiGLU."""
    if config.mlp == "swiglu":
        return SwiGLU(config)
    return FeedForward(config, ReLUSquared() if config.mlp == "relu2" else None)


def make_attention(config: GPTConfig) -> nn.Module:
    """The attention the configuration asks for: that of the chapter "Attention", with the
    key/value cache of generation (:class:`~buildllm.kvcache.CachedSelfAttention`), or, with any
    of the options of grouped-query attention, rotary positions, QK-norm or value embeddings,
    :class:`~buildllm.gqa.GroupedQueryAttention`."""
    modern = (config.n_kv_head is not None or config.qk_norm or config.value_embed
              or config.pos_encoding == "rope")
    return GroupedQueryAttention(config) if modern else CachedSelfAttention(config)


class Block(nn.Module):
    """A pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = make_attention(config)
        self.ln_2 = make_norm(config)
        self.mlp = make_mlp(config)

    def forward(self, x: torch.Tensor, cache=None) -> torch.Tensor:
        """``x`` ``(B, T, C)`` -> ``(B, T, C)``; ``cache``: what generation keeps of the
        earlier tokens (chapter "Generating text")."""
        x = x + self.attn(self.ln_1(x), cache)
        return x + self.mlp(self.ln_2(x))
