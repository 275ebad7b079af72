"""Shared test set-up: the corpus comes from $BUILDLLM_DATA_DIR (the Makefile points it at
../shared/data when that mirror exists, and so does this file); a test that needs the corpus
fails with the loader's message when it cannot be found, rather than being skipped."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

if "BUILDLLM_DATA_DIR" not in os.environ:
    mirror = ROOT.parent / "shared" / "data"
    if (mirror / "tinyshakespeare.txt").is_file():
        os.environ["BUILDLLM_DATA_DIR"] = str(mirror)


@pytest.fixture(scope="session")
def corpus() -> str:
    from buildllm import data

    return data.load_text()


@pytest.fixture(scope="session")
def small_corpus(corpus) -> str:
    """A slice of Shakespeare with every HARD_PIECE mixed in, so merges span multibyte text."""
    from shared import HARD_PIECES

    return corpus[:60_000] + "".join(HARD_PIECES) * 20


@pytest.fixture(scope="session")
def tok(small_corpus):
    """A BPE tokenizer of 700 tokens (one of them <|endoftext|>) learned from small_corpus."""
    from buildllm.tokenizer import train_bpe

    return train_bpe(small_corpus, 700)


@pytest.fixture(scope="session")
def big_tok(corpus):
    """A BPE tokenizer of 4096 tokens learned from the whole corpus."""
    from buildllm.tokenizer import train_bpe

    return train_bpe(corpus, 4096)


@pytest.fixture
def private_cache(tmp_path, monkeypatch) -> Path:
    """A cache directory of the test's own (tokenizers, token arrays, models), empty at first."""
    from buildllm import data

    cache = tmp_path / "cache"
    monkeypatch.setenv(data.CACHE_DIR_ENV, str(cache))
    return cache
