"""Byte-pair encoding, fast: the same merges and the same ids as :mod:`buildllm.bpe`, in a
fraction of the time. Explained in the chapter "Tokens" (section "The fast trainer").

Three ideas make training fast (:func:`train_merges`):

1. work on the *distinct* chunks, each weighted by how often it occurs;
2. write a chunk's ids as a ``str`` with one character per id, ``chr(id)``: merging a pair is
   then ``str.replace``, which runs in C, and a pair of ids is a pair of characters, which sort
   as the ids do;
3. after a merge, rewrite only the chunks that hold the pair (an index ``where`` says which)
   and change only the counts of pairs next to the new token, with a heap to find the most
   frequent pair.

Encoding (:class:`ChunkEncoder`) uses the same ``str`` trick and remembers the ids of every
chunk it has merged, as tiktoken does. Cutting pure-ASCII text uses the standard library's
``re`` with an ASCII twin of GPT-2's pattern (:func:`pretokenize`), which gives the same
chunks about twice as fast as ``regex`` with its Unicode classes.
"""

from __future__ import annotations

import heapq
import operator
import re
from collections import Counter, defaultdict

import regex

from buildllm import bpe

# GPT-2's pattern for pure-ASCII text, where a letter (\p{L}) is [A-Za-z], a number (\p{N}) is
# [0-9] and whitespace (\s) is the six characters in _WS.
_WS = r" \t\n\x0b\x0c\r"
GPT2_ASCII_PATTERN = (
    rf"""'(?:[sdmt]|ll|ve|re)| ?[A-Za-z]+| ?[0-9]+| ?[^{_WS}A-Za-z0-9]+"""
    rf"""|[{_WS}]+(?![^{_WS}])|[{_WS}]+"""
)
_ASCII_SPLIT = re.compile(GPT2_ASCII_PATTERN)
CACHE_SIZE = 1 << 16  # chunks an encoder remembers, besides the tokens, before it starts over
NO_MERGE = 1 << 40  # the rank of a pair that no merge knows: larger than any id

Pair = tuple[str, str]


def pretokenize(text: str, pattern: str = bpe.GPT2_SPLIT_PATTERN) -> list[str]:
    """:func:`buildllm.bpe.pretokenize`, with ASCII text under GPT-2's pattern cut by ``re``."""
    if pattern == bpe.GPT2_SPLIT_PATTERN and text.isascii():
        return _ASCII_SPLIT.findall(text)
    return bpe.pretokenize(text, pattern)


def _pair_index(words: list[str], freqs: list[int]) -> tuple[dict, dict]:
    """How often each pair occurs (weighted by the word's frequency), and in which words."""
    counts: defaultdict[Pair, int] = defaultdict(int)
    where: defaultdict[Pair, set[int]] = defaultdict(set)
    for w, word in enumerate(words):
        for pair in zip(word, word[1:]):
            counts[pair] += freqs[w]
            where[pair].add(w)
    return counts, where


def _merge_everywhere(pair: Pair, new: str, words: list[str], freqs: list[int],
                      where: dict) -> dict[Pair, int]:
    """Replace ``pair`` by ``new`` in every word that holds it; return how the counts of the
    neighbouring pairs change: ``(x, a)`` becomes ``(x, new)``, ``(b, y)`` becomes
    ``(new, y)``."""
    a, b = pair
    delta: defaultdict[Pair, int] = defaultdict(int)
    for w in where.pop(pair):
        before = words[w]
        after = before.replace(a + b, new)
        if len(after) == len(before):  # the word lost this pair to an earlier merge
            continue
        words[w] = after
        for p in zip(after, after[1:]):
            x, y = p
            if x == new or y == new:  # a pair next to the new token, e.g. (x, new) ...
                delta[p] += freqs[w]
                # ...was (x, a)
                delta[(b if x == new else x, a if y == new else y)] -= freqs[w]
                where[p].add(w)
    return delta


