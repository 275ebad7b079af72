"""The GPT model: embeddings, a stack of transformer blocks, a final norm and the output head.

Explained in the chapter "The GPT model"; the options of
:class:`~buildllm.config.GPTConfig` that are off by default (rotary positions, RMSNorm, SwiGLU,
grouped-query attention, QK-norm, an untied head, no biases) are explained in "From GPT-2 to
today's LLMs". With the defaults, the model is GPT-2, and its parameter names follow Hugging
Face's GPT-2 so that weights convert one to one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from buildllm.attention import KVCache
from buildllm.config import GPTConfig
from buildllm.embeddings import SinusoidalPositionalEncoding
from buildllm.layers import Block
from buildllm.norms import make_norm


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
        kv_dim = config.kv_heads * config.head_dim
        self.wve = (nn.ModuleList(nn.Embedding(config.vocab_size, kv_dim)
                                  for _ in range(config.n_layer))
                    if config.value_embed else None)  # one value embedding per block
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
        logits = self.lm_head(self.features(idx, cache))  # (B, T, vocab_size)
        if self.config.logit_softcap is not None:  # smoothly into (-cap, cap)
            cap = self.config.logit_softcap
            logits = cap * torch.tanh(logits / cap)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)
        return logits, loss

    def features(self, idx: torch.Tensor, cache: list[KVCache] | None = None) -> torch.Tensor:
        """The last block's output after the final norm, ``(B, T, n_embd)``: what the head
        reads (and what a classifier reads, chapter "Fine-tuning")."""
        if idx.dim() != 2:
            raise ValueError(f"idx must be token ids of shape (B, T), got {tuple(idx.shape)}; "
                             f"for a single sequence add a batch dimension: idx[None]")
        T, offset = idx.size(1), cache[0].length if cache is not None else 0
        if offset + T > self.config.block_size:
            raise ValueError(f"sequence of {offset + T} tokens is longer than the model's "
                             f"context (block_size={self.config.block_size}); crop the input "
                             f"to its last {self.config.block_size} tokens")
        x = self.wte(idx)  # (B, T, C)
        if self.wpe is not None:
            x = x + self.wpe(torch.arange(offset, offset + T, device=idx.device))  # + (T, C)
        x = self.drop(x)
        for i, block in enumerate(self.h):
            ve = self.wve[i](idx) if self.wve is not None else None  # (B, T, kv_dim)
            x = block(x, cache[i] if cache is not None else None, ve)
        return self.ln_f(x)

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
            if name.startswith(("wte.", "wpe.", "wve.")):
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
