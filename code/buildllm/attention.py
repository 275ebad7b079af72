"""Causal self-attention: ``softmax(Q K^T / sqrt(d_k) + M) V``.

Explained in the chapter "Attention". :func:`scaled_dot_product_attention` is the formula
written out, for reading and for checking; :class:`CausalSelfAttention` is the layer the model
uses: several heads, one fused projection for queries, keys and values, and PyTorch's fused
kernel (proven equal to the formula by the tests). Options used by later chapters: a
key/value cache (:class:`KVCache`, chapter "Generating text"), rotary position embedding,
grouped-query attention and QK-norm (chapter "From GPT-2 to today's LLMs").
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from buildllm.config import GPTConfig
from buildllm.embeddings import RotaryEmbedding
from buildllm.norms import RMSNorm


def causal_mask(T_q: int, T_k: int | None = None, dtype: torch.dtype = torch.float32,
                device: torch.device | str | None = None) -> torch.Tensor:
    """The additive mask ``M``: 0 where a query may look, ``-inf`` where it may not.

    Shape ``(T_q, T_k)``. The ``T_q`` queries are the last ``T_q`` of the ``T_k`` positions, so
    query ``i`` sits at position ``T_k - T_q + i`` and sees keys ``0 .. T_k - T_q + i``.
    """
    T_k = T_q if T_k is None else T_k
    if T_k < T_q:
        raise ValueError(f"there are fewer keys ({T_k}) than queries ({T_q})")
    q_pos = torch.arange(T_k - T_q, T_k, device=device)[:, None]
    k_pos = torch.arange(T_k, device=device)[None, :]
    mask = torch.zeros(T_q, T_k, dtype=dtype, device=device)
    return mask.masked_fill(k_pos > q_pos, float("-inf"))


def scaled_dot_product_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                                 mask: torch.Tensor | None = None) -> torch.Tensor:
    """Attention exactly as the formula says.

    ``q``: ``(..., T_q, d_k)``, ``k``: ``(..., T_k, d_k)``, ``v``: ``(..., T_k, d_v)``, ``mask``:
    additive, broadcastable to ``(..., T_q, T_k)``. Returns ``(..., T_q, d_v)``.
    """
    d_k = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (..., T_q, T_k)
    if mask is not None:
        scores = scores + mask
    weights = torch.softmax(scores, dim=-1)  # each row sums to 1
    return weights @ v


class KVCache:
    """The keys and values one attention layer has computed so far, for generation.

    Memory is allocated once for ``max_len`` positions: ``(B, n_kv_head, max_len, head_dim)``
    for keys and for values. ``length`` is the number of positions filled.
    """

    def __init__(self, batch_size: int, n_kv_head: int, max_len: int, head_dim: int,
                 dtype: torch.dtype = torch.float32, device: torch.device | str | None = None):
        shape = (batch_size, n_kv_head, max_len, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.length = 0

    @property
    def max_len(self) -> int:
        return self.k.size(2)

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``k``, ``v`` ``(B, n_kv_head, T, head_dim)``; return all keys and values.

        The returned tensors are views ``(B, n_kv_head, length, head_dim)`` of the cache.
        """
        start, end = self.length, self.length + k.size(2)
        if end > self.max_len:
            raise ValueError(
                f"the key/value cache holds {self.max_len} positions, {end} are needed: "
                f"make a larger cache (max_len) or generate fewer tokens"
            )
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention: ``(B, T, C)`` -> ``(B, T, C)``."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head, self.n_kv_head = config.n_head, config.kv_heads
        self.head_dim = config.head_dim
        qkv_dim = (self.n_head + 2 * self.n_kv_head) * self.head_dim
        self.c_attn = nn.Linear(config.n_embd, qkv_dim, bias=config.bias)  # fused Q, K, V
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = config.dropout
        self.resid_dropout = nn.Dropout(config.dropout)
        self.rope = (RotaryEmbedding(self.head_dim, config.block_size, config.rope_base)
                     if config.pos_encoding == "rope" else None)
        self.q_norm = RMSNorm(self.head_dim, config.norm_eps) if config.qk_norm else None
        self.k_norm = RMSNorm(self.head_dim, config.norm_eps) if config.qk_norm else None

    def forward(self, x: torch.Tensor, cache: KVCache | None = None,
                ve: torch.Tensor | None = None) -> torch.Tensor:
        """``x`` ``(B, T, C)`` -> ``(B, T, C)``; each position sees itself and the past only.

        With a ``cache``, ``x`` holds only the new tokens, which follow the ``cache.length``
        positions whose keys and values the cache already holds; their keys and values are
        appended to it. ``ve`` ``(B, T, n_kv_head * head_dim)``, when given, is added to the
        values (value embeddings).
        """
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(
            [self.n_head * self.head_dim, self.n_kv_head * self.head_dim,
             self.n_kv_head * self.head_dim], dim=2)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, n_head, T, hs)
        k = k.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)  # (B, n_kv_head, T, hs)
        if ve is not None:
            v = v + ve
        v = v.view(B, T, self.n_kv_head, self.head_dim).transpose(1, 2)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        offset = cache.length if cache is not None else 0
        if self.rope is not None:
            q, k = self.rope(q, offset), self.rope(k, offset)
        if cache is not None:
            k, v = cache.update(k, v)  # (B, n_kv_head, offset + T, hs)
        # Without a cache (or on its first fill) the mask is the plain causal triangle; one new
        # token may look at everything; several new tokens after a prefix need the offset mask.
        mask, is_causal = None, False
        if offset == 0:
            is_causal = T > 1
        elif T > 1:
            mask = causal_mask(T, k.size(2), dtype=q.dtype, device=q.device)
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=is_causal,
            dropout_p=self.dropout if self.training else 0.0,
            enable_gqa=self.n_kv_head != self.n_head,
        )  # (B, n_head, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # merge the heads
        return self.resid_dropout(self.c_proj(y))
