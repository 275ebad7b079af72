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
