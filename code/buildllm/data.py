"""The corpus: Tiny Shakespeare, downloaded once, verified, cached. Explained in the Preface.

Where the text comes from, in order:

1. ``$BUILDLLM_DATA_DIR/tinyshakespeare.txt`` when that environment variable is set (tests and
   CI point it at a read-only mirror, so that no machine needs the network);
2. the cache directory (``$BUILDLLM_CACHE_DIR``, else the user's cache, e.g.
   ``~/.cache/buildllm``);
3. a download from :data:`URL`, written atomically into the cache.

Whatever the source, the bytes must hash to :data:`SHA256`; a file that does not is never used.
The training chapter adds token batches to this module.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pooch

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
FILENAME = "tinyshakespeare.txt"
DATA_DIR_ENV = "BUILDLLM_DATA_DIR"
CACHE_DIR_ENV = "BUILDLLM_CACHE_DIR"


class CorpusError(RuntimeError):
    """The corpus could not be found, downloaded or verified; the message says what to do."""


def sha256_of(path: Path) -> str:
    """The hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def cache_dir() -> Path:
    """Where downloads are kept: ``$BUILDLLM_CACHE_DIR`` or the user's cache directory."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env) if env else Path(pooch.os_cache("buildllm"))


def _verified(path: Path, sha256: str) -> Path:
    actual = sha256_of(path)
    if actual != sha256:
        raise CorpusError(
            f"{path} has sha256 {actual}, but Tiny Shakespeare has {sha256}. The file is corrupt "
            f"or is another text: delete it and let buildllm download it again from {URL}, or "
            f"replace it with a good copy."
        )
    return path


def corpus_path(url: str = URL, sha256: str = SHA256) -> Path:
    """Return the path of a verified copy of the corpus, downloading it if needed."""
    data_dir = os.environ.get(DATA_DIR_ENV)
    if data_dir:
        path = Path(data_dir) / FILENAME
        if not path.is_file():
            raise CorpusError(
                f"${DATA_DIR_ENV} is set to {data_dir!r}, but {path} does not exist. Put "
                f"Tiny Shakespeare there (from {url}), or unset {DATA_DIR_ENV} to download it."
            )
        return _verified(path, sha256)

    cached = cache_dir() / FILENAME
    if cached.is_file():
        return _verified(cached, sha256)
    return download(url, cached, sha256)


def download(url: str, dest: Path, sha256: str = SHA256) -> Path:
    """Download ``url`` to ``dest`` atomically and verify its sha256.

    The bytes go to a temporary file beside ``dest`` and are renamed into place only after
    the hash matches, so an interrupted or corrupt download never leaves a file behind.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        # pooch streams into a temporary file in dest's folder, checks the hash, then renames.
        pooch.retrieve(
            url, known_hash=f"sha256:{sha256}", fname=dest.name, path=dest.parent, progressbar=False
        )
    except ValueError as e:  # pooch's hash mismatch; it has already deleted the download
        raise CorpusError(
            f"The file downloaded from {url} does not have the expected sha256 {sha256}; it was "
            f"discarded. Try again later, or download it by hand and set ${DATA_DIR_ENV} to its "
            f"folder. ({e})"
        ) from e
    except Exception as e:  # network errors of every kind
        raise CorpusError(
            f"Could not download Tiny Shakespeare from {url} ({type(e).__name__}: {e}). If this "
            f"machine is offline, copy the file to {dest} or set ${DATA_DIR_ENV} to a folder "
            f"that holds {FILENAME}."
        ) from e
    return _verified(dest, sha256)


def load_text() -> str:
    """The whole corpus as a string (1,115,394 characters, all ASCII)."""
    return corpus_path().read_text(encoding="utf-8")


def train_val_split(data, train_fraction: float = 0.9):
    """Split a sequence into its first ``train_fraction`` and the rest, as nanoGPT does.

    A contiguous split, not a shuffled one: validation text is text the model has never seen
    any part of, and results stay comparable with nanoGPT's.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be strictly between 0 and 1, got {train_fraction}")
    n = int(len(data) * train_fraction)
    return data[:n], data[n:]
