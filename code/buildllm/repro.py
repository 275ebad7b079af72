"""Reproducibility: every chapter starts by calling :func:`reproducible`.

A chapter is checked by running it again and comparing every output with the one the book
prints (``pytest --nbval``). That only works when a run prints the same thing every time, so each
chapter starts by fixing what would otherwise vary: the random seeds, the number of CPU
threads (floating-point sums can round differently when split across threads), and how many
digits tensors and arrays print with. Explained in the Preface.

A timing is never the same twice; :func:`best_time`, the fastest of a few runs, is the one that
varies least (the chapters that time things and ``make bench`` use it). A run that needs its
own thread count (training the book's model, a benchmark) takes it in :func:`threads`.
"""

from __future__ import annotations

import contextlib
import os
import random
import time
from collections.abc import Callable, Iterator

import numpy as np
import torch


def reproducible(seed: int = 1337, threads: int = 1, precision: int = 4) -> torch.Generator:
    """Seed every random number generator, fix the thread count and the print precision.

    Returns a ``torch.Generator`` seeded with ``seed`` for code that wants its own stream.
    """
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    # for subprocesses; this one's hash seed is fixed
    os.environ["PYTHONHASHSEED"] = str(seed)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_printoptions(precision=precision, sci_mode=False)
    np.set_printoptions(precision=precision, suppress=True)
    return torch.Generator().manual_seed(seed)


def best_time(fn: Callable[[], object], repeat: int = 3, number: int = 1) -> float:
    """The fastest of ``repeat`` timings of ``number`` calls to ``fn``, in seconds per call."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


@contextlib.contextmanager
def threads(n: int) -> Iterator[None]:
    """PyTorch's CPU threads set to ``n`` inside the ``with`` block, and set back after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
