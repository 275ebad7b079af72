"""Attention as today's LLMs build it: grouped-query attention, with rotary positions, QK-norm
and value embeddings as the configuration asks. Explained in the chapter "From GPT-2 to
today's LLMs".

- **Grouped-query attention** (``n_kv_head``): fewer key/value heads than query heads, each
  serving ``n_head / n_kv_head`` query heads; the key/value cache shrinks by the same factor.
- **Rotary positions** (``pos_encoding="rope"``): queries and keys rotated by their position
  (:class:`~buildllm.embeddings.RotaryEmbedding`), after the positions the cache holds.
- **QK-norm** (``qk_norm``): an RMSNorm on each query and each key, per head.
- **Value embeddings** (``value_embed``): a token embedding of the block's own, added to the
  values (the model makes them: :class:`~buildllm.model.SpeedrunGPT`).
"""

from __future__ import annotations

import torch
from torch import nn

from buildllm.config import GPTConfig
from buildllm.embeddings import RotaryEmbedding
from buildllm.kvcache import CachedSelfAttention, KVCache
from buildllm.norms import RMSNorm


class GroupedQueryAttention(CachedSelfAttention):
    """Causal self-attention with ``n_kv_head`` key/value heads, rotary positions, QK-norm
    and value embeddings as ``config`` asks: ``(B, T, C)`` -> ``(B, T, C)``, with a cache as
    :class:`~buildllm.kvcache.CachedSelfAttention` has one."""

    def __init__(self, config: GPTConfig):
        # not chapter 3's constructor: the projection has another width
        nn.Module.__init__(self)
        self.n_head, self.n_kv_head = config.n_head, config.kv_heads
        self.head_dim = config.head_dim
        width = (self.n_head + 2 * self.n_kv_head) * self.head_dim  # queries, keys, values
        self.c_attn = nn.Linear(config.n_embd, width, bias=config.bias)
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout, self.resid_dropout = config.dropout, nn.Dropout(config.dropout)
        self.rope = (RotaryEmbedding(self.head_dim, config.block_size, config.rope_base)
                     if config.pos_encoding == "rope" else None)
        self.q_norm = RMSNorm(self.head_dim, config.norm_eps) if config.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, config.norm_eps) if config.qk_norm else None

    def forward(self, x: torch.Tensor, cache: KVCache | None = None,
                ve: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, T, C)`` -> ``(B, T, C)``; ``ve`` ``(B, T, n_kv_head * head_dim)``,
        when given, is added to the values."""
        kv = self.n_kv_head * self.head_dim
        q, k, v = self.c_attn(x).split([x.size(-1), kv, kv], dim=2)
        if ve is not None:
            v = v + ve
        # (B, n_head or n_kv_head, T, hs)
        q, k, v = self.heads(q), self.heads(k), self.heads(v)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.rope is not None:  # positions count on from those the cache holds
            start = len(cache) if cache is not None else 0
            q, k = self.rope(q, start), self.rope(k, start)
        return self.attend(q, k, v, cache, enable_gqa=self.n_kv_head != self.n_head)
