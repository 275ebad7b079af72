"""Causal self-attention: ``softmax(Q K^T / sqrt(d_k) + M) V``. Explained in the chapter
"Attention".

:func:`scaled_dot_product_attention` is the formula written out, for reading and for checking,
with the mask of :func:`causal_mask`; :class:`CausalSelfAttention` is the layer: several heads,
one fused projection for queries, keys and values, and PyTorch's fused kernel (proven equal to
the formula by the tests). Later chapters build on the layer: the key/value cache of
generation (:mod:`buildllm.kvcache`) and grouped-query attention (:mod:`buildllm.gqa`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from buildllm.config import GPTConfig


def causal_mask(T: int, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> torch.Tensor:
    """The additive mask ``M`` ``(T, T)``: 0 where a query may look (its own position and
    the earlier ones), ``-inf`` above the diagonal, where the later positions are."""
    return torch.full((T, T), float("-inf"), dtype=dtype, device=device).triu(1)


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention exactly as the formula says.

    ``q``: ``(..., T_q, d_k)``, ``k``: ``(..., T_k, d_k)``, ``v``: ``(..., T_k, d_v)``,
    ``mask``: additive, broadcastable to ``(..., T_q, T_k)``. Returns ``(..., T_q, d_v)``.
    """
    d_k = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (..., T_q, T_k)
    if mask is not None:
        scores = scores + mask
    weights = torch.softmax(scores, dim=-1)  # each row sums to 1
    return weights @ v


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: ``(B, T, C)`` -> ``(B, T, C)``."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.head_dim = config.n_head, config.head_dim
        # Q, K, V
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout  # of the attention weights, in training
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, T, C)`` -> ``(B, T, C)``; each position sees itself and the past
        only."""
        q, k, v = self.c_attn(x).split(x.size(-1), dim=2)  # (B, T, C) each
        q, k, v = self.heads(q), self.heads(k), self.heads(v)  # (B, n_head, T, head_dim)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.merge(y)

    def heads(self, t: torch.Tensor) -> torch.Tensor:
        """``(B, T, n * head_dim)`` -> ``(B, n, T, head_dim)``: each head's part of the
        vectors."""
        B, T, _ = t.shape
        return t.view(B, T, -1, self.head_dim).transpose(1, 2)

    def merge(self, y: torch.Tensor) -> torch.Tensor:
        """``(B, n_head, T, head_dim)`` -> ``(B, T, C)``: the heads side by side again, then
        the output projection."""
        B, _, T, _ = y.shape
        return self.resid_dropout(self.c_proj(y.transpose(1, 2).reshape(B, T, -1)))
