"""Byte-pair encoding, the algorithm as the chapter "Tokens" teaches it: slow, short, obvious.

Text becomes UTF-8 bytes (ids 0-255). Training learns *merges*: each replaces the most frequent
adjacent pair of ids with a new id (256, 257, ...). A regular expression first cuts the text
into chunks (words, numbers, punctuation, spaces) so that merges never cross a word boundary.
Encoding applies the merges to each chunk, the earliest-learned pair first.

:func:`get_stats` counts pairs, :func:`merge` replaces one, :func:`train_merges_naive` recounts
everything after every merge, and :func:`encode_chunk` applies learned merges. The library's
tokenizer (:mod:`buildllm.tokenizer`) runs the same algorithm faster (:mod:`buildllm.bpe_fast`);
the tests prove that both give the same merges and the same ids.

Tie-breaking: the most frequent pair wins, and among pairs equally frequent, the smallest pair
``(first id, second id)``.
"""

from __future__ import annotations

import regex

# GPT-2's pattern (as tiktoken writes it): contractions, an optional space followed by letters,
# by digits or by other symbols, then runs of whitespace. Every character matches some
# alternative, so the chunks put back together are the text.
GPT2_SPLIT_PATTERN = (
    r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
)
ENDOFTEXT = "<|endoftext|>"


def get_stats(ids: list[int], counts: dict | None = None) -> dict[tuple[int, int], int]:
    """Count each adjacent pair: ``[1, 2, 3, 1, 2] -> {(1, 2): 2, (2, 3): 1, (3, 1): 1}``.

    Pass ``counts`` to add to an existing dictionary (to count over many chunks).
    """
    counts = {} if counts is None else counts
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts


def merge(ids: list[int], pair: tuple[int, int], idx: int) -> list[int]:
    """Replace every occurrence of ``pair`` in ``ids``, left to right, with ``idx``.

    ``merge([1, 2, 3, 1, 2], (1, 2), 4) -> [4, 3, 4]``
    """
    out = []
    i = 0
    while i < len(ids):
        if i < len(ids) - 1 and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(idx)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


def pretokenize(text: str, pattern: str = GPT2_SPLIT_PATTERN) -> list[str]:
    """Cut ``text`` into chunks: ``"Hello, world!" -> ['Hello', ',', ' world', '!']``."""
    return regex.findall(pattern, text)


def utf8(chunk: str) -> bytes:
    """``chunk`` as UTF-8 bytes, or a ValueError that says what a lone surrogate is."""
    try:
        return chunk.encode("utf-8")
    except UnicodeEncodeError as e:
        bad = e.object[e.start : e.end]
        raise ValueError(
            f"text holds {bad!r}, a lone surrogate, which UTF-8 cannot encode (it comes from "
            f"broken UTF-16 or from decoding with errors='surrogateescape'); repair the text, "
            f"e.g. with text.encode('utf-8', 'replace').decode('utf-8')"
        ) from None


def train_merges_naive(
    text: str, num_merges: int, pattern: str = GPT2_SPLIT_PATTERN
) -> list[tuple[int, int]]:
    """Learn ``num_merges`` merges by recounting every pair of every chunk after each merge.

    Merge ``k`` of the returned list creates the id ``256 + k``. Slow: the book times it.
    """
    chunks = [list(utf8(chunk)) for chunk in pretokenize(text, pattern)]
    merges = []
    for k in range(num_merges):
        stats = {}
        for ids in chunks:
            get_stats(ids, stats)
        if not stats:  # every chunk is a single token: nothing left to merge
            break
        pair = min(stats, key=lambda p: (-stats[p], p))  # most frequent, then smallest
        chunks = [merge(ids, pair, 256 + k) for ids in chunks]
        merges.append(pair)
    return merges


def encode_chunk(data: bytes, ranks: dict[tuple[int, int], int]) -> list[int]:
    """Apply learned merges to one chunk's bytes: while some adjacent pair has a merge,
    merge the pair that was learned first. ``ranks`` maps each merged pair to its new id."""
    ids = list(data)
    while len(ids) >= 2:
        stats = get_stats(ids)
        pair = min(stats, key=lambda p: ranks.get(p, float("inf")))  # the earliest merge
        if pair not in ranks:
            break  # no pair of this chunk was ever merged
        ids = merge(ids, pair, ranks[pair])
    return ids
