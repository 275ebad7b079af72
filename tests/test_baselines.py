"""Tests of buildllm.baselines: the majority class, a bag of words, a logistic regression."""

from __future__ import annotations

import pytest
import torch

from buildllm import baselines


def test_baselines_on_separable_words():
    texts = ["the king rides to war", "a jest and a song", "the crown of england",
             "sing a merry song"] * 5
    labels = torch.tensor([1, 0, 1, 0] * 5)
    vocab = baselines.word_vocab(texts, size=50)
    x = baselines.bag_of_words(texts, vocab)
    assert x.shape == (20, len(vocab)) and x[0, vocab["king"]] == pytest.approx(0.6931, abs=1e-4)
    layer = baselines.fit_linear(x, labels, 2)
    assert torch.equal(layer(x).argmax(-1), labels)
    assert baselines.majority(torch.tensor([2, 2, 1]), 4).tolist() == [2, 2, 2, 2]
    assert baselines.words("O'er the moon, 'tis") == ["o'er", "the", "moon", "'tis"]
