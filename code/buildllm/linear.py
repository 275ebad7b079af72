"""The model's linear layer: ``nn.Linear`` with a fast path for generating text on a CPU.

Explained in the chapter "Generating text". Every matrix of the model (attention, feed-forward,
output head) is a :class:`Linear`. With many rows, as in training, it is exactly ``nn.Linear``.
With a few rows, as when a model generates one token at a time, it computes the same product
the other way round, ``(W Xᵀ)ᵀ`` instead of ``X Wᵀ`` (:func:`few_rows_linear`): on a CPU,
PyTorch's BLAS runs ``X Wᵀ`` for one or two rows as matrix-vector products on a single core,
while ``W Xᵀ`` is a matrix product that every core shares. Generating a token reads every
weight of the model once, so reading them faster makes generation faster.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

FEW_ROWS = 32  # up to this many rows (tokens times batch), a CPU Linear uses few_rows_linear


def few_rows_linear(x: torch.Tensor, weight: torch.Tensor,
                    bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.linear(x, weight, bias)`` computed as ``(weight @ x.T).T``: fast for a few rows.

    ``x``: ``(..., in)``; ``weight``: ``(out, in)``; ``bias``: ``(out,)``. One row is passed
    twice, because a product with a single column is again a matrix-vector product.
    """
    rows = x.reshape(-1, x.size(-1))  # (N, in)
    n = rows.size(0)
    columns = (rows if n > 1 else torch.cat([rows, rows])).T  # (in, N): at least two columns
    if bias is None:
        y = weight @ columns  # (out, N)
    else:
        y = torch.addmm(bias[:, None], weight, columns)  # bias + weight @ columns
    return y[:, :n].T.contiguous().view(*x.shape[:-1], weight.size(0))


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters, same results up to rounding) that multiplies a few rows
    on a CPU with :func:`few_rows_linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and 0 < x.numel() <= FEW_ROWS * x.size(-1):
            return few_rows_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)
