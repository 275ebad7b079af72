"""Embeddings and positional encodings: from token ids to vectors that know their place.

Explained in the chapter "Embeddings and positional encoding". A token embedding is a lookup
table (``torch.nn.Embedding``): row ``i`` is the vector of token ``i``. Attention treats its
input as a set, so the position of each token must be added to it. Three ways are here:

- :func:`sinusoidal_encoding`, the fixed waves of "Attention Is All You Need";
- a learned table of position vectors (what GPT-2 uses; ``torch.nn.Embedding`` in the model);
- :class:`RotaryEmbedding` (RoPE), which rotates queries and keys instead of adding anything.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def _check_even(d: int, what: str) -> None:
    if not isinstance(d, int) or d <= 0 or d % 2:
        raise ValueError(
            f"{what} must be a positive even integer (dimensions come in sin/cos pairs), got {d!r}"
        )


def inverse_frequencies(d: int, base: float = 10000.0) -> torch.Tensor:
    """The angular frequency of each dimension pair ``i``: ``base ** (-2i / d)``, shape ``(d/2,)``.

    Computed in float64 as ``exp(-(2i/d) * ln(base))``, which stays accurate for every ``i``.
    """
    _check_even(d, "the dimension")
    two_i = torch.arange(0, d, 2, dtype=torch.float64)
    return torch.exp(-(two_i / d) * math.log(base))


def sinusoidal_encoding(
    n_positions: int, d_model: int, base: float = 10000.0, dtype: torch.dtype = torch.float32
) -> torch.Tensor:
    """The sinusoidal positional encoding, shape ``(n_positions, d_model)``.

    ``PE[pos, 2i] = sin(pos / base^(2i/d_model))`` and ``PE[pos, 2i+1] = cos(...)`` of the
    same angle. The angles are computed in float64 and only the result is cast to ``dtype``.
    """
    _check_even(d_model, "d_model")
    if not isinstance(n_positions, int) or n_positions < 0:
        raise ValueError(f"n_positions must be a non-negative integer, got {n_positions!r}")
    pos = torch.arange(n_positions, dtype=torch.float64)[:, None]  # (T, 1)
    angles = pos * inverse_frequencies(d_model, base)[None, :]  # (T, d_model/2)
    pe = torch.empty(n_positions, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles)
    return pe.to(dtype)


class SinusoidalPositionalEncoding(nn.Module):
    """A fixed (not trained) table of sinusoidal encodings: ``forward(T, offset)`` -> ``(T, C)``."""

    def __init__(self, block_size: int, d_model: int, base: float = 10000.0):
        super().__init__()
        self.register_buffer("pe", sinusoidal_encoding(block_size, d_model, base), persistent=False)

    def forward(self, positions: torch.Tensor) -> torch.Tensor:
        """Encodings of the given positions: ``(T,)`` -> ``(T, d_model)``."""
        return self.pe[positions]


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair ``(x[..., 2i], x[..., 2i+1])`` by the angle whose cosine and sine are given.

    ``x``: ``(..., T, d)``; ``cos``, ``sin``: ``(T, d/2)``. Returns a tensor shaped like ``x``.
    """
    x_even, x_odd = x[..., 0::2], x[..., 1::2]
    rotated_even = x_even * cos - x_odd * sin
    rotated_odd = x_even * sin + x_odd * cos
    return torch.stack((rotated_even, rotated_odd), dim=-1).flatten(-2)


class RotaryEmbedding(nn.Module):
    """Rotary position embedding (RoPE): rotate query and key pairs by ``pos * frequency``.

    After the rotation the dot product of a query at position ``m`` and a key at position ``n``
    depends on ``m - n`` only. Applied to tensors of shape ``(B, n_head, T, head_dim)``.
    """

    def __init__(self, head_dim: int, max_positions: int, base: float = 10000.0):
        super().__init__()
        _check_even(head_dim, "head_dim")
        angles = torch.arange(max_positions, dtype=torch.float64)[:, None] * inverse_frequencies(
            head_dim, base
        )[None, :]  # (max_positions, head_dim/2)
        self.register_buffer("cos", torch.cos(angles).float(), persistent=False)
        self.register_buffer("sin", torch.sin(angles).float(), persistent=False)

    def forward(self, x: torch.Tensor, offset: int = 0) -> torch.Tensor:
        """Rotate ``x`` ``(B, H, T, head_dim)`` whose first token sits at position ``offset``."""
        T = x.size(-2)
        if offset + T > self.cos.size(0):
            raise ValueError(
                f"positions up to {offset + T} requested, but RoPE was built for "
                f"{self.cos.size(0)}; raise the model's block_size"
            )
        cos = self.cos[offset : offset + T].to(x.dtype)
        sin = self.sin[offset : offset + T].to(x.dtype)
        return rotate_pairs(x, cos, sin)
