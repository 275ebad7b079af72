"""Normalization: each token's vector rescaled to a fixed size before a layer reads it.

Explained in the chapter "The GPT model" (LayerNorm) and in "From GPT-2 to today's LLMs"
(RMSNorm). Each normalization has its formula written out (:func:`layer_norm`,
:func:`rms_norm`) beside the module, which calls PyTorch's fused kernel; the tests prove the
two equal.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from buildllm.config import GPTConfig


def layer_norm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               eps: float = 1e-5) -> torch.Tensor:
    """LayerNorm written out: each vector to mean 0 and variance 1, then scale and shift.

    ``x``: ``(..., C)``, normalized over its last dimension; ``weight``, ``bias``: ``(C,)``.
    """
    mean = x.mean(dim=-1, keepdim=True)
    var = x.var(dim=-1, keepdim=True, unbiased=False)
    y = (x - mean) / torch.sqrt(var + eps) * weight
    return y + bias if bias is not None else y


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """RMSNorm written out: divide by the root mean square (no centring), then scale.

    ``x``: ``(..., C)``, normalized over its last dimension; ``weight``: ``(C,)``.
    """
    return x / torch.sqrt(x.pow(2).mean(dim=-1, keepdim=True) + eps) * weight


class LayerNorm(nn.Module):
    """Layer normalization over the last dimension; ``bias=False`` drops the shift."""

    def __init__(self, dim: int, bias: bool = True, eps: float = 1e-5):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, self.eps)


class RMSNorm(nn.Module):
    """Root-mean-square normalization over the last dimension (Llama's normalization)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.rms_norm(x, self.weight.shape, self.weight, self.eps)


def make_norm(config: GPTConfig) -> nn.Module:
    """The normalization layer the configuration asks for, over ``n_embd`` features."""
    if config.norm == "rmsnorm":
        return RMSNorm(config.n_embd, eps=config.norm_eps)
    return LayerNorm(config.n_embd, bias=config.bias, eps=config.norm_eps)
