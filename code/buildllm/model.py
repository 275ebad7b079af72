"""The GPT model: embeddings, a stack of transformer blocks, a final norm and the output head.

Explained in the chapter "The GPT model"; the key/value cache (:meth:`GPT.new_cache`) in
"Generating text"; the options of :class:`~buildllm.config.GPTConfig` that are off by default
in "From GPT-2 to today's LLMs": the blocks take the parts those options name, and two of them
(value embeddings and a soft-cap on the logits) need a model of their own,
:class:`SpeedrunGPT`, which ``GPT(config)`` builds when they are on. With the defaults, the
model is GPT-2, and its parameter names follow Hugging Face's GPT-2 so that weights convert
one to one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from buildllm.config import GPTConfig
from buildllm.embeddings import make_positions
from buildllm.kvcache import KVCache
from buildllm.layers import Block
from buildllm.norms import make_norm


class GPT(nn.Module):
    """A decoder-only transformer: token ids ``(B, T)`` -> next-token logits
    ``(B, T, V)``."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.n_embd)
        self.wpe = make_positions(config)  # a learned table, or fixed waves: (T,) -> (T, C)
        self.drop = nn.Dropout(config.dropout)
        self.h = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        self.ln_f = make_norm(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections down
        for name, p in self.named_parameters():
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
                cache=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits ``(B, T, vocab_size)`` and, given ``targets`` ``(B, T)``, the mean
        cross-entropy (targets of -1 are skipped). ``cache``: what generation keeps of the
        tokens before ``idx`` (:meth:`new_cache`, chapter "Generating text")."""
        logits = self.lm_head(self.features(idx, cache))  # (B, T, vocab_size)
        return logits, self.loss(logits, targets)

    @staticmethod
    def loss(logits: torch.Tensor, targets: torch.Tensor | None) -> torch.Tensor | None:
        """The mean cross-entropy of ``logits`` ``(B, T, V)`` for ``targets`` ``(B, T)``,
        those of -1 left out; ``None`` without targets."""
        if targets is None:
            return None
        return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)

    def features(self, idx: torch.Tensor, cache=None) -> torch.Tensor:
        """The last block's output after the final norm, ``(B, T, n_embd)``: what the head
        reads (and what a classifier reads, chapter "Fine-tuning")."""
        x = self.embed(idx, len(cache[0]) if cache else 0)  # (B, T, C)
        for i, block in enumerate(self.h):
            x = block(x, cache[i] if cache else None)
        return self.ln_f(x)

    def embed(self, idx: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Token vectors plus position vectors, ``(B, T, C)``, for ids ``(B, T)`` whose
        first token is at position ``start``."""
        T = idx.size(1)
        assert start + T <= self.config.block_size, (
            f"{start + T} tokens: the context holds {self.config.block_size}; "
            f"crop the input")
        x = self.wte(idx) + self.wpe(torch.arange(start, start + T, device=idx.device))
        return self.drop(x)

    def new_cache(self, batch_size: int, max_len: int | None = None) -> list[KVCache]:
        """An empty key/value cache for every block, for up to ``max_len`` positions (by
        default the whole context)."""
        return [KVCache(batch_size, max_len or self.config.block_size) for _ in self.h]

    def parameter_counts(self) -> dict[str, int]:
        """Parameters per component: embeddings, attention, feed-forward, norms, output
        head.

        A tied head shares the embedding matrix, so it adds nothing; the total counts each
        tensor once.
        """
        counts = dict.fromkeys(
            ("embeddings", "attention", "feed-forward", "norms", "head"), 0)
        for name, p in self.named_parameters():  # each tensor once: a tied head is skipped
            module = self.get_submodule(name.rpartition(".")[0])
            if isinstance(module, nn.Embedding):
                counts["embeddings"] += p.numel()
            elif not isinstance(module, nn.Linear):  # gains and shifts
                counts["norms"] += p.numel()
            elif name.startswith("lm_head."):
                counts["head"] += p.numel()
            else:
                counts["attention" if ".attn." in name else "feed-forward"] += p.numel()
        counts["total"] = sum(counts.values())
        return counts

    def __new__(cls, config: GPTConfig | None = None, *args, **kwargs):
        """``GPT(config)`` is the model the configuration describes: a :class:`SpeedrunGPT`
        when it asks for value embeddings or a soft-cap on the logits."""
        if cls is GPT and config is not None and (config.value_embed
                                                  or config.logit_softcap is not None):
            cls = SpeedrunGPT
        return super().__new__(cls)


class SpeedrunGPT(GPT):
    """The GPT with two parts of modded-nanogpt's speedrun: value embeddings
    (``value_embed``), one token embedding per block, ``wve``, that the block's attention
    adds to its values; and logits soft-capped into ``(-cap, cap)`` (``logit_softcap``), as
    in Gemma 2."""

    def __init__(self, config: GPTConfig):
        super().__init__(config)
        width = config.kv_heads * config.head_dim  # the values' width
        self.wve = (nn.ModuleList(nn.Embedding(config.vocab_size, width)
                                  for _ in range(config.n_layer))
                    if config.value_embed else None)
        if self.wve is not None:
            self.wve.apply(self._init_weights)

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None,
                cache=None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """As :meth:`GPT.forward`, the logits soft-capped: ``cap * tanh(logits / cap)``."""
        logits = self.lm_head(self.features(idx, cache))  # (B, T, vocab_size)
        if self.config.logit_softcap is not None:  # smoothly into (-cap, cap)
            cap = self.config.logit_softcap
            logits = cap * torch.tanh(logits / cap)
        return logits, self.loss(logits, targets)

    def features(self, idx: torch.Tensor, cache=None) -> torch.Tensor:
        """As :meth:`GPT.features`, each block's attention given its value embedding."""
        if self.wve is None:
            return super().features(idx, cache)
        x = self.embed(idx, len(cache[0]) if cache else 0)
        for i, block in enumerate(self.h):
            ve = self.wve[i](idx)  # (B, T, n_kv_head * head_dim)
            x = x + block.attn(block.ln_1(x), cache[i] if cache else None, ve)
            x = x + block.mlp(block.ln_2(x))
        return self.ln_f(x)
