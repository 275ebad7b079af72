"""The key/value cache: generating without computing the past again. Explained in the chapter
"Generating text".

A new token's query meets the keys and values of every earlier position, and those never
change. :class:`KVCache` keeps one attention layer's keys and values; :class:`CachedSelfAttention`
is the attention of the chapter "Attention" with a cache: its input then holds only the new
tokens, whose keys and values are appended to the cache, and whose queries attend to all the
cache holds. Without a cache it computes what that chapter's layer computes, and it is the
layer the model builds (:func:`buildllm.layers.make_attention`). ``GPT.new_cache`` makes one
cache per block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from buildllm.attention import CausalSelfAttention, causal_mask


class KVCache:
    """The keys and values that one attention layer has computed so far, for up to
    ``max_len`` positions of ``batch_size`` sequences. ``len(cache)`` is the number of
    positions filled.

    The memory is allocated once, at the first :meth:`update`, shaped like the keys:
    ``(batch_size, heads, max_len, head_dim)`` for the keys and for the values.
    """

    def __init__(self, batch_size: int, max_len: int):
        self.batch_size, self.max_len, self.length = batch_size, max_len, 0
        self.k = self.v = None  # (B, heads, max_len, head_dim), from the first update on

    def __len__(self) -> int:
        return self.length

    def update(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``k``, ``v`` ``(B, heads, T, head_dim)``; return all the keys and values
        so far, views ``(B, heads, length, head_dim)`` of the cache."""
        if self.k is None:
            shape = (self.batch_size, k.size(1), self.max_len, k.size(3))
            self.k, self.v = k.new_zeros(shape), v.new_zeros(shape)
        start, end = self.length, self.length + k.size(2)
        assert end <= self.max_len, (
            f"the cache holds {self.max_len} positions, {end} needed")
        self.k[:, :, start:end] = k
        self.v[:, :, start:end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class CachedSelfAttention(CausalSelfAttention):
    """The attention of the chapter "Attention", able to continue a sequence: with a
    ``cache``, ``x`` holds only the new tokens, which follow the positions the cache
    holds."""

    def forward(self, x: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """``x`` ``(B, T, C)`` -> ``(B, T, C)``; with a cache, each new position also sees
        the positions before it that the cache holds."""
        q, k, v = self.c_attn(x).split(x.size(-1), dim=2)  # (B, T, C) each
        return self.attend(self.heads(q), self.heads(k), self.heads(v), cache)

    def attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               cache: KVCache | None = None, **options) -> torch.Tensor:
        """Attention of the queries ``q`` ``(B, H, T, head_dim)`` to the keys ``k`` and
        values ``v`` of the same ``T`` positions and of those before them in the cache (to
        which ``k``, ``v`` are appended), then merged: ``(B, T, C)``. ``options`` go to the
        kernel."""
        T, start = q.size(2), len(cache) if cache is not None else 0
        if cache is not None:
            k, v = cache.update(k, v)  # (B, H, start + T, head_dim): the past and the new
        # The new queries are the last T of start + T positions: the last T rows of the
        # mask.
        mask = (causal_mask(start + T, q.dtype, q.device)[start:] if start and T > 1
                else None)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                           is_causal=not start and T > 1,
                                           dropout_p=self.dropout if self.training else 0.0,
                                           **options)
        return self.merge(y)
