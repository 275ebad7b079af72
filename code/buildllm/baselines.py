"""Baselines for the genre task: what a classifier must beat. Explained in the chapter
"Fine-tuning".

Always answering the most frequent class (:func:`majority`), and a bag of words: each passage
as the counts of its most frequent words (:func:`word_vocab`, :func:`bag_of_words`), fed to a
logistic regression fitted with L-BFGS (:func:`fit_linear`, which also fits a classifier head
to a frozen model's features).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def majority(train_labels: torch.Tensor, n: int) -> torch.Tensor:
    """``n`` predictions of the training set's most frequent class."""
    return torch.full((n,), int(torch.mode(train_labels).values))


def words(text: str) -> list[str]:
    """Lower-case words, apostrophes kept (``"'tis"``, ``"o'er"``)."""
    return re.findall(r"[a-z']+", text.lower())


def word_vocab(texts: Sequence[str], size: int = 5000) -> dict[str, int]:
    """The ``size`` most frequent words of ``texts``, each with an index."""
    counts = Counter(w for t in texts for w in words(t))
    return {w: i for i, (w, _) in enumerate(counts.most_common(size))}


def bag_of_words(texts: Sequence[str], vocab: dict[str, int]) -> torch.Tensor:
    """Each text as ``log(1 + count)`` of each vocabulary word: ``(N, len(vocab))``."""
    x = torch.zeros(len(texts), len(vocab))
    for i, t in enumerate(texts):
        for w, c in Counter(words(t)).items():
            if w in vocab:
                x[i, vocab[w]] = math.log1p(c)
    return x


def fit_linear(x: torch.Tensor, y: torch.Tensor, n_classes: int, l2: float = 1e-3,
               max_iter: int = 100) -> nn.Linear:
    """Multinomial logistic regression: a linear layer ``(D -> n_classes)`` fitted to features
    ``x`` ``(N, D)`` and labels ``y`` ``(N,)``, minimizing the cross-entropy plus
    ``l2 · |W|²`` with L-BFGS (a convex problem: no learning rate, no seed to tune)."""
    layer = nn.Linear(x.size(1), n_classes)
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)
    opt = torch.optim.LBFGS(layer.parameters(), max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = F.cross_entropy(layer(x), y) + l2 * layer.weight.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return layer
