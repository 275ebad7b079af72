"""buildllm.repro: the first cell of every chapter fixes the seeds, the threads and the print
precision, so that a re-run prints the same thing."""

from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from buildllm import repro
from buildllm.repro import reproducible


@pytest.fixture
def restore_torch_settings(monkeypatch):
    """reproducible() changes process-wide settings: give them back after the test."""
    threads, deterministic = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    monkeypatch.setenv("PYTHONHASHSEED", os.environ.get("PYTHONHASHSEED", "0"))
    yield
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic)
    torch.set_printoptions(profile="default")
    np.set_printoptions(precision=8, suppress=False)


def test_reproducible_fixes_seeds_and_threads(restore_torch_settings):
    reproducible(seed=7, threads=1)
    a, b, c = torch.randn(3), np.random.rand(), random.random()
    g = reproducible(seed=7, threads=1)
    assert torch.equal(a, torch.randn(3)) and np.random.rand() == b and random.random() == c
    assert torch.are_deterministic_algorithms_enabled()
    assert "0.1235" in str(torch.tensor([0.123456]))  # 4 digits
    assert str(np.array([0.123456])) == "[0.1235]"
    assert torch.get_num_threads() == 1
    assert os.environ["PYTHONHASHSEED"] == "7"
    fresh = torch.Generator().manual_seed(7)
    assert torch.equal(torch.randn(2, generator=g), torch.randn(2, generator=fresh))
    reproducible(seed=8, threads=2, precision=2)
    assert torch.get_num_threads() == 2 and "0.12" in str(torch.tensor([0.123456]))
    assert not torch.equal(a, torch.randn(3))  # another seed, other numbers


@pytest.mark.parametrize("kw, name", [(dict(threads=0), "threads"), (dict(threads=1.5), "threads"),
                                      (dict(seed=-1), "seed"), (dict(seed="7"), "seed")])
def test_bad_settings_are_clear_errors(kw, name, restore_torch_settings):
    with pytest.raises(ValueError, match=f"{name} must be"):
        reproducible(**kw)


def test_threads_sets_the_count_inside_and_restores_it_after_even_on_error():
    before = torch.get_num_threads()
    other = 1 if before != 1 else 2
    with repro.threads(other):
        assert torch.get_num_threads() == other
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError, match="inside"):
        with repro.threads(other):
            raise RuntimeError("inside")
    assert torch.get_num_threads() == before