def train_merges(
    text: str, num_merges: int, pattern: str = bpe.GPT2_SPLIT_PATTERN
) -> list[tuple[int, int]]:
    """Learn the same merges as :func:`buildllm.bpe.train_merges_naive`, fast."""
    chunk_counts = Counter(pretokenize(text, pattern))
    # chr(byte) per byte
    words = [bpe.utf8(chunk).decode("latin-1") for chunk in chunk_counts]
    freqs = list(chunk_counts.values())  # how often each distinct chunk occurs
    counts, where = _pair_index(words, freqs)
    # A heap of (-count, pair): its smallest entry is the most frequent pair, then the
    # smallest pair. A count that changes is pushed again; entries whose count is out of
    # date are skipped.
    heap = [(-c, pair) for pair, c in counts.items()]
    heapq.heapify(heap)
    merges: list[tuple[int, int]] = []
    while len(merges) < num_merges and heap:
        neg_count, pair = heapq.heappop(heap)
        if counts.get(pair) != -neg_count:  # stale entry
            continue
        new = chr(256 + len(merges))
        merges.append((ord(pair[0]), ord(pair[1])))
        del counts[pair]  # every occurrence is about to be merged
        for p, d in _merge_everywhere(pair, new, words, freqs, where).items():
            if d and p != pair:
                counts[p] += d
                if counts[p]:
                    heapq.heappush(heap, (-counts[p], p))
                else:
                    del counts[p]
    return merges


class ChunkEncoder:
    """Encodes text with learned merges, fast: each chunk is a ``str`` of ``chr(id)``, merged
    with ``str.replace``, and the ids of every chunk seen are remembered.

    ``merges[k]`` creates the id ``256 + k``; ``vocab[id]`` is the token's bytes. A chunk that is
    itself a token is that token, as in tiktoken: the cache starts with every token that is text.
    """

    def __init__(self, merges: list[tuple[int, int]], vocab: dict[int, bytes], pattern: str):
        self.pattern = pattern
        regex.compile(pattern)  # a pattern that is not a regular expression fails here, not later
        self.rank_of_text = {chr(a) + chr(b): 256 + k for k, (a, b) in enumerate(merges)}
        self.text_of_rank = {idx: text for text, idx in self.rank_of_text.items()}
        self.tokens_as_text: dict[str, list[int]] = {}
        for idx in range(256 + len(merges)):
            try:
                self.tokens_as_text[vocab[idx].decode("utf-8")] = [idx]
            except UnicodeDecodeError:
                pass  # part of a character: never a whole chunk
        self.cache = dict(self.tokens_as_text)

    def encode_chunk(self, data: bytes) -> list[int]:
        """Apply the merges to one chunk's bytes, the earliest-learned pair first."""
        word = data.decode("latin-1")  # chr(byte) for each byte
        rank_of = self.rank_of_text.get
        while True:
            best = NO_MERGE
            for pair in map(operator.add, word, word[1:]):  # "abc" -> "ab", "bc"
                rank = rank_of(pair, NO_MERGE)
                if rank < best:
                    best = rank
            if best == NO_MERGE:
                return [ord(c) for c in word]  # no pair left that a merge knows
            word = word.replace(self.text_of_rank[best], chr(best))

    def encode(self, text: str) -> list[int]:
        """The ids of ``text``: each distinct chunk is merged once, then remembered (up to
        ``CACHE_SIZE`` chunks besides the tokens the cache starts with)."""
        cache, out = self.cache, []
        for chunk in pretokenize(text, self.pattern):
            ids = cache.get(chunk)
            if ids is None:
                ids = self.encode_chunk(bpe.utf8(chunk))
                if len(cache) >= len(self.tokens_as_text) + CACHE_SIZE:
                    cache.clear()
                    cache.update(self.tokens_as_text)
                cache[chunk] = ids
            out.extend(ids)
        return out
