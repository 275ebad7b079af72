"""Embeddings and positional encodings: from token ids to vectors that know their place.

Explained in the chapter "Embeddings and positional encoding". A token embedding is a
lookup table (``torch.nn.Embedding``): row ``i`` is the vector of token ``i``, which is
what a one-hot vector times the table gives (:func:`one_hot_embedding` proves it, slowly).
Attention treats its input as a set, so the position of each token must be added to it.
Three ways are here:

- :func:`sinusoidal_encoding`, the fixed waves of "Attention Is All You Need";
- a learned table of position vectors (GPT-2's; a ``torch.nn.Embedding`` in the model);
- :class:`RotaryEmbedding` (RoPE), which rotates queries and keys instead of adding (the model
  puts it inside attention: chapter "From GPT-2 to today's LLMs").

:func:`make_positions` gives the model the table its configuration names.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from buildllm.config import GPTConfig


def one_hot_embedding(ids: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """The embedding lookup written as a matrix product: ``one_hot(ids) @ weight``.

    ``ids``: integer tensor ``(B, T)`` (any shape); ``weight``: ``(V, C)``. Returns
    ``(B, T, C)``, equal to ``weight[ids]``. Slow (it multiplies by ``V - 1`` zeros per
    row); the book uses it only to show what ``nn.Embedding`` computes.
    """
    assert not ids.is_floating_point(), f"ids are token ids, integers, not {ids.dtype}"
    one_hot = F.one_hot(ids.long(), weight.size(0))  # (B, T, V): a single 1 per row
    return one_hot.to(weight.dtype) @ weight


def inverse_frequencies(d: int, base: float = 10000.0) -> torch.Tensor:
    """The angular frequency ``base ** (-2i / d)`` of each pair ``i``, shape ``(d/2,)``.

    Computed in float64 as ``exp(-(2i/d) * ln(base))``, accurate for every ``i``.
    """
    assert d % 2 == 0, f"the dimension must be even (sin/cos pairs), got {d}"
    two_i = torch.arange(0, d, 2, dtype=torch.float64)
    return torch.exp(-(two_i / d) * math.log(base))


def sinusoidal_encoding(
    n_positions: int, d_model: int, base: float = 10000.0,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """The sinusoidal positional encoding, shape ``(n_positions, d_model)``.

    ``PE[pos, 2i] = sin(pos / base^(2i/d_model))`` and ``PE[pos, 2i+1] = cos(...)`` of
    the same angle. The angles are computed in float64; only the result is cast to
    ``dtype``.
    """
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]  # (T, 1)
    angles = pos * inverse_frequencies(d_model, base)[None, :]  # (T, d_model/2)
    pe = torch.empty(n_positions, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles)
    return pe.to(dtype)


def sinusoidal_shift_matrix(k: int, d_model: int, base: float = 10000.0) -> torch.Tensor:
    """The fixed matrix ``M`` with ``PE[pos + k] = M @ PE[pos]`` for every ``pos``.

    Block diagonal, float64, shape ``(d_model, d_model)``: for pair ``i``, with angle
    ``b = k * w_i``, the block is ``[[cos b, sin b], [-sin b, cos b]]``, because
    ``sin(a + b) = sin a cos b + cos a sin b`` and
    ``cos(a + b) = cos a cos b - sin a sin b``. It depends on ``k``, never on ``pos``.
    """
    b = k * inverse_frequencies(d_model, base)  # (d_model/2,)
    c, s = torch.cos(b), torch.sin(b)
    rows = (torch.stack((c, s), -1), torch.stack((-s, c), -1))  # 2 x (d_model/2, 2)
    blocks = torch.stack(rows, -2)  # (d_model/2, 2, 2)
    return torch.block_diag(*blocks)


class SinusoidalPositionalEncoding(nn.Module):
    """A fixed (not trained) table of sinusoidal encodings for ``block_size`` positions."""

    def __init__(self, block_size: int, d_model: int, base: float = 10000.0):
        super().__init__()
        pe = sinusoidal_encoding(block_size, d_model, base)  # (block_size, d_model)
        self.register_buffer("pe", pe, persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """Encodings of the given positions: ``(T,)`` -> ``(T, d_model)``."""
        assert (len(positions) == 0
                or 0 <= positions.min() <= positions.max() < len(self.pe)), (
            f"positions must lie in 0 .. {len(self.pe) - 1} (the table's length)")
        return self.pe[positions]


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair ``(x[..., 2i], x[..., 2i+1])`` by the angle with this cos and sin.

    ``x``: ``(..., T, d)``; ``cos``, ``sin``: ``(T, d/2)``. Returns a tensor like ``x``.
    """
    x_even, x_odd = x[..., 0::2], x[..., 1::2]
    rotated_even = x_even * cos - x_odd * sin
    rotated_odd = x_even * sin + x_odd * cos
    return torch.stack((rotated_even, rotated_odd), dim=-1).flatten(-2)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE): rotate query and key pairs by ``pos * frequency``.

    After the rotation the dot product of a query at position ``m`` and a key at
    position ``n`` depends on ``m - n`` only. Applied to ``(B, n_head, T, head_dim)``.
    """

    def __init__(self, head_dim: int, max_positions: int, base: float = 10000.0):
        super().__init__()
        pos = torch.arange(max_positions, dtype=torch.float64)[:, None]  # (T_max, 1)
        angles = pos * inverse_frequencies(head_dim, base)[None, :]  # (T_max, head_dim/2)
        self.register_buffer("cos", torch.cos(angles).float(), persistent=False)
        self.register_buffer("sin", torch.sin(angles).float(), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Rotate ``x`` ``(B, H, T, head_dim)``, whose first token is at ``offset``."""
        T = x.size(-2)
        assert offset + T <= self.cos.size(0), (
            "positions past max_positions: raise block_size")
        cos = self.cos[offset : offset + T].to(x.dtype)  # (T, head_dim/2)
        sin = self.sin[offset : offset + T].to(x.dtype)
        return rotate_pairs(x, cos, sin)


class NoPositions(nn.Module):
    """No position vectors to add (0), for a model whose positions enter inside attention
    (rotary positions, chapter "From GPT-2 to today's LLMs")."""

    def forward(self, positions: torch.Tensor) -> float:
        return 0.0


def make_positions(config: GPTConfig) -> nn.Module:
    """The position vectors the configuration asks for, ``(T,)`` -> ``(T, n_embd)``: a learned
    table (GPT-2's), the fixed sinusoidal one, or none (rotary positions act in attention)."""
    if config.pos_encoding == "sinusoidal":
        return SinusoidalPositionalEncoding(config.block_size, config.n_embd)
    if config.pos_encoding == "rope":
        return NoPositions()
    return nn.Embedding(config.block_size, config.n_embd)
