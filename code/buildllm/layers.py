"""The parts of a transformer block besides attention: the feed-forward network, and the block
that joins attention and feed-forward with normalization and residual connections.

Explained in the chapter "The GPT model" (FeedForward, Block) and in "From GPT-2 to today's
LLMs" (SwiGLU). The normalizations are in :mod:`buildllm.norms`, attention in
:mod:`buildllm.attention`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from buildllm.attention import CausalSelfAttention, KVCache
from buildllm.config import GPTConfig
from buildllm.norms import make_norm


class ReLUSquared(nn.Module):
    """``relu(x) ** 2``, entry by entry (So et al., 2021, "Primer"; used by modded-nanogpt)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x).square()


class FeedForward(nn.Module):
    """Position-wise feed-forward network: ``(B, T, C)`` -> ``(B, T, hidden)`` -> ``(B, T, C)``.

    GELU (GPT-2's tanh approximation) by default, ReLU when ``config.mlp == "relu"``, ReLU
    squared when ``"relu2"``.
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, config.hidden_dim, bias=config.bias)
        activations = {"relu": nn.ReLU, "relu2": ReLUSquared}
        self.act = activations.get(config.mlp, lambda: nn.GELU(approximate="tanh"))()
        self.c_proj = nn.Linear(config.hidden_dim, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


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


class Block(nn.Module):
    """A pre-norm transformer block: ``x + attn(norm(x))``, then ``x + mlp(norm(x))``."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.ln_1 = make_norm(config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = make_norm(config)
        self.mlp = SwiGLU(config) if config.mlp == "swiglu" else FeedForward(config)

    def forward(self, x: torch.Tensor, cache: KVCache | None = None,
                ve: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, T, C)``; ``ve``: value embeddings for the attention (``value_embed``)."""
        x = x + self.attn(self.ln_1(x), cache, ve)
        x = x + self.mlp(self.ln_2(x))
        return x
